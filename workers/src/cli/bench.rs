//! `buildlogs bench queue`: the peers' queue benchmark (`shared/reference/peers.md`), row for row.
//!
//! Per concurrency: a private `redis-server` is flushed, N no-op jobs are bulk-enqueued in
//! 1,000s (timed: `enqueue_jobs_per_s`), then a fresh worker process (this binary,
//! `bench queue-worker`) drains them. `process_jobs_per_s` = N / time from the first job's start
//! to the N-th ack (polled every 2 ms on a second connection). Redis CPU comes from `INFO cpu`
//! around the work step, worker CPU and peak RSS from `/proc/<pid>`.
//! `--scale` adds the 1,000,000-job backlog and 100,000 retries due in the same second.

use std::process::{Child, Command, Stdio};
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

use crate::jobs::noop::Noop;

const PREFIX: &str = "bench";
const FIRST_START_KEY: &str = "bench:first_start_ms";
const BULK: usize = 1000;

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// Queue throughput with no-op jobs against a private Redis (prints key=value figures).
    Queue(QueueArgs),
    /// Concurrent runners PATCHing a running web server on the production stack.
    Append(super::bench_append::AppendArgs),
    /// Flush and archive throughput for one large log on the production stack.
    Archive(super::bench_archive::ArchiveArgs),
    /// Stale-trace recovery of a backlog of finished builds with live logs (the incident).
    Recover(super::bench_recover::RecoverArgs),
    /// Mixed traffic with faults on the multi-process production stack, then the invariants
    /// (every build archived byte-identical, Redis keys back to baseline, RSS flat).
    Soak(crate::bench::soak::SoakArgs),
    /// Concurrent readers of one large log served by a `buildlogs web` process (its RSS).
    Reads(super::bench_reads::ReadsArgs),
    /// The log page's data for a 100 MiB archived log from a fresh web: summary, tail, head,
    /// search, RSS.
    Logpage(super::bench_logpage::LogpageArgs),
    /// The worker process of `bench queue` (internal).
    #[command(hide = true)]
    QueueWorker(QueueWorkerArgs),
}

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

pub async fn run(which: Bench) -> anyhow::Result<()> {
    match which {
        Bench::Queue(args) => queue(args).await,
        Bench::Append(args) => super::bench_append::run(args).await,
        Bench::Archive(args) => super::bench_archive::run(args).await,
        Bench::Recover(args) => super::bench_recover::run(args).await,
        Bench::Soak(args) => crate::bench::soak::run(args).await,
        Bench::Reads(args) => super::bench_reads::run(args).await,
        Bench::Logpage(args) => super::bench_logpage::run(args).await,
        Bench::QueueWorker(args) => queue_worker(args).await,
    }
}

/// A private Redis server, stopped on drop.
/// A throwaway production stack for a benchmark: a private redis-server, a fresh PostgreSQL
/// schema (dropped by [`Self::tear_down`]), and a temp dir for the data dir and, unless an
/// object store URL is given, the objects.
pub(crate) struct BenchStack {
    pub(crate) redis: PrivateRedis,
    pub(crate) settings: buildlogs::config::Settings,
    admin: sqlx::PgConnection,
    schema: String,
    dir: std::path::PathBuf,
}

impl BenchStack {
    pub(crate) async fn start(
        name: &str,
        database_url: &str,
        redis_server: &str,
        object_store_url: Option<String>,
    ) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let redis = PrivateRedis::start(redis_server).await?;
        let dir =
            std::env::temp_dir().join(format!("buildlogs-bench-{name}-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let schema = format!("bench_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut admin = sqlx::PgConnection::connect(database_url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&mut admin)
            .await?;
        let sep = if database_url.contains('?') { '&' } else { '?' };
        let settings = buildlogs::config::Settings {
            database_url: Some(format!(
                "{database_url}{sep}options=-c%20search_path%3D{schema}"
            )),
            redis_url: Some(redis.url.clone()),
            data_dir: dir.clone(),
            redis_prefix: PREFIX.into(),
            object_store_url: Some(
                object_store_url
                    .unwrap_or_else(|| format!("file://{}", dir.join("objects").display())),
            ),
            ..buildlogs::config::Settings::default()
        };
        Ok(Self {
            redis,
            settings,
            admin,
            schema,
            dir,
        })
    }

    /// Drops the schema and the temp dir (the private Redis goes with `self`).
    pub(crate) async fn tear_down(mut self) -> anyhow::Result<()> {
        let schema = &self.schema;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(&mut self.admin)
        .await?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

pub(crate) struct PrivateRedis {
    child: Child,
    pub(crate) url: String,
}

impl PrivateRedis {
    pub(crate) async fn start(bin: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str())?;
        for _ in 0..200 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(Self { child, url });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("private redis-server on port {port} did not answer")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

async fn queue(args: QueueArgs) -> anyhow::Result<()> {
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
    let mut worker = Command::new(exe)
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

/// (user+system CPU seconds, peak RSS MB) of a process, from /proc.
pub(crate) fn proc_usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" that closes the command name; utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    // Linux reports CPU in clock ticks of 1/100 s (USER_HZ).
    Ok((ticks / 100.0, hwm_kb / 1024.0))
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

async fn queue_worker(args: QueueWorkerArgs) -> anyhow::Result<()> {
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
