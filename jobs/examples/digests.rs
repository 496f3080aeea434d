//! The job system on its own: an app with a job type of its own, sending users their weekly
//! digest, on Redis or on a SQLite file.
//!
//! ```text
//! cargo run -p buildlogs-jobs --example digests                                # SQLite, temp dir
//! cargo run -p buildlogs-jobs --example digests -- redis://127.0.0.1:6379/     # Redis
//! ```
//!
//! It shows what a user declares and what the job system does with it:
//! - the job type (`SendDigest`): its queue name, attempts, an exponential retry schedule, a
//!   dedup key (one digest per user until it is sent) and a timeout;
//! - a global limit: at most 2 digests are sent at once across every process on the queue;
//! - an apalis handler (a plain `async fn` with apalis' extractors) on a [`BrokerBackend`].
//!
//! It exits with an error unless every user got exactly one digest, the duplicate was dropped,
//! the failed first attempt was retried, and no more than the limit ran at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use buildlogs_jobs::apalis::BrokerBackend;
use buildlogs_jobs::redis::RedisBroker;
use buildlogs_jobs::sqlite::SqliteBroker;
use buildlogs_jobs::{
    Broker, Clock, Dedup, EnqueueOutcome, Job, JobClient, JobContext, JobError, JobOptions,
    RetrySchedule, SystemClock,
};
use serde::{Deserialize, Serialize};

const USERS: u32 = 8;
/// Digests sent at once, across every worker process on this queue.
const GLOBAL_LIMIT: u32 = 2;
/// The example's Redis keys start with this; it removes them when it is done.
const REDIS_PREFIX: &str = "digests-example";

/// Send one user their digest.
#[derive(Debug, Serialize, Deserialize)]
struct SendDigest {
    user: u32,
}

impl Job for SendDigest {
    const NAME: &'static str = "example_send_digest";

    fn options() -> JobOptions {
        JobOptions {
            max_attempts: 4,
            retry: RetrySchedule::Exponential {
                min: Duration::from_millis(200),
                factor: 2.0,
                max: Duration::from_secs(2),
                jitter: true,
            },
            // A second digest for the same user is dropped until the first one is sent.
            dedup: Dedup::until_executed(Duration::from_secs(600)),
            timeout: Duration::from_secs(30),
            ..JobOptions::default()
        }
    }

    fn dedup_key(&self) -> Option<String> {
        Some(format!("user:{}", self.user))
    }
}

/// Stands in for a mail server: records what was sent and how many sends overlapped.
#[derive(Default)]
struct Mailer {
    sent: std::sync::Mutex<Vec<(u32, u32)>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl Mailer {
    async fn send(&self, user: u32, attempt: u32) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut sent) = self.sent.lock() {
            sent.push((user, attempt));
        }
    }

    fn sent(&self) -> Vec<(u32, u32)> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The handler: the decoded job first, then whatever it extracts.
async fn send_digest(
    job: SendDigest,
    ctx: Data<JobContext>,
    mailer: Data<Arc<Mailer>>,
) -> Result<(), JobError> {
    // The mail server is busy for user 3 the first time: retried on the job's schedule.
    if job.user == 3 && ctx.attempt == 1 {
        return Err(JobError::retryable("mail server busy"));
    }
    mailer.send(job.user, ctx.attempt).await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let url = std::env::args().nth(1);
    let sqlite_dir = tempfile::tempdir().context("temp dir for the SQLite file")?;
    let broker: Arc<dyn Broker> = match url.as_deref() {
        Some(url) if url.starts_with("redis") => Arc::new(
            RedisBroker::connect(url, REDIS_PREFIX)
                .await
                .with_context(|| format!("connect to Redis at {url}"))?,
        ),
        Some(url) => bail!("expected a redis:// URL, got {url}"),
        None => {
            let url = format!("sqlite://{}", sqlite_dir.path().join("jobs.db").display());
            Arc::new(SqliteBroker::connect(&url).await.context("open SQLite")?)
        }
    };
    let outcome = run(broker.clone()).await;
    if let Some(url) = url.as_deref() {
        remove_redis_keys(url).await?;
    }
    outcome
}

async fn run(broker: Arc<dyn Broker>) -> anyhow::Result<()> {
    broker
        .set_limit(SendDigest::NAME, Some(GLOBAL_LIMIT))
        .await?;
    let processed_before = broker
        .stats(SendDigest::NAME, SystemClock.now_ms())
        .await?
        .processed;

    let client = JobClient::new(broker.clone(), Arc::new(SystemClock));
    let digests: Vec<SendDigest> = (1..=USERS).map(|user| SendDigest { user }).collect();
    client.enqueue_bulk(&digests).await?;
    let again = client.enqueue(&SendDigest { user: 1 }).await?;
    ensure!(
        again == EnqueueOutcome::Duplicate,
        "a second digest for user 1 was {again:?}, expected a duplicate"
    );

    // Up to 4 at once in this process; the broker's global limit (2) wins.
    let backend =
        BrokerBackend::<SendDigest>::new(broker.clone(), Arc::new(SystemClock)).concurrency(4);
    let mailer = Arc::new(Mailer::default());
    let ctx = WorkerContext::new("digests");
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend)
        .data(mailer.clone())
        .build(send_digest);
    let running = tokio::spawn(worker.run());

    // Done when the broker has settled every digest (the mailer's count alone would stop the
    // worker while the last run's ack is still on its way).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = broker.stats(SendDigest::NAME, SystemClock.now_ms()).await?;
        let settled = stats.processed >= processed_before + u64::from(USERS)
            && stats.ready + stats.scheduled + stats.running == 0;
        if settled || tokio::time::Instant::now() >= deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ctx.stop().context("stop the worker")?;
    running.await.context("the worker task")??;

    let mut sent = mailer.sent();
    sent.sort();
    println!("sent (user, attempt): {sent:?}");
    println!(
        "most sent at once: {} (global limit {GLOBAL_LIMIT})",
        mailer.peak.load(Ordering::SeqCst)
    );
    let users: Vec<u32> = sent.iter().map(|(user, _)| *user).collect();
    ensure!(
        users == (1..=USERS).collect::<Vec<_>>(),
        "every user gets exactly one digest"
    );
    ensure!(
        sent.contains(&(3, 2)),
        "user 3's digest is sent on its second attempt"
    );
    ensure!(
        mailer.peak.load(Ordering::SeqCst) <= GLOBAL_LIMIT as usize,
        "the global limit holds"
    );
    println!(
        "queue: processed={} failed={} ready={} scheduled={} running={} dead={}",
        stats.processed, stats.failed, stats.ready, stats.scheduled, stats.running, stats.dead
    );
    ensure!(
        stats.ready + stats.scheduled + stats.running + stats.dead == 0,
        "the queue is empty"
    );
    Ok(())
}

/// What the example leaves in Redis (the queue's counters and limit, the queue list) goes with
/// it. (`KEYS` walks the whole keyspace: fine for an example's own Redis, not for production.)
async fn remove_redis_keys(url: &str) -> anyhow::Result<()> {
    let mut conn = buildlogs_jobs::redis::connection(url).await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{REDIS_PREFIX}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
    }
    Ok(())
}
