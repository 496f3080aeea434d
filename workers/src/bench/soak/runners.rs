//! The soak's CI runners: each behaves like GitLab Runner, one job after another until the
//! traffic stops.
//!
//! Per job: register it (`POST /api/v4/jobs`, standing in for the coordinator); PATCH the log
//! every few seconds at the offset the server acknowledged, sometimes resending a piece
//! already accepted or overlapping the previous one (the server answers 416 with its length and
//! the runner resumes from there, as GitLab Runner does); honour `429` (wait `Retry-After`,
//! resend); on a refused connection (a web process restarting) try the other web process.
//! Then `PUT` the final state with the log's CRC32, repeated after the interval a `202` asks
//! for until `200`. 5% of the jobs vanish mid-job (no final PUT ever), 5% after their first
//! final PUT; the system must end those builds by itself.
//!
//! Sizes: most logs are small (4 KiB–256 KiB), a quarter up to 4 MiB, a few up to
//! `max_log` (tens of MiB); runner 0's first job is the big log (`big_log`, 100 MiB by
//! default) that readers read whole and by ranges.
//!
//! Bounds: every loop ends — a job's PATCHes by its length, retries by [`MAX_FAILURES`], final
//! PUTs by [`MAX_PUTS`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::book::{Book, Build, Fate};
use super::content::{self, Rng};

/// Consecutive failed requests (connection errors, 5xx) after which a runner gives its job up.
const MAX_FAILURES: u32 = 60;
/// Final PUTs a runner sends at most while they answer 202 (GitLab Runner gives up after
/// about as long as the server's 5-minute accept timeout).
const MAX_PUTS: u32 = 150;
/// Largest PATCH body: a runner sends what it buffered since the last PATCH; the server takes
/// at most 4 MiB (`MAX_PATCH_BYTES`).
const MAX_PIECE: u64 = 1024 * 1024;
/// Longest `Retry-After` honoured, so a bad header cannot stall a runner for the whole run.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Traffic {
    pub admin: String,
    pub webs: Arc<Vec<String>>,
    /// Mean pause between two PATCHes of one job (jittered ±50%).
    pub patch_interval: Duration,
    /// How long a job writes its log, drawn in this range (seconds).
    pub job_seconds: (u64, u64),
    pub max_log: u64,
    pub big_log: u64,
    /// Cap on the interval a 202 to a final PUT asks for (the server's doubles to 64 s).
    pub max_put_interval: Duration,
}

pub async fn runner(
    n: usize,
    seed: u64,
    traffic: Traffic,
    client: reqwest::Client,
    book: Arc<Book>,
    stop: CancellationToken,
) {
    let mut rng = Rng::new(seed);
    let mut first = true;
    while !stop.is_cancelled() {
        let planned = if n == 0 && first && traffic.big_log > 0 {
            traffic.big_log
        } else {
            log_size(&mut rng, traffic.max_log)
        };
        // Runners 1 and 2 start with a vanishing job, so that even a short run has one of each.
        let fate = match (first, n, rng.below(100)) {
            (true, 1, _) => Fate::VanishMid,
            (true, 2, _) => Fate::VanishAfterPut,
            (_, _, 0..5) => Fate::VanishMid,
            (_, _, 5..10) => Fate::VanishAfterPut,
            _ => Fate::Complete,
        };
        first = false;
        let mut job = Job {
            n,
            rng: Rng::new(rng.next_u64()),
            web: rng.below(traffic.webs.len() as u64) as usize,
            traffic: &traffic,
            client: &client,
            book: &book,
        };
        if let Err(e) = job.run(planned, fate).await {
            book.finding(format!("runner {n}: {e:#}"));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

fn log_size(rng: &mut Rng, max_log: u64) -> u64 {
    const KIB: u64 = 1024;
    match rng.below(100) {
        0..70 => rng.range(4 * KIB, 256 * KIB),
        70..95 => rng.range(256 * KIB, (4 * 1024 * KIB).min(max_log.max(257 * KIB))),
        _ => rng.range(4 * 1024 * KIB, max_log.max(4 * 1024 * KIB + 1)),
    }
}

struct Job<'a> {
    n: usize,
    rng: Rng,
    web: usize,
    traffic: &'a Traffic,
    client: &'a reqwest::Client,
    book: &'a Book,
}

enum Patch {
    /// The server's length after the request (202 or 416).
    Length(u64),
    /// 403: the job is no longer running.
    Forbidden,
}

impl Job<'_> {
    fn base(&self) -> &str {
        &self.traffic.webs[self.web % self.traffic.webs.len()]
    }

    /// The other web process, after a failed request.
    fn switch(&mut self) {
        self.web += 1;
    }

    async fn run(&mut self, planned: u64, fate: Fate) -> anyhow::Result<()> {
        let (id, token) = self.register().await?;
        let build = Arc::new(Build {
            id,
            token,
            seed: self.rng.next_u64(),
            planned,
            fate,
            acked: Default::default(),
            runner_done: Default::default(),
            put_sent: Default::default(),
            put_ok: Default::default(),
            forbidden: Default::default(),
        });
        self.book.add(build.clone());
        let result = self.write(&build).await;
        build.runner_done.store(true, Ordering::Release);
        result
    }

    async fn register(&mut self) -> anyhow::Result<(i64, String)> {
        let mut failures = 0;
        loop {
            let reply = self
                .client
                .post(format!("{}/api/v4/jobs", self.base()))
                .bearer_auth(&self.traffic.admin)
                .send()
                .await;
            match reply {
                Ok(r) if r.status().as_u16() == 201 => {
                    let json: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
                    let id = json["id"].as_i64().context("job id")?;
                    let token = json["token"].as_str().context("job token")?.to_owned();
                    return Ok((id, token));
                }
                Ok(r) => {
                    let status = r.status();
                    if failures >= MAX_FAILURES {
                        anyhow::bail!("registering a job answered {status}");
                    }
                }
                Err(e) if failures >= MAX_FAILURES => {
                    return Err(e).context("registering a job");
                }
                Err(_) => {}
            }
            failures += 1;
            self.switch();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn write(&mut self, build: &Build) -> anyhow::Result<()> {
        let c = &self.book.counters;
        let seconds = self
            .rng
            .range(self.traffic.job_seconds.0, self.traffic.job_seconds.1 + 1);
        let steps = (seconds as f64 / self.traffic.patch_interval.as_secs_f64()).max(1.0);
        let piece = ((build.planned as f64 / steps) as u64).clamp(1, MAX_PIECE);
        // A log that needs more than the job's time at 1 MiB a PATCH (the big log) is written
        // faster, as a chatty job's runner would.
        let interval = if build.planned / MAX_PIECE > steps as u64 {
            self.traffic.patch_interval / 4
        } else {
            self.traffic.patch_interval
        };
        let vanish_at = match build.fate {
            Fate::VanishMid => self.rng.range(1, build.planned.max(2)),
            _ => u64::MAX,
        };
        let mut offset = 0u64;
        let mut last_start = 0u64;
        while offset < build.planned {
            if offset >= vanish_at {
                c.vanished_mid_job.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let jitter = self.rng.range(50, 151) as f64 / 100.0;
            tokio::time::sleep(interval.mul_f64(jitter)).await;
            // A resend of the piece already accepted, or an overlap with it: 416 and resume.
            let start = match self.rng.below(100) {
                0..5 if offset > 0 => last_start,
                5..8 if offset > 0 => offset - self.rng.range(1, offset.min(2048) + 1),
                _ => offset,
            };
            if start != offset {
                c.resends.fetch_add(1, Ordering::Relaxed);
            }
            let end = (offset + piece).min(build.planned);
            match self.patch(build, start, end).await? {
                Patch::Length(len) => {
                    if len > build.planned {
                        self.book.finding(format!(
                            "build {}: server length {len} past what the runner planned ({})",
                            build.id, build.planned
                        ));
                    }
                    if start == offset {
                        last_start = start;
                    }
                    offset = len;
                    build.acked.fetch_max(len, Ordering::AcqRel);
                }
                Patch::Forbidden => {
                    build.forbidden.store(true, Ordering::Release);
                    self.book.finding(format!(
                        "build {}: PATCH at {start} answered 403 while its runner was still writing ({} of {} bytes)",
                        build.id, offset, build.planned
                    ));
                    return Ok(());
                }
            }
        }
        self.finish(build).await
    }

    /// One PATCH, retried through 429s and connection errors: the server's length, or 403.
    async fn patch(&mut self, build: &Build, start: u64, end: u64) -> anyhow::Result<Patch> {
        let c = &self.book.counters;
        let body = content::bytes(build.seed, start, end - start);
        let mut failures = 0;
        loop {
            let sent = Instant::now();
            let reply = self
                .client
                .patch(format!("{}/api/v4/jobs/{}/trace", self.base(), build.id))
                .header("JOB-TOKEN", &build.token)
                .header("Content-Range", format!("{start}-{}", end - 1))
                .body(body.clone())
                .send()
                .await;
            c.patches.fetch_add(1, Ordering::Relaxed);
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    c.patch_errors.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        return Err(e).context(format!("build {}: PATCH", build.id));
                    }
                    self.switch();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let status = reply.status().as_u16();
            let length = reply
                .headers()
                .get("range")
                .and_then(|v| v.to_str().ok())
                .and_then(|r| r.strip_prefix("0-"))
                .and_then(|n| n.parse::<u64>().ok());
            let retry_after = reply
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok());
            let text = reply.text().await.unwrap_or_default();
            self.book
                .patch_latency(sent.elapsed().as_secs_f64() * 1000.0);
            match (status, length) {
                (202, Some(len)) => {
                    if start == build.acked() {
                        c.bytes_sent.fetch_add(end - start, Ordering::Relaxed);
                    }
                    return Ok(Patch::Length(len));
                }
                (416, Some(len)) => {
                    c.patch_416.fetch_add(1, Ordering::Relaxed);
                    return Ok(Patch::Length(len));
                }
                (429, _) => {
                    c.patch_429.fetch_add(1, Ordering::Relaxed);
                    let wait = Duration::from_secs(retry_after.unwrap_or(1)).min(MAX_RETRY_AFTER);
                    tokio::time::sleep(wait).await;
                }
                (403, _) => {
                    c.patch_403.fetch_add(1, Ordering::Relaxed);
                    return Ok(Patch::Forbidden);
                }
                (s, _) if s >= 500 => {
                    c.patch_errors.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        anyhow::bail!("build {}: PATCH answered {s}: {text}", build.id);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                (s, _) => {
                    c.patch_errors.fetch_add(1, Ordering::Relaxed);
                    anyhow::bail!(
                        "build {}: PATCH {start}-{} answered {s} (range {length:?}): {text}",
                        build.id,
                        end - 1
                    );
                }
            }
        }
    }

    /// The final PUT, repeated while 202 (once only for a runner that vanishes after it).
    async fn finish(&mut self, build: &Build) -> anyhow::Result<()> {
        let c = &self.book.counters;
        let len = build.acked();
        let body = serde_json::json!({
            "token": build.token,
            "state": "success",
            "exit_code": 0,
            "checksum": format!("crc32:{:08x}", content::crc32(build.seed, len)),
            "output": {
                "checksum": format!("crc32:{:08x}", content::crc32(build.seed, len)),
                "bytesize": len.to_string(),
            },
        });
        let mut failures = 0;
        for _ in 0..MAX_PUTS {
            let reply = self
                .client
                .put(format!("{}/api/v4/jobs/{}", self.base(), build.id))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body)?)
                .send()
                .await;
            c.puts.fetch_add(1, Ordering::Relaxed);
            build.put_sent.store(true, Ordering::Release);
            if build.fate == Fate::VanishAfterPut {
                c.vanished_after_put.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        return Err(e).context(format!("build {}: final PUT", build.id));
                    }
                    self.switch();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let status = reply.status().as_u16();
            let interval = reply
                .headers()
                .get("x-gitlab-trace-update-interval")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(Duration::from_secs(1), Duration::from_secs);
            match status {
                200 => {
                    build.put_ok.store(true, Ordering::Release);
                    c.builds_finished.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                202 => {
                    c.put_202.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(interval.min(self.traffic.max_put_interval)).await;
                }
                s if s >= 500 => {
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        anyhow::bail!("build {}: final PUT answered {s}", build.id);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                s => {
                    let text = reply.text().await.unwrap_or_default();
                    anyhow::bail!("build {}: final PUT answered {s}: {text}", build.id);
                }
            }
        }
        c.put_gave_up.fetch_add(1, Ordering::Relaxed);
        self.book.finding(format!(
            "build {}: final PUT still answered 202 after {MAX_PUTS} tries (runner {})",
            build.id, self.n
        ));
        Ok(())
    }
}
