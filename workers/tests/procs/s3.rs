//! The object store of a process-level test, and the faults put around it:
//! - [`S3Server`]: a private s3s-fs on a free port with a temp root, which a test can stop
//!   (SIGKILL: an outage) and start again on the same port and root (the store is back, with
//!   what it held);
//! - [`SlowProxy`]: a TCP proxy that delays every read by a fixed time in both directions, so
//!   that a worker's flushes and archives take long enough for a kill to land inside them.
//!
//! Which s3s-fs, and how it starts: the library tests' support (`tests/support/s3s_fs.rs`,
//! installed once if missing; never a skip).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::s3s_fs;

pub const ACCESS_KEY: &str = "buildlogs-test";
pub const SECRET_KEY: &str = "buildlogs-test-secret";

pub struct S3Server {
    bin: PathBuf,
    /// The data dir: each bucket is a directory in it, each object a file under that.
    root: tempfile::TempDir,
    addr: SocketAddr,
    /// `None` while stopped.
    child: Option<Child>,
}

impl S3Server {
    /// A server on a free port.
    pub fn start() -> Self {
        let bin = s3s_fs::binary();
        let mut root = tempfile::tempdir().expect("temp dir");
        // Another process may take the port between the probe and s3s-fs binding it: retry.
        for _attempt in 0..3 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port");
            let mut server = Self {
                bin: bin.clone(),
                root,
                addr,
                child: None,
            };
            if server.try_start() {
                return server;
            }
            root = server.into_root();
        }
        panic!("s3s-fs exited at start three times ({})", bin.display());
    }

    fn into_root(mut self) -> tempfile::TempDir {
        self.stop();
        // Not moved out through `Drop`: swap in a fresh dir that is dropped with `self`.
        std::mem::replace(&mut self.root, tempfile::tempdir().expect("temp dir"))
    }

    /// Starts s3s-fs on this server's port and root; false if it exited at start.
    fn try_start(&mut self) -> bool {
        self.child = s3s_fs::start(
            &self.bin,
            self.addr,
            self.root.path(),
            ACCESS_KEY,
            SECRET_KEY,
        );
        self.child.is_some()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `AWS_ENDPOINT_URL` for this server.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates bucket `name` (s3s-fs: a directory under the root); its directory.
    pub fn create_bucket(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating bucket dir {}: {e}", dir.display()));
        dir
    }

    /// The outage: SIGKILL, and the port refuses connections once this returns.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The store is back: the same port and root, so every object written before is there.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "s3s-fs is already running");
        assert!(
            self.try_start(),
            "s3s-fs could not listen on {} again (port taken meanwhile?)",
            self.addr
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every regular file under `dir`, as paths relative to it (empty if `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A TCP proxy in front of `upstream` that holds every read for `delay` before passing it on,
/// in both directions: requests to the object store take longer, nothing else changes.
/// Stops (and drops its connections) when dropped.
pub struct SlowProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// Bytes passed on per read: a 128 KiB chunk upload is held 4 times.
const PROXY_BUFFER: usize = 32 * 1024;

impl SlowProxy {
    pub async fn start(upstream: SocketAddr, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            // Dropped with the task: aborting the proxy aborts its connections.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pass_on(client_read, server_write, delay),
                        pass_on(server_read, client_write, delay)
                    );
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, task }
    }

    /// `AWS_ENDPOINT_URL` through the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pass_on(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let mut buf = vec![0u8; PROXY_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
