//! Trace metadata ([`TraceMetadataStore`]) in SQL: `record_checksums`,
//! `increment_archival_attempts` and `record_lost_bytes` upsert the build's row (a partial
//! trace is one with lost bytes); `stale_traces` walks the partial index
//! `builds_unarchived_traces`.
//!
//! Guarantees:
//! - `record_checksums` overwrites the checksums and `checksum_valid`, but `invalid` only ever
//!   goes from false to true: a log a check found wrong stays flagged.
//! - A write for an unknown build fails its foreign key: [`MetadataError::NoBuild`].

use async_trait::async_trait;

use super::{SqlMetadata, corrupt, on_db, or_no_build, to_sql, to_u32, to_u64};
use crate::traces::metadata::{MetadataError, TraceMetadataStore};
use crate::traces::model::TraceMetadata;

/// `build_trace_metadata` columns, in [`MetadataTuple`] order.
macro_rules! metadata_columns {
    () => {
        "build_id, checksum, remote_checksum, checksum_valid, archival_attempts, \
         last_archival_attempt_at, archived_at, trace_artifact_id, invalid, lost_bytes"
    };
}

type MetadataTuple = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<bool>,
    i32,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    bool,
    i64,
);

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// $1 build → its trace metadata.
    trace_metadata: &'static str,
    /// $1 build, $2 checksum, $3 remote checksum, $4 checksum valid, $5 invalid.
    record_checksums: &'static str,
    /// $1 build, $2 now → the new attempt count.
    count_archival_attempt: &'static str,
    /// $1 build, $2 lost bytes.
    record_lost_bytes: &'static str,
    /// $1 after id, $2 finished before, $3 limit, $4 attempts that mean "gave up" → build ids.
    stale_traces: &'static str,
}

/// SQLite's statements, which PostgreSQL runs as they are.
const SQLITE: Statements = Statements {
    trace_metadata: concat!(
        "SELECT ",
        metadata_columns!(),
        " FROM build_trace_metadata WHERE build_id = $1"
    ),
    record_checksums: "INSERT INTO build_trace_metadata \
         (build_id, checksum, remote_checksum, checksum_valid, invalid) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (build_id) DO UPDATE SET checksum = excluded.checksum, \
         remote_checksum = excluded.remote_checksum, checksum_valid = excluded.checksum_valid, \
         invalid = build_trace_metadata.invalid OR excluded.invalid",
    count_archival_attempt: "INSERT INTO build_trace_metadata \
         (build_id, archival_attempts, last_archival_attempt_at) VALUES ($1, 1, $2) \
         ON CONFLICT (build_id) DO UPDATE SET \
         archival_attempts = build_trace_metadata.archival_attempts + 1, \
         last_archival_attempt_at = excluded.last_archival_attempt_at \
         RETURNING archival_attempts",
    record_lost_bytes: "INSERT INTO build_trace_metadata (build_id, lost_bytes) VALUES ($1, $2) \
         ON CONFLICT (build_id) DO UPDATE SET lost_bytes = excluded.lost_bytes",
    // The partial index `builds_unarchived_traces` holds exactly the rows this walks.
    stale_traces: "SELECT id FROM builds \
         WHERE finished_at IS NOT NULL AND trace_archived_at IS NULL \
         AND id > $1 AND finished_at < $2 \
         AND NOT EXISTS (SELECT 1 FROM build_trace_metadata m \
         WHERE m.build_id = builds.id AND m.archival_attempts >= $4) \
         ORDER BY id LIMIT $3",
};

const POSTGRES: Statements = SQLITE;

#[async_trait]
impl TraceMetadataStore for SqlMetadata {
    async fn trace_metadata(&self, build_id: i64) -> Result<Option<TraceMetadata>, MetadataError> {
        let row: Option<MetadataTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.trace_metadata)
                .bind(build_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_metadata).transpose()
    }

    async fn record_checksums(
        &self,
        build_id: i64,
        ours: u32,
        remote: Option<u32>,
        valid: Option<bool>,
    ) -> Result<(), MetadataError> {
        // Set by a failed check, kept by the upsert's `OR` whatever later checks say.
        let invalid = valid == Some(false);
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.record_checksums)
                .bind(build_id)
                .bind(i64::from(ours))
                .bind(remote.map(i64::from))
                .bind(valid)
                .bind(invalid)
                .execute(pool)
                .await
                .map_err(or_no_build(build_id))?;
        });
        Ok(())
    }

    async fn record_lost_bytes(&self, build_id: i64, lost_bytes: u64) -> Result<(), MetadataError> {
        let lost = to_sql(build_id, "lost bytes", lost_bytes)?;
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.record_lost_bytes)
                .bind(build_id)
                .bind(lost)
                .execute(pool)
                .await
                .map_err(or_no_build(build_id))?;
        });
        Ok(())
    }

    async fn increment_archival_attempts(
        &self,
        build_id: i64,
        now_ms: i64,
    ) -> Result<u32, MetadataError> {
        let count: i32 = on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.count_archival_attempt)
                .bind(build_id)
                .bind(now_ms)
                .fetch_one(pool)
                .await
                .map_err(or_no_build(build_id))?
        });
        to_attempts(build_id, count)
    }

    async fn stale_traces(
        &self,
        after_id: i64,
        finished_before_ms: i64,
        gave_up_after: u32,
        limit: u32,
    ) -> Result<Vec<i64>, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.stale_traces)
                .bind(after_id)
                .bind(finished_before_ms)
                .bind(i64::from(limit))
                .bind(i64::from(gave_up_after))
                .fetch_all(pool)
                .await?
        }))
    }
}

/// A stored archival attempt count (INTEGER).
fn to_attempts(build: i64, value: i32) -> Result<u32, MetadataError> {
    u32::try_from(value)
        .map_err(|_| corrupt(build, format!("archival attempts {value} is negative")))
}

pub(super) fn to_metadata(row: MetadataTuple) -> Result<TraceMetadata, MetadataError> {
    let (build, sum, remote, valid, attempts, last_try, archived, artifact, invalid, lost) = row;
    Ok(TraceMetadata {
        build_id: build,
        checksum: sum.map(|c| to_u32(build, "checksum", c)).transpose()?,
        remote_checksum: remote
            .map(|c| to_u32(build, "remote checksum", c))
            .transpose()?,
        checksum_valid: valid,
        archival_attempts: to_attempts(build, attempts)?,
        last_archival_attempt_at_ms: last_try,
        archived_at_ms: archived,
        trace_artifact_id: artifact,
        invalid,
        lost_bytes: to_u64(build, "lost bytes", lost)?,
    })
}
