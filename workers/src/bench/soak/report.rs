//! The end of a soak run: after the drain, check the invariants and print `key=value` figures.
//!
//! Invariants (each printed as `invariant{name=…}=ok|FAILED`, with the evidence of a failure
//! on `# ` lines below it):
//! 1. `builds_final`: every build in a final state with its log archived.
//! 2. `archives_identical`: every archived log is what its runner sent — the job JSON's size
//!    and CRC32, and the bytes served back (length and CRC32 of the whole GET).
//! 3. `reads_correct`: no read or tail ever served a byte the runner did not send.
//! 4. `redis_keys_baseline`: no per-build or per-job key left without a short TTL.
//! 5. `rss_flat`: each buildlogs process's final RSS at most [`RSS_FACTOR`] × (and
//!    [`RSS_SLACK_MB`] above) its RSS a quarter into its lifetime.
//! 6. `dead_jobs_explained`: a dead job only where the run forced it (a SIGKILLed worker's
//!    lost leases, error "… (lease expired)").
//! 7. `queues_drained`: nothing ready, scheduled or running once traffic stopped.
//! 8. `processes_alive`: no process exited on its own.
//! 9. `runners_never_refused`: no PATCH of a runner still writing (every few seconds, far
//!    inside the stuck timeout) answered 403: the server never ends a live job under it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::book::{Book, Build, Fate};
use super::content;
use super::keys::{Pattern, SHORT_TTL_SECONDS};
use super::sampler::{Sample, Samples};

/// RSS may grow this much over a process's lifetime before it counts as not flat: allocators
/// keep freed pages and caches warm up (a 100 MiB read's buffers stay mapped), but a leak per
/// build grows with the builds served and passes it in a long run.
pub const RSS_FACTOR: f64 = 1.5;
/// ... and by at least this many MB (small processes double from 10 to 20 MB by warming up).
pub const RSS_SLACK_MB: f64 = 32.0;
/// Fewer samples than this in a lifetime: too short to judge growth.
const MIN_SAMPLES: usize = 20;

/// The job JSON's view of one build at the end.
pub struct Seen {
    pub status: String,
    pub trace_state: String,
    pub size: u64,
    pub crc32: Option<String>,
    /// `trace.partial`: archived with a gap (absent before the partial-logs change).
    pub partial: bool,
    /// Length and CRC32 of the whole log served by `GET …/trace`.
    pub served: Option<(u64, u32)>,
}

pub struct Report {
    lines: Vec<String>,
    failed: Vec<String>,
}

impl Report {
    pub fn new() -> Self {
        Self {
            lines: Vec::new(),
            failed: Vec::new(),
        }
    }

    pub fn figure(&mut self, key: &str, value: impl std::fmt::Display) {
        self.lines.push(format!("{key}={value}"));
    }

    pub fn note(&mut self, text: &str) {
        self.lines.push(format!("# {text}"));
    }

    fn invariant(&mut self, name: &str, evidence: Vec<String>) {
        let ok = evidence.is_empty();
        self.figure(
            &format!("invariant{{name={name}}}"),
            if ok { "ok" } else { "FAILED" },
        );
        for e in evidence.iter().take(40) {
            self.note(e);
        }
        if evidence.len() > 40 {
            self.note(&format!("… and {} more", evidence.len() - 40));
        }
        if !ok {
            self.failed.push(name.to_string());
        }
    }

    /// Prints everything; the names of the invariants that failed.
    pub fn print(mut self) -> Vec<String> {
        let verdict = if self.failed.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        self.figure("invariants", verdict);
        for l in &self.lines {
            println!("{l}");
        }
        self.failed
    }

    pub fn builds(&mut self, book: &Book, seen: &BTreeMap<i64, Seen>) {
        let builds = book.builds();
        let mut not_final = Vec::new();
        let mut mismatched = Vec::new();
        let mut ok = 0u64;
        let (mut by_status, mut by_state) = (BTreeMap::new(), BTreeMap::new());
        for b in &builds {
            let Some(s) = seen.get(&b.id) else {
                not_final.push(format!("build {}: its job JSON could not be read", b.id));
                continue;
            };
            *by_status.entry(s.status.clone()).or_insert(0u64) += 1;
            *by_state.entry(s.trace_state.clone()).or_insert(0u64) += 1;
            let finished = matches!(s.status.as_str(), "success" | "failed" | "canceled");
            if !finished || s.trace_state != "archived" {
                not_final.push(why_not_final(b, s));
                continue;
            }
            let want_len = b.acked();
            let want_crc = format!("crc32:{:08x}", content::crc32(b.seed, want_len));
            let served_ok = s.served.is_some_and(|(len, crc)| {
                len == want_len && format!("crc32:{crc:08x}") == want_crc
            });
            if s.size == want_len && s.crc32.as_deref() == Some(want_crc.as_str()) && served_ok {
                ok += 1;
            } else {
                mismatched.push(format!(
                    "build {}: runner sent {want_len} bytes {want_crc}; archive says {} bytes {:?}{}; served {:?}",
                    b.id,
                    s.size,
                    s.crc32,
                    if s.partial { " (partial)" } else { "" },
                    s.served.map(|(l, c)| format!("{l} bytes crc32:{c:08x}"))
                ));
            }
        }
        self.figure("archived_ok", ok);
        self.figure("archived_mismatch", mismatched.len());
        self.figure(
            "archived_partial",
            seen.values().filter(|s| s.partial).count(),
        );
        for (status, n) in by_status {
            self.figure(&format!("builds_status{{status={status}}}"), n);
        }
        for (state, n) in by_state {
            self.figure(&format!("builds_trace_state{{state={state}}}"), n);
        }
        self.invariant("builds_final", not_final);
        self.invariant("archives_identical", mismatched);
    }

    pub fn reads(&mut self, book: &Book) {
        let c = &book.counters;
        let mut evidence = Vec::new();
        let (reads, tails) = (
            c.read_mismatch.load(Ordering::Relaxed),
            c.tail_mismatch.load(Ordering::Relaxed),
        );
        if reads + tails > 0 {
            evidence.push(format!("{reads} reads and {tails} tails served bytes the runner did not send (see findings)"));
        }
        self.invariant("reads_correct", evidence);
    }

    pub fn keys(&mut self, before: &BTreeMap<String, Pattern>, after: &BTreeMap<String, Pattern>) {
        let mut evidence = Vec::new();
        for (pattern, end) in after {
            let start = before.get(pattern).cloned().unwrap_or_default();
            self.figure(
                &format!("redis_keys_left{{pattern=\"{pattern}\"}}"),
                format!(
                    "{} (baseline {}; no TTL: {}; longest TTL: {}s)",
                    end.total, start.total, end.no_ttl, end.max_ttl
                ),
            );
            if end.per_id && end.long_lived > start.long_lived {
                evidence.push(format!(
                    "{} keys {pattern} left after the drain without a TTL ≤ {SHORT_TTL_SECONDS}s ({} with none, the longest {}s; baseline {}), e.g. {}",
                    end.long_lived - start.long_lived,
                    end.no_ttl,
                    end.max_ttl,
                    start.long_lived,
                    end.example
                ));
            }
        }
        for (pattern, start) in before {
            if !after.contains_key(pattern) {
                self.figure(
                    &format!("redis_keys_left{{pattern=\"{pattern}\"}}"),
                    format!("0 (baseline {})", start.total),
                );
            }
        }
        self.invariant("redis_keys_baseline", evidence);
    }

    pub fn rss(&mut self, samples: &Samples, run_seconds: f64) {
        let mut evidence = Vec::new();
        for (name, lifetimes) in &samples.rss {
            let all: Vec<Sample> = lifetimes.iter().flatten().copied().collect();
            let peak = all.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
            let last = all.last().map_or(0.0, |s| s.rss_mb);
            self.figure(&format!("rss_peak_mb{{proc={name}}}"), format!("{peak:.1}"));
            self.figure(
                &format!("rss_final_mb{{proc={name}}}"),
                format!("{last:.1}"),
            );
            let marks: Vec<String> = [0.25, 0.5, 0.75, 1.0]
                .iter()
                .map(|f| {
                    let t = run_seconds * f;
                    all.iter()
                        .rfind(|s| s.t <= t + 1.0)
                        .map_or("-".to_string(), |s| format!("{:.1}", s.rss_mb))
                })
                .collect();
            self.figure(
                &format!("rss_mb_at_25_50_75_100{{proc={name}}}"),
                marks.join("/"),
            );
            self.figure(
                &format!("restarts{{proc={name}}}"),
                lifetimes.len().saturating_sub(1),
            );
            if matches!(name.as_str(), "redis" | "s3s-fs") {
                continue;
            }
            let Some(life) = lifetimes.last() else {
                continue;
            };
            if life.len() < MIN_SAMPLES {
                self.note(&format!(
                    "{name}: last lifetime {} samples, too short to judge growth",
                    life.len()
                ));
                continue;
            }
            let quarter = life[life.len() / 4].rss_mb;
            let end = life[life.len() - 1].rss_mb;
            if end > quarter * RSS_FACTOR && end - quarter > RSS_SLACK_MB {
                evidence.push(format!(
                    "{name}: RSS {quarter:.1} MB a quarter into its lifetime, {end:.1} MB at the end (> {RSS_FACTOR}× and +{RSS_SLACK_MB} MB)"
                ));
            }
        }
        self.figure(
            "redis_used_memory_peak_mb",
            format!("{:.1}", samples.redis_used_memory_peak_mb),
        );
        let marks: Vec<String> = [0.25, 0.5, 0.75, 1.0]
            .iter()
            .map(|f| {
                samples
                    .redis
                    .iter()
                    .rfind(|(t, _, _)| *t <= run_seconds * f + 1.0)
                    .map_or("-".into(), |(_, mb, keys)| format!("{mb:.1}MB/{keys}keys"))
            })
            .collect();
        self.figure("redis_memory_keys_at_25_50_75_100", marks.join(" "));
        self.invariant("rss_flat", evidence);
    }

    /// `dead`: (queue, error) of every dead job.
    pub fn dead(&mut self, dead: &[(String, String)]) {
        self.figure("dead_jobs", dead.len());
        let mut evidence = Vec::new();
        for (queue, error) in dead {
            if error.contains("(lease expired)") {
                self.note(&format!(
                    "dead job in {queue}, forced by the run (its worker was SIGKILLed on its last attempt): {error}"
                ));
            } else {
                evidence.push(format!(
                    "dead job in {queue}, not forced by the run: {error}"
                ));
            }
        }
        self.invariant("dead_jobs_explained", evidence);
    }

    pub fn queues(&mut self, pending: &[(String, u64, u64, u64)]) {
        let mut evidence = Vec::new();
        for (queue, ready, scheduled, running) in pending {
            if ready + scheduled + running > 0 {
                evidence.push(format!(
                    "queue {queue}: {ready} ready, {scheduled} scheduled, {running} running after the drain"
                ));
            }
        }
        self.invariant("queues_drained", evidence);
    }

    pub fn refused(&mut self, book: &Book) {
        let evidence = book
            .builds()
            .iter()
            .filter(|b| b.forbidden.load(Ordering::Acquire))
            .map(|b| {
                format!(
                    "build {}: a PATCH at {} of {} bytes answered 403 while its runner was still writing",
                    b.id,
                    b.acked(),
                    b.planned
                )
            })
            .collect();
        self.invariant("runners_never_refused", evidence);
    }

    pub fn processes(&mut self, exited: Vec<String>) {
        self.invariant("processes_alive", exited);
    }
}

fn why_not_final(b: &Build, s: &Seen) -> String {
    let runner = match b.fate {
        Fate::VanishMid => "its runner vanished mid-job (no final PUT ever)".to_string(),
        Fate::VanishAfterPut => {
            "its runner sent one final PUT (202) and vanished; the pending state was never committed"
                .to_string()
        }
        Fate::Complete if b.put_ok.load(Ordering::Acquire) => {
            "its runner finished (final PUT answered 200)".to_string()
        }
        Fate::Complete if b.forbidden.load(Ordering::Acquire) => {
            "the server refused its runner's PATCH with 403".to_string()
        }
        Fate::Complete => "its runner gave up (see findings)".to_string(),
    };
    format!(
        "build {}: status {}, trace {} ({} bytes of {} acknowledged); {runner}",
        b.id,
        s.status,
        s.trace_state,
        s.size,
        b.acked()
    )
}
