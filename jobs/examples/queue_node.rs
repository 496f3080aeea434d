//! A worker or scheduler process for the multi-process job-system tests (`jobs/tests/processes.rs`):
//! the real apalis workers and scheduler over Redis, running a probe job that reports what it sees to
//! Redis keys under the test's prefix. Configured by env vars:
//! `NODE_REDIS_URL`, `NODE_PREFIX`, `NODE_ROLE` (`worker` | `scheduler`), `NODE_CONCURRENCY`,
//! `NODE_LEASE_MS`.

use std::sync::Arc;
use std::time::Duration;

use buildlogs_jobs::apalis::{WorkerConfig, Workers};
use buildlogs_jobs::cron::{CronEntry, Scheduler};
use buildlogs_jobs::redis::RedisBroker;
use buildlogs_jobs::{
    Dedup, Job, JobContext, JobError, JobHandler, JobOptions, RetrySchedule, SystemClock,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Sleeps `sleep_ms` on its first attempt (long enough to be killed mid-job), aborts the whole
/// process when `crash` is set, and records starts, finishes and peak concurrency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub n: u64,
    pub sleep_ms: u64,
    pub first_attempt_sleep_ms: u64,
    pub crash: bool,
}

impl Job for Probe {
    const NAME: &'static str = "probe";

    fn options() -> JobOptions {
        let lease_ms = env("NODE_LEASE_MS", "1000").parse().unwrap_or(1000);
        JobOptions {
            max_attempts: 3,
            retry: RetrySchedule::Fixed(Duration::from_millis(50)),
            dedup: Dedup::none(),
            timeout: Duration::from_secs(120),
            lease: Duration::from_millis(lease_ms),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick;

impl Job for Tick {
    const NAME: &'static str = "tick";

    fn options() -> JobOptions {
        // No dedup: only the scheduler's once-per-tick rule may prevent duplicates here.
        JobOptions {
            dedup: Dedup::none(),
            ..JobOptions::default()
        }
    }
}

struct ProbeHandler {
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
}

const ENTER: &str = r#"
local v = redis.call("INCR", KEYS[1])
if v > tonumber(redis.call("GET", KEYS[2]) or "0") then redis.call("SET", KEYS[2], v) end
redis.call("RPUSH", KEYS[3], ARGV[1])
return v
"#;

impl JobHandler for ProbeHandler {
    type Job = Probe;

    async fn perform(&self, job: Probe, ctx: JobContext) -> Result<(), JobError> {
        let mut conn = self.conn.clone();
        let p = &self.prefix;
        let tag = format!("{}:{}:{}", job.n, ctx.attempt, std::process::id());
        redis::Script::new(ENTER)
            .key(format!("{p}:probe:running"))
            .key(format!("{p}:probe:peak"))
            .key(format!("{p}:probe:started"))
            .arg(&tag)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(JobError::retryable)?;
        if job.crash {
            std::process::abort();
        }
        let sleep = if ctx.attempt == 1 {
            job.first_attempt_sleep_ms.max(job.sleep_ms)
        } else {
            job.sleep_ms
        };
        tokio::time::sleep(Duration::from_millis(sleep)).await;
        redis::pipe()
            .decr(format!("{p}:probe:running"), 1)
            .rpush(
                format!("{p}:probe:done"),
                format!("{}:{}", job.n, ctx.attempt),
            )
            .query_async::<()>(&mut conn)
            .await
            .map_err(JobError::retryable)?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = env("NODE_REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = env("NODE_PREFIX", "node");
    let broker = Arc::new(RedisBroker::connect(&url, &prefix).await?);
    let shutdown = CancellationToken::new();
    let t = shutdown.clone();
    tokio::spawn(async move {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
        }
        t.cancel();
    });
    match env("NODE_ROLE", "worker").as_str() {
        "scheduler" => {
            let every_second = CronEntry::new("every-second", "* * * * * *", Tick)?;
            Scheduler::new(broker, Arc::new(SystemClock), vec![every_second])
                .run(shutdown)
                .await;
        }
        _ => {
            let conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let config = WorkerConfig {
                concurrency: env("NODE_CONCURRENCY", "10").parse()?,
                poll_interval: Duration::from_millis(20),
                reap_interval: Duration::from_millis(200),
                ..WorkerConfig::default()
            };
            Workers::new(broker, Arc::new(SystemClock), config)
                .register(ProbeHandler { conn, prefix })
                .run(shutdown)
                .await;
        }
    }
    Ok(())
}
