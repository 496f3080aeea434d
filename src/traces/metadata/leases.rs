//! Leases: named, exclusive and expiring, so two runs of one sweep (artifact expiry, stuck
//! builds) never overlap, and a holder that dies frees its lease by letting it expire.
//!
//! Guarantee (checked by `tests/metadata_conformance/leases.rs`): `take_lease` is atomic: of
//! any number of holders, at most one holds a name until its `expires_at` passes; the holder
//! renews by taking again. `release_lease` frees it only for its holder.

use async_trait::async_trait;

use super::MetadataError;

#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes lease `name` for `holder` until `expires_at_ms`, if it is free, expired at `now_ms`
    /// or already `holder`'s (then it is renewed). True if `holder` holds it now.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, MetadataError>;

    /// Frees lease `name` if `holder` holds it; true if it did.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, MetadataError>;
}
