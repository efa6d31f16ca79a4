//! FITS primary headers: the keyword cards before the first data unit.
//!
//! A FITS file starts with 80-character ASCII cards in 2880-byte blocks, ending at the
//! `END` card. This reads only that header (bounded by [`MAX_HEADER_BLOCKS`]), never the
//! data, so a 2 GB frame costs a few kilobytes to describe. Values are typed as the
//! standard writes them: quoted strings (with `''` for a quote and the `CONTINUE`
//! long-string convention), logicals `T`/`F`, integers, and reals (`E` or `D` exponents).
//! The first card with a keyword wins; `COMMENT`, `HISTORY` and blank keywords are skipped.

use std::collections::BTreeMap;

pub const CARD: usize = 80;
pub const BLOCK: usize = 2880;
/// A header longer than this (about 36,000 cards) is treated as broken.
pub const MAX_HEADER_BLOCKS: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Text(String),
    Logical(bool),
    Integer(i64),
    Real(f64),
    /// A keyword with an empty value.
    Undefined,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitsError {
    #[error("not a FITS file: the first card is not SIMPLE = T")]
    NotFits,
    #[error("the header has no END card within {0} bytes")]
    NoEnd(usize),
    #[error("card {card} ({keyword}): {why}")]
    BadCard {
        card: usize,
        keyword: String,
        why: String,
    },
}

/// The primary header's keywords and values, in first-seen order of their names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub values: BTreeMap<String, HeaderValue>,
    /// Bytes the header occupies (whole blocks), where the data begins.
    pub size: usize,
}

impl Header {
    pub fn get(&self, keyword: &str) -> Option<&HeaderValue> {
        self.values.get(keyword)
    }
}

/// Parses the primary header at the start of `bytes` (the whole file or just its start).
pub fn parse_header(bytes: &[u8]) -> Result<Header, FitsError> {
    let limit = bytes.len().min(MAX_HEADER_BLOCKS * BLOCK);
    let card_at = |n: usize| -> Result<&str, FitsError> {
        let start = n * CARD;
        if start + CARD > limit {
            return Err(FitsError::NoEnd(limit));
        }
        let card = &bytes[start..start + CARD];
        if !card.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(FitsError::BadCard {
                card: n + 1,
                keyword: String::from_utf8_lossy(&card[..8]).trim().to_string(),
                why: "not printable ASCII".into(),
            });
        }
        // Printable ASCII, checked above: valid UTF-8.
        Ok(std::str::from_utf8(card).unwrap_or_default())
    };
    let mut header = Header::default();
    let mut n = 0;
    loop {
        let card = card_at(n)?;
        let keyword = card[..8].trim_end();
        if n == 0
            && !(keyword == "SIMPLE" && card[8..].trim_start_matches(['=', ' ']).starts_with('T'))
        {
            return Err(FitsError::NotFits);
        }
        n += 1;
        if keyword == "END" {
            header.size = (n * CARD).div_ceil(BLOCK) * BLOCK;
            return Ok(header);
        }
        // Commentary, blank keywords, and CONTINUE cards not after a long string.
        if keyword.is_empty() || &card[8..10] != "= " {
            continue;
        }
        let raw = &card[10..];
        let value = if raw.trim_start().starts_with('\'') {
            let (mut text, mut more) = string_value(raw).map_err(|why| bad(n, keyword, why))?;
            // The long-string convention: `&` at the end, the rest on CONTINUE cards.
            while more && card_at(n).is_ok_and(|c| c.starts_with("CONTINUE")) {
                let next = card_at(n)?;
                n += 1;
                let (part, again) =
                    string_value(&next[8..]).map_err(|why| bad(n, "CONTINUE", why))?;
                text.pop();
                text.push_str(&part);
                more = again;
            }
            HeaderValue::Text(text)
        } else {
            let v = raw.split('/').next().unwrap_or("").trim();
            scalar(v).map_err(|why| bad(n, keyword, why))?
        };
        header.values.entry(keyword.to_string()).or_insert(value);
    }
}

fn bad(card: usize, keyword: &str, why: String) -> FitsError {
    FitsError::BadCard {
        card,
        keyword: keyword.to_string(),
        why,
    }
}

/// A quoted string starting in `raw`: its text (trailing spaces cut, `''` unescaped) and
/// whether it ends with `&` (continued by the next CONTINUE card).
fn string_value(raw: &str) -> Result<(String, bool), String> {
    let s = raw.trim_start();
    let body = s
        .strip_prefix('\'')
        .ok_or("a string must start with a quote")?;
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    loop {
        match chars.next() {
            Some('\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            Some('\'') => break,
            Some(c) => out.push(c),
            None => return Err("the string has no closing quote".into()),
        }
    }
    let text = out.trim_end().to_string();
    let more = text.ends_with('&');
    Ok((text, more))
}

fn scalar(v: &str) -> Result<HeaderValue, String> {
    if v.is_empty() {
        return Ok(HeaderValue::Undefined);
    }
    match v {
        "T" => return Ok(HeaderValue::Logical(true)),
        "F" => return Ok(HeaderValue::Logical(false)),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Ok(HeaderValue::Integer(i));
    }
    let real = v.replace(['D', 'd'], "E");
    match real.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(HeaderValue::Real(f)),
        _ => Err(format!("{v:?} is not a FITS value")),
    }
}

/// Bytes of the primary HDU the header at the start of `bytes` announces (see
/// [`Header::primary_size`]); `None` when the header does not parse or is inconsistent.
pub fn primary_size(bytes: &[u8]) -> Option<u64> {
    parse_header(bytes).ok()?.primary_size()
}

impl Header {
    /// Bytes of the primary HDU: the header blocks plus |BITPIX|/8 x NAXIS1 x ... x NAXISn
    /// bytes of data rounded up to whole blocks (standard 4.4.1.1). `None` when the header
    /// is inconsistent.
    pub fn primary_size(&self) -> Option<u64> {
        let int = |k: &str| match self.get(k) {
            Some(HeaderValue::Integer(v)) => Some(*v),
            _ => None,
        };
        let bitpix = int("BITPIX")?;
        if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
            return None;
        }
        let naxis = int("NAXIS")?;
        if !(0..=999).contains(&naxis) {
            return None;
        }
        let mut elements: u64 = if naxis == 0 { 0 } else { 1 };
        for n in 1..=naxis {
            let len = u64::try_from(int(&format!("NAXIS{n}"))?).ok()?;
            elements = elements.checked_mul(len)?;
        }
        let data = elements.checked_mul(bitpix.unsigned_abs() / 8)?;
        let block = BLOCK as u64;
        (self.size as u64).checked_add(data.div_ceil(block).checked_mul(block)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Headers made of arbitrary cards after a valid SIMPLE card, and plain noise:
        /// parsed or refused, never a panic, and never reading past the input.
        #[test]
        fn no_bytes_make_the_header_parser_panic(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..6000),
            cards in proptest::collection::vec("[ -~]{80}", 0..80),
            end: bool,
        ) {
            let _ = parse_header(&noise);
            let mut h = format!("{:<80}", "SIMPLE  =                    T");
            for c in &cards {
                h.push_str(c);
            }
            if end {
                h.push_str(&format!("{:<80}", "END"));
            }
            let _ = parse_header(h.as_bytes());
        }
    }

    /// A header from cards, padded to whole blocks.
    pub(crate) fn header(cards: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cards {
            out.extend_from_slice(format!("{c:<80}").as_bytes());
        }
        out.extend_from_slice(format!("{:<80}", "END").as_bytes());
        while out.len() % BLOCK != 0 {
            out.push(b' ');
        }
        out
    }

    #[test]
    fn keywords_are_typed_as_the_standard_writes_them() {
        let h = parse_header(&header(&[
            "SIMPLE  =                    T / conforms to FITS standard",
            "BITPIX  =                   16",
            "NAXIS   =                    2",
            "NAXIS1  =                 4096",
            "NAXIS2  =                 4096",
            "OBJECT  = 'M 42    '           / the Orion nebula",
            "OBSERVER= 'O''Neill'",
            "EXPTIME =                120.5",
            "BSCALE  =               1.0D+0",
            "DATE-OBS= '2026-11-22T03:14:15.9'",
            "COMMENT   anything at all",
            "HISTORY   reduced",
            "OBJECT  = 'ignored: the first one wins'",
            "BLANKVAL=",
        ]))
        .expect("valid");
        let v = |k: &str| h.get(k).cloned();
        assert_eq!(v("SIMPLE"), Some(HeaderValue::Logical(true)));
        assert_eq!(v("NAXIS1"), Some(HeaderValue::Integer(4096)));
        assert_eq!(v("OBJECT"), Some(HeaderValue::Text("M 42".into())));
        assert_eq!(v("OBSERVER"), Some(HeaderValue::Text("O'Neill".into())));
        assert_eq!(v("EXPTIME"), Some(HeaderValue::Real(120.5)));
        assert_eq!(v("BSCALE"), Some(HeaderValue::Real(1.0)));
        assert_eq!(
            v("DATE-OBS"),
            Some(HeaderValue::Text("2026-11-22T03:14:15.9".into()))
        );
        assert_eq!(v("BLANKVAL"), Some(HeaderValue::Undefined));
        assert_eq!(v("COMMENT"), None);
        assert_eq!(h.size, BLOCK);
    }

    #[test]
    fn long_strings_continue() {
        let h = parse_header(&header(&[
            "SIMPLE  =                    T",
            "NOTES   = 'first part, &'",
            "CONTINUE  'second part, &'",
            "CONTINUE  'end.'",
            "FILTER  = 'R'",
        ]))
        .expect("valid");
        assert_eq!(
            h.get("NOTES"),
            Some(&HeaderValue::Text("first part, second part, end.".into()))
        );
        assert_eq!(h.get("FILTER"), Some(&HeaderValue::Text("R".into())));
    }

    #[test]
    fn broken_headers_say_what_is_wrong() {
        assert_eq!(parse_header(b"GIF89a"), Err(FitsError::NoEnd(6)));
        let not_fits = header(&["SIMPLE  =                    F"]);
        assert_eq!(parse_header(&not_fits), Err(FitsError::NotFits));
        let mut cut = header(&[
            "SIMPLE  =                    T",
            "NAXIS   =                    0",
        ]);
        cut.truncate(160);
        assert!(matches!(parse_header(&cut), Err(FitsError::NoEnd(_))));
        let e = parse_header(&header(&[
            "SIMPLE  =                    T",
            "EXPTIME = 12,5",
        ]))
        .expect_err("bad value");
        assert!(
            matches!(&e, FitsError::BadCard { card: 2, keyword, .. } if keyword == "EXPTIME"),
            "{e}"
        );
        let e = parse_header(&header(&[
            "SIMPLE  =                    T",
            "OBJECT  = 'M 42",
        ]))
        .expect_err("open quote");
        assert!(e.to_string().contains("closing quote"), "{e}");
        let mut binary = header(&["SIMPLE  =                    T"]);
        binary[90] = 0xff;
        assert!(matches!(
            parse_header(&binary),
            Err(FitsError::BadCard { card: 2, .. })
        ));
    }
}
