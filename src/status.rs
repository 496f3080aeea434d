//! What an operator looks at, read once for everyone who shows it: `buildlogs status` and the
//! dashboard (`/admin/api/queues`, `/breaker`, `/recovery`) print or serve these views, so both
//! always say the same thing.
//!
//! - [`queues`]: every queue's figures (depth by state, latency, running, limit, dead, lifetime
//!   counts), one broker call per queue.
//! - [`breaker`]: the object store's circuit breaker from its shared row (never recorded: it
//!   never opened, so it is closed), with its last changes (when it opened, why, how long the
//!   store was down).
//! - [`recovery`]: where stale-trace recovery's walk is, when it last stepped, and how many
//!   stale traces wait (counted up to a cap: a bounded read however large the backlog).

use crate::jobs::Job;
use crate::jobs::broker::{Broker, BrokerError, QueueStats};
use crate::traces::breaker::OBJECT_STORE_BREAKER;
use crate::traces::jobs::ArchiveTrace;
use crate::traces::metadata::{BreakerStore, CursorStore, MetadataError, TraceMetadataStore};
use crate::traces::recovery::{RECOVERY_CURSOR, RecoveryConfig};

/// Stale traces counted at most; past it a view says "more than".
pub const STALE_COUNT_MAX: u32 = 1_000;

/// Every queue's figures, in the broker's order.
pub async fn queues(broker: &dyn Broker, now_ms: i64) -> Result<Vec<QueueStats>, BrokerError> {
    let mut stats = Vec::new();
    for queue in broker.queues().await? {
        stats.push(broker.stats(&queue, now_ms).await?);
    }
    Ok(stats)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerView {
    pub name: &'static str,
    pub open: bool,
    /// When it last opened or closed (`None`: never).
    pub since_ms: Option<i64>,
    /// The error that opened it.
    pub reason: Option<String>,
    /// Its last changes, newest first (at most [`BREAKER_HISTORY_SHOWN`]).
    pub history: Vec<BreakerChange>,
}

/// One change of the breaker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerChange {
    pub open: bool,
    pub at_ms: i64,
    /// Why it opened (none for a close).
    pub reason: Option<String>,
    /// How long the state it entered held, until the next change (`None`: it still holds).
    pub lasted_ms: Option<i64>,
}

/// Changes a view shows.
pub const BREAKER_HISTORY_SHOWN: u32 = 10;

pub async fn breaker(meta: &dyn BreakerStore) -> Result<BreakerView, MetadataError> {
    let record = meta.breaker(OBJECT_STORE_BREAKER).await?;
    let changes = meta
        .breaker_history(OBJECT_STORE_BREAKER, BREAKER_HISTORY_SHOWN)
        .await?;
    // Newest first: each change held until the one before it in the list.
    let mut until = None;
    let history = changes
        .into_iter()
        .map(|c| {
            let lasted_ms = until.map(|next: i64| next - c.changed_at_ms);
            until = Some(c.changed_at_ms);
            BreakerChange {
                open: c.open,
                at_ms: c.changed_at_ms,
                reason: c.reason,
                lasted_ms,
            }
        })
        .collect();
    Ok(BreakerView {
        name: OBJECT_STORE_BREAKER,
        open: record.as_ref().is_some_and(|r| r.open),
        since_ms: record.as_ref().map(|r| r.changed_at_ms),
        reason: record.and_then(|r| r.reason),
        history,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryView {
    pub cursor_name: &'static str,
    /// The last build id the walk passed; `None` or 0 between walks.
    pub cursor: Option<i64>,
    /// When a run last stepped (every run that gets to read sets the cursor).
    pub last_step_ms: Option<i64>,
    /// Stale traces waiting, at most [`STALE_COUNT_MAX`].
    pub stale: u32,
    /// More than [`STALE_COUNT_MAX`] wait.
    pub stale_more: bool,
    /// How old an unarchived finished log must be to count as stale.
    pub stale_after_ms: i64,
}

/// Counted with the default staleness: the web role does not read
/// `BUILDLOGS_RECOVERY_STALE_MINUTES`.
pub async fn recovery(
    cursors: &dyn CursorStore,
    traces: &dyn TraceMetadataStore,
    now_ms: i64,
) -> Result<RecoveryView, MetadataError> {
    let cursor = cursors.cursor(RECOVERY_CURSOR).await?;
    let last_step_ms = cursors.cursor_updated_at(RECOVERY_CURSOR).await?;
    let stale_after_ms =
        i64::try_from(RecoveryConfig::default().stale_after.as_millis()).unwrap_or(i64::MAX);
    let stale = traces
        .stale_traces(
            0,
            now_ms.saturating_sub(stale_after_ms),
            ArchiveTrace::options().max_attempts,
            STALE_COUNT_MAX + 1,
        )
        .await?
        .len() as u32;
    Ok(RecoveryView {
        cursor_name: RECOVERY_CURSOR,
        cursor,
        last_step_ms,
        stale: stale.min(STALE_COUNT_MAX),
        stale_more: stale > STALE_COUNT_MAX,
        stale_after_ms,
    })
}
