//! The soak's ledger: every build its runners registered (what each runner sent and how it
//! ended) and the counters the report prints. Shared by runners, readers, tails and the final
//! check; everything in it is either atomic or behind a short lock.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How a runner treats its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Writes the whole log, then PUTs `success` until 200.
    Complete,
    /// Stops PATCHing part way and never sends a final PUT (the runner died).
    VanishMid,
    /// Writes the whole log, sends one final PUT, and is never heard of again.
    VanishAfterPut,
}

pub struct Build {
    pub id: i64,
    pub token: String,
    pub seed: u64,
    /// The log's planned length (what a `Complete` runner sends).
    pub planned: u64,
    pub fate: Fate,
    /// Bytes the server acknowledged (the `Range` end of the last 202/416).
    pub acked: AtomicU64,
    /// The runner is gone (done, vanished or gave up).
    pub runner_done: AtomicBool,
    /// Set when the runner sent a final PUT (its checksum covers `acked` bytes).
    pub put_sent: AtomicBool,
    /// The final PUT answered 200.
    pub put_ok: AtomicBool,
    /// The server answered 403 to a PATCH (the job was ended under the runner).
    pub forbidden: AtomicBool,
}

impl Build {
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }
}

/// The counters of the run (names as printed).
#[derive(Default)]
pub struct Counters {
    pub builds_started: AtomicU64,
    pub builds_finished: AtomicU64,
    pub vanished_mid_job: AtomicU64,
    pub vanished_after_put: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub patches: AtomicU64,
    pub patch_416: AtomicU64,
    pub patch_429: AtomicU64,
    pub patch_403: AtomicU64,
    pub patch_errors: AtomicU64,
    pub resends: AtomicU64,
    pub puts: AtomicU64,
    pub put_202: AtomicU64,
    pub put_gave_up: AtomicU64,
    pub reads_served: AtomicU64,
    pub range_reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub read_errors: AtomicU64,
    /// Reads answered 503 with `Retry-After` (a store was down): the right answer, not a finding.
    pub reads_unavailable: AtomicU64,
    /// Streams answered 503 with `Retry-After` (a store was down, or the stream cap).
    pub tails_unavailable: AtomicU64,
    pub read_mismatch: AtomicU64,
    pub big_reads: AtomicU64,
    pub tails: AtomicU64,
    pub tails_ended: AtomicU64,
    pub tail_resumes: AtomicU64,
    pub tail_mismatch: AtomicU64,
    pub tail_errors: AtomicU64,
}

/// Most findings kept with their evidence (the counters keep counting past it).
const MAX_FINDINGS: usize = 200;

#[derive(Default)]
pub struct Book {
    builds: Mutex<Vec<Arc<Build>>>,
    pub counters: Counters,
    patch_ms: Mutex<Vec<f64>>,
    findings: Mutex<Vec<String>>,
}

impl Book {
    pub fn add(&self, build: Arc<Build>) {
        self.counters.builds_started.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut b) = self.builds.lock() {
            b.push(build);
        }
    }

    pub fn builds(&self) -> Vec<Arc<Build>> {
        self.builds.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// A build chosen by `pick` (an index source) among those that wrote something.
    pub fn pick(&self, n: u64, want: impl Fn(&Build) -> bool) -> Option<Arc<Build>> {
        let builds = self.builds.lock().ok()?;
        let candidates: Vec<&Arc<Build>> = builds.iter().filter(|b| want(b)).collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[(n % candidates.len() as u64) as usize].clone())
    }

    pub fn patch_latency(&self, ms: f64) {
        if let Ok(mut l) = self.patch_ms.lock() {
            l.push(ms);
        }
    }

    /// (p50, p99, count) of PATCH latencies in ms.
    pub fn patch_percentiles(&self) -> (f64, f64, usize) {
        let mut l = self.patch_ms.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_by(f64::total_cmp);
        let at = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        (at(0.50), at(0.99), l.len())
    }

    /// Records something that went wrong, with its evidence (also logged).
    pub fn finding(&self, what: String) {
        tracing::warn!(finding = %what, "soak");
        if let Ok(mut f) = self.findings.lock()
            && f.len() < MAX_FINDINGS
        {
            f.push(what);
        }
    }

    pub fn findings(&self) -> Vec<String> {
        self.findings.lock().map(|f| f.clone()).unwrap_or_default()
    }
}
