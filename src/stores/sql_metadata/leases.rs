//! Leases ([`LeaseStore`]) in SQL, which keep two runs of a sweep (artifact expiry, stuck
//! builds) from overlapping.
//!
//! Guarantee: `take_lease` is one upsert whose `DO UPDATE … WHERE` applies only over an expired
//! lease or the taker's own: PostgreSQL's `ON CONFLICT` either inserts or locks the existing
//! row and re-checks the condition on its latest version, and SQLite has one writer, so of
//! concurrent takers exactly one sees a row count of 1. `release_lease` deletes only the
//! holder's row.

use async_trait::async_trait;

use super::{SqlMetadata, on_db};
use crate::traces::metadata::{LeaseStore, MetadataError};

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// $1 name, $2 holder, $3 expires at, $4 now → 1 row if $2 holds the lease now.
    take_lease: &'static str,
    /// $1 name, $2 holder → 1 row if $2 held it.
    release_lease: &'static str,
}

/// SQLite's statements, which PostgreSQL runs as they are.
const SQLITE: Statements = Statements {
    take_lease: "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
         expires_at = excluded.expires_at \
         WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
    release_lease: "DELETE FROM leases WHERE name = $1 AND holder = $2",
};

const POSTGRES: Statements = SQLITE;

#[async_trait]
impl LeaseStore for SqlMetadata {
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, MetadataError> {
        let taken = on_db!(&self.db, |pool, q| {
            sqlx::query(q.take_lease)
                .bind(name)
                .bind(holder)
                .bind(expires_at_ms)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(taken == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, MetadataError> {
        let released = on_db!(&self.db, |pool, q| {
            sqlx::query(q.release_lease)
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(released == 1)
    }
}
