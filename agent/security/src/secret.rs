//! Secrets (tokens, passwords) that must not reach a log line, a status reply or a panic
//! message: `Debug` and `Display` print `***`.

use std::path::Path;

/// A secret string. Compare with [`Secret::matches`], which takes the same time whatever
/// the input, so timing does not reveal how much of a guess was right.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Why a secret file could not be used. Never carries the content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {path}: {why}")]
    Invalid {
        path: std::path::PathBuf,
        why: &'static str,
    },
}

/// Shortest token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

impl Secret {
    #[cfg(test)]
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a token from a file (surrounding whitespace trimmed); at least
    /// [`MIN_TOKEN_LEN`] characters, one line.
    pub fn from_token_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let t = text.trim();
        let invalid = |why| SecretError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        if t.len() < MIN_TOKEN_LEN {
            return Err(invalid("token shorter than 16 characters"));
        }
        if t.contains(char::is_whitespace) {
            return Err(invalid("token must be one word on one line"));
        }
        Ok(Self(t.to_string()))
    }

    /// Reads a password from a file: its first line without the line ending; not empty.
    pub fn from_password_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(SecretError::Invalid {
                path: path.to_path_buf(),
                why: "the password file is empty",
            });
        }
        Ok(Self(line.to_string()))
    }

    pub fn matches(&self, guess: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut diff = u8::from(mine.len() != guess.len());
        for (i, b) in mine.iter().enumerate() {
            diff |= b ^ guess.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_and_compared_whole() {
        let s = Secret::new("correct-horse-battery-staple");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert!(s.matches(b"correct-horse-battery-staple"));
        assert!(!s.matches(b"correct-horse-battery-stapl"));
        assert!(!s.matches(b"correct-horse-battery-staple!"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn token_files_must_hold_one_long_word() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("t");
        std::fs::write(&p, "  0123456789abcdef0123\n").expect("write");
        assert!(
            Secret::from_token_file(&p)
                .expect("ok")
                .matches(b"0123456789abcdef0123")
        );
        std::fs::write(&p, "short\n").expect("write");
        let e = Secret::from_token_file(&p).expect_err("short").to_string();
        assert!(e.contains("shorter") && !e.contains("short\n"), "{e}");
        std::fs::write(&p, "0123456789abcdef 0123\n").expect("write");
        assert!(Secret::from_token_file(&p).is_err());
    }
}
