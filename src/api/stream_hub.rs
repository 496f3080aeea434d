//! One poller per tailed build, shared by all of its trace streams, and the per-process cap on
//! open streams.
//!
//! Duties:
//! 1. [`StreamHub::open`]: a slot for one more stream, or `None` past `max_streams` (the API
//!    answers 503 with `Retry-After`); the slot is given back when the stream is dropped.
//! 2. [`StreamHub::subscribe`]: the first subscriber of a build starts its poller task; later
//!    ones share it; the last one leaving stops it and removes the build from the map. A
//!    poller that ends by itself (the job finished, a store error, the job gone) removes its
//!    build too, so the next subscriber starts a fresh one.
//! 3. The poller starts at the length its first subscriber saw, asks for the log's position
//!    every [`POLL_INTERVAL`], reads each new piece
//!    once (at most [`EVENT_BYTES`], never across a multiple of it) and broadcasts it; it
//!    keeps the log marked as tailed while the job runs (one write per build every
//!    `WATCH_TTL / 2`, not one per stream); once the job finished and every byte was
//!    broadcast it sends [`TailEvent::End`].
//!
//! Guarantees: whatever order subscribers, appends and ticks come in, a subscriber misses no
//! byte: [`Subscription::known`] (read after subscribing) says up to where the poller has
//! broadcast, and a subscriber behind it (it started at an older offset, it joined late, it
//! lagged behind the channel) reads the gap itself. So the store work of N streams that keep
//! up is one poller's, plus each stream's own catch-up from where it started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::traces::model::BuildStatus;
use crate::traces::service::TraceService;

/// How often a poller asks for new bytes. Runners PATCH every few seconds at best (3 s while
/// a log is tailed), so half a second adds little delay, for 2 round trips a tick per build.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How long a "someone tails this log" mark lasts; the poller renews it at half.
pub const WATCH_TTL: Duration = Duration::from_secs(10);

/// Bytes of log an event carries at most (about 87 KiB of base64), so a big backlog arrives
/// as many events a client can handle one by one. It divides the 128 KiB chunk size, and an
/// event never crosses a multiple of it, so each read touches a single chunk.
pub const EVENT_BYTES: u64 = 64 * 1024;

/// Events a slow subscriber may fall behind before it lags (and reads the gap itself): 64
/// pieces of at most 64 KiB, shared by every subscriber.
const CHANNEL_EVENTS: usize = 64;

/// Default open streams per web process: each holds a connection and a little memory; the
/// store work is per tailed build, not per stream.
pub const DEFAULT_MAX_STREAMS: usize = 1024;

/// Default lifetime of one stream; then it ends (without `end`) and the client resumes with
/// `Last-Event-ID`, possibly on another process (a rolling deploy drains in that time).
pub const DEFAULT_STREAM_LIFETIME: Duration = Duration::from_secs(3600);

/// The caps on trace streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Open streams per process; over it: 503 with `Retry-After`.
    pub max_streams: usize,
    /// How long one stream lasts at most.
    pub max_lifetime: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_streams: DEFAULT_MAX_STREAMS,
            max_lifetime: DEFAULT_STREAM_LIFETIME,
        }
    }
}

/// What a build's poller broadcasts.
#[derive(Debug, Clone)]
pub enum TailEvent {
    /// The log's bytes from `from` on.
    Append { from: u64, bytes: Bytes },
    /// The job finished; the log is `length` bytes long, all of them broadcast or below where
    /// the poller started.
    End { length: u64, status: BuildStatus },
    /// The poller stopped (store error, job gone): streams end without `end`, clients resume.
    Failed,
}

/// One build's poller, as the map holds it.
struct Feed {
    tx: broadcast::Sender<TailEvent>,
    shared: Arc<FeedShared>,
    stop: CancellationToken,
}

/// What subscribers and the poller share.
struct FeedShared {
    /// Bytes below this were broadcast (or were there when the poller started).
    known: AtomicU64,
    subscribers: AtomicUsize,
}

/// Trace streams of one web process: the open count and a poller per tailed build.
#[derive(Default)]
pub struct StreamHub {
    limits: StreamLimits,
    open: AtomicUsize,
    feeds: Mutex<HashMap<i64, Feed>>,
}

/// A stream's place under the cap; dropping it frees the place.
pub struct StreamSlot {
    hub: Arc<StreamHub>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream's subscription to its build's poller; dropping it leaves (the last one out stops
/// the poller).
pub struct Subscription {
    hub: Arc<StreamHub>,
    build_id: i64,
    shared: Arc<FeedShared>,
    pub events: broadcast::Receiver<TailEvent>,
}

impl Subscription {
    /// Up to where the poller has broadcast (bytes below: read them yourself if you need them).
    pub fn known(&self) -> u64 {
        self.shared.known.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Ok(mut feeds) = self.hub.feeds.lock() else {
            return;
        };
        let ours = feeds
            .get(&self.build_id)
            .is_some_and(|f| Arc::ptr_eq(&f.shared, &self.shared));
        if self.shared.subscribers.fetch_sub(1, Ordering::AcqRel) == 1
            && ours
            && let Some(feed) = feeds.remove(&self.build_id)
        {
            feed.stop.cancel();
        }
    }
}

impl StreamHub {
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// A place for one more stream, `None` when `max_streams` are open.
    pub fn open(self: &Arc<Self>) -> Option<StreamSlot> {
        let max = self.limits.max_streams;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot { hub: self.clone() })
    }

    /// Open streams now.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Builds with a running poller now.
    pub fn pollers(&self) -> usize {
        self.feeds.lock().map_or(0, |f| f.len())
    }

    /// Subscribes to `build_id`'s poller, starting it if none runs; a new poller broadcasts
    /// the log from `length` on (the length the subscriber saw: it has what is below).
    pub fn subscribe(
        self: &Arc<Self>,
        traces: &Arc<TraceService>,
        build_id: i64,
        length: u64,
    ) -> Subscription {
        let mut feeds = match self.feeds.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        let feed = feeds.entry(build_id).or_insert_with(|| {
            let (tx, _) = broadcast::channel(CHANNEL_EVENTS);
            let feed = Feed {
                tx,
                shared: Arc::new(FeedShared {
                    known: AtomicU64::new(length),
                    subscribers: AtomicUsize::new(0),
                }),
                stop: CancellationToken::new(),
            };
            let poller = Poller {
                hub: Arc::downgrade(self),
                traces: traces.clone(),
                build_id,
                tx: feed.tx.clone(),
                shared: feed.shared.clone(),
                at: length,
                renew_watch_at: None,
            };
            tokio::spawn(poller.run(feed.stop.clone()));
            feed
        });
        feed.shared.subscribers.fetch_add(1, Ordering::AcqRel);
        Subscription {
            hub: self.clone(),
            build_id,
            shared: feed.shared.clone(),
            events: feed.tx.subscribe(),
        }
    }
}

/// The task that tails one build for all of its streams.
struct Poller {
    /// Weak: a hub dropped with its router stops nothing it would keep alive.
    hub: std::sync::Weak<StreamHub>,
    traces: Arc<TraceService>,
    build_id: i64,
    tx: broadcast::Sender<TailEvent>,
    shared: Arc<FeedShared>,
    /// Bytes below this were broadcast (or the first subscriber had them).
    at: u64,
    renew_watch_at: Option<tokio::time::Instant>,
}

impl Poller {
    async fn run(mut self, stop: CancellationToken) {
        tokio::select! {
            () = self.tail() => {}
            () = stop.cancelled() => {}
        }
        // Ended by itself (or stopped): out of the map, so the next subscriber starts afresh.
        if let Some(hub) = self.hub.upgrade()
            && let Ok(mut feeds) = hub.feeds.lock()
            && feeds
                .get(&self.build_id)
                .is_some_and(|f| Arc::ptr_eq(&f.shared, &self.shared))
        {
            feeds.remove(&self.build_id);
        }
    }

    /// Broadcasts the log from the position it finds until the job's end or a failure.
    async fn tail(&mut self) {
        loop {
            let (status, length) = match self.traces.tail_position(self.build_id).await {
                Ok(Some(position)) => position,
                Ok(None) => {
                    tracing::warn!(build_id = self.build_id, "trace stream: the job is gone");
                    let _ = self.tx.send(TailEvent::Failed);
                    return;
                }
                Err(e) => {
                    tracing::error!(build_id = self.build_id, error = %e, "trace stream poller failed; its streams end");
                    let _ = self.tx.send(TailEvent::Failed);
                    return;
                }
            };
            let pos = self.at;
            if pos < length {
                let to = length.min((pos / EVENT_BYTES + 1) * EVENT_BYTES);
                match self.traces.read(self.build_id, pos, to).await {
                    Ok(bytes) if !bytes.is_empty() => {
                        let end = pos + bytes.len() as u64;
                        self.shared.known.store(end, Ordering::Release);
                        let _ = self.tx.send(TailEvent::Append {
                            from: pos,
                            bytes: Bytes::from(bytes),
                        });
                        self.at = end;
                        continue;
                    }
                    // Moved while being read (an archive deleting the live copy): look again.
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(build_id = self.build_id, error = %e, "trace stream poller failed; its streams end");
                        let _ = self.tx.send(TailEvent::Failed);
                        return;
                    }
                }
            } else if status.is_finished() {
                tracing::debug!(build_id = self.build_id, length = pos, %status, "trace stream poller: job finished");
                let _ = self.tx.send(TailEvent::End {
                    length: pos,
                    status,
                });
                return;
            } else {
                self.keep_watching().await;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Marks the log as tailed for [`WATCH_TTL`], renewed at half of it: while the mark is on,
    /// a PATCH answers `X-GitLab-Trace-Update-Interval: 3` instead of 60. A failure only
    /// costs that (the runner keeps its usual pace), so it is logged, not fatal.
    async fn keep_watching(&mut self) {
        let now = tokio::time::Instant::now();
        if self.renew_watch_at.is_some_and(|at| now < at) {
            return;
        }
        match self.traces.watch(self.build_id, WATCH_TTL).await {
            Ok(()) => self.renew_watch_at = Some(now + WATCH_TTL / 2),
            Err(e) => {
                tracing::warn!(build_id = self.build_id, error = %e, "trace stream: cannot mark the log as tailed")
            }
        }
    }
}
