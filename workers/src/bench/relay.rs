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

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Writes `msg` and reads what comes back: the bytes, or empty once the relay closed.
    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        if s.write_all(msg).await.is_err() {
            return Vec::new();
        }
        let mut buf = vec![0u8; msg.len()];
        match s.read_exact(&mut buf).await {
            Ok(_) => buf,
            Err(_) => Vec::new(),
        }
    }

    #[tokio::test]
    async fn each_mode_does_what_it_says_and_pass_restores_the_path() {
        let relay = Relay::start(echo_server().await).await.expect("relay");
        let mut open = TcpStream::connect(relay.addr).await.expect("connect");
        assert_eq!(round_trip(&mut open, b"pass").await, b"pass");

        relay.set(Mode::Refuse);
        let mut refused = TcpStream::connect(relay.addr).await.expect("connect");
        assert!(round_trip(&mut refused, b"x").await.is_empty(), "refused");
        assert_eq!(
            round_trip(&mut open, b"still").await,
            b"still",
            "open ones pass"
        );

        relay.set(Mode::Cut);
        assert!(
            round_trip(&mut open, b"cut").await.is_empty(),
            "open one cut"
        );

        relay.set(Mode::Hang);
        let mut hung = TcpStream::connect(relay.addr).await.expect("connect");
        hung.write_all(b"hang").await.expect("write");
        // The relay has taken it in (in Hang) before the mode moves on.
        for _ in 0..10_000 {
            if relay.counts().0 == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            relay.counts().0,
            2,
            "the relay accepted the hung connection"
        );
        // Leaving Hang drops the hung connection: nothing was ever echoed on it.
        relay.set(Mode::Delay(Duration::from_millis(10)));
        let mut buf = [0u8; 4];
        assert_eq!(
            hung.read(&mut buf).await.unwrap_or(0),
            0,
            "hung got no answer"
        );

        let mut slow = TcpStream::connect(relay.addr).await.expect("connect");
        assert_eq!(round_trip(&mut slow, b"slow").await, b"slow");
        relay.set(Mode::Pass);
        let mut again = TcpStream::connect(relay.addr).await.expect("connect");
        assert_eq!(round_trip(&mut again, b"back").await, b"back");
        assert_eq!(relay.counts(), (4, 1));
    }
}
