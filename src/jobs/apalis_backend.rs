//! Runs a job type under an apalis-core 1.0 worker, with the jobs kept in one of our brokers.
//!
//! What it is for: apalis is kept for what it does well (`WorkerBuilder`, tower layers,
//! `Monitor`, handlers with extractors) while the queue stays ours (Redis or SQLite behind
//! [`Broker`], with dedup, global limits, leases, retry schedules and the dead set).
//! [`BrokerBackend<J>`] implements apalis' `Backend` + `BackendConfig` for one [`Job`] type. This
//! is the only module of the crate that uses apalis.
//!
//! ```ignore
//! async fn flush(job: FlushTrace, ctx: Data<JobContext>) -> Result<(), JobError> { .. }
//!
//! let backend = BrokerBackend::<FlushTrace>::new(broker, clock).concurrency(8);
//! let worker = WorkerBuilder::new("flush").backend(backend).build(flush);
//! worker.run_until(shutdown_signal).await?;
//! ```
//!
//! The handler's first argument is the decoded job. Besides apalis' extractors (`Attempt`,
//! `TaskId`, `WorkerContext`, `Data<T>`) it can take `Data<JobContext>` (id, queue, attempt, max
//! attempts, enqueue time); `Attempt::current()` equals the broker's attempt (1 on the first
//! run). It returns `Result<_, JobError>`, or any error (see duty 3).
//!
//! Duties:
//! 1. Fetch within free slots. The backend owns the worker's concurrency
//!    ([`BrokerBackendConfig::concurrency`]): a delivery holds a slot from its fetch until its
//!    ack is stored, a fetch asks the broker for at most the free slots (the broker may hand out
//!    fewer: global limit, empty queue), and at capacity the worker parks until an ack frees a
//!    slot. No tower `ConcurrencyLimitLayer` is needed (one set below `concurrency` only makes
//!    fetched jobs wait in the buffer, leased). Fetches run on their own tokio task, so a fetch
//!    holding broker resources (SQLite's write lock) completes even while apalis is not polling
//!    the backend.
//! 2. Decode the JSON payload into `J`. An undecodable payload is acked `Dead` at once and never
//!    reaches the handler.
//! 3. Ack through the broker with the runtime's policy (`runtime::processor`), once the whole
//!    apalis stack (user layers included) has returned. `Ok` is `Complete`. An error is our
//!    [`JobError`] if the handler returned one (found by downcasting the boxed error, then its
//!    `source()` chain), else it counts as `Retryable`: `Retryable` is `Retry` at
//!    `J::options().retry.delay_after(attempt)`, or `Dead` after the last attempt; `Snooze` is
//!    `Snooze` (no attempt burnt); `Fatal` is `Dead`. apalis' own errors: `AbortError` is `Dead`;
//!    `RetryAfterError` is a retry after its duration and `DeferredError` a retry at once (both
//!    burn an attempt, so both end in the dead set). As in the runtime, a run is bounded by
//!    `J::options().timeout`, and a panicking handler is a retryable failure, not a dead worker.
//!    A failed ack call is retried with backoff (~10 s); if it keeps failing, the lease expires
//!    and the job runs again.
//! 4. Leases. A background task renews the leases of every held delivery (buffered, running or
//!    being acked) every third of `J::options().lease`, so a job may run longer than its lease,
//!    as under the runtime. Every [`BrokerBackendConfig::housekeeping_interval`] it also reaps
//!    the queue's expired leases (workers that died) and trims its dead set.
//! 5. Shutdown (`WorkerContext::stop`, `run_until`, `Monitor`). apalis stops asking for work and
//!    waits for the running jobs, which finish and are acked; then `poll_close` lands a fetch in
//!    flight, releases every fetched but unstarted job (`Ack::Release`: ready again, first in
//!    line, no attempt burnt) and stops the lease task. If the worker future is dropped instead
//!    (e.g. a `Monitor` shutdown timeout), running and unstarted jobs are released from `Drop`
//!    on a spawned task, best effort.
//! 6. Broker errors never stop the worker. A failed fetch is logged, reported as an
//!    `Event::Custom` carrying a [`BrokerBackendEvent`], and retried after an exponential
//!    backoff. `poll_ready`, `poll_next` and `poll_close` cannot fail (the backend's error type
//!    is [`Infallible`]: `Worker::run` would return on the first backend error), and `poll_next`
//!    never ends the stream (that would stop the worker).
//!
//! Guarantees: at-least-once, like the runtime. A job is acked only after its run returned
//! (or timed out); a job whose worker died, or whose ack was lost, runs again once its lease
//! has expired and a reaper (this backend's housekeeping, or the runtime's) has re-delivered it.
//! Handlers must be idempotent.
//!
//! Requirements and limits: the worker must run on a tokio runtime (the backend spawns its
//! fetches and lease task and uses tokio timers). Keep apalis-core's `task-context` feature off:
//! with it, apalis panics when one worker holds two deliveries of the same job id, which a lease
//! lost during a long stall can cause. Metrics are recorded as in the runtime; queue gauges are
//! not published here (the runtime's housekeeping publishes them).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::queue::Queue;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::{AbortError, BoxDynError, DeferredError, RetryAfterError};
use apalis_core::layers::{Layer, Service};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use backon::{ExponentialBuilder, Retryable};
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use rand::Rng;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::broker::{Ack, Broker, BrokerError, DeadSetBounds, Delivery, Lease};
use super::clock::Clock;
use super::job::{Job, JobContext, JobError, JobOptions};
use super::metrics;
use super::settle::{Failure, Verdict, settle};

/// Tuning of one apalis worker over a broker queue.
#[derive(Debug, Clone)]
pub struct BrokerBackendConfig {
    /// Jobs this worker holds at once (running, being acked, or fetched and about to start).
    pub concurrency: usize,
    /// Sleep after a fetch found nothing (±20% jitter so workers spread out).
    pub poll_interval: Duration,
    /// Pause after the first failed fetch; doubles with each further failure.
    pub error_backoff: Duration,
    /// Cap of the pause between failed fetches.
    pub max_error_backoff: Duration,
    /// How often to reap expired leases of the queue and trim its dead set; `None` leaves that
    /// to another process (e.g. the runtime's housekeeping).
    pub housekeeping_interval: Option<Duration>,
    /// Bounds of the dead set, applied by housekeeping.
    pub dead_set: DeadSetBounds,
}

impl Default for BrokerBackendConfig {
    fn default() -> Self {
        Self {
            concurrency: 10,
            poll_interval: Duration::from_millis(100),
            error_backoff: Duration::from_millis(250),
            max_error_backoff: Duration::from_secs(10),
            housekeeping_interval: Some(Duration::from_secs(5)),
            dead_set: DeadSetBounds::default(),
        }
    }
}

/// Emitted through apalis' event listeners (`Event::Custom`) when the broker misbehaves; the
/// worker keeps running.
#[derive(Debug, Clone)]
pub enum BrokerBackendEvent {
    /// A fetch failed; the next one is tried after `retry_in`.
    FetchFailed {
        queue: &'static str,
        error: String,
        retry_in: Duration,
    },
}

/// Why a run failed without the handler saying so (the source of a retryable [`JobError`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("handler panicked")]
    Panicked,
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// What the backend, its ack layer and its lease task share.
struct Shared {
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    queue: &'static str,
    options: JobOptions,
    /// Deliveries leased by this worker and not settled yet, by `(id, attempt)`.
    held: Mutex<HashMap<(String, u32), Lease>>,
    /// The worker's task while it waits for a free slot.
    slot_waker: AtomicWaker,
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, HashMap<(String, u32), Lease>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hold(&self, lease: &Lease) {
        self.held()
            .insert((lease.id.clone(), lease.attempt), lease.clone());
    }

    /// Frees the delivery's slot.
    fn settle(&self, lease: &Lease) {
        self.held().remove(&(lease.id.clone(), lease.attempt));
        self.slot_waker.wake();
    }

    /// Sends acks, retrying with backoff (~20 s in all) before giving up.
    async fn send_acks(&self, acks: Vec<Ack>) -> Result<(), BrokerError> {
        let send = || async {
            self.broker
                .ack(self.queue, acks.clone(), self.clock.now_ms())
                .await
        };
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(8);
        send.retry(policy).await
    }

    /// Hands deliveries back (ready again at once, first in line, no attempt burnt) and frees
    /// their slots.
    async fn release(&self, leases: Vec<Lease>) {
        if leases.is_empty() {
            return;
        }
        let count = leases.len();
        let acks = leases
            .iter()
            .map(|lease| Ack::Release {
                lease: lease.clone(),
            })
            .collect();
        match self.send_acks(acks).await {
            Ok(()) => tracing::info!(
                queue = self.queue,
                count,
                "handed back jobs that had not run"
            ),
            Err(e) => {
                tracing::warn!(queue = self.queue, count, error = %e, "handing jobs back failed; they run again when their leases expire")
            }
        }
        for lease in &leases {
            self.settle(lease);
        }
    }

    /// [`release`](Self::release) from a spawned task: for `Drop`, which cannot wait.
    fn release_detached(self: &Arc<Self>, leases: Vec<Lease>) {
        if leases.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let shared = self.clone();
                handle.spawn(async move { shared.release(leases).await });
            }
            Err(_) => {
                tracing::warn!(
                    queue = self.queue,
                    count = leases.len(),
                    "no runtime to hand dropped jobs back; they run again when their leases expire"
                );
                for lease in &leases {
                    self.settle(lease);
                }
            }
        }
    }
}

/// Why a fetch brought nothing.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("fetch task ended abnormally: {0}")]
    Crashed(String),
}

/// What one fetch produced: the decodable tasks, and how many deliveries came in all.
struct Fetched<J> {
    tasks: Vec<Task<J>>,
    delivered: usize,
}

type FetchFuture<J> = BoxFuture<'static, Result<Fetched<J>, FetchError>>;

/// An apalis backend serving job type `J` from our broker. See the [module docs](self).
pub struct BrokerBackend<J: Job> {
    shared: Arc<Shared>,
    config: BrokerBackendConfig,
    /// Fetched (leased) and not yet handed to the worker.
    buffer: VecDeque<Task<J>>,
    fetching: Option<FetchFuture<J>>,
    /// Waiting before the next fetch (empty queue, or broker error).
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    releasing: Option<BoxFuture<'static, ()>>,
    fetch_failures: u32,
    /// Stops the lease task; `Some` once started.
    lease_task: Option<CancellationToken>,
}

// Nothing is structurally pinned (futures are boxed), so `J: !Unpin` is fine.
impl<J: Job> Unpin for BrokerBackend<J> {}

impl<J: Job> BrokerBackend<J> {
    /// A backend with the default [`BrokerBackendConfig`].
    pub fn new(broker: Arc<dyn Broker>, clock: Arc<dyn Clock>) -> Self {
        Self::with_config(broker, clock, BrokerBackendConfig::default())
    }

    pub fn with_config(
        broker: Arc<dyn Broker>,
        clock: Arc<dyn Clock>,
        mut config: BrokerBackendConfig,
    ) -> Self {
        config.concurrency = config.concurrency.max(1);
        Self {
            shared: Arc::new(Shared {
                broker,
                clock,
                queue: J::NAME,
                options: J::options(),
                held: Mutex::default(),
                slot_waker: AtomicWaker::new(),
            }),
            config,
            buffer: VecDeque::new(),
            fetching: None,
            pause: None,
            releasing: None,
            fetch_failures: 0,
            lease_task: None,
        }
    }

    /// Sets how many jobs this worker holds at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }

    fn free_slots(&self) -> usize {
        self.config
            .concurrency
            .saturating_sub(self.shared.held().len())
    }

    fn start_lease_task(&mut self) {
        if self.lease_task.is_some() {
            return;
        }
        let stop = CancellationToken::new();
        tokio::spawn(lease_task(
            self.shared.clone(),
            self.config.housekeeping_interval,
            self.config.dead_set,
            stop.clone(),
        ));
        self.lease_task = Some(stop);
    }

    fn stop_lease_task(&mut self) {
        if let Some(stop) = &self.lease_task {
            stop.cancel();
        }
    }

    fn fetch_pause(&self) -> Duration {
        let doublings = self.fetch_failures.min(16);
        self.config
            .error_backoff
            .saturating_mul(1 << doublings)
            .min(self.config.max_error_backoff)
    }

    /// Lands the fetch in flight, if any: its tasks go to the buffer; an empty queue or a
    /// broker error sets the pause before the next fetch. Never fails: `Worker::run` returns on
    /// the first backend error, so broker errors are retried here.
    fn poll_fetch(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<()> {
        let Some(fetching) = self.fetching.as_mut() else {
            return Poll::Ready(());
        };
        let result = ready!(fetching.poll_unpin(cx));
        self.fetching = None;
        match result {
            Ok(fetched) => {
                self.fetch_failures = 0;
                if fetched.delivered == 0 {
                    let jitter = rand::rng().random_range(0.8..1.2);
                    let wait = self.config.poll_interval.mul_f64(jitter);
                    self.pause = Some(Box::pin(tokio::time::sleep(wait)));
                }
                self.buffer.extend(fetched.tasks);
            }
            Err(e) => {
                let retry_in = self.fetch_pause();
                self.fetch_failures = self.fetch_failures.saturating_add(1);
                tracing::warn!(queue = self.shared.queue, error = %e, retry_in_s = retry_in.as_secs_f64(), "fetch failed; retrying");
                worker.emit(BrokerBackendEvent::FetchFailed {
                    queue: self.shared.queue,
                    error: e.to_string(),
                    retry_in,
                });
                self.pause = Some(Box::pin(tokio::time::sleep(retry_in)));
            }
        }
        Poll::Ready(())
    }

    /// Starts a fetch on its own task: a fetch holds broker resources (with SQLite, maybe the
    /// write lock), so it must make progress even while apalis does not poll the backend (while
    /// the service is not ready, or while running jobs drain on shutdown, whose acks need that
    /// very lock).
    fn start_fetch(&mut self, max: usize, worker: &WorkerContext) {
        let fetch = tokio::spawn(fetch_batch::<J>(
            self.shared.clone(),
            max,
            worker.name().to_owned(),
        ));
        self.fetching = Some(
            async move {
                match fetch.await {
                    Ok(fetched) => fetched,
                    Err(e) => Err(FetchError::Crashed(e.to_string())),
                }
            }
            .boxed(),
        );
    }
}

/// Leases up to `max` jobs, decodes them into tasks (holding their slots), and buries the
/// undecodable ones.
fn fetch_batch<J: Job>(shared: Arc<Shared>, max: usize, worker: String) -> FetchFuture<J> {
    async move {
        let now = shared.clock.now_ms();
        let deliveries = shared
            .broker
            .fetch(shared.queue, max, shared.options.lease, now)
            .await?;
        let delivered = deliveries.len();
        let mut tasks = Vec::with_capacity(delivered);
        let mut poison = Vec::new();
        for delivery in deliveries {
            let env = &delivery.envelope;
            match serde_json::from_str::<J>(&env.payload) {
                Ok(job) => {
                    shared.hold(&delivery.lease);
                    tasks.push(to_task(job, delivery, &worker, now));
                }
                Err(e) => {
                    tracing::error!(queue = shared.queue, job_id = %env.id, error = %e, "undecodable payload; moved to the dead set");
                    metrics::record_outcome(shared.queue, metrics::Outcome::Dead);
                    poison.push(Ack::Dead {
                        lease: delivery.lease.clone(),
                        error: format!("cannot decode {} payload: {e}", shared.queue),
                    });
                }
            }
        }
        if !poison.is_empty()
            && let Err(e) = shared.send_acks(poison).await
        {
            tracing::warn!(queue = shared.queue, error = %e, "burying undecodable payloads failed; they come back when their leases expire");
        }
        Ok(Fetched { tasks, delivered })
    }
    .boxed()
}

/// The delivery a task came from, kept in its data for the ack (a private type, so no user
/// layer can replace it).
#[derive(Clone)]
struct Receipt(Lease);

fn to_task<J>(job: J, delivery: Delivery, worker: &str, now_ms: i64) -> Task<J> {
    let env = delivery.envelope;
    let ctx = JobContext {
        id: env.id.clone(),
        queue: env.queue,
        attempt: env.attempt,
        max_attempts: env.max_attempts,
        enqueued_at_ms: env.enqueued_at_ms,
    };
    TaskBuilder::new(job)
        .task_id(TaskId::from_string(env.id))
        // apalis adds one when the task starts: seeded so that `Attempt::current()` in the
        // handler is the broker's attempt (1-based).
        .attempt(env.attempt.saturating_sub(1) as usize)
        .max_attempts(env.max_attempts as usize)
        .queue(Queue::from(ctx.queue.as_str()))
        .lock_at(u64::try_from(now_ms / 1000).ok())
        .lock_by(Some(worker.to_owned()))
        .data(ctx)
        .data(Receipt(delivery.lease))
        .build()
}

fn lease_of<J>(task: &Task<J>) -> Option<Lease> {
    task.data().get::<Receipt>().map(|r| r.0.clone())
}

impl<J: Job> Backend for BrokerBackend<J> {
    type Task = Task<J>;
    type Error = Infallible;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        self.start_lease_task();
        // A fetch in flight already holds slots for what it brings: land it first.
        ready!(self.poll_fetch(cx, worker));
        if !self.buffer.is_empty() || self.free_slots() > 0 {
            return Poll::Ready(Ok(()));
        }
        // At capacity: an ack that frees a slot wakes us (register, then check again).
        self.shared.slot_waker.register(cx.waker());
        if self.free_slots() > 0 {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<J>, Infallible>>> {
        self.start_lease_task();
        loop {
            if let Some(task) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task)));
            }
            if self.fetching.is_some() {
                ready!(self.poll_fetch(cx, worker));
                continue;
            }
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            let free = self.free_slots();
            if free == 0 {
                self.shared.slot_waker.register(cx.waker());
                if self.free_slots() == 0 {
                    return Poll::Pending;
                }
                continue;
            }
            self.start_fetch(free, worker);
        }
    }

    /// Called once the worker is stopping and every started task has finished (and is acked).
    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        self.pause = None;
        if let Some(fetching) = self.fetching.as_mut() {
            let result = ready!(fetching.poll_unpin(cx));
            self.fetching = None;
            if let Ok(fetched) = result {
                self.buffer.extend(fetched.tasks);
            }
        }
        if self.releasing.is_none() && !self.buffer.is_empty() {
            let unstarted: Vec<Lease> =
                self.buffer.drain(..).filter_map(|t| lease_of(&t)).collect();
            let shared = self.shared.clone();
            self.releasing = Some(async move { shared.release(unstarted).await }.boxed());
        }
        if let Some(releasing) = self.releasing.as_mut() {
            ready!(releasing.poll_unpin(cx));
            self.releasing = None;
        }
        self.stop_lease_task();
        Poll::Ready(Ok(()))
    }
}

impl<J: Job> Drop for BrokerBackend<J> {
    fn drop(&mut self) {
        if let Some(stop) = &self.lease_task {
            stop.cancel();
        }
        // Dropped without a completed close (e.g. the worker future was dropped): hand back
        // what was fetched and not started, including what a fetch still running brings.
        let unstarted: Vec<Lease> = self.buffer.drain(..).filter_map(|t| lease_of(&t)).collect();
        self.shared.release_detached(unstarted);
        if let Some(fetching) = self.fetching.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let shared = self.shared.clone();
            handle.spawn(async move {
                if let Ok(fetched) = fetching.await {
                    let leases = fetched.tasks.iter().filter_map(lease_of).collect();
                    shared.release(leases).await;
                }
            });
        }
    }
}

impl<J: Job> BackendConfig for BrokerBackend<J> {
    type Args = J;
    /// Our ids are ULID strings.
    type Id = String;
    /// Tasks are handed out decoded, as they are.
    type Kind = Ephemeral;
    type Config = BrokerBackendConfig;
    type Layer = AckLayer;

    fn config(&self) -> &BrokerBackendConfig {
        &self.config
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> AckLayer {
        AckLayer {
            shared: self.shared.clone(),
        }
    }
}

/// The backend's middleware: runs each task under the job's timeout, catches panics, acks the
/// outcome to the broker and frees the task's slot. apalis places it outside the user's layers.
#[derive(Clone)]
pub struct AckLayer {
    shared: Arc<Shared>,
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> AckService<S> {
        AckService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`AckLayer`].
#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, J> Service<Task<J>> for AckService<S>
where
    J: Job,
    S: Service<Task<J>>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<J>) -> Self::Future {
        let ctx = task.data().get::<JobContext>().cloned();
        let lease = lease_of(&task);
        let run = self.inner.call(task);
        let (Some(ctx), Some(lease)) = (ctx, lease) else {
            // Not one of ours (cannot happen with this backend): nothing to ack.
            return async move { run.await.map_err(Into::into) }.boxed();
        };
        let shared = self.shared.clone();
        // Owned by the future from here on, so a future dropped unpolled still frees its slot.
        let slot = Slot {
            shared: shared.clone(),
            lease: Some(lease.clone()),
        };
        async move {
            let timeout = shared.options.timeout;
            let started = Instant::now();
            let run = AssertUnwindSafe(run).catch_unwind();
            let result: Result<S::Response, BoxDynError> =
                match tokio::time::timeout(timeout, run).await {
                    Ok(Ok(r)) => r.map_err(Into::into),
                    Ok(Err(_panic)) => Err(JobError::retryable(RunError::Panicked).into()),
                    Err(_) => Err(JobError::retryable(RunError::TimedOut(timeout)).into()),
                };
            metrics::record_run(shared.queue, started.elapsed());
            let ack = ack_for(&shared, &ctx, lease, result.as_ref().err());
            if let Err(e) = shared.send_acks(vec![ack]).await {
                tracing::error!(queue = shared.queue, job_id = %ctx.id, error = %e, "ack lost; the job runs again when its lease expires");
            }
            slot.settled();
            result
        }
        .boxed()
    }
}

/// A running delivery's slot: freed when the run is acked, or, if the future is dropped
/// before that (worker torn down), freed and the job released.
struct Slot {
    shared: Arc<Shared>,
    lease: Option<Lease>,
}

impl Slot {
    fn settled(mut self) {
        if let Some(lease) = self.lease.take() {
            self.shared.settle(&lease);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.shared.release_detached(vec![lease]);
        }
    }
}

/// The first error in the chain that says what to do; anything else is retryable.
fn classify(err: &(dyn StdError + 'static)) -> Failure {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(job) = e.downcast_ref::<JobError>() {
            return Failure::from(job);
        }
        let verdict = if e.is::<AbortError>() {
            Some(Verdict::Dead)
        } else if let Some(r) = e.downcast_ref::<RetryAfterError>() {
            Some(Verdict::Retry(Some(r.get_duration())))
        } else if e.is::<DeferredError>() {
            Some(Verdict::Retry(Some(Duration::ZERO)))
        } else {
            None
        };
        if let Some(verdict) = verdict {
            return Failure {
                verdict,
                error: e.to_string(),
            };
        }
        cur = e.source();
    }
    Failure {
        verdict: Verdict::Retry(None),
        error: err.to_string(),
    }
}

/// The settle policy ([`settle`]), applied to an apalis result.
fn ack_for(shared: &Shared, ctx: &JobContext, lease: Lease, error: Option<&BoxDynError>) -> Ack {
    let result = match error {
        None => Ok(()),
        Some(e) => Err(classify(e.as_ref())),
    };
    settle(
        shared.queue,
        &shared.options.retry,
        ctx,
        lease,
        result,
        shared.clock.now_ms(),
    )
}

/// Renews the leases of held deliveries every third of the lease; reaps and trims the queue
/// every `housekeeping` (if set). Ends when `stop` is cancelled.
async fn lease_task(
    shared: Arc<Shared>,
    housekeeping: Option<Duration>,
    dead_set: DeadSetBounds,
    stop: CancellationToken,
) {
    let period = (shared.options.lease / 3).max(Duration::from_millis(10));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reap = housekeeping.map(|d| {
        let mut i = tokio::time::interval(d.max(Duration::from_millis(10)));
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    });
    loop {
        let reap_tick = async {
            match reap.as_mut() {
                Some(i) => {
                    i.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = renew.tick() => renew_leases(&shared).await,
            _ = reap_tick => reap_queue(&shared, dead_set).await,
        }
    }
}

async fn renew_leases(shared: &Shared) {
    let live: Vec<Lease> = shared.held().values().cloned().collect();
    if live.is_empty() {
        return;
    }
    if let Err(e) = shared
        .broker
        .extend_leases(
            shared.queue,
            &live,
            shared.options.lease,
            shared.clock.now_ms(),
        )
        .await
    {
        tracing::warn!(queue = shared.queue, error = %e, "renewing leases failed; will retry");
    }
}

async fn reap_queue(shared: &Shared, dead_set: DeadSetBounds) {
    // The same housekeeping a runtime worker does.
    super::runtime::reap_queue(
        shared.broker.as_ref(),
        shared.clock.as_ref(),
        shared.queue,
        dead_set,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(err: BoxDynError) -> &'static str {
        match classify(err.as_ref()).verdict {
            Verdict::Retry(None) => "retry",
            Verdict::Retry(Some(_)) => "retry-after",
            Verdict::Snooze(_) => "snooze",
            Verdict::Dead => "dead",
        }
    }

    #[test]
    fn errors_map_like_the_runtime() {
        assert_eq!(classified(JobError::retryable("x").into()), "retry");
        assert_eq!(classified(JobError::fatal("x").into()), "dead");
        assert_eq!(
            classified(JobError::Snooze(Duration::from_secs(1)).into()),
            "snooze"
        );
        assert_eq!(classified("plain".into()), "retry");
        assert_eq!(classified(AbortError::new("stop").into()), "dead");
        assert_eq!(
            classified(RetryAfterError::new("later", Duration::from_secs(3)).into()),
            "retry-after"
        );
        // Found through the source chain too.
        assert_eq!(
            classified(AbortError::new(JobError::retryable("inner")).into()),
            "dead"
        );
        assert_eq!(
            classified(DeferredError::new(JobError::fatal("inner")).into()),
            "retry-after"
        );
    }
}
