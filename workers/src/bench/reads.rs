//! `buildlogs bench reads`: concurrent readers of one large log (default 100 MiB, GitLab's trace
//! size limit) served by a `buildlogs web` process on the production stack: a private
//! redis-server, a throwaway PostgreSQL schema, objects in a temp folder (or `--objects s3
//! --s3-url s3://bucket/prefix`, with the usual `AWS_*` variables and `AWS_ENDPOINT_URL`).
//!
//! Steps:
//! 1. register a build and append the log in this process through `TraceService::append`,
//!    1 MiB at a time (generated as it goes, never held whole), so its chunks are live in Redis;
//! 2. for each scenario, in order (`live`, then `flushed`: every full chunk moved to the object
//!    store by `FlushService`, then `archived`: the final PUT, the last chunk flushed,
//!    `ArchiveService`): start a fresh `buildlogs web` (so its peak RSS is this scenario's),
//!    then `--readers` readers GET the whole log at once, each checking every byte against the
//!    generator; the web process's VmRSS is sampled every 50 ms while they read, and its VmHWM
//!    read when they are done.
//!
//! Prints one line of key=value figures per scenario: seconds (all readers done), MiB/s (all
//! readers' bytes over that time), the web's RSS before the readers came, its sampled maximum
//! and its VmHWM. `--web-bin` serves with another build of `buildlogs` (e.g. an older commit's),
//! to compare. The server, Redis, PostgreSQL and the readers share this machine's cores.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use buildlogs::config::Settings;
use buildlogs::jobs::{Clock, JobClient, SystemClock};
use buildlogs::traces::archive::{ArchiveOutcome, ArchiveService};
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::flush::FlushService;
use buildlogs::traces::model::BuildStatus;
use buildlogs::traces::service::{FinishOutcome, FinishRequest, TraceService};

use super::archive::Objects;
use super::stack::BenchStack;
use super::stack::flush_all;

const ADMIN: &str = "bench-admin-token";

/// One append: what a runner PATCHes when it has a lot of output (under the API's 4 MiB cap).
const APPEND_BYTES: usize = 1024 * 1024;

/// How often the web process's VmRSS is sampled: short next to a read of seconds.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

const MIB: f64 = 1024.0 * 1024.0;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every chunk in Redis (the build running).
    Live,
    /// Full chunks in the object store, the last partial one in Redis.
    Flushed,
    /// One archive object, chunks deleted.
    Archived,
}

#[derive(clap::Args, Debug)]
pub struct ReadsArgs {
    /// Size of the log, MiB.
    #[arg(long, default_value_t = 100)]
    mib: u64,
    /// Readers reading the whole log at once.
    #[arg(long, default_value_t = 20)]
    readers: usize,
    /// Where the log is while it is read, in this order (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "live,flushed,archived"
    )]
    scenarios: Vec<Scenario>,
    /// Where flushed chunks and the archive go.
    #[arg(long, value_enum, default_value_t = Objects::File)]
    objects: Objects,
    /// With `--objects s3`: `s3://bucket/prefix`; the bucket must exist. Credentials and
    /// endpoint from `AWS_*` / `AWS_ENDPOINT_URL`.
    #[arg(long)]
    s3_url: Option<String>,
    /// The `buildlogs` binary that serves (default: this one).
    #[arg(long)]
    web_bin: Option<std::path::PathBuf>,
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

pub async fn run(args: ReadsArgs) -> anyhow::Result<()> {
    ensure!(args.mib > 0, "--mib must be at least 1");
    ensure!(args.readers > 0, "--readers must be at least 1");
    let mut order = args.scenarios.clone();
    order.dedup();
    ensure!(
        order.windows(2).all(|w| w[0] as u8 <= w[1] as u8),
        "--scenarios go in the log's order: live, flushed, archived"
    );
    let object_store_url = args.objects.store_url(args.s3_url.as_deref())?;
    let stack = BenchStack::start(
        "reads",
        &args.database_url,
        &args.redis_server,
        object_store_url,
    )
    .await?;
    let result = drive(&args, &order, &stack.settings).await;
    stack.tear_down().await?;
    result
}

/// Byte `at` of the log: any byte value (not only UTF-8), position-dependent.
fn log_byte(at: u64) -> u8 {
    (at.wrapping_mul(31) % 251) as u8
}

async fn drive(args: &ReadsArgs, order: &[Scenario], settings: &Settings) -> anyhow::Result<()> {
    let stack = settings.open_stack().await.context("opening the stores")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let bytes = args.mib * 1024 * 1024;
    let traces = TraceService::new(
        stack.trace_stores(clock.clone()),
        JobClient::new(stack.broker.clone(), clock.clone()),
    )
    .with_max_trace_size(bytes);
    let flush = Arc::new(FlushService::new(stack.trace_stores(clock.clone())));
    let archive = ArchiveService::new(stack.trace_stores(clock));

    let build = traces.create_build().await?;
    let (id, token) = (build.build.id, build.token);
    let mut piece = vec![0u8; APPEND_BYTES];
    let mut offset = 0u64;
    while offset < bytes {
        let len = (bytes - offset).min(APPEND_BYTES as u64) as usize;
        for (i, b) in piece[..len].iter_mut().enumerate() {
            *b = log_byte(offset + i as u64);
        }
        traces.append(id, &token, offset, &piece[..len]).await?;
        offset += len as u64;
    }
    let chunks = bytes.div_ceil(CHUNK_SIZE);
    let full_chunks = bytes / CHUNK_SIZE;
    let mut flushed = 0;

    let stack_name = match args.objects {
        Objects::File => "postgres+redis+file",
        Objects::S3 => "postgres+redis+s3",
    };
    for &scenario in order {
        let name = match scenario {
            Scenario::Live => "live",
            Scenario::Flushed => {
                flushed += flush_all(&flush, id, flushed, full_chunks).await?;
                "flushed"
            }
            Scenario::Archived => {
                let finish = FinishRequest {
                    state: BuildStatus::Success,
                    failure_reason: None,
                    exit_code: Some(0),
                    checksum: None,
                    bytesize: Some(bytes),
                };
                traces.finish(id, &token, finish.clone()).await?;
                flushed += flush_all(&flush, id, flushed, chunks).await?;
                match traces.finish(id, &token, finish).await? {
                    FinishOutcome::Done { .. } => {}
                    other => bail!("the final PUT after the flushes: {other:?}"),
                }
                match archive.archive(id).await? {
                    ArchiveOutcome::Archived(artifact) => ensure!(
                        artifact.size == bytes,
                        "archive of {} bytes, the log has {bytes}",
                        artifact.size
                    ),
                    other => bail!("archive: {other:?}"),
                }
                "archived"
            }
        };
        let row = read_with_a_fresh_web(args, settings, id, bytes).await?;
        println!(
            "bench=reads scenario={name} stack={stack_name} mib={} chunks={chunks} readers={} seconds={:.2} mb_per_s={:.1} web_rss_before_mb={:.1} web_max_sampled_rss_mb={:.1} web_peak_rss_mb={:.1} web_cpu_s={:.2}",
            args.mib,
            args.readers,
            row.seconds,
            args.readers as f64 * bytes as f64 / MIB / row.seconds,
            row.rss_before_mb,
            row.max_sampled_rss_mb,
            row.peak_rss_mb,
            row.cpu_s,
        );
    }
    if settings
        .object_store_url
        .as_deref()
        .is_some_and(|u| u.starts_with("s3://"))
    {
        // A bucket outlives the bench: leave nothing in it.
        let objects = stack.objects.as_ref();
        if let Some(finished_at) = traces.build(id).await?.and_then(|b| b.finished_at_ms) {
            let path = buildlogs::traces::archive::archive_path(id, finished_at);
            let _ = objects.delete(&path).await;
        }
        for index in 0..chunks {
            let path = buildlogs::traces::flush::chunk_path(id, index);
            let _ = objects.delete(&path).await;
        }
    }
    Ok(())
}

struct Row {
    seconds: f64,
    rss_before_mb: f64,
    max_sampled_rss_mb: f64,
    peak_rss_mb: f64,
    cpu_s: f64,
}

/// A web process of its own, `--readers` readers of the whole log, the web's memory watched.
async fn read_with_a_fresh_web(
    args: &ReadsArgs,
    settings: &Settings,
    id: i64,
    bytes: u64,
) -> anyhow::Result<Row> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bin = match &args.web_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?,
    };
    let mut command = Command::new(&bin);
    command
        .arg("web")
        .env("BUILDLOGS_DATA_DIR", &settings.data_dir)
        .env("BUILDLOGS_REDIS_PREFIX", &settings.redis_prefix)
        .env("BUILDLOGS_LISTEN", format!("127.0.0.1:{port}"))
        .env("BUILDLOGS_ADMIN_TOKEN", ADMIN)
        // Nothing scrapes it here; a metrics listener of its own would only take a port.
        .env("BUILDLOGS_METRICS_LISTEN", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    for (name, value) in [
        ("DATABASE_URL", &settings.database_url),
        ("REDIS_URL", &settings.redis_url),
        ("OBJECT_STORE_URL", &settings.object_store_url),
    ] {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    let web = Web(command
        .spawn()
        .with_context(|| format!("starting {} web", bin.display()))?);
    let pid = web.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.readers)
        .build()?;
    let ready = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client
            .get(format!("{base}/api/v4/jobs/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if Instant::now() > ready {
            bail!("buildlogs web did not come up on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_before_mb = status_kb(pid, "VmRSS")? / 1024.0;

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut max_kb = 0f64;
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            while !done.load(Ordering::Relaxed) {
                every.tick().await;
                max_kb = max_kb.max(status_kb(pid, "VmRSS").unwrap_or(0.0));
            }
            max_kb
        })
    };
    let url = format!("{base}/api/v4/jobs/{id}/trace");
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..args.readers {
        let (client, url) = (client.clone(), url.clone());
        readers.spawn(async move {
            let mut response = client.get(url).bearer_auth(ADMIN).send().await?;
            ensure!(response.status() == 200, "GET trace: {}", response.status());
            let mut at = 0u64;
            while let Some(frame) = response.chunk().await? {
                for (i, &b) in frame.iter().enumerate() {
                    if b != log_byte(at + i as u64) {
                        bail!("byte {} differs", at + i as u64);
                    }
                }
                at += frame.len() as u64;
            }
            ensure!(at == bytes, "read {at} bytes of a {bytes}-byte log");
            anyhow::Ok(())
        });
    }
    while let Some(reader) = readers.join_next().await {
        reader??;
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let max_sampled_rss_mb = sampler.await? / 1024.0;
    let (cpu_s, peak_rss_mb) = super::stack::proc_usage(pid)?;
    drop(web);
    Ok(Row {
        seconds,
        rss_before_mb,
        max_sampled_rss_mb,
        peak_rss_mb,
        cpu_s,
    })
}

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("/proc/{pid}/status has no {field}"))
}

/// The web process, stopped on drop.
struct Web(Child);

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
