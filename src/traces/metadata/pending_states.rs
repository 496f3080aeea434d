//! Pending final states: the runner's final PUT, stored while its log may still grow (the
//! accept timeout) and deleted once the state is committed.
//!
//! Guarantee (checked by `tests/metadata_conformance/pending_states.rs`): the first state
//! stored wins; every later upsert, concurrent or not, gets that one back.

use async_trait::async_trait;

use super::MetadataError;
use crate::traces::model::PendingState;

#[async_trait]
pub trait PendingStateStore: Send + Sync + 'static {
    /// Stores the runner's final PUT if none is stored; returns the stored one (the first).
    async fn upsert_pending_state(
        &self,
        state: &PendingState,
    ) -> Result<PendingState, MetadataError>;

    async fn pending_state(&self, build_id: i64) -> Result<Option<PendingState>, MetadataError>;

    async fn delete_pending_state(&self, build_id: i64) -> Result<(), MetadataError>;
}
