//! The S3-compatible test server, s3s-fs: which binary, installed once when missing, and
//! starting a private one. Shared by the library's tests (`objects.rs`) and the process-level
//! tests and soak of `workers/tests/` (included there by `#[path]`).
//!
//! Which binary: `BUILDLOGS_S3S_FS_BIN`, else the cache path `.ci/run` installs to
//! (`${CARGO_HOME:-$HOME/.cargo}/s3s-fs-<version>/bin/s3s-fs`). When neither exists, the first
//! test that needs it runs `cargo install` into the cache path (about 2–5 minutes on this
//! 2-core machine, once per machine) under a file lock, so parallel test binaries wait for one
//! install instead of starting their own. A test never skips its S3 variant: if s3s-fs cannot
//! be installed it fails and says how to provide one.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The s3s-fs version the tests, `.ci/run` and the soak use (0.17 needs rustc 1.96): pinned once,
/// in `scripts/s3s-fs.version`.
pub const VERSION: &str = include_str!("../../scripts/s3s-fs.version").trim_ascii();

/// How long a freshly started s3s-fs gets to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The s3s-fs binary, installed first if missing. Panics with what to do when it cannot be.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let path = configured_path();
            if !path.is_file() {
                install(&path);
            }
            path
        })
        .clone()
}

/// `BUILDLOGS_S3S_FS_BIN`, else the cache path.
fn configured_path() -> PathBuf {
    std::env::var_os("BUILDLOGS_S3S_FS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(cache_path)
}

/// Where `.ci/run` and [`binary`] install s3s-fs.
pub fn cache_path() -> PathBuf {
    install_root().join("bin/s3s-fs")
}

fn install_root() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"));
    cargo_home.join(format!("s3s-fs-{VERSION}"))
}

/// `cargo install`s s3s-fs into the cache path, one process at a time.
fn install(wanted: &Path) {
    let how = format!(
        "install it with `cargo install s3s-fs --version {VERSION} --locked --features binary \
         --root {}`, point BUILDLOGS_S3S_FS_BIN at one, or run `bash .ci/run`",
        install_root().display()
    );
    if *wanted != cache_path() {
        panic!(
            "no s3s-fs at BUILDLOGS_S3S_FS_BIN={}: {how}",
            wanted.display()
        );
    }
    let root = install_root();
    std::fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("creating {}: {e}; {how}", root.display()));
    let lock = std::fs::File::create(root.join(".install.lock"))
        .unwrap_or_else(|e| panic!("creating the install lock in {}: {e}", root.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("locking the s3s-fs install: {e}"));
    // Another test binary may have installed it while this one waited for the lock.
    if wanted.is_file() {
        return;
    }
    eprintln!(
        "installing s3s-fs {VERSION} into {} (once per machine; the S3 tests wait)",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["install", "s3s-fs", "--version", VERSION, "--locked"])
        .args(["--features", "binary", "--quiet", "--root"])
        .arg(&root)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running cargo install s3s-fs: {e}; {how}"));
    assert!(
        status.success() && wanted.is_file(),
        "cargo install s3s-fs failed ({status}); {how}"
    );
}

/// Starts `bin` on `addr` with data dir `root`; returns once it accepts connections, or `None`
/// if it exited at start (another process took the port between the caller's probe and the
/// bind: pick another port and try again).
pub fn start(
    bin: &Path,
    addr: SocketAddr,
    root: &Path,
    access_key: &str,
    secret_key: &str,
) -> Option<Child> {
    let mut child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--access-key", access_key, "--secret-key", secret_key])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Some(child);
        }
        if let Ok(Some(_exited)) = child.try_wait() {
            return None;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("s3s-fs did not listen on {addr} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
