//! The apalis backend (`jobs::apalis::BrokerBackend`) driving real apalis-core workers against both
//! brokers: real Redis (own key prefix) and a real SQLite file. Every wait is a bounded poll of
//! a condition; nothing asserts after a fixed sleep.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use apalis_core::error::{AbortError, BoxDynError, WorkerError};
use apalis_core::layers::{Layer, Service};
use apalis_core::task::attempt::Attempt;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use apalis_core::worker::event::Event;
use apalis_core::worker::ext::event_listener::EventListenerExt;
use async_trait::async_trait;
use buildlogs_jobs::apalis::{BrokerBackend, BrokerBackendConfig, BrokerBackendEvent};
use buildlogs_jobs::broker::{DeadSetBounds, Lease, ReapReport};
use buildlogs_jobs::{
    Ack, Broker, BrokerError, Clock, DeadJob, Delivery, EnqueueOutcome, Envelope, Job, JobClient,
    JobContext, JobError, JobOptions, NewJob, QueueStats, RetrySchedule, ScheduledJob, SystemClock,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use support::TestBroker;
use support::wait::wait_until;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::PollSemaphore;

/// Longest any condition is waited for.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Job types and handlers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    n: u32,
}

impl Job for Ping {
    const NAME: &'static str = "apalis_ping";
}

/// Fails every run: retried once 10 ms later, then dead.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AlwaysFails {
    n: u32,
}

impl Job for AlwaysFails {
    const NAME: &'static str = "apalis_always_fails";

    fn options() -> JobOptions {
        JobOptions {
            max_attempts: 2,
            retry: RetrySchedule::Fixed(Duration::from_millis(10)),
            ..JobOptions::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Verdict {
    Fatal,
    Abort,
    SnoozeOnce,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Judged {
    verdict: Verdict,
}

impl Job for Judged {
    const NAME: &'static str = "apalis_judged";
}

/// Runs three times longer than its lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slow {
    n: u32,
}

impl Job for Slow {
    const NAME: &'static str = "apalis_slow";

    fn options() -> JobOptions {
        JobOptions {
            lease: Duration::from_millis(300),
            ..JobOptions::default()
        }
    }
}

/// What handlers saw, shared with the test through `.data(..)`.
#[derive(Default)]
struct Seen {
    /// (job number, broker attempt from `JobContext`, apalis `Attempt`)
    runs: Mutex<Vec<(u32, u32, usize)>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    started: AtomicUsize,
}

impl Seen {
    fn record(&self, n: u32, ctx: &JobContext, attempt: &Attempt) {
        self.runs
            .lock()
            .unwrap()
            .push((n, ctx.attempt, attempt.current()));
    }

    fn runs(&self) -> Vec<(u32, u32, usize)> {
        self.runs.lock().unwrap().clone()
    }

    fn enter(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a `ping` takes.
#[derive(Debug, Clone, Copy)]
struct Pace(Duration);

async fn ping(
    job: Ping,
    ctx: Data<JobContext>,
    attempt: Attempt,
    seen: Data<Arc<Seen>>,
    pace: Data<Pace>,
) -> Result<(), JobError> {
    seen.enter();
    seen.record(job.n, &ctx, &attempt);
    let Pace(pause) = *pace;
    tokio::time::sleep(pause).await;
    seen.leave();
    Ok(())
}

/// Runs only when the test hands out a permit.
async fn blocked_ping(
    job: Ping,
    ctx: Data<JobContext>,
    attempt: Attempt,
    seen: Data<Arc<Seen>>,
    go: Data<Arc<Semaphore>>,
) -> Result<(), JobError> {
    seen.enter();
    seen.record(job.n, &ctx, &attempt);
    go.acquire().await.expect("semaphore open").forget();
    seen.leave();
    Ok(())
}

async fn always_fails(
    job: AlwaysFails,
    ctx: Data<JobContext>,
    attempt: Attempt,
    seen: Data<Arc<Seen>>,
) -> Result<(), JobError> {
    seen.record(job.n, &ctx, &attempt);
    Err(JobError::retryable(format!(
        "boom on attempt {}",
        ctx.attempt
    )))
}

async fn slow(
    job: Slow,
    ctx: Data<JobContext>,
    attempt: Attempt,
    seen: Data<Arc<Seen>>,
) -> Result<(), JobError> {
    seen.record(job.n, &ctx, &attempt);
    tokio::time::sleep(Duration::from_millis(900)).await;
    Ok(())
}

async fn judged(
    job: Judged,
    ctx: Data<JobContext>,
    attempt: Attempt,
    seen: Data<Arc<Seen>>,
) -> Result<(), BoxDynError> {
    let n = job.verdict as u32;
    let earlier = seen.runs().iter().filter(|r| r.0 == n).count();
    seen.record(n, &ctx, &attempt);
    match job.verdict {
        Verdict::Fatal => Err(JobError::fatal("no way").into()),
        Verdict::Abort => Err(AbortError::new("aborted by the handler").into()),
        Verdict::SnoozeOnce if earlier == 0 => {
            Err(JobError::Snooze(Duration::from_millis(10)).into())
        }
        Verdict::SnoozeOnce => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn config(concurrency: usize) -> BrokerBackendConfig {
    BrokerBackendConfig {
        concurrency,
        poll_interval: Duration::from_millis(20),
        error_backoff: Duration::from_millis(20),
        ..BrokerBackendConfig::default()
    }
}

fn backend<J: Job>(broker: &Arc<dyn Broker>, concurrency: usize) -> BrokerBackend<J> {
    BrokerBackend::with_config(broker.clone(), clock(), config(concurrency))
}

async fn stats(broker: &dyn Broker, queue: &str) -> QueueStats {
    broker
        .stats(queue, SystemClock.now_ms())
        .await
        .expect("queue stats")
}

/// Polls the queue's stats until `done` holds (or fails the test at the deadline).
async fn wait_for_stats(
    broker: &dyn Broker,
    queue: &str,
    what: &str,
    done: impl Fn(&QueueStats) -> bool,
) -> QueueStats {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let s = stats(broker, queue).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}; last stats: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops a running worker and waits for `run()` to return cleanly.
async fn stop(ctx: &WorkerContext, run: JoinHandle<Result<(), WorkerError>>) {
    wait_until("the worker has started", DEADLINE, || ctx.is_running()).await;
    ctx.stop().expect("stop the worker");
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the worker stops before the deadline")
        .expect("the worker task did not panic")
        .expect("the worker ended without error");
}

async fn enqueue_pings(b: &TestBroker, n: u32) {
    let client = JobClient::new(b.broker.clone(), clock());
    let jobs: Vec<Ping> = (0..n).map(|n| Ping { n }).collect();
    let out = client.enqueue_bulk(&jobs).await.expect("enqueue");
    assert!(out.iter().all(|o| *o == EnqueueOutcome::Enqueued));
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

async fn worker_drains_enqueued_jobs_and_acks_each(b: &TestBroker) {
    const N: u32 = 25;
    const SLOTS: usize = 4;
    enqueue_pings(b, N).await;
    let seen = Arc::new(Seen::default());
    let ctx = WorkerContext::new("drain");
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend::<Ping>(&b.broker, SLOTS))
        .data(seen.clone())
        .data(Pace(Duration::from_millis(5)))
        .build(ping);
    let run = tokio::spawn(worker.run());

    let s = wait_for_stats(b.broker.as_ref(), Ping::NAME, "every job is acked", |s| {
        s.processed == u64::from(N)
    })
    .await;
    assert_eq!(
        (s.ready, s.scheduled, s.running, s.dead),
        (0, 0, 0, 0),
        "{}",
        b.kind
    );
    stop(&ctx, run).await;

    let mut runs = seen.runs();
    runs.sort();
    let expected: Vec<(u32, u32, usize)> = (0..N).map(|n| (n, 1, 1)).collect();
    assert_eq!(
        runs, expected,
        "each job ran once, as attempt 1 for the broker and for apalis"
    );
    assert!(
        seen.max_running.load(Ordering::SeqCst) <= SLOTS,
        "never more jobs at once than slots"
    );
    let s = stats(b.broker.as_ref(), Ping::NAME).await;
    assert_eq!((s.processed, s.running), (u64::from(N), 0));
}

async fn failed_job_is_retried_on_its_schedule_then_dead(b: &TestBroker) {
    let client = JobClient::new(b.broker.clone(), clock());
    client
        .enqueue(&AlwaysFails { n: 7 })
        .await
        .expect("enqueue");
    let seen = Arc::new(Seen::default());
    let ctx = WorkerContext::new("retry");
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend::<AlwaysFails>(&b.broker, 2))
        .data(seen.clone())
        .build(always_fails);
    let run = tokio::spawn(worker.run());

    let s = wait_for_stats(
        b.broker.as_ref(),
        AlwaysFails::NAME,
        "the job is dead",
        |s| s.dead == 1,
    )
    .await;
    assert_eq!((s.ready, s.scheduled, s.running, s.processed), (0, 0, 0, 0));
    stop(&ctx, run).await;

    assert_eq!(
        seen.runs(),
        vec![(7, 1, 1), (7, 2, 2)],
        "attempt 1 failed, attempt 2 ran after the retry delay and failed for good"
    );
    let dead: Vec<DeadJob> = b
        .broker
        .dead_list(AlwaysFails::NAME, 10)
        .await
        .expect("dead list");
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].error.contains("boom on attempt 2"),
        "the last error is kept: {:?}",
        dead[0].error
    );
    assert!(dead[0].envelope.payload.contains("\"n\":7"));
}

async fn stopped_worker_leaves_no_job_leased(b: &TestBroker) {
    const N: u32 = 30;
    enqueue_pings(b, N).await;
    let seen = Arc::new(Seen::default());
    let ctx = WorkerContext::new("stop-midway");
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend::<Ping>(&b.broker, 4))
        .data(seen.clone())
        .data(Pace(Duration::from_millis(30)))
        .build(ping);
    let run = tokio::spawn(worker.run());

    wait_for_stats(b.broker.as_ref(), Ping::NAME, "some jobs are done", |s| {
        s.processed >= 4
    })
    .await;
    stop(&ctx, run).await;

    let s = stats(b.broker.as_ref(), Ping::NAME).await;
    assert_eq!(s.running, 0, "nothing stays leased: {s:?}");
    assert!(s.processed < u64::from(N), "stopped mid-way: {s:?}");
    assert_eq!(
        (s.processed + s.ready, s.scheduled, s.dead),
        (u64::from(N), 0, 0),
        "every job is either done or ready again: {s:?}"
    );
    assert_eq!(seen.running.load(Ordering::SeqCst), 0);
}

async fn fetched_but_unstarted_jobs_are_released_on_stop(b: &TestBroker) {
    enqueue_pings(b, 6).await;
    let seen = Arc::new(Seen::default());
    let go = Arc::new(Semaphore::new(0));
    let ctx = WorkerContext::new("release");
    // The backend takes 4 jobs, but a user layer lets only one in at a time: 3 wait, leased.
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend::<Ping>(&b.broker, 4))
        .data(seen.clone())
        .data(go.clone())
        .layer(GateLayer::new(1))
        .build(blocked_ping);
    let run = tokio::spawn(worker.run());

    wait_until("one job has started", DEADLINE, || {
        seen.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let s = stats(b.broker.as_ref(), Ping::NAME).await;
    assert_eq!(
        (s.running, s.ready),
        (4, 2),
        "fetched as many as free slots"
    );

    let stopping = tokio::spawn({
        let ctx = ctx.clone();
        async move { stop(&ctx, run).await }
    });
    wait_until("the worker is shutting down", DEADLINE, || {
        ctx.is_shutting_down()
    })
    .await;
    go.add_permits(100);
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("stopped in time")
        .expect("stop task");

    let s = stats(b.broker.as_ref(), Ping::NAME).await;
    assert_eq!(
        (s.processed, s.running, s.ready),
        (1, 0, 5),
        "the started job finished, the 3 unstarted went back: {s:?}"
    );
    assert_eq!(seen.started.load(Ordering::SeqCst), 1);
    let again = b
        .broker
        .fetch(
            Ping::NAME,
            10,
            Duration::from_secs(30),
            SystemClock.now_ms(),
        )
        .await
        .expect("fetch");
    assert_eq!(again.len(), 5);
    assert!(
        again.iter().all(|d: &Delivery| d.envelope.attempt == 1),
        "a release burns no attempt"
    );
}

async fn typed_errors_settle_by_the_policy(b: &TestBroker) {
    let client = JobClient::new(b.broker.clone(), clock());
    for verdict in [Verdict::Fatal, Verdict::Abort, Verdict::SnoozeOnce] {
        client.enqueue(&Judged { verdict }).await.expect("enqueue");
    }
    let garbage = NewJob {
        envelope: Envelope::new(Judged::NAME, "not json".into(), 5, SystemClock.now_ms()),
        run_at_ms: None,
        dedup_ttl: Duration::from_secs(60),
    };
    b.broker
        .enqueue(vec![garbage], SystemClock.now_ms())
        .await
        .expect("enqueue garbage");

    let seen = Arc::new(Seen::default());
    let ctx = WorkerContext::new("typed");
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend::<Judged>(&b.broker, 4))
        .data(seen.clone())
        .build(judged);
    let run = tokio::spawn(worker.run());

    let s = wait_for_stats(b.broker.as_ref(), Judged::NAME, "all settled", |s| {
        s.processed == 1 && s.dead == 3
    })
    .await;
    assert_eq!((s.ready, s.scheduled, s.running), (0, 0, 0));
    stop(&ctx, run).await;

    let mut runs = seen.runs();
    runs.sort();
    let (fatal, abort, snooze) = (
        Verdict::Fatal as u32,
        Verdict::Abort as u32,
        Verdict::SnoozeOnce as u32,
    );
    assert_eq!(
        runs,
        vec![(fatal, 1, 1), (abort, 1, 1), (snooze, 1, 1), (snooze, 1, 1)],
        "fatal and abort die on their first run; a snooze runs again without burning an attempt"
    );
    let dead = b
        .broker
        .dead_list(Judged::NAME, 10)
        .await
        .expect("dead list");
    let mut errors: Vec<&str> = dead.iter().map(|d| d.error.as_str()).collect();
    errors.sort();
    assert_eq!(errors.len(), 3);
    assert!(
        errors.iter().any(|e| e.contains("AbortError")),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"no way"),
        "the fatal error is kept: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("cannot decode apalis_judged payload")),
        "{errors:?}"
    );
}

async fn transient_broker_errors_do_not_stop_the_worker(b: &TestBroker) {
    const N: u32 = 5;
    enqueue_pings(b, N).await;
    let flaky_acks_left = Arc::new(AtomicUsize::new(1));
    let flaky: Arc<dyn Broker> = Arc::new(FlakyBroker {
        inner: b.broker.clone(),
        fetch_failures_left: AtomicUsize::new(3),
        ack_failures_left: flaky_acks_left.clone(),
    });
    let seen = Arc::new(Seen::default());
    let fetch_failures = Arc::new(AtomicUsize::new(0));
    let ctx = WorkerContext::new("flaky");
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend::<Ping>(&flaky, 2))
        .data(seen.clone())
        .data(Pace(Duration::ZERO))
        .on_event({
            let fetch_failures = fetch_failures.clone();
            move |_, event| {
                // A failed call that carried acks is reported too; count the fetch outages.
                if let Event::Custom(custom) = event
                    && let Some(BrokerBackendEvent::FetchFailed { error, .. }) =
                        custom.downcast_ref::<BrokerBackendEvent>()
                    && error.contains("fetch outage")
                {
                    fetch_failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .build(ping);
    let run = tokio::spawn(worker.run());

    let s = wait_for_stats(b.broker.as_ref(), Ping::NAME, "every job is acked", |s| {
        s.processed == u64::from(N)
    })
    .await;
    assert_eq!(s.running, 0);
    assert!(!run.is_finished(), "the worker is still running");
    stop(&ctx, run).await;
    assert_eq!(
        fetch_failures.load(Ordering::SeqCst),
        3,
        "each failed fetch is reported"
    );
    assert_eq!(
        seen.runs().len(),
        N as usize,
        "the failed ack was retried, not re-run"
    );
    assert_eq!(
        flaky_acks_left.load(Ordering::SeqCst),
        0,
        "an ack failed on the way"
    );
}

async fn job_outliving_its_lease_keeps_it_while_it_runs(b: &TestBroker) {
    let client = JobClient::new(b.broker.clone(), clock());
    client.enqueue(&Slow { n: 1 }).await.expect("enqueue");
    let seen = Arc::new(Seen::default());
    let ctx = WorkerContext::new("slow");
    // Reaping every 50 ms: a lease that was not renewed would be reaped and re-delivered.
    let backend = BrokerBackend::<Slow>::with_config(
        b.broker.clone(),
        clock(),
        BrokerBackendConfig {
            housekeeping_interval: Some(Duration::from_millis(50)),
            ..config(2)
        },
    );
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend)
        .data(seen.clone())
        .build(slow);
    let run = tokio::spawn(worker.run());

    let s = wait_for_stats(b.broker.as_ref(), Slow::NAME, "the job is done", |s| {
        s.processed == 1
    })
    .await;
    assert_eq!((s.ready, s.scheduled, s.running, s.dead), (0, 0, 0, 0));
    stop(&ctx, run).await;
    assert_eq!(
        seen.runs(),
        vec![(1, 1, 1)],
        "renewed leases: never reaped, ran once"
    );
}

on_both_brokers!(
    worker_drains_enqueued_jobs_and_acks_each,
    failed_job_is_retried_on_its_schedule_then_dead,
    stopped_worker_leaves_no_job_leased,
    fetched_but_unstarted_jobs_are_released_on_stop,
    typed_errors_settle_by_the_policy,
    transient_broker_errors_do_not_stop_the_worker,
    job_outliving_its_lease_keeps_it_while_it_runs,
);

// ---------------------------------------------------------------------------------------------
// Test doubles
// ---------------------------------------------------------------------------------------------

/// A user tower layer letting at most `n` tasks in at once.
#[derive(Clone)]
struct GateLayer(Arc<Semaphore>);

impl GateLayer {
    fn new(n: usize) -> Self {
        Self(Arc::new(Semaphore::new(n)))
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            slots: PollSemaphore::new(self.0.clone()),
            permit: None,
        }
    }
}

struct Gate<S> {
    inner: S,
    slots: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
}

impl<S, R> Service<R> for Gate<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.permit.is_none() {
            let permit = ready!(self.slots.poll_acquire(cx)).expect("gate semaphore open");
            self.permit = Some(permit);
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let permit = self.permit.take();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(permit);
            out
        })
    }
}

/// Our broker, failing the first few fetches and acks as a broker outage would.
struct FlakyBroker {
    inner: Arc<dyn Broker>,
    fetch_failures_left: AtomicUsize,
    ack_failures_left: Arc<AtomicUsize>,
}

fn outage(what: &str) -> BrokerError {
    BrokerError::Invalid {
        field: "connection",
        detail: format!("simulated {what} outage"),
    }
}

fn take_one(left: &AtomicUsize) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl Broker for FlakyBroker {
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now_ms: i64,
    ) -> Result<Vec<EnqueueOutcome>, BrokerError> {
        self.inner.enqueue(jobs, now_ms).await
    }

    async fn fetch(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        if take_one(&self.fetch_failures_left) {
            return Err(outage("fetch"));
        }
        self.inner.fetch(queue, max, lease, now_ms).await
    }

    async fn ack(&self, queue: &str, acks: Vec<Ack>, now_ms: i64) -> Result<(), BrokerError> {
        if !acks.is_empty() && take_one(&self.ack_failures_left) {
            return Err(outage("ack"));
        }
        self.inner.ack(queue, acks, now_ms).await
    }

    async fn extend_leases(
        &self,
        queue: &str,
        leases: &[Lease],
        lease: Duration,
        now_ms: i64,
    ) -> Result<(), BrokerError> {
        self.inner.extend_leases(queue, leases, lease, now_ms).await
    }

    async fn reap_expired(
        &self,
        queue: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<ReapReport, BrokerError> {
        self.inner.reap_expired(queue, limit, now_ms).await
    }

    async fn set_limit(&self, queue: &str, limit: Option<u32>) -> Result<(), BrokerError> {
        self.inner.set_limit(queue, limit).await
    }

    async fn queues(&self) -> Result<Vec<String>, BrokerError> {
        self.inner.queues().await
    }

    async fn stats(&self, queue: &str, now_ms: i64) -> Result<QueueStats, BrokerError> {
        self.inner.stats(queue, now_ms).await
    }

    async fn dead_list(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, BrokerError> {
        self.inner.dead_list(queue, limit).await
    }
    async fn scheduled_list(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<ScheduledJob>, BrokerError> {
        self.inner.scheduled_list(queue, limit).await
    }

    async fn dead_retry(&self, queue: &str, id: &str, now_ms: i64) -> Result<bool, BrokerError> {
        self.inner.dead_retry(queue, id, now_ms).await
    }

    async fn dead_discard(&self, queue: &str, id: &str) -> Result<bool, BrokerError> {
        self.inner.dead_discard(queue, id).await
    }

    async fn release_scheduled(
        &self,
        queue: &str,
        max: usize,
        now_ms: i64,
    ) -> Result<u64, BrokerError> {
        self.inner.release_scheduled(queue, max, now_ms).await
    }

    async fn dead_trim(
        &self,
        queue: &str,
        bounds: DeadSetBounds,
        now_ms: i64,
    ) -> Result<u64, BrokerError> {
        self.inner.dead_trim(queue, bounds, now_ms).await
    }

    async fn cron_fire(
        &self,
        schedule: &str,
        tick_ms: i64,
        job: NewJob,
        now_ms: i64,
    ) -> Result<bool, BrokerError> {
        self.inner.cron_fire(schedule, tick_ms, job, now_ms).await
    }

    async fn cron_last(&self, schedule: &str, queue: &str) -> Result<Option<i64>, BrokerError> {
        self.inner.cron_last(schedule, queue).await
    }
}
