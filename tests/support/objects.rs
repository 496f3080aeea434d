//! Object stores for tests, one per test, so tests run in parallel and clean up after themselves:
//! - [`TestObjects::local`]: a temp dir, opened through `file://` URLs;
//! - [`TestObjects::s3`]: a bucket of its own (unique name) on an S3-compatible server, opened
//!   through `s3://` URLs with the credentials and endpoint set in code (never via env vars).
//!
//! Which S3 server, in order:
//! 1. `BUILDLOGS_TEST_S3_ENDPOINT` (+ `_ACCESS_KEY`, `_SECRET_KEY`, `_ROOT`): the s3s-fs that
//!    `.ci/run` starts. s3s-fs keeps each bucket as a directory under its root, so a test creates
//!    its bucket with `mkdir` under `BUILDLOGS_TEST_S3_ROOT` and removes that directory after.
//! 2. Otherwise a private s3s-fs on a free port with a temp root, killed when the value is
//!    dropped ([`s3s_fs`](super::s3s_fs): installed once if missing; never a skip).
//!
//! Include with `#[path = "support/objects.rs"] mod objects_support;`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;

use buildlogs::stores::objects::{ObjectStoreConfig, OpenedStore};
use object_store::aws::AmazonS3ConfigKey;

use super::s3s_fs;

pub struct TestObjects {
    pub kind: &'static str,
    backend: Backend,
}

enum Backend {
    Local {
        dir: tempfile::TempDir,
    },
    S3 {
        endpoint: String,
        access_key: String,
        secret_key: String,
        bucket: String,
        /// The bucket's directory on the server; removed on drop.
        bucket_dir: PathBuf,
        /// A server of this test's own (killed on drop), with its temp root.
        private: Option<(Child, tempfile::TempDir)>,
    },
}

impl TestObjects {
    pub fn local() -> Self {
        Self {
            kind: "local",
            backend: Backend::Local {
                dir: tempfile::tempdir().expect("temp dir"),
            },
        }
    }

    /// A fresh bucket on an S3-compatible server.
    pub fn s3(test: &str) -> Self {
        let bucket = unique_bucket(test);
        let (endpoint, access_key, secret_key, root, private) = if let Ok(endpoint) =
            std::env::var("BUILDLOGS_TEST_S3_ENDPOINT")
        {
            let root = std::env::var("BUILDLOGS_TEST_S3_ROOT")
                .expect("BUILDLOGS_TEST_S3_ROOT (the s3s-fs data dir, where tests create buckets)");
            (
                endpoint,
                env_or("BUILDLOGS_TEST_S3_ACCESS_KEY", "buildlogs-test"),
                env_or("BUILDLOGS_TEST_S3_SECRET_KEY", "buildlogs-test-secret"),
                PathBuf::from(root),
                None,
            )
        } else {
            let root = tempfile::tempdir().expect("temp dir");
            let (access_key, secret_key) = ("buildlogs-test", "buildlogs-test-secret");
            let (child, addr) = start_private(root.path(), access_key, secret_key);
            (
                format!("http://{addr}"),
                access_key.to_owned(),
                secret_key.to_owned(),
                root.path().to_owned(),
                Some((child, root)),
            )
        };
        let bucket_dir = root.join(&bucket);
        std::fs::create_dir(&bucket_dir)
            .unwrap_or_else(|e| panic!("creating bucket dir {}: {e}", bucket_dir.display()));
        Self {
            kind: "s3",
            backend: Backend::S3 {
                endpoint,
                access_key,
                secret_key,
                bucket,
                bucket_dir,
                private,
            },
        }
    }

    /// The `OBJECT_STORE_URL` for key prefix `prefix` ("" for none) in this test's space.
    pub fn url(&self, prefix: &str) -> String {
        match &self.backend {
            Backend::Local { dir } => {
                let path = dir.path().join(prefix);
                format!("file://{}", path.display())
            }
            Backend::S3 { bucket, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// The config for [`Self::url`], with the test server's endpoint and credentials.
    pub fn config(&self, prefix: &str) -> ObjectStoreConfig {
        let config = ObjectStoreConfig::new(Some(&self.url(prefix)), "/nonexistent");
        match &self.backend {
            Backend::Local { .. } => config,
            Backend::S3 {
                endpoint,
                access_key,
                secret_key,
                ..
            } => config
                .with_s3(AmazonS3ConfigKey::Endpoint, endpoint)
                .with_s3(AmazonS3ConfigKey::AccessKeyId, access_key)
                .with_s3(AmazonS3ConfigKey::SecretAccessKey, secret_key)
                .with_s3(AmazonS3ConfigKey::Region, "us-east-1"),
        }
    }

    /// The store for key prefix `prefix`.
    pub fn open(&self, prefix: &str) -> OpenedStore {
        self.config(prefix).open().expect("open test object store")
    }

    /// Multipart uploads begun and neither completed nor aborted, as files on disk: a local
    /// store's staging files (`<key>#<n>`); on s3s-fs, the upload records it keeps in its root
    /// (`.bucket-<base64url bucket>.object-<key>.upload-<id>.metadata.json`, this bucket's only).
    pub fn pending_uploads(&self) -> Vec<String> {
        let mut found = Vec::new();
        match &self.backend {
            Backend::Local { dir } => staging_files(dir.path(), &mut found),
            Backend::S3 {
                bucket, bucket_dir, ..
            } => {
                let root = bucket_dir
                    .parent()
                    .expect("the bucket dir is under the root");
                let mine = format!(".bucket-{}.", base64url(bucket.as_bytes()));
                for entry in std::fs::read_dir(root).expect("s3s-fs root").flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&mine) && name.contains(".upload-") {
                        found.push(name);
                    }
                }
            }
        }
        found.sort();
        found
    }
}

fn staging_files(dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            staging_files(&path, found);
        } else if entry.file_name().to_string_lossy().contains('#') {
            found.push(path.display().to_string());
        }
    }
}

/// Unpadded URL-safe base64, as s3s-fs names its metadata files.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=group.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

impl Drop for TestObjects {
    fn drop(&mut self) {
        if let Backend::S3 {
            bucket_dir,
            private,
            ..
        } = &mut self.backend
        {
            let _ = std::fs::remove_dir_all(&*bucket_dir);
            if let Some((child, _root)) = private {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// S3 bucket names: 3–63 chars of lowercase letters, digits and hyphens.
fn unique_bucket(test: &str) -> String {
    let test: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!(
        "blt-{}-{}",
        test.trim_matches('-'),
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// A private s3s-fs on a free port. Another process can take the port between our probe and
/// s3s-fs binding it, so a server that exits at start is retried on another port.
fn start_private(root: &Path, access_key: &str, secret_key: &str) -> (Child, std::net::SocketAddr) {
    let bin = s3s_fs::binary();
    for _attempt in 0..3 {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        if let Some(child) = s3s_fs::start(&bin, addr, root, access_key, secret_key) {
            return (child, addr);
        }
    }
    panic!("s3s-fs exited at start three times ({})", bin.display());
}
