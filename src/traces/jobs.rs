//! The build-log jobs the domain enqueues (handlers live in the `workers` crate, one per file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::jobs::{Dedup, Job, JobOptions, RetrySchedule};

/// Moves one chunk from the live store to the object store (GitLab's
/// `Ci::BuildTraceChunkFlushWorker`): dedup until executed, and a flush requested while one runs
/// is rescheduled once (the chunk may have grown since it was read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushTraceChunk {
    pub build_id: i64,
    pub chunk_index: u64,
}

impl Job for FlushTraceChunk {
    const NAME: &'static str = "flush_trace_chunk";

    fn options() -> JobOptions {
        JobOptions {
            max_attempts: 10,
            retry: RetrySchedule::Exponential {
                min: Duration::from_secs(1),
                factor: 2.0,
                max: Duration::from_secs(300),
                jitter: true,
            },
            dedup: Dedup::until_executed(Duration::from_secs(3600)).reschedule_once(),
            timeout: Duration::from_secs(120),
            lease: Duration::from_secs(60),
        }
    }

    fn dedup_key(&self) -> Option<String> {
        Some(format!("{}:{}", self.build_id, self.chunk_index))
    }
}

/// Archives a finished job's log (GitLab's `Ci::ArchiveTraceWorker`, but storage errors raise
/// and retry). Sidekiq's schedule over 21 attempts spans about 6.5 days: it outlasts a
/// multi-day storage outage and ends inside the live chunks' 7-day TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveTrace {
    pub build_id: i64,
}

impl Job for ArchiveTrace {
    const NAME: &'static str = "archive_trace";

    fn options() -> JobOptions {
        JobOptions {
            max_attempts: 21,
            retry: RetrySchedule::Sidekiq,
            dedup: Dedup::until_executed(Duration::from_secs(8 * 24 * 3600)),
            timeout: Duration::from_secs(1800),
            lease: Duration::from_secs(120),
        }
    }

    fn dedup_key(&self) -> Option<String> {
        Some(self.build_id.to_string())
    }
}

/// The options of a cron-fired maintenance run (recovery, expiry): one at a time (dedup until
/// executed, one key), a run bounded by its own time budget, so the 10-minute timeout only
/// catches a hung store, and few attempts, since the next tick runs it again anyway.
fn periodic_run_options() -> JobOptions {
    JobOptions {
        max_attempts: 3,
        retry: RetrySchedule::Exponential {
            min: Duration::from_secs(10),
            factor: 2.0,
            max: Duration::from_secs(120),
            jitter: true,
        },
        dedup: Dedup::until_executed(Duration::from_secs(3600)),
        timeout: Duration::from_secs(600),
        lease: Duration::from_secs(60),
    }
}

/// Starts (or resumes) stale-trace recovery's walk ([`super::recovery::TraceRecovery::start`]),
/// fired by cron (every 5 minutes by default), `buildlogs recover` or the dashboard's "run
/// now". One at a time: dedup until executed. The walk itself goes on in [`WalkStaleTraces`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverStaleTraces {}

/// One step of stale-trace recovery's walk: a batch of archives enqueued once the archive
/// queue has room ([`super::recovery::StaleTraceWalk`], a limited-capacity worker of width 1:
/// the walk has one cursor). Each copy enqueues its successor while the walk goes on. No dedup
/// (the limited-capacity pattern counts copies instead); a copy waits at most
/// [`super::recovery::RecoveryConfig::wait`] for room, well inside its timeout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkStaleTraces {}

impl Job for WalkStaleTraces {
    const NAME: &'static str = "walk_stale_traces";

    fn options() -> JobOptions {
        // A maintenance run's retries, without its one-at-a-time dedup (the pattern counts
        // copies instead) and with a timeout that fits one step.
        JobOptions {
            dedup: Dedup::none(),
            timeout: Duration::from_secs(300),
            ..periodic_run_options()
        }
    }
}

impl Job for RecoverStaleTraces {
    const NAME: &'static str = "recover_stale_traces";

    fn options() -> JobOptions {
        periodic_run_options()
    }

    fn dedup_key(&self) -> Option<String> {
        Some("run".to_owned())
    }
}

/// One run of artifact expiry ([`super::expiry::ArtifactExpiry::run`]), fired by cron (every 7
/// minutes by default, like GitLab's `ExpireBuildArtifactsWorker`). Dedup until executed keeps
/// a second copy out of the queue while one waits or runs; the run's own lease keeps two runs
/// apart even if one copy is delivered twice. A run stops at its time budget (5 minutes), so
/// the timeout only catches a hung store; the next tick retries anyway, hence few attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireArtifacts {}

impl Job for ExpireArtifacts {
    const NAME: &'static str = "expire_artifacts";

    fn options() -> JobOptions {
        periodic_run_options()
    }

    fn dedup_key(&self) -> Option<String> {
        Some("run".to_owned())
    }
}

/// One run of the stuck-build sweep ([`super::stuck::StuckBuilds::run`]), fired by cron (every
/// minute by default, like GitLab's `Ci::StuckBuilds::DropRunningWorker` family). Dedup until
/// executed keeps a second copy out of the queue; the run's own lease keeps two runs apart even
/// if one copy is delivered twice. A run stops at its time budget (45 s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropStuckBuilds {}

impl Job for DropStuckBuilds {
    const NAME: &'static str = "drop_stuck_builds";

    fn options() -> JobOptions {
        periodic_run_options()
    }

    fn dedup_key(&self) -> Option<String> {
        Some("run".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::redis_live::LIVE_TTL;

    /// The archive's retries outlast a storage outage of several days and end while the live
    /// chunks (7-day TTL) are still there to archive.
    #[test]
    fn archive_retries_span_days_and_end_inside_the_live_ttl() {
        let options = ArchiveTrace::options();
        let total: Duration = (1..options.max_attempts)
            .map(|attempt| options.retry.delay_after(attempt))
            .sum();
        assert!(total > Duration::from_secs(5 * 24 * 3600), "{total:?}");
        assert!(total < LIVE_TTL, "{total:?}");
    }
}
