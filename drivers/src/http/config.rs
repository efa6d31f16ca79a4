//! Configuration of an HTTP feed.
//!
//! ```toml
//! [drivers.mpec]
//! kind = "http"
//! url = "https://minorplanetcenter.net/mpec/RecentMPECs.html"
//! interval = "10m"
//! timeout = "30s"
//! max_bytes = 16777216
//! ca_cert = "/etc/skygate/site-ca.pem"   # trusted besides the system bundle
//! content_type = "text/html"            # instead of the server's
//! ```

use std::path::PathBuf;
use std::time::Duration;

use hyper::Uri;
use serde::Deserialize;

use crate::config::{FieldError, duration_opt, field_err};

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfigRaw {
    pub url: String,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    #[schemars(with = "Option<crate::config::DurationText>")]
    pub timeout: Option<Duration>,
    pub max_bytes: Option<usize>,
    pub ca_cert: Option<PathBuf>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub url: Uri,
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub ca_cert: Option<PathBuf>,
    pub content_type: Option<String>,
}

impl HttpConfigRaw {
    pub fn validate(self) -> Result<HttpConfig, FieldError> {
        let url: Uri = self
            .url
            .parse()
            .map_err(|e| field_err("url", &format!("not a URL: {e}")))?;
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(field_err("url", "must start with http:// or https://")),
        };
        let host = url
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| field_err("url", "has no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !https && self.ca_cert.is_some() {
            return Err(field_err("ca_cert", "applies to https:// URLs only"));
        }
        let interval = self.interval.unwrap_or(Duration::from_secs(600));
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(7 * 86_400) {
            return Err(field_err("interval", "must be between 100ms and 7 days"));
        }
        let timeout = self.timeout.unwrap_or(Duration::from_secs(30));
        if timeout.is_zero() || timeout > Duration::from_secs(600) {
            return Err(field_err("timeout", "must be between 1ms and 10m"));
        }
        let max_bytes = self.max_bytes.unwrap_or(16 * 1024 * 1024);
        if !(1..=512 * 1024 * 1024).contains(&max_bytes) {
            return Err(field_err("max_bytes", "must be 1 to 536870912"));
        }
        Ok(HttpConfig {
            url,
            https,
            host,
            port,
            interval,
            timeout,
            max_bytes,
            ca_cert: self.ca_cert,
            content_type: self.content_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HttpConfig, FieldError> {
        toml::from_str::<HttpConfigRaw>(s)
            .expect("parse")
            .validate()
    }

    #[test]
    fn urls_and_limits() {
        let c = parse("url = \"https://minorplanetcenter.net/mpec/RecentMPECs.html\"\n")
            .expect("valid");
        assert_eq!(
            (c.https, c.host.as_str(), c.port),
            (true, "minorplanetcenter.net", 443)
        );
        assert_eq!(c.interval, Duration::from_secs(600));
        let c = parse("url = \"http://[::1]:8080/x\"\ninterval = \"1s\"\n").expect("valid");
        assert_eq!((c.https, c.host.as_str(), c.port), (false, "::1", 8080));
        assert_eq!(
            parse("url = \"ftp://x/y\"\n").expect_err("scheme").path,
            "url"
        );
        assert_eq!(
            parse("url = \"not a url\"\n").expect_err("garbage").path,
            "url"
        );
        assert_eq!(
            parse("url = \"http://x/\"\nca_cert = \"/ca.pem\"\n")
                .expect_err("ca on http")
                .path,
            "ca_cert"
        );
        assert_eq!(
            parse("url = \"http://x/\"\ninterval = \"1ms\"\n")
                .expect_err("interval")
                .path,
            "interval"
        );
    }
}
