//! `buildlogs bench soak`: mixed traffic with faults on the production stack as separate
//! processes, then the invariants that find leaks by themselves (DESIGN §6 "nothing left
//! behind", §10 "Soak").
//!
//! One run:
//! 1. [`fleet`]: 2 × web, 2 × worker, 1 × scheduler (this binary), a private redis-server with
//!    AOF, a fresh PostgreSQL schema, s3s-fs behind the fault [`crate::bench::relay`]; short
//!    stuck-build, accept and recovery settings so that the system ends every build itself.
//! 2. [`keys`]: the Redis keys baseline, before any traffic.
//! 3. For `--minutes`/`--seconds`: [`runners`] (GitLab-Runner-like, 5% vanish mid-job, 5%
//!    after their first final PUT), [`readers`] (whole logs and ranges, the big log too),
//!    [`tails`] (SSE, resumed by `Last-Event-ID`), [`faults`] (object store down, workers
//!    SIGKILLed, Redis and a web restarted), [`sampler`] (RSS of every process, Redis memory).
//! 4. Traffic stops (runners finish the job in hand); the system drains: every build final and
//!    archived and every queue empty, or `--drain-seconds` passed.
//! 5. [`probe`] looks at the end state (API, queues, dead set), [`keys`] at Redis again;
//!    [`report`]: `key=value` figures and the invariants; exit status 1 if one failed (the
//!    last lines of the process logs then go to stderr; `--keep-logs` keeps them whole).
//!
//! Everything runs on 127.0.0.1; every loop is bounded in count or time; every process is
//! killed and the schema, keys (the private Redis) and files removed at the end, also on error.

mod book;
mod content;
mod faults;
mod fleet;
mod keys;
mod probe;
mod readers;
mod report;
mod runners;
mod sampler;
mod tails;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use book::{Book, Build};
use report::Report;

const ADMIN: &str = "soak-admin-token";
const MIB: u64 = 1024 * 1024;
/// Time the fleet runs before the keys baseline: the scheduler's first ticks create the
/// global cron keys, which are not traffic.
const SETTLE: Duration = Duration::from_secs(6);
/// Pause between two looks at the drain.
const DRAIN_POLL: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Minutes of traffic (the design's soak is an hour).
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Seconds of traffic instead of minutes (the suite's short variant).
    #[arg(long)]
    seconds: Option<u64>,
    /// Concurrent runners, each running one job after another.
    #[arg(long, default_value_t = 40)]
    runners: usize,
    /// Concurrent readers (default: a quarter of the runners).
    #[arg(long)]
    readers: Option<usize>,
    /// Concurrent live tails (default: an eighth of the runners).
    #[arg(long)]
    tails: Option<usize>,
    /// Mean seconds between two PATCHes of one job.
    #[arg(long, default_value_t = 3.0)]
    patch_interval: f64,
    /// A job writes its log over this many seconds at least ...
    #[arg(long, default_value_t = 10)]
    job_min_seconds: u64,
    /// ... and at most.
    #[arg(long, default_value_t = 60)]
    job_max_seconds: u64,
    /// Largest ordinary log (MiB); 5% of the logs are between 4 MiB and this.
    #[arg(long, default_value_t = 24)]
    max_log_mib: u64,
    /// The big log runner 0 writes first and readers read whole (MiB; 0: none).
    #[arg(long, default_value_t = 100)]
    big_log_mib: u64,
    /// Longest wait, after traffic stops, for every build to be final and archived.
    #[arg(long, default_value_t = 300)]
    drain_seconds: u64,
    /// `BUILDLOGS_STUCK_TIMEOUT` of the fleet (seconds without a PATCH or PUT).
    #[arg(long, default_value_t = 20)]
    stuck_timeout: u64,
    /// `BUILDLOGS_ACCEPT_TIMEOUT` of the fleet (seconds a final PUT waits for live chunks).
    #[arg(long, default_value_t = 15)]
    accept_timeout: u64,
    /// PRNG seed of the traffic (0: from the clock; printed either way).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(
        long,
        env = "BUILDLOGS_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// The S3-compatible server (default: where `.ci/run` installs s3s-fs).
    #[arg(long, env = "BUILDLOGS_S3S_FS_BIN")]
    s3s_fs: Option<PathBuf>,
    /// Keep the processes' logs (their path is printed); otherwise a failed run prints their
    /// last lines and everything is removed.
    #[arg(long)]
    keep_logs: bool,
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let traffic_for = Duration::from_secs(args.seconds.unwrap_or(args.minutes * 60));
    let seed = if args.seed == 0 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    } else {
        args.seed
    };
    let s3s_fs = args.s3s_fs.clone().unwrap_or_else(default_s3s_fs);
    let env: Vec<(String, String)> = [
        ("BUILDLOGS_ADMIN_TOKEN", ADMIN.to_string()),
        ("BUILDLOGS_STUCK_TIMEOUT", args.stuck_timeout.to_string()),
        ("BUILDLOGS_STUCK_CRON", "*/5 * * * * *".into()),
        ("BUILDLOGS_ACCEPT_TIMEOUT", args.accept_timeout.to_string()),
        ("BUILDLOGS_RECOVERY_CRON", "*/10 * * * * *".into()),
        ("BUILDLOGS_RECOVERY_STALE_MINUTES", "1".into()),
        ("BUILDLOGS_BREAKER_FAILURES", "3".into()),
        ("BUILDLOGS_BREAKER_PROBE_SECONDS", "2".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let fleet = fleet::Fleet::start(fleet::Settings {
        database_url: args.database_url.clone(),
        redis_server: args.redis_server.clone(),
        s3s_fs,
        env,
        webs: 2,
        workers: 2,
    })
    .await?;
    let fleet = Arc::new(tokio::sync::Mutex::new(fleet));
    let outcome = drive(&args, seed, traffic_for, fleet.clone()).await;
    // The sampler and the fault task let go of the fleet once cancelled (also when `drive`
    // returned early with an error); wait for them, boundedly, before tearing down.
    for _ in 0..600 {
        if Arc::strong_count(&fleet) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fleet = Arc::try_unwrap(fleet)
        .map_err(|_| anyhow::anyhow!("the fleet is still shared at the end"))?
        .into_inner();
    let failed = !matches!(outcome, Ok(ref f) if f.is_empty());
    fleet.tear_down(failed, args.keep_logs).await?;
    let failed_invariants = outcome?;
    if !failed_invariants.is_empty() {
        bail!("soak invariants failed: {}", failed_invariants.join(", "));
    }
    Ok(())
}

/// The run between start and tear-down; the names of the invariants that failed.
async fn drive(
    args: &SoakArgs,
    seed: u64,
    traffic_for: Duration,
    fleet: Arc<tokio::sync::Mutex<fleet::Fleet>>,
) -> anyhow::Result<Vec<String>> {
    let (redis_url, webs) = {
        let f = fleet.lock().await;
        (f.redis_url.clone(), Arc::new(f.webs.clone()))
    };
    tokio::time::sleep(SETTLE).await;
    let baseline = keys::snapshot(&redis_url).await?;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(args.runners * 2)
        .build()?;
    // Tails stay open as long as their job runs: no total timeout, an idle one per read.
    let tail_client = reqwest::Client::builder().build()?;
    let book = Arc::new(Book::default());
    let begun = Instant::now();
    let stop_traffic = CancellationToken::new();
    let stop_all = CancellationToken::new();
    // Whichever way `drive` ends, the tasks sharing the fleet stop.
    let _stop_all_on_return = stop_all.clone().drop_guard();
    let samples = Arc::new(Mutex::new(sampler::Samples::default()));
    let sampler = tokio::spawn(sampler::sample(
        fleet.clone(),
        begun,
        samples.clone(),
        stop_all.clone(),
    ));
    let fault_log = Arc::new(Mutex::new(Vec::new()));
    let faults = tokio::spawn(faults::inject(
        fleet.clone(),
        begun,
        traffic_for,
        fault_log.clone(),
        stop_all.clone(),
    ));
    let traffic = runners::Traffic {
        admin: ADMIN.into(),
        webs: webs.clone(),
        patch_interval: Duration::from_secs_f64(args.patch_interval.max(0.1)),
        job_seconds: (
            args.job_min_seconds,
            args.job_max_seconds.max(args.job_min_seconds),
        ),
        max_log: args.max_log_mib.max(1) * MIB,
        big_log: args.big_log_mib * MIB,
        max_put_interval: Duration::from_secs(4),
    };
    let mut seeds = content::Rng::new(seed);
    let mut runner_tasks = JoinSet::new();
    for n in 0..args.runners {
        runner_tasks.spawn(runners::runner(
            n,
            seeds.next_u64(),
            traffic.clone(),
            client.clone(),
            book.clone(),
            stop_traffic.clone(),
        ));
    }
    let mut others = JoinSet::new();
    for _ in 0..args.readers.unwrap_or(args.runners / 4).max(1) {
        others.spawn(readers::reader(
            seeds.next_u64(),
            webs.clone(),
            Duration::from_secs(1),
            client.clone(),
            book.clone(),
            stop_traffic.clone(),
        ));
    }
    for _ in 0..args.tails.unwrap_or(args.runners / 8).max(1) {
        others.spawn(tails::tailer(
            seeds.next_u64(),
            webs.clone(),
            tail_client.clone(),
            book.clone(),
            stop_traffic.clone(),
            stop_all.clone(),
        ));
    }

    tokio::time::sleep(traffic_for).await;
    stop_traffic.cancel();
    let traffic_end = Instant::now();
    let drain_deadline = traffic_end + Duration::from_secs(args.drain_seconds);
    // Runners finish the job in hand (bounded by their retry and PUT limits).
    while tokio::time::timeout_at(drain_deadline.into(), runner_tasks.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}
    runner_tasks.abort_all();
    let runners_done_s = traffic_end.elapsed().as_secs_f64();
    match faults.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e).context("injecting a fault"),
        Err(e) => bail!("the fault task failed: {e}"),
    }

    // The drain: every build final and archived, or the deadline.
    let mut pending: Vec<Arc<Build>> = book.builds();
    while !pending.is_empty() && Instant::now() < drain_deadline {
        let mut still = Vec::new();
        for b in pending {
            match probe::job_json(&client, &webs[0], b.id).await {
                Some(j) if probe::is_final(&j) => {}
                _ => still.push(b),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
    let drained_s = traffic_end.elapsed().as_secs_f64();
    stop_all.cancel();
    others.abort_all();
    while others.join_next().await.is_some() {}

    // Look at the end state.
    let mut seen = BTreeMap::new();
    for b in book.builds() {
        if let Some(s) = probe::seen_of(&client, &webs[0], &b).await {
            seen.insert(b.id, s);
        }
    }
    let queues = probe::queue_lengths(&redis_url).await?;
    let dead = probe::dead_jobs(&redis_url).await?;
    let after = keys::snapshot(&redis_url).await?;
    let _ = sampler.await;
    let run_seconds = begun.elapsed().as_secs_f64();
    let exited = fleet.lock().await.exited();

    let mut r = Report::new();
    let c = &book.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    r.figure("bench", "soak");
    r.figure("seed", seed);
    r.figure("traffic_s", traffic_for.as_secs());
    r.figure("runners_done_after_s", format!("{runners_done_s:.1}"));
    r.figure("drain_s", format!("{drained_s:.1}"));
    r.figure("runners", args.runners);
    r.figure("builds_started", load(&c.builds_started));
    r.figure("builds_finished", load(&c.builds_finished));
    r.figure("vanished_mid_job", load(&c.vanished_mid_job));
    r.figure("vanished_after_put", load(&c.vanished_after_put));
    r.figure("bytes_sent", load(&c.bytes_sent));
    r.figure("patches", load(&c.patches));
    r.figure("patch_resends", load(&c.resends));
    r.figure("patch_416", load(&c.patch_416));
    r.figure("patch_429", load(&c.patch_429));
    r.figure("patch_403", load(&c.patch_403));
    r.figure("patch_errors", load(&c.patch_errors));
    let (p50, p99, n) = book.patch_percentiles();
    r.figure("patch_p50_ms", format!("{p50:.1}"));
    r.figure("patch_p99_ms", format!("{p99:.1}"));
    r.figure("patch_timed", n);
    r.figure("puts", load(&c.puts));
    r.figure("put_202", load(&c.put_202));
    r.figure("put_gave_up", load(&c.put_gave_up));
    r.figure("reads_served", load(&c.reads_served));
    r.figure("range_reads", load(&c.range_reads));
    r.figure("big_log_reads", load(&c.big_reads));
    r.figure("read_mb", load(&c.read_bytes) / MIB);
    r.figure("read_errors", load(&c.read_errors));
    r.figure("reads_unavailable", load(&c.reads_unavailable));
    r.figure("tails", load(&c.tails));
    r.figure("tails_ended", load(&c.tails_ended));
    r.figure("tail_resumes", load(&c.tail_resumes));
    r.figure("tail_errors", load(&c.tail_errors));
    r.figure("tails_unavailable", load(&c.tails_unavailable));
    if let Ok(log) = fault_log.lock() {
        for f in log.iter() {
            r.note(&format!("fault at {f}"));
        }
    }
    let (accepted, refused) = fleet.lock().await.relay.counts();
    r.figure("store_connections_refused", refused);
    r.figure("store_connections_passed", accepted);
    r.builds(&book, &seen);
    r.reads(&book);
    r.keys(&baseline, &after);
    if let Ok(s) = samples.lock() {
        r.rss(&s, run_seconds);
    }
    r.dead(&dead);
    r.queues(&queues);
    r.processes(exited);
    r.refused(&book);
    let findings = book.findings();
    r.figure("findings", findings.len());
    for f in findings.iter().take(40) {
        r.note(&format!("finding: {f}"));
    }
    Ok(r.print())
}

/// The s3s-fs version `.ci/run` and the tests install (the one pin).
const S3S_FS_VERSION: &str = include_str!("../../../../scripts/s3s-fs.version").trim_ascii();

/// Where `.ci/run` and the tests install s3s-fs.
fn default_s3s_fs() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"));
    home.join(format!("s3s-fs-{S3S_FS_VERSION}/bin/s3s-fs"))
}
