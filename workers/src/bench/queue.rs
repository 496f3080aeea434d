//! `buildlogs bench queue`: the peers' queue benchmark (`shared/reference/peers.md`), row for row.
//!
//! Per concurrency: a private `redis-server` is flushed, N no-op jobs are bulk-enqueued in
//! 1,000s (timed: `enqueue_jobs_per_s`), then a fresh worker process (this binary,
//! `bench queue-worker`) drains them. `process_jobs_per_s` = N / time from the first job's start
//! to the N-th ack (polled every 2 ms on a second connection). Redis CPU comes from `INFO cpu`
//! around the work step, worker CPU and peak RSS from `/proc/<pid>`.
//! `--scale` adds the 1,000,000-job backlog and 100,000 retries due in the same second.
//! `BENCH_WORKER_WRAPPER` (a command, e.g. `valgrind --tool=callgrind`) runs the worker under
//! it: `scripts/order-symbols.sh` lists the worker's functions that way.

use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use buildlogs::jobs::apalis::{WorkerConfig, Workers};
use buildlogs::jobs::broker::NewJob;
use buildlogs::jobs::client::new_job;
use buildlogs::jobs::redis::RedisBroker;
use buildlogs::jobs::{Broker, Clock, JobContext, JobError, JobHandler, SystemClock};
use redis::AsyncCommands;

use super::stack::{PrivateRedis, proc_usage};
use crate::jobs::noop::Noop;

const PREFIX: &str = "bench";
const FIRST_START_KEY: &str = "bench:first_start_ms";
const BULK: usize = 1000;

#[derive(clap::Args, Debug)]
pub struct QueueArgs {
    #[arg(long, default_value_t = 50_000)]
    jobs: usize,
    /// Worker concurrencies to run, comma-separated.
    #[arg(long, default_value = "10,50", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Repetitions of each row.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Also drain a 1,000,000-job backlog and 100,000 retries due in the same second.
    #[arg(long)]
    scale: bool,
    /// Async threads of the worker process (`BUILDLOGS_THREADS`).
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
    /// The redis-server binary to start privately.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
}

#[derive(clap::Args, Debug)]
pub struct QueueWorkerArgs {
    #[arg(long)]
    redis_url: String,
    #[arg(long)]
    concurrency: usize,
}

struct Row {
    enqueue_per_s: f64,
    process_per_s: f64,
    drain_s: f64,
    redis_cpu_us: f64,
    worker_cpu_us: f64,
    peak_rss_mb: f64,
    redis_mem_mb: f64,
    failed: u64,
}

pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    let redis = PrivateRedis::start(&args.redis_server).await?;
    for &c in &args.concurrency {
        for _ in 0..args.repeat {
            let row = one_run(&redis.url, args.jobs, c, args.worker_threads, None).await?;
            println!(
                "peer=buildlogs c={c} worker_threads={} n={} enqueue_jobs_per_s={:.0} process_jobs_per_s={:.0} drain_s={:.3} redis_cpu_us_per_job={:.2} worker_cpu_us_per_job={:.2} peak_rss_mb={:.1} redis_mem_after_enqueue_mb={:.1} failed={}",
                args.worker_threads,
                args.jobs,
                row.enqueue_per_s,
                row.process_per_s,
                row.drain_s,
                row.redis_cpu_us,
                row.worker_cpu_us,
                row.peak_rss_mb,
                row.redis_mem_mb,
                row.failed
            );
        }
    }
    if args.scale {
        let row = one_run(&redis.url, 1_000_000, 50, args.worker_threads, None).await?;
        println!(
            "scenario=backlog n=1000000 c=50 enqueue_jobs_per_s={:.0} drain_s={:.1} process_jobs_per_s={:.0} redis_mem_after_enqueue_mb={:.0} peak_rss_mb={:.1} errors={}",
            row.enqueue_per_s,
            row.drain_s,
            row.process_per_s,
            row.redis_mem_mb,
            row.peak_rss_mb,
            row.failed
        );
        let row = one_run(
            &redis.url,
            100_000,
            50,
            args.worker_threads,
            Some(Duration::from_secs(2)),
        )
        .await?;
        println!(
            "scenario=retries_due_at_once n=100000 c=50 drain_s={:.2} process_jobs_per_s={:.0} peak_rss_mb={:.1} errors={}",
            row.drain_s, row.process_per_s, row.peak_rss_mb, row.failed
        );
    }
    Ok(())
}

/// One row: flush, enqueue `n` (all due after `due_in` when given, as a burst of retries would
/// be), run a fresh worker process until all are acked.
async fn one_run(
    url: &str,
    n: usize,
    concurrency: usize,
    threads: usize,
    due_in: Option<Duration>,
) -> anyhow::Result<Row> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await?;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await?;
    let broker = RedisBroker::connect(url, PREFIX).await?;

    let now = SystemClock.now_ms();
    let run_at = due_in.map(|d| now + d.as_millis() as i64);
    let started = Instant::now();
    for first in (0..n as u64).step_by(BULK) {
        let last = (first + BULK as u64).min(n as u64);
        let chunk: Vec<NewJob> = (first..last)
            .map(|i| new_job(&Noop { n: i }, run_at, now))
            .collect::<Result<_, _>>()?;
        broker.enqueue(chunk, now).await?;
    }
    let enqueue_s = started.elapsed().as_secs_f64();
    let redis_mem_mb = info_field(&mut conn, "memory", "used_memory").await? / 1e6;

    let cpu_before = redis_cpu_s(&mut conn).await?;
    let exe = std::env::current_exe()?;
    let wrapper = std::env::var("BENCH_WORKER_WRAPPER").unwrap_or_default();
    let mut wrapper = wrapper.split_whitespace();
    let mut command = match wrapper.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(wrapper).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    let mut worker = command
        .args([
            "bench",
            "queue-worker",
            "--redis-url",
            url,
            "--concurrency",
            &concurrency.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .env("BUILDLOGS_THREADS", threads.to_string())
        .spawn()
        .context("starting the worker process")?;
    let stats_key = broker.keys().stats(<Noop as buildlogs::jobs::Job>::NAME);
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let done: Option<u64> = conn.hget(&stats_key, "processed").await?;
        if done.unwrap_or(0) >= n as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("worker did not drain {n} jobs within an hour");
        }
        if let Ok(Some(status)) = worker.try_wait() {
            bail!("worker exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let done_ms = SystemClock.now_ms();
    let cpu_after = redis_cpu_s(&mut conn).await?;
    if std::env::var_os("BENCH_COMMANDSTATS").is_some() {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?;
        eprintln!("{stats}");
    }
    let first: Option<i64> = conn.get(FIRST_START_KEY).await?;
    let drain_s = ((done_ms - first.unwrap_or(done_ms)) as f64 / 1000.0).max(0.001);
    let (worker_cpu_s, peak_rss_mb) = proc_usage(worker.id())?;
    let failed: Option<u64> = conn.hget(&stats_key, "failed").await?;
    stop(&mut worker);
    Ok(Row {
        enqueue_per_s: n as f64 / enqueue_s,
        process_per_s: n as f64 / drain_s,
        drain_s,
        redis_cpu_us: (cpu_after - cpu_before) * 1e6 / n as f64,
        worker_cpu_us: worker_cpu_s * 1e6 / n as f64,
        peak_rss_mb,
        redis_mem_mb,
        failed: failed.unwrap_or(0),
    })
}

fn stop(worker: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
}

async fn info_field(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg(section).query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("INFO {section} has no {field}"))
}

async fn redis_cpu_s(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    Ok(info_field(conn, "cpu", "used_cpu_user").await?
        + info_field(conn, "cpu", "used_cpu_sys").await?)
}

/// The no-op job, marking the moment the first one starts (one extra Redis call per run).
struct MarkFirstStart {
    marked: AtomicBool,
    conn: redis::aio::MultiplexedConnection,
}

impl JobHandler for MarkFirstStart {
    type Job = Noop;

    async fn perform(&self, _job: Noop, _ctx: JobContext) -> Result<(), JobError> {
        if !self.marked.swap(true, Ordering::Relaxed) {
            let mut conn = self.conn.clone();
            let _: () = redis::cmd("SET")
                .arg(FIRST_START_KEY)
                .arg(SystemClock.now_ms())
                .arg("NX")
                .query_async(&mut conn)
                .await
                .map_err(JobError::retryable)?;
        }
        Ok(())
    }
}

pub async fn run_worker(args: QueueWorkerArgs) -> anyhow::Result<()> {
    let broker = Arc::new(RedisBroker::connect(&args.redis_url, PREFIX).await?);
    let conn = redis::Client::open(args.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let handler = MarkFirstStart {
        marked: AtomicBool::new(false),
        conn,
    };
    let config = WorkerConfig {
        concurrency: args.concurrency,
        ..WorkerConfig::default()
    };
    let shutdown = crate::roles::shutdown_on_signal();
    Workers::new(broker, Arc::new(SystemClock), config)
        .register(handler)
        .run(shutdown)
        .await;
    Ok(())
}
