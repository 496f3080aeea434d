//! The web process's HTTP/1.1 server: the router behind timeouts and a connection cap.
//!
//! Duties:
//! 1. Accept at most `max_connections` connections at once: at the cap the process stops
//!    accepting, and new connections wait in the listen backlog (the kernel's queue) until one
//!    closes; memory and file descriptors stay bounded however many clients come.
//! 2. Close a connection whose request headers take longer than `header_timeout` (from its
//!    first byte, or from the connection's opening for its first request): a slow-headers
//!    client (slowloris) holds a place for that long at most.
//! 3. Answer `408` (and close) when a request body stops arriving for `body_timeout` (between
//!    two pieces of it, tower-http's body timeout).
//! 4. Close a keep-alive connection that waits for its next request longer than
//!    `idle_timeout`, and a connection whose response nobody reads (writes stalled) for that
//!    long. A response that takes its time (a trace stream) is not idle: it writes keep-alive
//!    comments every 15 s.
//! 5. Graceful shutdown: on `shutdown`, stop accepting, let every connection finish its
//!    request in flight (trace streams end on the same token) for at most `shutdown_timeout`,
//!    then return (the process exits and drops what is still open: a reader of a big log
//!    retries its `Range`, a runner its PATCH).
//!
//! Why not `axum::serve`: it has no header, body or idle timeout and no connection cap.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Default headers deadline: generous for any real client on a slow link, short for a
/// slowloris.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default wait between two pieces of a request body: a 4 MiB PATCH on a slow link sends a
/// piece every few milliseconds; a client silent this long is gone.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default keep-alive wait for the next request: above GitLab Runner's 60 s PATCH interval
/// (and nginx's 75 s), so an idle runner keeps its connection between PATCHes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Default connections per web process: above the append benchmark's 1,000 runners, each on
/// its own keep-alive connection; each costs a file descriptor (raise `ulimit -n` past it) and
/// a few KiB.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 2048;

/// Default time open requests get after SIGTERM: inside a 30 s termination grace period
/// (Kubernetes' default), long enough for any PATCH or PUT in flight.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
    pub shutdown_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then waits for open connections to finish (at
/// most `limits.shutdown_timeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let max = limits.max_connections.max(1);
    let places = Arc::new(Semaphore::new(max as usize));
    loop {
        let place = tokio::select! {
            place = places.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(stream, app, limits, shutdown).await;
            drop(place);
        });
    }
    drop(listener);
    // Every place back: every connection closed — or the shutdown timeout.
    if tokio::time::timeout(limits.shutdown_timeout, places.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!(
            open = max as usize - places.available_permits(),
            "connections still open at the shutdown timeout; closing them"
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let phase = Arc::new(Mutex::new(Shared {
        phase: Phase::Head {
            deadline: Instant::now() + limits.header_timeout,
        },
        requests: 0,
        reader: None,
    }));
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: phase.clone(),
        limits,
        read_timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        write_timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        write_stalled_since: None,
    });
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let number = request_started(&phase);
        let done = RequestDone(phase.clone(), number);
        let request = request.map(|body| {
            Body::new(tower_http::timeout::TimeoutBody::new(
                limits.body_timeout,
                body,
            ))
        });
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap_or_else(|e| match e {});
            Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _done: done })))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // Ours (the `Watched` phases) tells headers from keep-alive idling; hyper's would
        // count the idle wait as header time.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Where a connection is, for its timers.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request's headers until `deadline`.
    Head { deadline: Instant },
    /// A request is being served: its body has its own timeout, its response writes.
    InFlight,
    /// Keep-alive: the last response ended at `since`; no byte of the next request yet.
    Idle { since: Instant },
}

/// A connection's phase, and the reader waiting on the socket while a request was in flight
/// (no deadline then): woken when the phase changes, so the new deadline applies.
#[derive(Debug)]
struct Shared {
    phase: Phase,
    /// Requests started on the connection: a response body dropped after the next request
    /// started (hyper may drop it late) must not mark that one idle.
    requests: u64,
    reader: Option<Waker>,
}

fn set_phase(shared: &Mutex<Shared>, to: Phase) {
    if let Ok(mut s) = shared.lock() {
        s.phase = to;
        if let Some(waker) = s.reader.take() {
            waker.wake();
        }
    }
}

/// A request starts: the connection is in flight; its number.
fn request_started(shared: &Mutex<Shared>) -> u64 {
    match shared.lock() {
        Ok(mut s) => {
            s.requests += 1;
            s.phase = Phase::InFlight;
            s.requests
        }
        Err(_) => 0,
    }
}

/// Ends request number `.1`'s phase when its response body is done (or dropped), unless a
/// later request has started since.
struct RequestDone(Arc<Mutex<Shared>>, u64);

impl Drop for RequestDone {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock()
            && s.requests == self.1
        {
            s.phase = Phase::Idle {
                since: Instant::now(),
            };
            if let Some(waker) = s.reader.take() {
                waker.wake();
            }
        }
    }
}

/// A response body that marks the connection idle once it is dropped.
struct Tracked {
    body: Body,
    _done: RequestDone,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket, with the header, idle and stalled-write deadlines: past one, reads or writes
/// fail with `TimedOut` and hyper closes the connection.
struct Watched {
    inner: TcpStream,
    phase: Arc<Mutex<Shared>>,
    limits: ServerLimits,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    write_stalled_since: Option<Instant>,
}

impl Watched {
    /// The phase; while a request is in flight, `cx` is woken when it changes.
    fn phase(&self, cx: &mut Context<'_>) -> Phase {
        match self.phase.lock() {
            Ok(mut s) => {
                if let Phase::InFlight = s.phase {
                    s.reader = Some(cx.waker().clone());
                }
                s.phase
            }
            Err(_) => Phase::InFlight,
        }
    }

    /// After a write returned `Pending`: an error once writes have stalled `idle_timeout`
    /// (the client stopped reading), else `Pending` (the timer wakes the task then).
    fn write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let since = *self.write_stalled_since.get_or_insert_with(Instant::now);
        if expired(&mut self.write_timer, since + self.limits.idle_timeout, cx) {
            tracing::debug!("closing a connection whose client stopped reading");
            return Poll::Ready(Err(timed_out("response not read")));
        }
        Poll::Pending
    }
}

/// Whether `deadline` has passed; if not, `timer` wakes the task then.
fn expired(timer: &mut Pin<Box<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx).is_ready()
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && let Phase::Idle { .. } = self.phase(cx)
                {
                    // The first byte of the next request: its headers' deadline starts.
                    let deadline = Instant::now() + self.limits.header_timeout;
                    set_phase(&self.phase, Phase::Head { deadline });
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = match self.phase(cx) {
                    Phase::Head { deadline } => Some((deadline, "request headers timed out")),
                    Phase::Idle { since } => Some((
                        since + self.limits.idle_timeout,
                        "idle connection timed out",
                    )),
                    Phase::InFlight => None,
                };
                let this = &mut *self;
                match deadline {
                    Some((deadline, what)) if expired(&mut this.read_timer, deadline, cx) => {
                        tracing::debug!(reason = what, "closing a connection");
                        Poll::Ready(Err(timed_out(what)))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Pending => self.write_pending(cx),
            written => {
                self.write_stalled_since = None;
                written
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.write_pending(cx),
            written => {
                self.write_stalled_since = None;
                written
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
