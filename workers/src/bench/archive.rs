//! `buildlogs bench archive`: flush and archive throughput for one large log (default 100 MiB,
//! GitLab's trace size limit) on the production stack: a private redis-server, a throwaway
//! PostgreSQL schema, objects in a temp folder (or `--objects s3 --s3-url s3://bucket/prefix`,
//! with the usual `AWS_*` variables and `AWS_ENDPOINT_URL`). The stores are opened as the roles
//! open them (`Settings::open_stack`); the work runs through the services the worker's jobs call.
//!
//! Steps:
//! 1. register a build and append the log through `TraceService::append`, 1 MiB at a time (so
//!    128 KiB live chunks in Redis), generated as it goes (never held whole in memory);
//! 2. the runner's final PUT (`TraceService::finish`: the trace is closed, 202);
//! 3. timed: flush every chunk (`FlushService`), `--concurrency` at once, as that many worker
//!    slots would;
//! 4. the final PUT again (200: the CRC32 combined from the chunks' is recorded, state committed);
//! 5. timed: archive the log (`ArchiveService`: chunks streamed into a multipart upload, CRC32
//!    and SHA-256 on the way, one transaction, chunk deletion); the artifact's size and CRC32
//!    are checked against the log's and the chunks' (so a fast but wrong run fails).
//!
//! Prints one line of key=value figures, with the object store requests each step made (counted
//! by a `CountedStorage` around the store). Throughput is MiB (2^20 bytes) per second; peak RSS is
//! this process's VmHWM, which holds the services, the driver and the client libraries.
//! Redis, PostgreSQL and this process share the machine's cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use buildlogs::config::Settings;
use buildlogs::jobs::{Clock, JobClient, SystemClock};
use buildlogs::traces::archive::{ArchiveOutcome, ArchiveService};
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::flush::{FlushOutcome, FlushService};
use buildlogs::traces::model::BuildStatus;
use buildlogs::traces::service::{FinishOutcome, FinishRequest, TraceService};

use super::counted::CountedStorage;
use super::stack::BenchStack;

/// One append: what a runner PATCHes when it has a lot of output (under the API's 4 MiB cap).
const APPEND_BYTES: usize = 1024 * 1024;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objects {
    /// A folder in a temp dir (removed at the end).
    File,
    /// The bucket `--s3-url` names.
    S3,
}

impl Objects {
    /// The object store URL `--objects` and `--s3-url` name together (`None`: a temp folder).
    pub fn store_url(self, s3_url: Option<&str>) -> anyhow::Result<Option<String>> {
        match (self, s3_url) {
            (Objects::S3, Some(url)) if url.starts_with("s3://") => Ok(Some(url.to_owned())),
            (Objects::S3, _) => bail!("--objects s3 needs --s3-url s3://bucket/prefix"),
            (Objects::File, Some(_)) => bail!("--s3-url needs --objects s3"),
            (Objects::File, None) => Ok(None),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ArchiveArgs {
    /// Size of the log, MiB.
    #[arg(long, default_value_t = 100)]
    mib: u64,
    /// Chunks flushed at once (worker slots running flush jobs).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Where flushed chunks and the archive go.
    #[arg(long, value_enum, default_value_t = Objects::File)]
    objects: Objects,
    /// With `--objects s3`: `s3://bucket/prefix`; the bucket must exist. Credentials and
    /// endpoint from `AWS_*` / `AWS_ENDPOINT_URL`.
    #[arg(long)]
    s3_url: Option<String>,
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

pub async fn run(args: ArchiveArgs) -> anyhow::Result<()> {
    ensure!(args.mib > 0, "--mib must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let object_store_url = args.objects.store_url(args.s3_url.as_deref())?;
    let stack = BenchStack::start(
        "archive",
        &args.database_url,
        &args.redis_server,
        object_store_url,
    )
    .await?;
    let result = drive(&args, &stack.settings).await;
    stack.tear_down().await?;
    result
}

async fn drive(args: &ArchiveArgs, settings: &Settings) -> anyhow::Result<()> {
    let stack = settings.open_stack().await.context("opening the stores")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let bytes = args.mib * 1024 * 1024;
    let (objects, requests) = CountedStorage::wrap(stack.objects.clone());
    let stores = stack.trace_stores(clock.clone()).with_objects(objects);
    let traces = TraceService::new(
        stores.clone(),
        JobClient::new(stack.broker.clone(), clock.clone()),
    )
    .with_max_trace_size(bytes);
    let flush = Arc::new(FlushService::new(stores.clone()));
    let archive = ArchiveService::new(stores);

    // 1. The log, appended as a runner would (any byte values, not only UTF-8).
    let build = traces.create_build().await?;
    let (id, token) = (build.build.id, build.token);
    let started = Instant::now();
    let mut piece = vec![0u8; APPEND_BYTES];
    let mut offset = 0u64;
    while offset < bytes {
        let len = (bytes - offset).min(APPEND_BYTES as u64) as usize;
        for (i, b) in piece[..len].iter_mut().enumerate() {
            *b = ((offset as usize + i).wrapping_mul(31) % 251) as u8;
        }
        traces.append(id, &token, offset, &piece[..len]).await?;
        offset += len as u64;
    }
    let append_s = started.elapsed().as_secs_f64();

    // 2. The runner's final PUT: the trace is closed, the last partial chunk becomes flushable.
    let finish = FinishRequest {
        state: BuildStatus::Success,
        failure_reason: None,
        exit_code: Some(0),
        checksum: None,
        bytesize: Some(bytes),
    };
    traces.finish(id, &token, finish.clone()).await?;

    // 3. Every chunk flushed, `concurrency` at a time.
    let chunks = bytes.div_ceil(CHUNK_SIZE);
    let next = Arc::new(AtomicU64::new(0));
    let before = requests.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (flush, next) = (flush.clone(), next.clone());
        slots.spawn(async move {
            let mut flushed = 0u64;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= chunks {
                    return Ok::<u64, anyhow::Error>(flushed);
                }
                match flush.flush(id, index).await? {
                    FlushOutcome::Flushed { size, .. } => flushed += size,
                    other => bail!("chunk {index}: {other:?}"),
                }
            }
        });
    }
    let mut flushed = 0u64;
    while let Some(slot) = slots.join_next().await {
        flushed += slot??;
    }
    let flush_s = started.elapsed().as_secs_f64();
    let flush_requests = requests.load(Ordering::Relaxed) - before;
    ensure!(
        flushed == bytes,
        "flushed {flushed} bytes of a {bytes}-byte log"
    );

    // 4. The final PUT again: committed.
    match traces.finish(id, &token, finish).await? {
        FinishOutcome::Done {
            status: BuildStatus::Success,
        } => {}
        other => bail!("the final PUT after the flushes: {other:?}"),
    }

    // 5. The archive, checked.
    let before = requests.load(Ordering::Relaxed);
    let started = Instant::now();
    let artifact = match archive.archive(id).await? {
        ArchiveOutcome::Archived(artifact) => artifact,
        other => bail!("archive: {other:?}"),
    };
    let archive_s = started.elapsed().as_secs_f64();
    let archive_requests = requests.load(Ordering::Relaxed) - before;
    ensure!(
        artifact.size == bytes,
        "archive of {} bytes, the log has {bytes}",
        artifact.size
    );
    let chunks_crc = traces
        .trace_metadata(id)
        .await?
        .and_then(|m| m.checksum)
        .context("no CRC32 recorded at the final PUT")?;
    ensure!(
        artifact.crc32 == chunks_crc,
        "archive CRC32 {:08x}, the chunks' {chunks_crc:08x}",
        artifact.crc32
    );
    ensure!(
        stack.meta.chunks(id).await?.is_empty(),
        "chunk rows left after the archive"
    );
    if settings
        .object_store_url
        .as_deref()
        .is_some_and(|u| u.starts_with("s3://"))
    {
        // A bucket outlives the bench: leave nothing in it.
        let finished_at = traces
            .build(id)
            .await?
            .and_then(|b| b.finished_at_ms)
            .context("the build's finish time")?;
        let path = buildlogs::traces::archive::archive_path(id, finished_at);
        let _ = stack.objects.delete(&path).await;
    }

    let (_cpu_s, peak_rss_mb) = super::stack::proc_usage(std::process::id())?;
    let stack_name = match args.objects {
        Objects::File => "postgres+redis+file",
        Objects::S3 => "postgres+redis+s3",
    };
    let mib = bytes as f64 / MIB;
    println!(
        "bench=archive stack={stack_name} mib={} chunks={chunks} concurrency={} append_s={append_s:.2} flush_s={flush_s:.2} flush_mb_per_s={:.1} flush_object_requests={flush_requests} archive_s={archive_s:.2} archive_mb_per_s={:.1} archive_object_requests={archive_requests} peak_rss_mb={peak_rss_mb:.1}",
        args.mib,
        args.concurrency,
        mib / flush_s,
        mib / archive_s,
    );
    Ok(())
}
