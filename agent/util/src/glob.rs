//! Glob patterns of stream and source names (`weather*`, `gps?`).

/// Glob match with `*` (any run, possibly empty) and `?` (one character).
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_prefixes_suffixes_and_single_characters() {
        assert!(glob_match("*", "weather"));
        assert!(glob_match("weather*", "weather.mast2"));
        assert!(glob_match("*.frames", "allsky.frames"));
        assert!(glob_match("gps?", "gps1"));
        assert!(!glob_match("gps?", "gps"));
        assert!(!glob_match("weather", "weather2"));
    }
}
