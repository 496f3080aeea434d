//! The object store's circuit breaker (shared/DESIGN.md §6): after persistent failures it
//! opens, and while it is open flush and archive jobs stop hammering the store: full chunks go
//! to the database instead (Redis memory stays bounded) and archives snooze without burning an
//! attempt. A probe puts and deletes a small object; when that works the breaker closes and the
//! archives and flushes waiting in the queue are released at once, instead of each sleeping out
//! its own backoff.
//!
//! State, shared by every worker of a process and visible across processes:
//! - each process keeps the state in atomics, so a check is usually free;
//! - opening and closing write the `object_store` row of `circuit_breakers`, and a process
//!   re-reads that row at most once per [`BreakerConfig::sync_interval`], so one process's
//!   verdict reaches the others within about a second;
//! - consecutive failures are counted per process: a success resets the count, and
//!   [`BreakerConfig::failure_threshold`] of them in a row open the breaker.
//!
//! If the database cannot be read, a process keeps its own view (a metadata outage must not
//! reopen or close the breaker by accident).
//!
//! **A blip that never opened the breaker** (fewer failures in a row than the threshold, e.g.
//! a store refusing connections for ten seconds while a worker was killed) still sends jobs
//! into their backoff: by their third failure an archive waits minutes, though the store came
//! back at once. So a process that saw a failure, then a success, then no failure for
//! [`BreakerConfig::quiet_before_release`] releases the waiting jobs too, once
//! ([`ObjectStoreBreaker::release_if_recovered`], from the probe loop). A flapping store keeps
//! failing within that window, so it never triggers a release that would burn attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use tokio_util::sync::CancellationToken;

use super::jobs::{ArchiveTrace, FlushTraceChunk};
use super::metadata::{BreakerRecord, BreakerStore};
use super::objects::ObjectStorage;
use crate::jobs::broker::BrokerError;
use crate::jobs::{Clock, Job, JobClient};

/// The breaker's row in `circuit_breakers`.
pub const OBJECT_STORE_BREAKER: &str = "object_store";

/// Jobs released per broker call when the store is back.
const RELEASE_BATCH: usize = 1_000;

#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Consecutive object-store failures (in one process) that open the breaker.
    pub failure_threshold: u32,
    /// How stale a process's view of the shared state may be.
    pub sync_interval: Duration,
    /// How often an open breaker probes the store.
    pub probe_interval: Duration,
    /// How long an archive waits while the breaker is open: a fallback only, since closing
    /// the breaker releases waiting archives at once.
    pub snooze: Duration,
    /// After failures that did not open the breaker: how long the store must answer without a
    /// failure before the waiting jobs are released (two probe intervals: a flapping store
    /// fails again well within it).
    pub quiet_before_release: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            sync_interval: Duration::from_secs(1),
            probe_interval: Duration::from_secs(5),
            snooze: Duration::from_secs(300),
            quiet_before_release: Duration::from_secs(10),
        }
    }
}

pub struct ObjectStoreBreaker {
    meta: Arc<dyn BreakerStore>,
    clock: Arc<dyn Clock>,
    config: BreakerConfig,
    open: AtomicBool,
    failures: AtomicU32,
    /// When this process last read the shared state (ms); `i64::MIN` = never.
    synced_at_ms: AtomicI64,
    /// A failure was seen since the last release: waiting jobs may be backing off for it.
    release_due: AtomicBool,
    /// The store answered since the last failure.
    answered_since_failure: AtomicBool,
    /// When this process last saw a failure (ms).
    last_failure_ms: AtomicI64,
    /// This process closed the breaker and has not yet released the waiting jobs (the release
    /// failed: the queue was unreachable); the probe loop retries it.
    release_owed: AtomicBool,
    /// When to release once more after a close (ms; `i64::MAX`: no). Until the other processes
    /// read the close (within their sync interval) their archives still snooze, after the
    /// release at the close.
    release_again_at_ms: AtomicI64,
}

impl ObjectStoreBreaker {
    pub fn new(meta: Arc<dyn BreakerStore>, clock: Arc<dyn Clock>, config: BreakerConfig) -> Self {
        Self {
            meta,
            clock,
            config,
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            synced_at_ms: AtomicI64::new(i64::MIN),
            release_due: AtomicBool::new(false),
            answered_since_failure: AtomicBool::new(false),
            last_failure_ms: AtomicI64::new(i64::MIN),
            release_owed: AtomicBool::new(false),
            release_again_at_ms: AtomicI64::new(i64::MAX),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Is the object store considered down? Reads the shared state when this process's view
    /// is older than the sync interval (one SQL read a second at most).
    pub async fn is_open(&self) -> bool {
        let now = self.clock.now_ms();
        let synced = self.synced_at_ms.load(Ordering::Relaxed);
        let every = self.config.sync_interval.as_millis() as i64;
        if now.saturating_sub(synced) >= every
            && self
                .synced_at_ms
                .compare_exchange(synced, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            match self.meta.breaker(OBJECT_STORE_BREAKER).await {
                Ok(record) => {
                    let open = record.is_some_and(|r| r.open);
                    if self.open.swap(open, Ordering::Relaxed) != open {
                        tracing::info!(open, "object store breaker changed in another process");
                        self.failures.store(0, Ordering::Relaxed);
                        gauge(open);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "object store breaker: state unreadable"),
            }
        }
        self.open.load(Ordering::Relaxed)
    }

    /// This process's last known state, without reading the shared one.
    pub fn is_open_locally(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// An object-store call worked.
    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.answered_since_failure.store(true, Ordering::Relaxed);
    }

    /// An object-store call failed; opens the breaker at the threshold.
    pub async fn record_failure(&self, error: &(dyn std::fmt::Display + Sync)) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.answered_since_failure.store(false, Ordering::Relaxed);
        self.last_failure_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
        self.release_due.store(true, Ordering::Relaxed);
        metrics::counter!("buildlogs_object_store_failures_total").increment(1);
        if failures >= self.config.failure_threshold && !self.open.load(Ordering::Relaxed) {
            self.set(true, Some(error.to_string())).await;
        }
    }

    /// Writes the shared state and this process's view.
    async fn set(&self, open: bool, reason: Option<String>) {
        let now = self.clock.now_ms();
        self.open.store(open, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.synced_at_ms.store(now, Ordering::Relaxed);
        gauge(open);
        if open {
            tracing::error!(
                reason = reason.as_deref().unwrap_or(""),
                "object store breaker opened: flushes go to the database, archives wait"
            );
        } else {
            tracing::info!("object store breaker closed: the object store answers again");
        }
        let record = BreakerRecord {
            name: OBJECT_STORE_BREAKER.to_owned(),
            open,
            reason,
            changed_at_ms: now,
        };
        if let Err(e) = self.meta.set_breaker(&record).await {
            tracing::warn!(error = %e, open, "object store breaker: could not share its state");
        }
    }

    /// Puts and deletes a small object: true if the store answered both.
    pub async fn probe(&self, store: &dyn ObjectStorage) -> bool {
        let path = Path::from(format!("_probe/{}", ulid::Ulid::new()));
        let result = async {
            store.put(&path, Bytes::from_static(b"probe")).await?;
            store.delete(&path).await
        }
        .await;
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "object store probe failed");
                false
            }
        }
    }

    /// While open, probes every probe interval; on success closes the breaker and releases the
    /// archives and flushes waiting in the queue. Runs until `cancel`.
    pub async fn run_probe(
        self: Arc<Self>,
        store: Arc<dyn ObjectStorage>,
        jobs: JobClient,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.config.probe_interval) => {}
            }
            self.tick(store.as_ref(), &jobs).await;
        }
    }

    /// One probe interval's work: while open, a probe, and the close when it works; then the
    /// releases owed (after a close: at once, retried until the queue answers, and once more
    /// after the other processes have seen the close; after a blip: once quiet).
    pub async fn tick(&self, store: &dyn ObjectStorage, jobs: &JobClient) {
        if self.is_open().await {
            if !self.probe(store).await {
                return;
            }
            self.set(false, None).await;
            self.owe_releases();
        }
        if let Err(e) = self.pay_releases(jobs).await {
            tracing::warn!(error = %e, "could not release the waiting jobs; retrying at the next probe");
        }
    }

    /// After this process closed the breaker: a release now and one more later.
    fn owe_releases(&self) {
        self.release_owed.store(true, Ordering::Relaxed);
        let later = self.config.sync_interval.saturating_mul(2).as_millis() as i64;
        self.release_again_at_ms
            .store(self.clock.now_ms().saturating_add(later), Ordering::Relaxed);
    }

    /// The release owed at a close, if it is still owed: how many jobs it released.
    async fn release_at_close(&self, jobs: &JobClient) -> Result<Option<u64>, BrokerError> {
        if !self.release_owed.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let released = release_waiting(jobs).await?;
        self.release_owed.store(false, Ordering::Relaxed);
        Ok(Some(released))
    }

    async fn pay_releases(&self, jobs: &JobClient) -> Result<(), BrokerError> {
        if let Some(released) = self.release_at_close(jobs).await? {
            tracing::info!(released, "released the jobs waiting for the object store");
        }
        if self.clock.now_ms() >= self.release_again_at_ms.load(Ordering::Relaxed) {
            let released = release_waiting(jobs).await?;
            self.release_again_at_ms.store(i64::MAX, Ordering::Relaxed);
            if released > 0 {
                tracing::info!(
                    released,
                    "released jobs that waited for the object store after it closed"
                );
            }
        }
        if !self.is_open_locally() {
            self.release_if_recovered(jobs).await?;
        }
        Ok(())
    }

    /// After failures that left the breaker closed: once the store answered and then went
    /// [`BreakerConfig::quiet_before_release`] without a failure, releases the waiting archives
    /// and flushes, once (`Some(released)`); otherwise does nothing (`None`).
    pub async fn release_if_recovered(&self, jobs: &JobClient) -> Result<Option<u64>, BrokerError> {
        let quiet = self.config.quiet_before_release.as_millis() as i64;
        let since_failure = self
            .clock
            .now_ms()
            .saturating_sub(self.last_failure_ms.load(Ordering::Relaxed));
        if self.is_open_locally()
            || !self.answered_since_failure.load(Ordering::Relaxed)
            || since_failure < quiet
            || !self.release_due.swap(false, Ordering::Relaxed)
        {
            return Ok(None);
        }
        let released = match release_waiting(jobs).await {
            Ok(released) => released,
            Err(e) => {
                // Still owed: the next probe interval tries again.
                self.release_due.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        tracing::info!(
            released,
            "the object store answers again after failures: released the jobs waiting for it"
        );
        Ok(Some(released))
    }

    /// Closes the breaker by hand (tests, operators): what a successful probe does. Returns
    /// how many waiting jobs it released; the probe loop releases once more later.
    pub async fn close(&self, jobs: &JobClient) -> Result<u64, BrokerError> {
        self.set(false, None).await;
        self.owe_releases();
        Ok(self.release_at_close(jobs).await?.unwrap_or(0))
    }
}

/// Makes every archive and flush waiting in the queue (snoozed or backing off) due now.
pub async fn release_waiting(jobs: &JobClient) -> Result<u64, BrokerError> {
    let mut total = 0;
    for queue in [ArchiveTrace::NAME, FlushTraceChunk::NAME] {
        loop {
            let released = jobs
                .broker()
                .release_scheduled(queue, RELEASE_BATCH, jobs.clock().now_ms())
                .await?;
            total += released;
            if released < RELEASE_BATCH as u64 {
                break;
            }
        }
    }
    metrics::counter!("buildlogs_object_store_released_jobs_total").increment(total);
    Ok(total)
}

fn gauge(open: bool) {
    metrics::gauge!("buildlogs_object_store_breaker_open").set(if open { 1.0 } else { 0.0 });
}
