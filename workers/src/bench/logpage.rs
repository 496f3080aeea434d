//! `buildlogs bench logpage`: how fast the log page gets its data for a large archived log
//! (default 100 MiB, GitLab's trace size limit: about 1.3 million lines with colours and
//! sections) from a fresh `buildlogs web` process on the embedded stack (SQLite, objects in a
//! local folder, all in a temp dir removed at the end).
//!
//! Steps:
//! 1. register a build and append the log through `TraceService::append`, 1 MiB at a time
//!    (generated as it goes); line 1,000,000 carries a unique string; the final PUT, every
//!    chunk flushed, the archive: the log is one object.
//! 2. a fresh `buildlogs web` (cold: nothing indexed), then in order: `GET /jobs/:id/summary`
//!    (the first scan of the log), `lines?tail=500`, `lines?from=1`, a search for line
//!    1,000,000's string (a whole scan), each timed from request to last body byte and checked
//!    (line counts, the match's line number); then the web's RSS and peak RSS.
//! 3. another fresh web whose first request is `lines?tail=500`: what a reader opening the
//!    page waits for before the log's end can be drawn (the index the archiver stored with
//!    the archive, read by that request);
//! 4. the same once more with that stored index deleted: the whole log scanned to build it
//!    (how every first open went before archives kept their index).
//!
//! Objects in a local folder, or with `--objects s3 --s3-url s3://bucket/prefix` in a bucket
//! (credentials and endpoint from `AWS_*` / `AWS_ENDPOINT_URL`, passed on to the webs); the
//! bench deletes what it wrote there.
//!
//! Prints one line of key=value figures. Server and client share this machine's cores.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use buildlogs::config::{Settings, Stack};
use buildlogs::jobs::{Clock, JobClient, SystemClock};
use buildlogs::traces::archive::{ArchiveOutcome, ArchiveService, archive_path};
use buildlogs::traces::archived_lines;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::flush::FlushService;
use buildlogs::traces::model::BuildStatus;
use buildlogs::traces::service::{FinishOutcome, FinishRequest, TraceService};

use super::archive::Objects;
use super::stack::flush_all;

const ADMIN: &str = "bench-admin-token";
const APPEND_BYTES: usize = 1024 * 1024;
/// The line whose unique text the search looks for.
const NEEDLE_LINE: u64 = 1_000_000;

#[derive(clap::Args, Debug)]
pub struct LogpageArgs {
    /// Size of the log, MiB (line 1,000,000 needs about 77).
    #[arg(long, default_value_t = 100)]
    mib: u64,
    /// Where the archive (and flushed chunks) go.
    #[arg(long, value_enum, default_value_t = Objects::File)]
    objects: Objects,
    /// With `--objects s3`: `s3://bucket/prefix`; the bucket must exist.
    #[arg(long)]
    s3_url: Option<String>,
    /// The `buildlogs` binary that serves (default: this one).
    #[arg(long)]
    web_bin: Option<std::path::PathBuf>,
}

/// The text of line `n` (1-based), without its newline: coloured, about 80 bytes, with a
/// section marker every 1,000 lines (outer sections of 10,000 lines, every other collapsed,
/// inner ones of 500 lines inside them).
fn line(n: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    let at = 1_700_000_000 + n / 100;
    let _ = if n == NEEDLE_LINE {
        write!(out, "\x1b[31mthe needle-in-line-{n} is here\x1b[0m")
    } else if n % 10_000 == 1 {
        let collapsed = if (n / 10_000).is_multiple_of(2) {
            "[collapsed=true]"
        } else {
            ""
        };
        write!(
            out,
            "\x1b[0Ksection_start:{at}:step_{}{collapsed}\r\x1b[0K\x1b[36;1mStep {}\x1b[0;m",
            n / 10_000,
            n / 10_000
        )
    } else if n % 10_000 == 9_999 {
        write!(out, "\x1b[0Ksection_end:{at}:step_{}\r\x1b[0K", n / 10_000)
    } else if n % 1_000 == 2 {
        write!(
            out,
            "\x1b[0Ksection_start:{at}:part_{}\r\x1b[0KPart {}",
            n / 1_000,
            n / 1_000
        )
    } else if n % 1_000 == 502 {
        write!(out, "\x1b[0Ksection_end:{at}:part_{}\r\x1b[0K", n / 1_000)
    } else {
        write!(
            out,
            "\x1b[32m{n:>8}\x1b[0m building target {} \x1b[1mok\x1b[0m {:.<pad$}",
            n % 5000,
            "",
            pad = ((n * 7) % 57) as usize
        )
    };
}

pub async fn run(args: LogpageArgs) -> anyhow::Result<()> {
    ensure!(args.mib > 0, "--mib must be at least 1");
    args.objects.store_url(args.s3_url.as_deref())?;
    let dir = std::env::temp_dir().join(format!("buildlogs-bench-logpage-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = drive(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn drive(args: &LogpageArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let settings = Settings {
        data_dir: dir.to_path_buf(),
        object_store_url: args.s3_url.clone(),
        ..Settings::default()
    };
    let bytes_max = args.mib * 1024 * 1024;
    let written = Instant::now();
    let (id, bytes, lines) = write_archived_log(&settings, bytes_max).await?;
    let write_s = written.elapsed().as_secs_f64();
    let measured = measure(args, &settings, dir, id, bytes, lines, write_s).await;
    let removed = remove_archive(&settings, id).await;
    measured.and(removed)
}

async fn measure(
    args: &LogpageArgs,
    settings: &Settings,
    dir: &std::path::Path,
    id: i64,
    bytes: u64,
    lines: u64,
    write_s: f64,
) -> anyhow::Result<()> {
    let objects_url = settings.object_store_url.as_deref();

    let bin = match &args.web_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?,
    };
    let client = reqwest::Client::new();

    // A cold web: summary first.
    let web = Web::start(&bin, dir, objects_url, id, &client).await?;
    let (summary_s, summary) = web
        .get_json(&client, &format!("/jobs/{id}/summary"))
        .await?;
    ensure!(
        summary["lines"] == lines,
        "summary lines {} != {lines}",
        summary["lines"]
    );
    ensure!(
        summary["bytes"] == bytes,
        "summary bytes {}",
        summary["bytes"]
    );
    let sections = summary["sections"].as_array().map_or(0, Vec::len);
    let (tail_s, tail) = web
        .get_json(&client, &format!("/jobs/{id}/lines?tail=500"))
        .await?;
    ensure!(tail["first"] == lines - 499, "tail first {}", tail["first"]);
    let (head_s, head) = web
        .get_json(&client, &format!("/jobs/{id}/lines?from=1"))
        .await?;
    ensure!(
        head["lines"].as_array().map_or(0, Vec::len) == 500,
        "from=1: not 500 lines"
    );
    let mut search_s = f64::NAN;
    if lines >= NEEDLE_LINE {
        let (s, found) = web
            .get_json(
                &client,
                &format!("/jobs/{id}/search?q=NEEDLE-in-line-{NEEDLE_LINE}"),
            )
            .await?;
        ensure!(
            found["matches"] == serde_json::json!([NEEDLE_LINE]) && found["total"] == 1,
            "search: {found}"
        );
        search_s = s;
        let (_, there) = web
            .get_json(
                &client,
                &format!("/jobs/{id}/lines?from={NEEDLE_LINE}&count=1"),
            )
            .await?;
        ensure!(
            there["lines"][0]
                .as_str()
                .is_some_and(|l| l.contains("needle-in-line")),
            "line {NEEDLE_LINE}: {}",
            there["lines"][0]
        );
    }
    let rss_mb = status_kb(web.pid(), "VmRSS")? / 1024.0;
    let (cpu_s, peak_rss_mb) = super::stack::proc_usage(web.pid())?;
    drop(web);

    // Another cold web: the page's first call is the tail.
    let web = Web::start(&bin, dir, objects_url, id, &client).await?;
    let (cold_tail_s, cold_tail) = web
        .get_json(&client, &format!("/jobs/{id}/lines?tail=500"))
        .await?;
    ensure!(
        cold_tail["total_lines"] == lines,
        "cold tail total {}",
        cold_tail["total_lines"]
    );
    let cold_rss_mb = status_kb(web.pid(), "VmHWM")? / 1024.0;
    drop(web);

    // And without the stored index: the first request scans the whole log.
    let stack = settings.open_stack().await.context("opening the stores")?;
    let archive = archive_path(id, finished_at(&stack, id).await?);
    archived_lines::delete(stack.objects.as_ref(), &archive).await?;
    let web = Web::start(&bin, dir, objects_url, id, &client).await?;
    let (scan_tail_s, scan_tail) = web
        .get_json(&client, &format!("/jobs/{id}/lines?tail=500"))
        .await?;
    ensure!(
        scan_tail["total_lines"] == lines,
        "scanned tail total {}",
        scan_tail["total_lines"]
    );
    drop(web);

    println!(
        "bench=logpage stack=embedded objects={} mib={:.1} lines={lines} sections={sections} archived=true write_s={write_s:.1} \
         summary_cold_s={summary_s:.3} tail500_s={tail_s:.3} from1_s={head_s:.3} search_line_{NEEDLE_LINE}_s={search_s:.3} \
         web_rss_mb={rss_mb:.1} web_peak_rss_mb={peak_rss_mb:.1} web_cpu_s={cpu_s:.2} \
         first_request_tail500_cold_s={cold_tail_s:.3} cold_tail_web_peak_rss_mb={cold_rss_mb:.1} \
         first_request_tail500_scan_s={scan_tail_s:.3}",
        match args.objects {
            Objects::File => "file",
            Objects::S3 => "s3",
        },
        bytes as f64 / (1024.0 * 1024.0),
    );
    Ok(())
}

/// Writes the log (at most `bytes_max` bytes, whole lines) and archives it: (id, bytes, lines).
async fn write_archived_log(
    settings: &Settings,
    bytes_max: u64,
) -> anyhow::Result<(i64, u64, u64)> {
    let stack = settings.open_stack().await.context("opening the stores")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let traces = TraceService::new(
        stack.trace_stores(clock.clone()),
        JobClient::new(stack.broker.clone(), clock.clone()),
    )
    .with_max_trace_size(bytes_max);
    let flush = Arc::new(FlushService::new(stack.trace_stores(clock.clone())));
    let archive = ArchiveService::new(stack.trace_stores(clock));
    let build = traces.create_build().await?;
    let (id, token) = (build.build.id, build.token);
    let (mut offset, mut n) = (0u64, 0u64);
    let mut piece = Vec::with_capacity(APPEND_BYTES + 512);
    let mut one = Vec::with_capacity(512);
    loop {
        one.clear();
        line(n + 1, &mut one);
        one.push(b'\n');
        let full = offset + (piece.len() + one.len()) as u64 > bytes_max;
        if full || piece.len() >= APPEND_BYTES {
            traces.append(id, &token, offset, &piece).await?;
            offset += piece.len() as u64;
            piece.clear();
        }
        if full {
            break;
        }
        piece.extend_from_slice(&one);
        n += 1;
    }
    let finish = FinishRequest {
        state: BuildStatus::Success,
        failure_reason: None,
        exit_code: Some(0),
        checksum: None,
        bytesize: Some(offset),
    };
    traces.finish(id, &token, finish.clone()).await?;
    flush_all(&flush, id, 0, offset.div_ceil(CHUNK_SIZE)).await?;
    match traces.finish(id, &token, finish).await? {
        FinishOutcome::Done { .. } => {}
        other => bail!("the final PUT after the flushes: {other:?}"),
    }
    match archive.archive(id).await? {
        ArchiveOutcome::Archived(artifact) => ensure!(artifact.size == offset, "archive size"),
        other => bail!("archive: {other:?}"),
    }
    Ok((id, offset, n))
}

/// Deletes the archive and its line index (a bucket outlives the bench; a temp folder goes
/// anyway).
async fn remove_archive(settings: &Settings, id: i64) -> anyhow::Result<()> {
    let stack = settings.open_stack().await.context("opening the stores")?;
    let archive = archive_path(id, finished_at(&stack, id).await?);
    archived_lines::delete(stack.objects.as_ref(), &archive).await?;
    stack.objects.delete(&archive).await?;
    Ok(())
}

/// The build's finish time, which its archive's path follows from.
async fn finished_at(stack: &Stack, id: i64) -> anyhow::Result<i64> {
    stack
        .meta
        .build(id)
        .await?
        .and_then(|b| b.finished_at_ms)
        .context("the build's finish time")
}

/// A `buildlogs web` of its own on the bench's data dir, stopped on drop.
struct Web {
    child: Child,
    base: String,
}

impl Web {
    async fn start(
        bin: &std::path::Path,
        dir: &std::path::Path,
        objects_url: Option<&str>,
        id: i64,
        client: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = Command::new(bin);
        if let Some(url) = objects_url {
            command.env("OBJECT_STORE_URL", url);
        }
        let child = command
            .arg("web")
            .env("BUILDLOGS_DATA_DIR", dir)
            .env("BUILDLOGS_LISTEN", format!("127.0.0.1:{port}"))
            .env("BUILDLOGS_ADMIN_TOKEN", ADMIN)
            .env("BUILDLOGS_METRICS_LISTEN", "off")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} web", bin.display()))?;
        let web = Web {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let ready = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = client
                .get(format!("{}/api/v4/jobs/{id}", web.base))
                .bearer_auth(ADMIN)
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(web);
            }
            if Instant::now() > ready {
                bail!("buildlogs web did not come up on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET `path` with the admin token: seconds to the last body byte, and the JSON.
    async fn get_json(
        &self,
        client: &reqwest::Client,
        path: &str,
    ) -> anyhow::Result<(f64, serde_json::Value)> {
        let started = Instant::now();
        let response = client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        let seconds = started.elapsed().as_secs_f64();
        ensure!(
            status == 200,
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok((seconds, serde_json::from_slice(&body)?))
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
