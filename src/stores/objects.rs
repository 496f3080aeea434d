//! The object store: where flushed chunks and archived logs live (`OBJECT_STORE_URL`).
//!
//! Duties:
//! 1. Open the store an `OBJECT_STORE_URL` names ([`ObjectStoreConfig::open`]):
//!    - `file:///abs/path`: a local folder (created if missing). With no URL at all, the embedded
//!      default is `<data dir>/objects`.
//!    - `s3://bucket/prefix`: S3 or an S3-compatible server, configured from the usual `AWS_*`
//!      env vars (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//!      …). With an endpoint set, requests are path-style (`http://host/bucket/key`), and plain
//!      `http://` endpoints are allowed.
//! 2. Keep object keys relative: the returned store prepends the URL's prefix (a
//!    [`PrefixStore`]), so two deployments sharing a bucket under different prefixes never see
//!    each other's objects, and callers build keys without knowing the prefix.
//! 3. Hand the store to the domain as its [`ObjectStorage`] seam
//!    ([`ObjectStoreBackend`](super::object_store_backend::ObjectStoreBackend)); what the
//!    domain may do with it, and what every store guarantees, is said in `traces::objects`.
//!
//! Limits:
//! - A multipart upload is invisible until it completes: S3 keeps an unfinished upload, a
//!   local folder a staging file renamed on completion.
//! - Requests fail fast: few retries with short backoff, a 5 s connect and 60 s request timeout.
//!   Long outages are the job system's business (a failed flush or archive is retried by its
//!   job, hours later if need be), so a request never holds a worker slot for minutes.
//! - The bucket must exist: nothing here creates buckets.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use super::object_store_backend::ObjectStoreBackend;
use crate::redact::url as redact;
use crate::traces::objects::ObjectStorage;

/// The setting's name, as operators know it; every URL error names it.
pub const URL_SETTING: &str = "OBJECT_STORE_URL";

/// Where the embedded default keeps objects, under the data dir (next to the SQLite file).
pub const DEFAULT_DIR: &str = "objects";

/// An unreachable host should fail the attempt quickly; the job retries later.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Long enough for one multipart part (5 MiB) on a slow link, short enough that a hung server
/// frees the worker slot within a minute.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Rides out a dropped connection or a single 503; anything longer is an outage the job
/// system retries with its own (much longer) backoff.
pub const DEFAULT_MAX_RETRIES: usize = 2;

/// Bounds the time one call spends retrying, whatever `max_retries` says.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    #[error("{URL_SETTING} {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{URL_SETTING} {url:?}: unsupported scheme {scheme:?} (expected file:// or s3://)")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("{URL_SETTING}: object store directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{URL_SETTING} {url:?}: {source}")]
    Open {
        url: String,
        source: object_store::Error,
    },
}

/// How to open the object store. Built by the binary from settings, or in code by tests.
#[derive(Clone)]
pub struct ObjectStoreConfig {
    /// `file:///abs/path` or `s3://bucket/prefix`; `None`: `<data_dir>/objects`.
    pub url: Option<String>,
    /// The data dir, for the embedded default.
    pub data_dir: PathBuf,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry: RetryConfig,
    /// S3 settings applied over those read from `AWS_*` env vars (tests use this instead of
    /// the process environment). Values may be secrets: `Debug` does not print them.
    pub s3_overrides: Vec<(AmazonS3ConfigKey, String)>,
}

impl fmt::Debug for ObjectStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let overrides: Vec<String> = self
            .s3_overrides
            .iter()
            .map(|(key, _)| format!("{}=<redacted>", key.as_ref()))
            .collect();
        f.debug_struct("ObjectStoreConfig")
            .field("url", &self.url.as_deref().map(redact))
            .field("data_dir", &self.data_dir)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("s3_overrides", &overrides)
            .finish()
    }
}

impl ObjectStoreConfig {
    /// The defaults above for `url` (or the embedded default when `None`).
    pub fn new(url: Option<&str>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: url.map(str::to_owned),
            data_dir: data_dir.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry: RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: DEFAULT_MAX_RETRIES,
                retry_timeout: DEFAULT_RETRY_TIMEOUT,
            },
            s3_overrides: Vec::new(),
        }
    }

    /// Adds an S3 setting over the env's (e.g. `AmazonS3ConfigKey::Endpoint`).
    pub fn with_s3(mut self, key: AmazonS3ConfigKey, value: impl Into<String>) -> Self {
        self.s3_overrides.push((key, value.into()));
        self
    }

    /// Opens the store. No request is made: a wrong bucket or credentials show on first use.
    pub fn open(&self) -> Result<OpenedStore, ObjectStoreError> {
        match self.url.as_deref() {
            None => open_local(&self.data_dir.join(DEFAULT_DIR), "(default)"),
            Some(url) => match parse_url(url)? {
                Location::Local(dir) => open_local(&dir, url),
                Location::S3 { bucket, prefix } => self.open_s3(url, &bucket, prefix),
            },
        }
    }

    fn open_s3(
        &self,
        url: &str,
        bucket: &str,
        prefix: Path,
    ) -> Result<OpenedStore, ObjectStoreError> {
        let mut builder = AmazonS3Builder::from_env();
        for (key, value) in &self.s3_overrides {
            builder = builder.with_config(*key, value);
        }
        builder = builder
            .with_bucket_name(bucket)
            .with_retry(self.retry.clone())
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                duration_setting(self.connect_timeout),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                duration_setting(self.request_timeout),
            );
        if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
            // S3-compatible servers (s3s, MinIO, Ceph) rarely resolve bucket subdomains.
            builder = builder.with_virtual_hosted_style_request(false);
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        let s3 = builder.build().map_err(|source| ObjectStoreError::Open {
            url: redact(url),
            source,
        })?;
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix.clone()))
        };
        Ok(OpenedStore::new(store, prefix, redact(url)))
    }
}

/// Opens the store `url` names (`None`: `<data_dir>/objects`), with the default timeouts and
/// retries and S3 settings from the environment.
pub fn open_object_store(
    url: Option<&str>,
    data_dir: &FsPath,
) -> Result<OpenedStore, ObjectStoreError> {
    ObjectStoreConfig::new(url, data_dir).open()
}

/// An open object store. Keys given to `store` are relative to the URL's prefix, which the
/// store prepends itself: never add `prefix` to a key.
#[derive(Clone)]
pub struct OpenedStore {
    /// The store as the domain uses it.
    pub store: Arc<dyn ObjectStorage>,
    /// The same store through object_store's whole API (list, head, …), for tests that check
    /// what is stored; the product never needs more than `store`.
    #[cfg(feature = "testing")]
    pub raw: Arc<dyn ObjectStore>,
    /// The key prefix inside the bucket (empty for a local folder): for logs and metrics.
    pub prefix: Path,
    /// The URL, credentials removed: for logs.
    pub description: String,
}

impl OpenedStore {
    fn new(store: Arc<dyn ObjectStore>, prefix: Path, description: String) -> Self {
        Self {
            store: Arc::new(ObjectStoreBackend::new(store.clone())),
            #[cfg(feature = "testing")]
            raw: store,
            prefix,
            description,
        }
    }
}

impl fmt::Debug for OpenedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedStore")
            .field("store", &self.store)
            .field("prefix", &self.prefix.as_ref())
            .field("description", &self.description)
            .finish()
    }
}

enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: Path },
}

fn parse_url(raw: &str) -> Result<Location, ObjectStoreError> {
    let invalid = |reason: &str| ObjectStoreError::InvalidUrl {
        url: redact(raw),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(raw).map_err(|e| {
        invalid(&format!(
            "not a URL ({e}); expected file:///abs/path or s3://bucket/prefix"
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials do not belong in the URL; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query string or fragment is not supported"));
    }
    match url.scheme() {
        "file" => {
            if !raw.starts_with("file://") {
                return Err(invalid("expected an absolute path: file:///abs/path"));
            }
            if url
                .host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(invalid(
                    "a file URL names a local absolute path: file:///abs/path (three slashes)",
                ));
            }
            let path = url
                .to_file_path()
                .map_err(|()| invalid("expected an absolute path: file:///abs/path"))?;
            if path == FsPath::new("/") {
                return Err(invalid("refusing the filesystem root as the object store"));
            }
            Ok(Location::Local(path))
        }
        "s3" => {
            let bucket = url.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(invalid("missing bucket: expected s3://bucket/prefix"));
            }
            if url.port().is_some() {
                return Err(invalid(
                    "s3://bucket/prefix takes no port; set AWS_ENDPOINT_URL for a custom server",
                ));
            }
            let raw_prefix = url.path().trim_matches('/');
            let prefix = Path::parse(raw_prefix)
                .map_err(|e| invalid(&format!("invalid key prefix {raw_prefix:?} ({e})")))?;
            Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix,
            })
        }
        other => Err(ObjectStoreError::UnsupportedScheme {
            url: redact(raw),
            scheme: other.to_owned(),
        }),
    }
}

fn open_local(dir: &FsPath, url: &str) -> Result<OpenedStore, ObjectStoreError> {
    std::fs::create_dir_all(dir).map_err(|source| ObjectStoreError::Directory {
        path: dir.to_owned(),
        source,
    })?;
    let local = LocalFileSystem::new_with_prefix(dir)
        .map_err(|source| ObjectStoreError::Open {
            url: redact(url),
            source,
        })?
        // Deleting the last object of a folder removes the folder: old logs leave no tree behind.
        .with_automatic_cleanup(true);
    Ok(OpenedStore::new(
        Arc::new(local),
        Path::default(),
        format!("file://{}", dir.display()),
    ))
}

/// A duration as object_store's config strings take it (humantime).
fn duration_setting(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match ObjectStoreConfig::new(Some(url), "/nonexistent").open() {
            Ok(_) => panic!("{url} should be rejected"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn malformed_urls_name_the_setting_and_the_problem() {
        assert!(err("gs://bucket/x").contains("unsupported scheme \"gs\""));
        assert!(err("not a url").contains("not a URL"));
        assert!(err("s3:///prefix").contains("missing bucket"));
        assert!(err("file://host/x").contains("three slashes"));
        assert!(err("s3://b/p?x=1").contains("query"));
        for url in ["gs://b", "nope", "s3:///p", "file://h/x"] {
            assert!(err(url).starts_with(URL_SETTING), "{}", err(url));
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_and_never_echoed() {
        let message = err("s3://AKIA:topsecret@bucket/p");
        assert!(message.contains("credentials"), "{message}");
        assert!(!message.contains("topsecret"), "{message}");
    }

    #[test]
    fn query_strings_in_the_url_are_never_echoed() {
        for url in [
            "s3://bucket/p?aws_secret_access_key=hunter2",
            "gs://bucket/p?X-Goog-Signature=hunter2",
            "s3://bucket/p#hunter2",
        ] {
            let message = err(url);
            assert!(message.starts_with(URL_SETTING), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn s3_url_splits_into_bucket_and_prefix() {
        match parse_url("s3://logs/prod/eu/") {
            Ok(Location::S3 { bucket, prefix }) => {
                assert_eq!(bucket, "logs");
                assert_eq!(prefix.as_ref(), "prod/eu");
            }
            _ => panic!("expected s3"),
        }
    }
}
