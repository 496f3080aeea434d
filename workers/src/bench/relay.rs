//! A small TCP fault relay (DESIGN §11: "a small in-repo TCP fault proxy; no toxiproxy, no tc
//! netem, no Docker"), put between a process and a server it depends on (the object store in
//! `bench soak`).
//!
//! Duties:
//! 1. Listen on a free 127.0.0.1 port and pass bytes both ways to `upstream` ([`Mode::Pass`]).
//! 2. Turn faults on and off at runtime with [`Relay::set`]:
//!    - [`Mode::Refuse`]: every new connection is closed at once, before a byte passes (the
//!      client sees a reset/EOF, as from a server that is down);
//!    - [`Mode::Cut`]: as `Refuse`, and every open connection is dropped now, mid-request;
//!    - [`Mode::Hang`]: new connections are accepted and never answered; open ones stall;
//!    - [`Mode::Delay`]: every read is held for the given time before it is passed on.
//! 3. Count connections accepted and refused ([`Relay::counts`]) so a report can show the
//!    fault was seen.
//!
//! Guarantees: dropping the [`Relay`] stops the listener and every connection it carries;
//! only 127.0.0.1 is ever listened on; a mode change reaches open connections within one
//! read (they watch the mode).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Bytes passed on per read: big enough for a 128 KiB chunk upload in four reads.
const BUFFER: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Refuse,
    Cut,
    Hang,
    Delay(Duration),
}

pub struct Relay {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// A relay in [`Mode::Pass`] in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watcher) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let (acc, refu) = (accepted.clone(), refused.clone());
        let task = tokio::spawn(async move {
            // Dropped with the task: stopping the relay drops every connection.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let current = *watcher.borrow();
                if matches!(current, Mode::Refuse | Mode::Cut) {
                    refu.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                acc.fetch_add(1, Ordering::Relaxed);
                connections.spawn(carry(client, upstream, watcher.clone()));
            }
        });
        Ok(Self {
            addr,
            mode,
            accepted,
            refused,
            task,
        })
    }

    /// `http://<relay>`: an endpoint URL for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// (connections accepted, connections refused) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection: connect upstream (unless hanging), then pass both ways until either
/// side closes or the mode turns to `Cut`.
async fn carry(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if *mode.borrow() == Mode::Hang {
        // Hold the connection without answering until the mode changes, then drop it.
        let _ = mode.changed().await;
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let cut = {
        let mut mode = mode.clone();
        async move {
            loop {
                if *mode.borrow_and_update() == Mode::Cut {
                    return;
                }
                if mode.changed().await.is_err() {
                    // The relay is gone: wait forever; the task is aborted with it.
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    tokio::select! {
        _ = async {
            tokio::join!(
                pass_on(client_read, server_write, mode.clone()),
                pass_on(server_read, client_write, mode.clone())
            )
        } => {}
        () = cut => {}
    }
}

async fn pass_on(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let current = *mode.borrow();
        match current {
            Mode::Delay(d) => tokio::time::sleep(d).await,
            Mode::Hang => {
                // Stall: hold the bytes until the mode changes away from Hang.
                let mut watcher = mode.clone();
                while *watcher.borrow_and_update() == Mode::Hang {
                    if watcher.changed().await.is_err() {
                        return;
                    }
                }
            }
            Mode::Pass | Mode::Refuse | Mode::Cut => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
