//! The portable alphabet of names.

/// Names of gateways, drivers, sinks and streams end up in object keys, topics and file
/// names: keep them to a portable alphabet.
pub fn validate_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 {
        return Err(format!("name {s:?} must be 1 to 128 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "name {s:?} contains {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    if s.starts_with('.') {
        return Err(format!("name {s:?} must not start with '.'"));
    }
    Ok(())
}
