//! Artifact expiry (shared/DESIGN.md §6; GitLab's `Ci::JobArtifacts::DestroyAllExpiredService`):
//! deletes archived logs whose `expire_at` has passed and that are not `locked`, object and
//! row, in bounded runs fired by cron (every 7 minutes by default).
//!
//! How a run goes ([`ArtifactExpiry::run`]):
//! 1. Take the exclusive lease [`EXPIRY_LEASE`] for a holder id of its own, until now + the
//!    lease TTL. Held by another run: do nothing ([`StoppedBy::LeaseHeld`]).
//! 2. Loop: read a batch (100) of artifacts expired at the run's start (an index range scan
//!    over expirable artifacts only, oldest `expire_at` first); for each, delete the object,
//!    then the row. Stop when a batch is short (nothing left), at the loop limit (500
//!    batches), or once the time budget (5 minutes) is spent; otherwise renew the lease and go
//!    on. A renewal that fails (the lease expired and another run took it) stops the run.
//! 3. Release the lease (also after an error) and return what was done.
//!
//! One run deletes at most `batch × loop_limit` artifacts (50,000) and lasts about its budget
//! plus one batch, so a long backlog shrinks steadily over runs instead of in one endless run.
//!
//! Why a lease in the database, and not only the job's dedup: `ExpireArtifacts` is deduplicated
//! until executed, which keeps two copies out of the queue, but not two runs of one copy: a
//! worker that stalls past its job lease has the job re-delivered to another worker while the
//! first still deletes. The lease (GitLab's `in_lock('expired_job_artifacts:destroy:lock')`,
//! 6 minutes over a 5-minute budget on a 7-minute cron) is in the metadata database so the
//! domain needs no Redis, is atomic there (one upsert), and expires by itself when its holder
//! dies. It is renewed after every batch, so a live run keeps it however long it goes and a
//! stalled one loses it and stops at its next renewal. Overlap is at worst one batch, and
//! harmless: deleting an object or row twice finds nothing the second time.
//!
//! Crash safety: the object goes first, then the row. A crash in between leaves a row naming a
//! missing object; the row is still expired, so the next run deletes it again (deleting a
//! missing object is not an error). The other order could leave objects no row names, never
//! found again. Any store error stops the run and is returned (the job retries).

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;

use super::archived_lines;
use super::metadata::{ArtifactRowStore, LeaseStore, MetadataError};
use super::objects::ObjectStorage;
use crate::jobs::Clock;

/// The lease's name in `leases` (GitLab: `expired_job_artifacts:destroy:lock`).
pub const EXPIRY_LEASE: &str = "artifact_expiry";

#[derive(Debug, thiserror::Error)]
pub enum ExpiryError {
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
    #[error("object store: deleting {path}: {source}")]
    Objects {
        path: String,
        source: object_store::Error,
    },
}

#[derive(Debug, Clone)]
pub struct ExpiryConfig {
    /// Artifacts read and deleted per batch (GitLab's `BATCH_SIZE`: 100).
    pub batch: u32,
    /// Batches per run at most (GitLab's `LOOP_LIMIT`: 500 in the newer service).
    pub loop_limit: u32,
    /// A run starts no batch after this long (GitLab's `LOOP_TIMEOUT`: 5 minutes); keep it
    /// below the cron interval.
    pub budget: Duration,
    /// How long the lease is held without renewal: the budget plus a minute for the last
    /// batch (GitLab's `LOCK_TIMEOUT`: 6 minutes), so a dead run blocks the next for at most
    /// this long.
    pub lease: Duration,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        Self {
            batch: 100,
            loop_limit: 500,
            budget: Duration::from_secs(300),
            lease: Duration::from_secs(360),
        }
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedBy {
    /// A batch came back short: nothing expired is left.
    Done,
    /// `loop_limit` batches: more may be left for the next run.
    LoopLimit,
    /// The time budget ran out: more may be left for the next run.
    Budget,
    /// Another run holds the lease: this one did nothing.
    LeaseHeld,
    /// The lease expired under this run and another took it: this one stopped.
    LeaseLost,
}

impl StoppedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            StoppedBy::Done => "done",
            StoppedBy::LoopLimit => "loop_limit",
            StoppedBy::Budget => "budget",
            StoppedBy::LeaseHeld => "lease_held",
            StoppedBy::LeaseLost => "lease_lost",
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Artifacts deleted (object and row).
    pub deleted: u64,
    /// Batches read, the last (short or empty) one included.
    pub batches: u64,
    pub stopped_by: StoppedBy,
}

pub struct ArtifactExpiry {
    artifacts: Arc<dyn ArtifactRowStore>,
    leases: Arc<dyn LeaseStore>,
    objects: Arc<dyn ObjectStorage>,
    clock: Arc<dyn Clock>,
    config: ExpiryConfig,
}

impl ArtifactExpiry {
    /// `artifacts` and `leases` are one metadata store in production (two concerns of it).
    pub fn new(
        artifacts: Arc<dyn ArtifactRowStore>,
        leases: Arc<dyn LeaseStore>,
        objects: Arc<dyn ObjectStorage>,
        clock: Arc<dyn Clock>,
        config: ExpiryConfig,
    ) -> Self {
        Self {
            artifacts,
            leases,
            objects,
            clock,
            config,
        }
    }

    pub fn config(&self) -> &ExpiryConfig {
        &self.config
    }

    fn lease_until(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(millis(self.config.lease))
    }

    /// One run under the lease (see the module doc).
    pub async fn run(&self) -> Result<ExpiryReport, ExpiryError> {
        let holder = ulid::Ulid::new().to_string();
        let now = self.clock.now_ms();
        if !self
            .leases
            .take_lease(EXPIRY_LEASE, &holder, now, self.lease_until(now))
            .await?
        {
            tracing::info!("artifact expiry: another run holds the lease; nothing done");
            let report = ExpiryReport {
                deleted: 0,
                batches: 0,
                stopped_by: StoppedBy::LeaseHeld,
            };
            record(&report);
            return Ok(report);
        }
        let result = self.run_leased(&holder, now).await;
        // Released whatever happened; one that cannot be released expires by itself.
        let released = self.leases.release_lease(EXPIRY_LEASE, &holder).await;
        let report = match (result, released) {
            (Ok(report), Ok(_)) => report,
            // The database failing is worth a retry, which finds less to do.
            (Ok(_), Err(e)) => return Err(e.into()),
            (Err(e), released) => {
                if let Err(release) = released {
                    tracing::warn!(error = %release, "artifact expiry: releasing the lease failed");
                }
                return Err(e);
            }
        };
        record(&report);
        tracing::info!(
            deleted = report.deleted,
            batches = report.batches,
            stopped_by = report.stopped_by.as_str(),
            "artifact expiry run"
        );
        Ok(report)
    }

    async fn run_leased(&self, holder: &str, started_ms: i64) -> Result<ExpiryReport, ExpiryError> {
        let budget = millis(self.config.budget);
        let batch_size = self.config.batch.max(1);
        let mut deleted = 0;
        let mut batches = 0;
        let stopped_by = loop {
            // Artifacts that expire during the run wait for the next one: a run's set is fixed.
            let batch = self
                .artifacts
                .expired_artifacts(started_ms, batch_size)
                .await?;
            batches += 1;
            for artifact in &batch {
                let path = Path::from(artifact.object_path.as_str());
                // The line index first: a run stopped in between leaves the archive (with or
                // without its index), which the next run deletes; never an orphan index.
                let store = self.objects.as_ref();
                async {
                    archived_lines::delete(store, &path).await?;
                    store.delete(&path).await
                }
                .await
                .map_err(|source| ExpiryError::Objects {
                    path: artifact.object_path.clone(),
                    source,
                })?;
                // False only if a concurrent run (past a lost lease) deleted it first.
                if self.artifacts.delete_artifact(artifact.id).await? {
                    deleted += 1;
                    metrics::counter!("buildlogs_artifacts_expired_total").increment(1);
                }
                tracing::debug!(
                    build_id = artifact.build_id,
                    artifact_id = artifact.id,
                    path = %artifact.object_path,
                    "expired artifact deleted"
                );
            }
            if batch.len() < batch_size as usize {
                break StoppedBy::Done;
            }
            if batches >= u64::from(self.config.loop_limit) {
                break StoppedBy::LoopLimit;
            }
            let now = self.clock.now_ms();
            if now.saturating_sub(started_ms) >= budget {
                break StoppedBy::Budget;
            }
            if !self
                .leases
                .take_lease(EXPIRY_LEASE, holder, now, self.lease_until(now))
                .await?
            {
                tracing::warn!(
                    deleted,
                    batches,
                    "artifact expiry: the lease expired and another run took it; stopping"
                );
                break StoppedBy::LeaseLost;
            }
        };
        Ok(ExpiryReport {
            deleted,
            batches,
            stopped_by,
        })
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn record(report: &ExpiryReport) {
    metrics::counter!("buildlogs_artifact_expiry_runs_total", "stopped_by" => report.stopped_by.as_str())
        .increment(1);
}
