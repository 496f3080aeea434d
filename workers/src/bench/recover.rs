//! `buildlogs bench recover`: the seed incident replayed. `--builds` finished builds (26,811 by
//! default) whose logs are still live in Redis, with no archive job queued (the queue was lost),
//! on the production stack: a private redis-server, a throwaway PostgreSQL schema, a local
//! object folder. Then one worker process's worth of runtime (the real handlers) runs
//! stale-trace recovery (its cron fired every 50 ms instead of every 5 minutes; a tick starts a
//! walk or finds one under way, and the walk goes on step by step as a limited-capacity
//! worker), which feeds the archive queue in
//! batches while it has room, until every log is archived. Prints seconds to the last archive, traces/s, MB/s, peak RSS (of the
//! recovery: the seeding's peak is reset first), the archive queue's longest length, and Redis
//! commands and SQL statements per trace.
//!
//! Log sizes are drawn from an exponential distribution with `--mean-kib`, clamped to
//! `--min-kib`..`--max-kib` (defaults 20, 1, 512: the incident's mix); `--fixed-bytes` gives
//! every log the same size (the 1,000,000-build run uses small ones).
//! Counting: Redis commands from `INFO commandstats` (every command, also those a script runs,
//! minus the monitor's own polling, about 1 %); SQL statements from sqlx's per-statement log
//! events, counted by a tracing layer this command installs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use buildlogs::config::Settings;
use buildlogs::jobs::apalis::WorkerConfig;
use buildlogs::jobs::{Clock, Job, JobClient, SystemClock};
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::jobs::{ArchiveTrace, RecoverStaleTraces};
use futures::StreamExt;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use super::stack::BenchStack;
use crate::jobs::HandlerConfig;

const MIB: f64 = 1024.0 * 1024.0;

/// SQL statements run by this process, counted from sqlx's `sqlx::query` events.
pub static SQL_STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// A tracing layer that counts sqlx's per-statement events (installed for this command only:
/// enabling them costs a little on every query).
pub struct StatementCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() == "sqlx::query" {
            SQL_STATEMENTS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// Finished builds with live logs and no archive.
    #[arg(long, default_value_t = 26_811)]
    builds: u64,
    #[arg(long, default_value_t = 20)]
    mean_kib: u64,
    #[arg(long, default_value_t = 1)]
    min_kib: u64,
    #[arg(long, default_value_t = 512)]
    max_kib: u64,
    /// Every log this many bytes instead of drawn sizes.
    #[arg(long)]
    fixed_bytes: Option<u64>,
    /// Archive jobs run at once (the worker's concurrency, and the archive queue's limit).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stale builds enqueued per recovery batch.
    #[arg(long, default_value_t = 1000)]
    batch: u32,
    /// PostgreSQL to hold a throwaway schema (dropped at the end).
    #[arg(
        long,
        env = "BUILDLOGS_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
}

pub async fn run(args: RecoverArgs) -> anyhow::Result<()> {
    ensure!(args.builds > 0, "--builds must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(
        args.min_kib >= 1 && args.min_kib <= args.max_kib,
        "--min-kib must be at least 1 and at most --max-kib"
    );
    let stack = BenchStack::start("recover", &args.database_url, &args.redis_server, None).await?;
    let result = drive(&args, &stack.settings, &stack.redis.url).await;
    stack.tear_down().await?;
    result
}

/// A small deterministic generator (xorshift64*), enough to draw log sizes.
struct Sizes {
    state: u64,
}

impl Sizes {
    fn next_unit(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn draw(&mut self, args: &RecoverArgs) -> u64 {
        if let Some(fixed) = args.fixed_bytes {
            return fixed;
        }
        let kib = -(args.mean_kib as f64) * self.next_unit().ln();
        let bytes = (kib * 1024.0) as u64;
        bytes.clamp(args.min_kib * 1024, args.max_kib * 1024)
    }
}

async fn redis_commands(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|l| l.split_once("calls=").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split(',').next().and_then(|n| n.parse::<u64>().ok()))
        .sum())
}

fn reset_peak_rss() {
    // Writing 5 resets VmHWM to the current RSS (Linux 4.0+).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn drive(args: &RecoverArgs, settings: &Settings, redis_url: &str) -> anyhow::Result<()> {
    let stack = settings.open_stack().await.context("opening the stores")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut pg = PgConnection::connect(settings.database_url.as_deref().unwrap_or_default())
        .await
        .context("connecting to PostgreSQL")?;

    // Seed: the builds in one statement, finished two hours ago with their traces closed.
    let started = Instant::now();
    let finished_at = clock.now_ms() - 2 * 3_600_000;
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO builds (token_digest, status, trace_closed, finished_at, created_at) \
         SELECT 'bench', 'success', 1, $1, $1 FROM generate_series(1, $2) RETURNING id",
    )
    .bind(finished_at)
    .bind(args.builds as i64)
    .fetch_all(&mut pg)
    .await?;
    // The logs, through the live store (one script per append of at most a chunk).
    let pattern: Arc<Vec<u8>> =
        Arc::new((0..CHUNK_SIZE as usize).map(|i| (i % 251) as u8).collect());
    let mut sizes = Sizes {
        state: 0x9E37_79B9_7F4A_7C15,
    };
    let plan: Vec<(i64, u64)> = ids.iter().map(|&id| (id, sizes.draw(args))).collect();
    let total_bytes: u64 = plan.iter().map(|(_, s)| s).sum();
    let live = stack.live.clone();
    let mut writes = futures::stream::iter(plan.into_iter().map(|(id, size)| {
        let (live, pattern) = (live.clone(), pattern.clone());
        async move {
            let mut offset = 0;
            while offset < size {
                let n = (size - offset).min(CHUNK_SIZE - offset % CHUNK_SIZE);
                live.append(id, offset, &pattern[..n as usize]).await?;
                offset += n;
            }
            live.close(id).await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(64);
    while let Some(done) = writes.next().await {
        done?;
    }
    drop(writes);
    eprintln!(
        "seeded {} builds, {:.1} MiB of live logs, in {:.1} s",
        args.builds,
        total_bytes as f64 / MIB,
        started.elapsed().as_secs_f64()
    );

    // Recover: a worker runtime with the real handlers; the archive queue's limit is its width.
    let redis_client = redis::Client::open(redis_url)?;
    let mut monitor = redis_client.get_multiplexed_async_connection().await?;
    stack
        .broker
        .set_limit(ArchiveTrace::NAME, Some(args.concurrency as u32))
        .await?;
    let mut config = HandlerConfig::default();
    config.recovery.batch = args.batch;
    let tuning = WorkerConfig {
        concurrency: args.concurrency,
        ..WorkerConfig::default()
    };
    let (workers, _breaker) = crate::jobs::workers(&stack, &config, tuning);
    let redis_before = redis_commands(&mut monitor).await?;
    let sql_before = SQL_STATEMENTS.load(Ordering::Relaxed);
    reset_peak_rss();
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(workers.run(shutdown.clone()));
    let jobs = JobClient::new(stack.broker.clone(), clock.clone());
    let (mut max_queue, mut polls) = (0u64, 0u64);
    let mut last_report = Instant::now();
    loop {
        // The cron, fired every poll instead of every 5 minutes: a tick starts a walk (or finds
        // one under way); one tick at a time (dedup until executed).
        jobs.enqueue(&RecoverStaleTraces {}).await?;
        let s = stack
            .broker
            .stats(ArchiveTrace::NAME, clock.now_ms())
            .await?;
        polls += 1;
        max_queue = max_queue.max(s.ready + s.scheduled + s.running);
        if s.processed >= args.builds {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  {:.0} s: {} archived, queue {}",
                started.elapsed().as_secs_f64(),
                s.processed,
                s.ready + s.scheduled + s.running
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sql = SQL_STATEMENTS.load(Ordering::Relaxed) - sql_before;
    // The monitor's poll (a deduplicated enqueue, a stats call) is a handful of commands;
    // subtract it rather than guess.
    let per_poll = {
        let a = redis_commands(&mut monitor).await?;
        jobs.enqueue(&RecoverStaleTraces {}).await?;
        stack
            .broker
            .stats(ArchiveTrace::NAME, clock.now_ms())
            .await?;
        redis_commands(&mut monitor).await? - a - 1
    };
    let redis = redis_commands(&mut monitor).await? - redis_before - polls * (per_poll + 1);
    let (_, peak_rss_mb) = super::stack::proc_usage(std::process::id())?;
    shutdown.cancel();
    let _ = worker.await;

    let unarchived: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM builds WHERE finished_at IS NOT NULL AND trace_archived_at IS NULL",
    )
    .fetch_one(&mut pg)
    .await?;
    let artifacts: i64 = sqlx::query_scalar("SELECT count(*) FROM job_artifacts")
        .fetch_one(&mut pg)
        .await?;
    let dead = stack
        .broker
        .stats(ArchiveTrace::NAME, clock.now_ms())
        .await?
        .dead;
    ensure!(
        unarchived == 0 && artifacts == args.builds as i64 && dead == 0,
        "recovery left {unarchived} unarchived, {artifacts} artifacts for {} builds, {dead} dead",
        args.builds
    );
    println!(
        "bench=recover stack=postgres+redis+file builds={} mib={:.1} concurrency={} batch={} seconds={elapsed:.1} traces_per_s={:.0} mb_per_s={:.1} peak_rss_mb={peak_rss_mb:.1} max_archive_queue={max_queue} redis_commands_per_trace={:.1} sql_statements_per_trace={:.1}",
        args.builds,
        total_bytes as f64 / MIB,
        args.concurrency,
        args.batch,
        args.builds as f64 / elapsed,
        total_bytes as f64 / MIB / elapsed,
        redis as f64 / args.builds as f64,
        sql as f64 / args.builds as f64,
    );
    Ok(())
}
