//! Configuration of an instrument-file directory.
//!
//! ```toml
//! [drivers.camera]
//! kind = "files"
//! dir = "/data/incoming"          # watched, not recursively; relative: in the data dir
//! pattern = "*.fits"              # file names; `*` and `?` (default "*")
//! format = "fits"                 # fits | csv | blob
//! after = "move"                  # keep | move | delete, once the record is committed
//! move_to = "/data/ingested"
//! settle = "5s"                   # unchanged this long = complete (closed: 500 ms)
//! max_bytes = "128MiB"            # larger files are reported, left alone
//! fits_keys = ["AIRMASS", "GAIN"] # besides DATE-OBS, OBJECT, EXPTIME, ... NAXISn
//! # csv: delimiter, columns, header = true, time_column, [drivers.X.channels.NAME]
//! # simulate_every = "20s"        # fits: a simulated camera PC drops a frame this often
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::channels::ChannelRaw;
use crate::config::{ByteSize, FieldError, duration_opt, field_err, refuse};
use crate::serial::lines::LineParser;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One blob record per file, with the primary header's keywords as metadata.
    Fits,
    /// One reading per column per row.
    Csv,
    /// One blob record per file.
    Blob,
}

/// What happens to a file once its record is committed to the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AfterRaw {
    Keep,
    Move,
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub enum After {
    /// Left where it is; remembered (by name, size and time) so it is not read again.
    Keep,
    Move(PathBuf),
    Delete,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesConfigRaw {
    pub dir: String,
    pub pattern: Option<String>,
    pub format: FileFormat,
    pub channel: Option<String>,
    pub content_type: Option<String>,
    pub after: Option<AfterRaw>,
    pub move_to: Option<String>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub settle: Option<Duration>,
    pub max_bytes: Option<ByteSize>,
    pub fits_keys: Option<Vec<String>>,
    pub delimiter: Option<String>,
    pub columns: Option<Vec<String>>,
    pub header: Option<bool>,
    pub time_column: Option<String>,
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelRaw>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub simulate_every: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FilesConfig {
    pub dir: PathBuf,
    pub pattern: String,
    pub format: FileFormat,
    /// The channel of a file's blob record (fits, blob).
    pub channel: String,
    pub content_type: String,
    pub after: After,
    pub settle: Duration,
    pub max_bytes: u64,
    /// FITS keywords copied into the record's metadata.
    pub fits_keys: Vec<String>,
    pub csv: Option<CsvSettings>,
    /// A simulated camera PC writes a frame into `dir` this often (fits only).
    pub simulate_every: Option<Duration>,
}

impl FilesConfig {
    /// Makes relative `dir` and `move_to` relative to `base` (the agent's data dir).
    pub fn resolve(&mut self, base: &std::path::Path) {
        if self.dir.is_relative() {
            self.dir = base.join(&self.dir);
        }
        if let After::Move(to) = &mut self.after
            && to.is_relative()
        {
            *to = base.join(&*to);
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CsvSettings {
    pub parser: LineParser,
    /// Skip the first line.
    pub header: bool,
    /// The column holding each row's time (RFC 3339, or seconds since the epoch).
    pub time_column: Option<String>,
}

/// The keywords every FITS record carries when the header has them (NAXIS1..n too).
pub const FITS_KEYS: &[&str] = &[
    "DATE-OBS", "OBJECT", "EXPTIME", "INSTRUME", "TELESCOP", "FILTER", "NAXIS",
];

impl FilesConfigRaw {
    pub fn validate(self) -> Result<FilesConfig, FieldError> {
        let dir = PathBuf::from(&self.dir);
        if self.dir.is_empty() {
            return Err(field_err("dir", "name the directory to watch"));
        }
        let pattern = self.pattern.unwrap_or_else(|| "*".into());
        if pattern.is_empty() || pattern.contains('/') {
            return Err(field_err(
                "pattern",
                "a file-name pattern (* and ?), without '/'",
            ));
        }
        let settle = self.settle.unwrap_or(Duration::from_secs(5));
        if settle < Duration::from_millis(100) || settle > Duration::from_secs(3600) {
            return Err(field_err("settle", "must be between 100ms and 1h"));
        }
        let max_bytes = self.max_bytes.map_or(128 << 20, |b| b.0);
        if !(1..=1 << 30).contains(&max_bytes) {
            return Err(field_err("max_bytes", "must be 1 B to 1 GiB"));
        }
        let after = match (self.after.unwrap_or(AfterRaw::Keep), self.move_to) {
            (AfterRaw::Move, Some(to)) => {
                let to = PathBuf::from(to);
                if to == dir {
                    return Err(field_err("move_to", "must not be the watched directory"));
                }
                After::Move(to)
            }
            (AfterRaw::Move, None) => {
                return Err(field_err("move_to", "after = \"move\" needs move_to"));
            }
            (_, Some(_)) => return Err(field_err("move_to", "applies to after = \"move\"")),
            (AfterRaw::Keep, None) => After::Keep,
            (AfterRaw::Delete, None) => After::Delete,
        };
        let csv_fields = [
            ("delimiter", self.delimiter.is_some()),
            ("columns", self.columns.is_some()),
            ("header", self.header.is_some()),
            ("time_column", self.time_column.is_some()),
            ("channels", !self.channels.is_empty()),
        ];
        if self.format != FileFormat::Csv {
            refuse(&csv_fields, "applies to format = \"csv\" only")?;
        }
        if self.format != FileFormat::Fits && self.fits_keys.is_some() {
            return Err(field_err("fits_keys", "applies to format = \"fits\" only"));
        }
        if let Some(every) = self.simulate_every {
            if self.format != FileFormat::Fits {
                return Err(field_err(
                    "simulate_every",
                    "simulates a FITS camera: format = \"fits\"",
                ));
            }
            if every < Duration::from_secs(1) {
                return Err(field_err("simulate_every", "at least 1s"));
            }
        }
        if self.format == FileFormat::Csv {
            refuse(
                &[
                    ("channel", self.channel.is_some()),
                    ("content_type", self.content_type.is_some()),
                ],
                "does not apply to format = \"csv\" (columns name the channels)",
            )?;
        }
        let mut fits_keys: Vec<String> = FITS_KEYS.iter().map(|k| k.to_string()).collect();
        for k in self.fits_keys.unwrap_or_default() {
            let k = k.trim().to_ascii_uppercase();
            if k.is_empty() || k.len() > 8 {
                return Err(field_err(
                    "fits_keys",
                    &format!("{k:?}: FITS keywords are 1 to 8 characters"),
                ));
            }
            if !fits_keys.contains(&k) {
                fits_keys.push(k);
            }
        }
        let csv = match self.format {
            FileFormat::Csv => {
                let Some(columns) = self.columns else {
                    return Err(field_err("columns", "name each column (\"\" skips one)"));
                };
                if let Some(t) = &self.time_column
                    && !columns.contains(t)
                {
                    return Err(field_err(
                        "time_column",
                        &format!("{t:?} is not one of the columns"),
                    ));
                }
                // The time column is not a channel: it is parsed as text, then as a time.
                let mut channels = self.channels;
                if let Some(t) = &self.time_column {
                    channels.insert(
                        t.clone(),
                        ChannelRaw {
                            value_type: Some(crate::channels::ValueType::Text),
                            ..ChannelRaw::default()
                        },
                    );
                }
                let parser = LineParser::new(
                    None,
                    Some(self.delimiter.unwrap_or_else(|| ",".into())),
                    Some(columns),
                    channels,
                )
                .map_err(|e| FieldError {
                    path: e.path.replace("fields", "columns"),
                    message: e.message,
                })?;
                Some(CsvSettings {
                    parser,
                    header: self.header.unwrap_or(false),
                    time_column: self.time_column,
                })
            }
            _ => None,
        };
        let content_type = self.content_type.unwrap_or_else(|| match self.format {
            FileFormat::Fits => "application/fits".into(),
            _ => "application/octet-stream".into(),
        });
        Ok(FilesConfig {
            dir,
            pattern,
            format: self.format,
            channel: self.channel.unwrap_or_else(|| "file".into()),
            content_type,
            after,
            settle,
            max_bytes,
            fits_keys,
            csv,
            simulate_every: self.simulate_every,
        })
    }
}

/// `*` (any run) and `?` (one character) against a whole file name.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again.
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FilesConfig, FieldError> {
        toml::from_str::<FilesConfigRaw>(s)
            .expect("toml")
            .validate()
    }

    #[test]
    fn a_fits_directory_with_a_move_policy_and_extra_keys() {
        let c = parse(
            "dir = \"/data/in\"\npattern = \"*.fits\"\nformat = \"fits\"\nafter = \"move\"\nmove_to = \"/data/done\"\nfits_keys = [\"airmass\"]\n",
        )
        .expect("valid");
        assert_eq!(c.after, After::Move(PathBuf::from("/data/done")));
        assert_eq!(c.content_type, "application/fits");
        assert!(c.fits_keys.contains(&"AIRMASS".to_string()));
        assert!(c.fits_keys.contains(&"DATE-OBS".to_string()));
        assert_eq!(c.settle, Duration::from_secs(5));
        assert_eq!(c.max_bytes, 128 << 20);
    }

    #[test]
    fn mistakes_name_the_field() {
        for (cfg, path) in [
            ("dir = \"\"\nformat = \"blob\"\n", "dir"),
            (
                "dir = \"/in\"\nformat = \"blob\"\nsimulate_every = \"10s\"\n",
                "simulate_every",
            ),
            (
                "dir = \"/in\"\nformat = \"blob\"\nafter = \"move\"\n",
                "move_to",
            ),
            (
                "dir = \"/in\"\nformat = \"blob\"\nmove_to = \"/x\"\n",
                "move_to",
            ),
            (
                "dir = \"/in\"\nformat = \"blob\"\nafter = \"move\"\nmove_to = \"/in\"\n",
                "move_to",
            ),
            (
                "dir = \"/in\"\nformat = \"blob\"\ncolumns = [\"a\"]\n",
                "columns",
            ),
            (
                "dir = \"/in\"\nformat = \"blob\"\nfits_keys = [\"A\"]\n",
                "fits_keys",
            ),
            (
                "dir = \"/in\"\nformat = \"fits\"\nfits_keys = [\"TOOLONGKEY\"]\n",
                "fits_keys",
            ),
            ("dir = \"/in\"\nformat = \"csv\"\n", "columns"),
            (
                "dir = \"/in\"\nformat = \"csv\"\ncolumns = [\"a\"]\ntime_column = \"t\"\n",
                "time_column",
            ),
            (
                "dir = \"/in\"\nformat = \"csv\"\ncolumns = [\"a\"]\nchannel = \"x\"\n",
                "channel",
            ),
            (
                "dir = \"/in\"\nformat = \"blob\"\npattern = \"a/b\"\n",
                "pattern",
            ),
            (
                "dir = \"/in\"\nformat = \"blob\"\nsettle = \"1ms\"\n",
                "settle",
            ),
        ] {
            let e = parse(cfg).expect_err(cfg);
            assert_eq!(e.path, path, "{cfg}: {e}");
        }
    }

    #[test]
    fn name_patterns() {
        assert!(name_matches("*.fits", "m31_001.fits"));
        assert!(!name_matches("*.fits", "m31_001.fits.tmp"));
        assert!(name_matches("img_??.fit*", "img_07.fits"));
        assert!(!name_matches("img_??.fit*", "img_7.fits"));
        assert!(name_matches("*", "anything"));
        assert!(name_matches("*a*b", "xxaYYb"));
        assert!(!name_matches("*a*b", "xxaYYbc"));
    }
}
