//! What the stuck-build sweep ([`crate::traces::stuck`]) looks for: running builds that went
//! quiet, and final states left pending.
//!
//! Guarantee (checked by `tests/metadata_conformance/stuck.rs`): `idle_running_builds` lists
//! only `running` builds without a pending state whose `activity_at` is before the given time,
//! in (activity_at, id) order after the given key; `overdue_pending_states` only `running`
//! builds whose pending state is older than the given time, by id; `record_activity` only ever
//! moves `activity_at` forward.

use async_trait::async_trait;

use super::MetadataError;
use crate::traces::model::IdleBuild;

#[async_trait]
pub trait StuckBuildStore: Send + Sync + 'static {
    /// Running builds without a pending final state whose `activity_at` is before
    /// `idle_before_ms`, after `after` = (activity_at, id) in that order, at most `limit`. An
    /// index range scan over running builds only (`builds_running_activity`).
    async fn idle_running_builds(
        &self,
        idle_before_ms: i64,
        after: (i64, i64),
        limit: u32,
    ) -> Result<Vec<IdleBuild>, MetadataError>;

    /// Running builds whose pending final state was stored before `created_before_ms` (the
    /// runner's PUT waited out the accept timeout and never came back), ids above `after_id`,
    /// ascending, at most `limit`. Costs a walk over running builds only.
    async fn overdue_pending_states(
        &self,
        created_before_ms: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<i64>, MetadataError>;

    /// Moves a build's `activity_at` forward to `at_ms` (never back).
    async fn record_activity(&self, build_id: i64, at_ms: i64) -> Result<(), MetadataError>;
}
