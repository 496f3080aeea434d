//! The metadata repository ([`MetadataStore`]) in the SQL database: PostgreSQL in production,
//! SQLite embedded. The database is the source of truth for where every chunk is.
//!
//! One [`SqlMetadata`] over either database implements every concern's trait, one file each:
//! - `builds.rs`: builds, their final state, the dashboard's builds list ([`BuildStore`]).
//! - `chunk_rows.rs`: chunk rows, flips under optimistic locking ([`ChunkRowStore`]).
//! - `pending_states.rs`: the runner's first final PUT ([`PendingStateStore`]).
//! - `trace_metadata.rs`: checksums, archival attempts, lost bytes, stale traces
//!   ([`TraceMetadataStore`]).
//! - `artifacts.rs`: recording an archive, artifact expiry ([`ArtifactRowStore`]).
//! - `cursors.rs`, `leases.rs`, `breakers.rs`: named cursors, leases and circuit breaker records
//!   ([`CursorStore`], [`LeaseStore`], [`BreakerStore`]).
//! - `stuck.rs`: quiet running builds, overdue pending states ([`StuckBuildStore`]).
//!
//! Guarantees every file keeps (those of each trait are in its file; the conformance suite
//! `tests/metadata_conformance/` runs them on both databases):
//! - A write that needs the build's row is [`MetadataError::NoBuild`] for an unknown build
//!   (`finish_build` and `record_archive` find no row; inserts fail their foreign key, so
//!   SQLite pools must keep sqlx's default `foreign_keys = ON`). Reads, deletes and flips of an
//!   unknown build find nothing (`None`, no rows, `false`).
//! - Integers are checked both ways: a `u64` beyond BIGINT, or a stored value outside its Rust
//!   type (a negative size, a CRC32 past `u32`), is [`MetadataError::Corrupt`], never wrapped.
//!
//! Each file declares its statements, one set per database, as its own `SQLITE` and `POSTGRES`
//! constants; the code using them is written once and expanded per driver by `on_db!`
//! (runtime-checked `sqlx::query`, no `DATABASE_URL` at build time), as in
//! [`super::sql_live`]. Rows are read as tuples (the `*Tuple` types, in the order of the
//! `*_columns!` lists) and converted once.

mod artifacts;
mod breakers;
mod builds;
mod chunk_rows;
mod cursors;
mod leases;
mod pending_states;
mod stuck;
mod trace_metadata;

use sqlx::migrate::MigrateError;
use sqlx::{PgPool, SqlitePool};

use super::sql::{Db, on_db};
use super::sql_live::{migrate_postgres, migrate_sqlite};
use crate::traces::metadata::MetadataError;
#[cfg(doc)]
use crate::traces::metadata::{
    ArtifactRowStore, BreakerStore, BuildStore, ChunkRowStore, CursorStore, LeaseStore,
    MetadataStore, PendingStateStore, StuckBuildStore, TraceMetadataStore,
};

/// Opens a write transaction on SQLite: `BEGIN IMMEDIATE` takes the write lock at once (a
/// deferred transaction that read first could fail to upgrade).
const SQLITE_BEGIN: &str = "BEGIN IMMEDIATE";
/// Opens a write transaction on PostgreSQL (READ COMMITTED); rows are locked as statements ask.
const POSTGRES_BEGIN: &str = "BEGIN";

pub struct SqlMetadata {
    db: Db,
}

impl SqlMetadata {
    /// Over a migrated SQLite pool (see [`migrate_sqlite`]) with `foreign_keys` on (sqlx's
    /// default) and a `busy_timeout`, since writers queue for SQLite's one write lock.
    pub fn sqlite(pool: SqlitePool) -> Self {
        Self {
            db: Db::Sqlite(pool),
        }
    }

    /// Over a migrated PostgreSQL pool (see [`migrate_postgres`]).
    pub fn postgres(pool: PgPool) -> Self {
        Self {
            db: Db::Postgres(pool),
        }
    }

    /// Applies this store's database's migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        match &self.db {
            Db::Sqlite(pool) => migrate_sqlite(pool).await,
            Db::Postgres(pool) => migrate_postgres(pool).await,
        }
    }
}

fn corrupt(build: i64, detail: impl Into<String>) -> MetadataError {
    MetadataError::Corrupt {
        build,
        detail: detail.into(),
    }
}

/// A write naming a build without a `builds` row fails its foreign key: no such build.
fn or_no_build(build: i64) -> impl FnOnce(sqlx::Error) -> MetadataError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => MetadataError::NoBuild(build),
        _ => MetadataError::Sql(e),
    }
}

/// A size, index or count as stored (BIGINT).
fn to_sql(build: i64, what: &str, value: u64) -> Result<i64, MetadataError> {
    i64::try_from(value).map_err(|_| corrupt(build, format!("{what} {value} out of range")))
}

/// A stored size, index or count (never negative).
fn to_u64(build: i64, what: &str, value: i64) -> Result<u64, MetadataError> {
    u64::try_from(value).map_err(|_| corrupt(build, format!("{what} {value} is negative")))
}

/// A stored CRC32.
fn to_u32(build: i64, what: &str, value: i64) -> Result<u32, MetadataError> {
    u32::try_from(value).map_err(|_| corrupt(build, format!("{what} {value} is not a CRC32")))
}

#[cfg(test)]
mod tests {
    use super::artifacts::to_artifact;
    use super::builds::to_build;
    use super::chunk_rows::to_chunk;
    use super::pending_states::to_pending;
    use super::trace_metadata::to_metadata;
    use super::*;

    fn is_corrupt(result: Result<impl std::fmt::Debug, MetadataError>) -> bool {
        matches!(result, Err(MetadataError::Corrupt { build: 7, .. }))
    }

    #[test]
    fn integers_out_of_range_are_corrupt_not_wrapped() {
        assert!(is_corrupt(to_sql(7, "size", u64::MAX)));
        assert_eq!(to_sql(7, "size", i64::MAX as u64).ok(), Some(i64::MAX));
        assert!(is_corrupt(to_u64(7, "size", -1)));
        assert!(is_corrupt(to_u32(7, "crc32", -1)));
        assert!(is_corrupt(to_u32(7, "crc32", 1 << 32)));
        assert_eq!(to_u32(7, "crc32", u32::MAX.into()).ok(), Some(u32::MAX));
    }

    #[test]
    fn rows_with_values_outside_their_types_are_corrupt() {
        let chunk = |store: &str, size: i64, crc: Option<i64>| {
            to_chunk((7, 0, store.to_owned(), size, crc, 0))
        };
        assert!(chunk("database", 3, Some(1)).is_ok());
        assert!(is_corrupt(chunk("fog", 3, None)));
        assert!(is_corrupt(chunk("database", -3, None)));
        assert!(is_corrupt(chunk("object", 3, Some(u32::MAX as i64 + 1))));
        assert!(is_corrupt(to_build((
            7,
            "d".into(),
            "done".into(),
            None,
            None,
            0
        ))));
        let metadata =
            |attempts| to_metadata((7, None, None, None, attempts, None, None, None, false, 0));
        assert!(is_corrupt(metadata(-1)));
        assert_eq!(metadata(2).ok().map(|m| m.archival_attempts), Some(2));
        assert!(is_corrupt(to_pending((
            7,
            "running-ish".into(),
            None,
            None,
            None,
            None,
            0
        ))));
        assert!(is_corrupt(to_artifact((
            1,
            7,
            "trace".into(),
            "p".into(),
            -1,
            0,
            "s".into(),
            None,
            false,
            0
        ))));
    }
}
