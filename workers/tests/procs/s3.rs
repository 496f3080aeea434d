//! The object store of a process-level test, and the faults put around it:
//! - [`S3Server`]: a private s3s-fs on a free port with a temp root, which a test can stop
//!   (SIGKILL: an outage) and start again on the same port and root (the store is back, with
//!   what it held);
//! - [`SlowProxy`]: a TCP proxy that delays every read by a fixed time in both directions, so
//!   that a worker's flushes and archives take long enough for a kill to land inside them.
//!
//! Which s3s-fs: `BUILDLOGS_S3S_FS_BIN`, else where `.ci/run` installs it
//! (`${CARGO_HOME:-$HOME/.cargo}/s3s-fs-<version>/bin/s3s-fs`). Without one the scenarios are
//! skipped with a loud message, except under CI (`CI` set), where that is a failure — as
//! `tests/support/objects.rs` does for the library's tests.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// The s3s-fs version `.ci/run` installs.
const S3S_FS_VERSION: &str = "0.14.1";

pub const ACCESS_KEY: &str = "buildlogs-test";
pub const SECRET_KEY: &str = "buildlogs-test-secret";

/// How long s3s-fs gets to listen after a start.
const START_TIMEOUT: Duration = Duration::from_secs(15);

pub struct S3Server {
    bin: PathBuf,
    /// The data dir: each bucket is a directory in it, each object a file under that.
    root: tempfile::TempDir,
    addr: SocketAddr,
    /// `None` while stopped.
    child: Option<Child>,
}

impl S3Server {
    /// A server on a free port; `None` (after a loud message) without an s3s-fs outside CI.
    pub fn start(test: &str) -> Option<Self> {
        let bin = binary_path();
        if !bin.is_file() {
            let message = format!(
                "no s3s-fs at {} (set BUILDLOGS_S3S_FS_BIN or run bash .ci/run once)",
                bin.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("{message}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!! SKIPPING {test}: {message} !!!!!\n"
            );
            return None;
        }
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
                return Some(server);
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
        let mut child = Command::new(&self.bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(_exited)) = child.try_wait() {
                return false;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "s3s-fs did not listen on {} within {START_TIMEOUT:?}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

fn binary_path() -> PathBuf {
    if let Some(bin) = std::env::var_os("BUILDLOGS_S3S_FS_BIN") {
        return PathBuf::from(bin);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"));
    cargo_home
        .join(format!("s3s-fs-{S3S_FS_VERSION}"))
        .join("bin/s3s-fs")
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
