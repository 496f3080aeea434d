//! Stuck builds (shared/DESIGN.md §6; GitLab's `Ci::StuckBuilds::DropRunningService` and
//! `BUILD_RUNNING_OUTDATED_TIMEOUT`): nothing stays `running` forever. A run, fired by cron
//! (every minute by default), does two things in bounded batches under an exclusive lease:
//!
//! 1. **Overdue final states.** A runner's final PUT is answered 202 while live chunks are
//!    flushed, and committed anyway after the accept timeout (`BUILDLOGS_ACCEPT_TIMEOUT`, 5
//!    minutes) — but only when the runner PUTs again. A runner that vanished after its first
//!    PUT left a pending state nobody commits: the run commits every pending state older than
//!    the accept timeout ([`TraceService::commit_pending`]: the runner's CRC32 checked when the
//!    chunks allow, the state committed, the archive enqueued).
//! 2. **Silent running builds.** A running build with no PATCH or PUT for the stuck timeout
//!    (`BUILDLOGS_STUCK_TIMEOUT`, 1 hour) is failed with `stuck_or_timeout_failure`: its trace
//!    is closed (appends refused from then on), the build failed, the archive enqueued (it reads
//!    the live chunks and moves them into one object, as for any finished build). Its SSE
//!    streams then see it finished and end; its Redis chunks no longer wait out their 7-day TTL.
//!
//! **Knowing "no PATCH or PUT for an hour" without a SQL write per PATCH.** The append path
//! writes no SQL row on the production stack (one Redis script per PATCH, by design), so the
//! signal is the live store's: every append records the time in the same write (Redis: the
//! append script also sets the build's `at` key, rewritten at most every
//! [`ACTIVITY_RESOLUTION`] (10 s), a GET otherwise; the embedded SQL store: its append's `UPDATE builds` also sets `activity_at`),
//! and a keep-alive PUT (`state=running`) records it alone ([`LiveChunkStore::touch`]). The database's `builds.activity_at` (set at registration)
//! is a lower bound the sweep walks through a partial index of running builds; for each
//! candidate it asks the live store for the real last activity (one pipelined round trip per
//! batch). A candidate still active gets its `activity_at` moved forward to that time, so it is
//! looked at again only a timeout later: at most one SQL write per running build per timeout,
//! whatever its PATCH rate. Rejected alternatives: a write from the token cache's once-a-minute
//! refresh (one SQL write per build per minute per web process) and the Redis TTL of the length
//! key (derived, and blind to an injected clock).
//!
//! **Races.** A failed build is closed in the live store first, then checked for a pending
//! state (a final PUT that arrived meanwhile wins: the build is left to step 1), then failed
//! with a conditional update (a state committed meanwhile stays). A PATCH landing between the
//! activity check and the close (after an hour of silence) is kept and archived; the runner's
//! next PATCH is refused (403, `Job-Status: failed`), as for any failed job.
//!
//! **Bounds and exclusivity** (as [`super::expiry`]): the lease [`STUCK_LEASE`] in the metadata
//! database keeps two runs apart (a job re-delivered to a second worker while the first still
//! runs does nothing), renewed after every batch; a run reads at most `loop_limit` batches of
//! `batch` builds and starts none after its time budget. Builds it handles leave the candidate
//! sets (failed, committed, or active until later), so the next run picks up where this one
//! stopped without a cursor. Any store error stops the run and is returned (the job retries;
//! the next tick would too).

use std::sync::Arc;
use std::time::Duration;

use super::expiry::StoppedBy;
use super::jobs::ArchiveTrace;
use super::live::{ACTIVITY_RESOLUTION, LiveChunkStore, LiveStoreError};
use super::metadata::{MetadataError, MetadataStore};
use super::model::{BuildStatus, IdleBuild};
use super::service::{DEFAULT_ACCEPT_TIMEOUT, TraceError, TraceService};
use crate::jobs::{BrokerError, Clock, JobClient};

/// The lease's name in `leases` (GitLab: `stuck_builds:drop_running`-style exclusive lease).
pub const STUCK_LEASE: &str = "stuck_builds";

/// GitLab's failure reason for a build dropped as stuck.
pub const STUCK_FAILURE_REASON: &str = "stuck_or_timeout_failure";

#[derive(Debug, thiserror::Error)]
pub enum StuckError {
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
    #[error("live chunk store: {0}")]
    Live(#[from] LiveStoreError),
    #[error("job queue: {0}")]
    Queue(#[from] BrokerError),
    #[error("committing a pending state: {0}")]
    Commit(#[from] TraceError),
}

#[derive(Debug, Clone)]
pub struct StuckConfig {
    /// A running build with no PATCH or PUT for this long is failed (GitLab's
    /// `BUILD_RUNNING_OUTDATED_TIMEOUT`: 1 hour).
    pub timeout: Duration,
    /// A pending final state older than this is committed (GitLab's `ACCEPT_TIMEOUT`); the same
    /// setting as the web role's ([`TraceService::with_accept_timeout`]).
    pub accept_timeout: Duration,
    /// Builds read per batch (GitLab's stuck-build services work in batches of 100).
    pub batch: u32,
    /// Batches per run at most: with `batch`, the most one run handles (5,000), so a backlog
    /// after an outage drains over a few runs instead of one endless one.
    pub loop_limit: u32,
    /// A run starts no batch after this long: below the 1-minute cron interval.
    pub budget: Duration,
    /// How long the lease is held without renewal: the budget plus a minute for the batch in
    /// progress, so a run that died blocks the next for at most this long.
    pub lease: Duration,
}

impl Default for StuckConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3600),
            accept_timeout: DEFAULT_ACCEPT_TIMEOUT,
            batch: 100,
            loop_limit: 50,
            budget: Duration::from_secs(45),
            lease: Duration::from_secs(105),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StuckReport {
    /// Pending final states committed (step 1).
    pub committed: u64,
    /// Silent running builds failed with `stuck_or_timeout_failure` (step 2).
    pub failed: u64,
    /// Candidates the live store showed active: their `activity_at` moved forward.
    pub active: u64,
    /// Batches read, short or empty ones included.
    pub batches: u64,
    pub stopped_by: StoppedBy,
}

pub struct StuckBuilds {
    meta: Arc<dyn MetadataStore>,
    live: Arc<dyn LiveChunkStore>,
    traces: Arc<TraceService>,
    jobs: JobClient,
    clock: Arc<dyn Clock>,
    config: StuckConfig,
}

/// Where a run is: what it did so far and what bounds it.
struct Progress {
    holder: String,
    started_ms: i64,
    report: StuckReport,
}

impl StuckBuilds {
    pub fn new(
        meta: Arc<dyn MetadataStore>,
        live: Arc<dyn LiveChunkStore>,
        traces: Arc<TraceService>,
        jobs: JobClient,
        clock: Arc<dyn Clock>,
        config: StuckConfig,
    ) -> Self {
        Self {
            meta,
            live,
            traces,
            jobs,
            clock,
            config,
        }
    }

    pub fn config(&self) -> &StuckConfig {
        &self.config
    }

    fn lease_until(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(millis(self.config.lease))
    }

    /// One run under the lease (see the module doc).
    pub async fn run(&self) -> Result<StuckReport, StuckError> {
        let holder = ulid::Ulid::new().to_string();
        let now = self.clock.now_ms();
        let mut progress = Progress {
            holder,
            started_ms: now,
            report: StuckReport {
                committed: 0,
                failed: 0,
                active: 0,
                batches: 0,
                stopped_by: StoppedBy::Done,
            },
        };
        if !self
            .meta
            .take_lease(STUCK_LEASE, &progress.holder, now, self.lease_until(now))
            .await?
        {
            tracing::info!("stuck builds: another run holds the lease; nothing done");
            progress.report.stopped_by = StoppedBy::LeaseHeld;
            record(&progress.report);
            return Ok(progress.report);
        }
        let result = self.run_leased(&mut progress).await;
        // Released whatever happened; one that cannot be released expires by itself.
        let released = self.meta.release_lease(STUCK_LEASE, &progress.holder).await;
        match (result, released) {
            (Ok(()), Ok(_)) => {}
            (Ok(()), Err(e)) => return Err(e.into()),
            (Err(e), released) => {
                if let Err(release) = released {
                    tracing::warn!(error = %release, "stuck builds: releasing the lease failed");
                }
                return Err(e);
            }
        }
        let report = progress.report;
        record(&report);
        tracing::info!(
            committed = report.committed,
            failed = report.failed,
            active = report.active,
            batches = report.batches,
            stopped_by = report.stopped_by.as_str(),
            "stuck builds run"
        );
        Ok(report)
    }

    async fn run_leased(&self, progress: &mut Progress) -> Result<(), StuckError> {
        let started = progress.started_ms;
        let batch = self.config.batch.max(1);
        // 1. Final states whose runner never came back after the accept timeout.
        let overdue_before = started.saturating_sub(millis(self.config.accept_timeout));
        let mut after_id = 0;
        loop {
            let ids = self
                .meta
                .overdue_pending_states(overdue_before, after_id, batch)
                .await?;
            progress.report.batches += 1;
            for &id in &ids {
                self.commit_overdue(id, progress).await?;
            }
            if ids.len() < batch as usize {
                break;
            }
            after_id = ids.last().copied().unwrap_or(after_id);
            if let Some(stop) = self.next_batch(progress).await? {
                progress.report.stopped_by = stop;
                return Ok(());
            }
        }
        // 2. Running builds silent for the timeout. Recorded activity may lag the last append
        // by up to ACTIVITY_RESOLUTION: only builds silent for longer than both are failed.
        let idle_before =
            started.saturating_sub(millis(self.config.timeout) + millis(ACTIVITY_RESOLUTION));
        let mut after = (i64::MIN, i64::MIN);
        loop {
            if let Some(stop) = self.next_batch(progress).await? {
                progress.report.stopped_by = stop;
                return Ok(());
            }
            let builds = self
                .meta
                .idle_running_builds(idle_before, after, batch)
                .await?;
            progress.report.batches += 1;
            let ids: Vec<i64> = builds.iter().map(|b| b.id).collect();
            let live = self.live.last_activity(&ids).await?;
            for (build, live_at) in builds.iter().zip(live) {
                self.settle_idle(build, live_at, idle_before, progress)
                    .await?;
            }
            if builds.len() < batch as usize {
                progress.report.stopped_by = StoppedBy::Done;
                return Ok(());
            }
            if let Some(last) = builds.last() {
                after = (last.activity_at_ms, last.id);
            }
        }
    }

    /// Whether the run may read another batch: `None` to go on (the lease renewed), else why
    /// it stops.
    async fn next_batch(&self, progress: &Progress) -> Result<Option<StoppedBy>, StuckError> {
        if progress.report.batches >= u64::from(self.config.loop_limit.max(1)) {
            return Ok(Some(StoppedBy::LoopLimit));
        }
        let now = self.clock.now_ms();
        if progress.report.batches > 0
            && now.saturating_sub(progress.started_ms) >= millis(self.config.budget)
        {
            return Ok(Some(StoppedBy::Budget));
        }
        if !self
            .meta
            .take_lease(STUCK_LEASE, &progress.holder, now, self.lease_until(now))
            .await?
        {
            tracing::warn!("stuck builds: the lease expired and another run took it; stopping");
            return Ok(Some(StoppedBy::LeaseLost));
        }
        Ok(None)
    }

    async fn commit_overdue(
        &self,
        build_id: i64,
        progress: &mut Progress,
    ) -> Result<(), StuckError> {
        // Committed since the batch was read (the runner's own PUT came after all).
        if self
            .meta
            .build(build_id)
            .await?
            .is_none_or(|b| b.status.is_finished())
        {
            return Ok(());
        }
        let Some(pending) = self.meta.pending_state(build_id).await? else {
            return Ok(());
        };
        let status = self
            .traces
            .commit_pending(&pending, self.clock.now_ms())
            .await?;
        progress.report.committed += 1;
        metrics::counter!("buildlogs_pending_states_committed_total").increment(1);
        tracing::info!(
            build_id,
            %status,
            pending_since_ms = pending.created_at_ms,
            "final state committed by the stuck-build sweep (the runner did not PUT again)"
        );
        Ok(())
    }

    /// A candidate of step 2: active after all (its `activity_at` moved forward), or failed.
    async fn settle_idle(
        &self,
        build: &IdleBuild,
        live_at: Option<i64>,
        idle_before: i64,
        progress: &mut Progress,
    ) -> Result<(), StuckError> {
        let last = build
            .activity_at_ms
            .max(build.created_at_ms)
            .max(live_at.unwrap_or(i64::MIN));
        if last >= idle_before {
            self.meta.record_activity(build.id, last).await?;
            progress.report.active += 1;
            return Ok(());
        }
        // From here on the log cannot grow: what the archive reads is final.
        self.live.close(build.id).await?;
        if self.meta.pending_state(build.id).await?.is_some() {
            // A final PUT arrived meanwhile: step 1 (or the runner's next PUT) commits it.
            return Ok(());
        }
        let now = self.clock.now_ms();
        let done = self
            .meta
            .finish_build(
                build.id,
                BuildStatus::Failed,
                Some(STUCK_FAILURE_REASON),
                now,
            )
            .await?;
        if done.status != BuildStatus::Failed
            || done.failure_reason.as_deref() != Some(STUCK_FAILURE_REASON)
        {
            // Committed by someone else meanwhile; its commit enqueued the archive.
            return Ok(());
        }
        self.jobs
            .enqueue(&ArchiveTrace { build_id: build.id })
            .await?;
        progress.report.failed += 1;
        metrics::counter!("buildlogs_builds_stuck_total").increment(1);
        tracing::warn!(
            build_id = build.id,
            silent_ms = now.saturating_sub(last),
            "no PATCH or PUT for the stuck timeout: build failed with stuck_or_timeout_failure"
        );
        Ok(())
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn record(report: &StuckReport) {
    metrics::counter!("buildlogs_stuck_build_runs_total", "stopped_by" => report.stopped_by.as_str())
        .increment(1);
}
