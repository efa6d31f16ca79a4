//! Configuration of a bucket sink: one implementation, the backend chosen by the URL.
//!
//! ```toml
//! [sinks.archive]
//! kind = "bucket"
//! url = "s3://obs-archive"          # s3://BUCKET, gs://BUCKET, az://CONTAINER, file:///DIR
//! # dir = "bucket"                  # or a local directory (relative: below the data dir)
//! prefix = "skygate"                # key prefix inside the bucket
//! endpoint = "https://s3.site:9000" # S3-compatible store, Azurite, a GCS emulator
//! region = "eu-west-1"              # S3
//! ca_cert = "/etc/skygate/site-ca.pem"   # trusted besides the system roots
//! credentials_file = "/etc/skygate/archive.creds"
//! multipart_threshold = "16MiB"     # larger objects go up in parts
//! part_size = "8MiB"
//! ```
//!
//! Credentials come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as the cloud
//! SDKs read them) and from `credentials_file`: `key = value` lines with object_store's
//! configuration keys, e.g. `aws_access_key_id`/`aws_secret_access_key`,
//! `google_service_account`, `azure_storage_account_name`/`azure_storage_account_key`.
//! Never from this file: a secret in the config would end up in backups and support
//! bundles. The credentials file is read when the store is opened, so a rotated key is
//! picked up at the next reconnect.

use std::path::PathBuf;

use serde::Deserialize;
use skygate_drivers::FieldError;
use skygate_drivers::config::{ByteSize, field_err};

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketSinkRaw {
    pub url: Option<String>,
    pub dir: Option<PathBuf>,
    pub prefix: Option<String>,
    pub compression_level: Option<i32>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub credentials_file: Option<PathBuf>,
    pub multipart_threshold: Option<ByteSize>,
    pub part_size: Option<ByteSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Gcs,
    Azure,
}

/// A cloud (or cloud-compatible) bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudBucket {
    pub cloud: Cloud,
    /// `s3://bucket`, `gs://bucket`, `az://container`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BucketTarget {
    /// A directory: absolute, or relative to the data directory (resolved at start).
    Dir(PathBuf),
    Cloud(CloudBucket),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BucketSinkSettings {
    pub target: BucketTarget,
    pub prefix: String,
    pub compression_level: i32,
    pub multipart_threshold: u64,
    pub part_size: u64,
}

/// S3 refuses parts under 5 MiB (but the last).
const MIN_PART: u64 = 5 * 1024 * 1024;

impl BucketSinkRaw {
    pub fn validate(self) -> Result<BucketSinkSettings, FieldError> {
        let cloud_only = [
            ("endpoint", self.endpoint.is_some()),
            ("region", self.region.is_some()),
            ("ca_cert", self.ca_cert.is_some()),
            ("credentials_file", self.credentials_file.is_some()),
        ];
        let target = match (self.url, self.dir) {
            (Some(_), Some(_)) => {
                return Err(field_err("dir", "give either `url` or `dir`, not both"));
            }
            (None, dir) => BucketTarget::Dir(dir.unwrap_or_else(|| PathBuf::from("bucket"))),
            (Some(url), None) => {
                let (scheme, rest) = url.split_once("://").ok_or_else(|| {
                    field_err("url", &format!("{url:?} is not a URL; use s3://BUCKET, gs://BUCKET, az://CONTAINER or file:///DIR"))
                })?;
                if scheme == "file" {
                    if !rest.starts_with('/') {
                        return Err(field_err(
                            "url",
                            "file:// needs an absolute path: file:///var/lib/skygate/archive",
                        ));
                    }
                    BucketTarget::Dir(PathBuf::from(rest))
                } else {
                    let cloud = match scheme {
                        "s3" | "s3a" => Cloud::S3,
                        "gs" => Cloud::Gcs,
                        "az" | "azure" | "abfs" => Cloud::Azure,
                        other => {
                            return Err(field_err(
                                "url",
                                &format!(
                                    "unknown scheme {other:?}; use s3://, gs://, az:// or file://"
                                ),
                            ));
                        }
                    };
                    let bucket = rest.trim_end_matches('/');
                    if bucket.is_empty() {
                        return Err(field_err("url", "names no bucket"));
                    }
                    if bucket.contains('/') {
                        return Err(field_err(
                            "url",
                            "must name only the bucket; put the path inside it in `prefix`",
                        ));
                    }
                    if let Some(e) = &self.endpoint
                        && !(e.starts_with("http://") || e.starts_with("https://"))
                    {
                        return Err(field_err("endpoint", "must start with http:// or https://"));
                    }
                    BucketTarget::Cloud(CloudBucket {
                        cloud,
                        url: format!("{scheme}://{bucket}"),
                        endpoint: self.endpoint,
                        region: self.region,
                        ca_cert: self.ca_cert,
                        credentials_file: self.credentials_file,
                    })
                }
            }
        };
        if matches!(target, BucketTarget::Dir(_)) {
            skygate_drivers::config::refuse(
                &cloud_only,
                "applies to cloud buckets (s3://, gs://, az://), not a local directory",
            )?;
        }
        let prefix = self.prefix.unwrap_or_else(|| "skygate".to_string());
        if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
            return Err(field_err(
                "prefix",
                &format!("{prefix:?} must not start or end with '/' or contain '//'"),
            ));
        }
        let compression_level = match self.compression_level {
            Some(l) if !(1..=19).contains(&l) => {
                return Err(field_err("compression_level", "must be 1 to 19"));
            }
            Some(l) => l,
            None => 3,
        };
        let part_size = self.part_size.map_or(8 * 1024 * 1024, |b| b.0);
        if !(MIN_PART..=1024 * 1024 * 1024).contains(&part_size) {
            return Err(field_err("part_size", "must be between 5MiB and 1GiB"));
        }
        let multipart_threshold = self.multipart_threshold.map_or(16 * 1024 * 1024, |b| b.0);
        if multipart_threshold < part_size {
            return Err(field_err(
                "multipart_threshold",
                "must be at least part_size",
            ));
        }
        Ok(BucketSinkSettings {
            target,
            prefix,
            compression_level,
            multipart_threshold,
            part_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BucketSinkSettings, FieldError> {
        toml::from_str::<BucketSinkRaw>(text)
            .expect("parse")
            .validate()
    }

    #[test]
    fn the_url_picks_the_backend_and_mistakes_name_their_field() {
        let s = parse("url = \"s3://arch\"\nendpoint = \"http://127.0.0.1:9000\"").expect("valid");
        let BucketTarget::Cloud(c) = s.target else {
            panic!("cloud")
        };
        assert_eq!((c.cloud, c.url.as_str()), (Cloud::S3, "s3://arch"));
        assert!(matches!(
            parse("url = \"gs://b\"").expect("gs").target,
            BucketTarget::Cloud(CloudBucket {
                cloud: Cloud::Gcs,
                ..
            })
        ));
        assert!(matches!(
            parse("url = \"az://c\"").expect("az").target,
            BucketTarget::Cloud(CloudBucket {
                cloud: Cloud::Azure,
                ..
            })
        ));
        assert_eq!(
            parse("url = \"file:///srv/a\"").expect("file").target,
            BucketTarget::Dir("/srv/a".into())
        );
        assert_eq!(
            parse("").expect("default").target,
            BucketTarget::Dir("bucket".into())
        );
        assert_eq!(parse("url = \"ftp://x\"").unwrap_err().path, "url");
        assert_eq!(parse("url = \"s3://b/path\"").unwrap_err().path, "url");
        assert_eq!(
            parse("dir = \"d\"\nendpoint = \"http://x\"")
                .unwrap_err()
                .path,
            "endpoint"
        );
        assert_eq!(
            parse("url = \"s3://b\"\nendpoint = \"x:1\"")
                .unwrap_err()
                .path,
            "endpoint"
        );
        assert_eq!(parse("part_size = \"1MiB\"").unwrap_err().path, "part_size");
        assert_eq!(parse("prefix = \"/a\"").unwrap_err().path, "prefix");
    }
}
