//! Artifact rows ([`ArtifactRowStore`]) in SQL: `record_archive` inserts the `trace` artifact
//! and points the trace metadata at it; `expired_artifacts` reads a batch through the partial
//! index `job_artifacts_expirable`; `delete_artifact` deletes one row (the metadata's foreign
//! key is `ON DELETE SET NULL`).
//!
//! Callers: the archiver (`record_archive`), readers (`trace_artifact`), artifact expiry, the
//! dashboard (`newest_trace_artifact`).
//!
//! Guarantee: `record_archive` runs in one transaction that first locks the build row
//! (PostgreSQL `FOR NO KEY UPDATE`, SQLite `BEGIN IMMEDIATE`): concurrent calls serialize, the
//! first inserts the artifact and the metadata, the others find the artifact and return it
//! unchanged. The build row before the others is the lock order of `SqlLiveChunks` too. For an
//! unknown build it finds no row: [`MetadataError::NoBuild`].

use async_trait::async_trait;

use super::{SqlMetadata, on_db, to_sql, to_u32, to_u64};
use crate::traces::metadata::{ArtifactRowStore, MetadataError};
use crate::traces::model::{Artifact, NewArtifact};

/// `job_artifacts` columns, in [`ArtifactTuple`] order.
macro_rules! artifact_columns {
    () => {
        "id, build_id, kind, object_path, size, crc32, sha256, expire_at, locked, created_at"
    };
}

type ArtifactTuple = (
    i64,
    i64,
    String,
    String,
    i64,
    i64,
    String,
    Option<i64>,
    bool,
    i64,
);

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// Opens a write transaction.
    begin: &'static str,
    /// $1 build → its id, the row locked against other writers until commit (no row: no build).
    lock_build: &'static str,
    /// $1 build → its `trace` artifact.
    trace_artifact: &'static str,
    /// → the `trace` artifact with the highest id.
    newest_trace_artifact: &'static str,
    /// $1 build, $2 object path, $3 size, $4 crc32, $5 sha256, $6 expire at, $7 now → the new
    /// artifact.
    insert_artifact: &'static str,
    /// $1 build, $2 checksum, $3 artifact id, $4 now.
    record_archived: &'static str,
    /// $1 build, $2 now.
    mark_trace_archived: &'static str,
    /// $1 now, $2 limit → expired, unlocked trace artifacts in (expire_at, id) order.
    expired_artifacts: &'static str,
    /// $1 artifact id.
    delete_artifact: &'static str,
}

/// SQLite: the write transaction holds SQLite's one write lock, so `lock_build` needs no
/// locking clause. The other statements are PostgreSQL's too.
const SQLITE: Statements = Statements {
    begin: super::SQLITE_BEGIN,
    lock_build: "SELECT id FROM builds WHERE id = $1",
    trace_artifact: concat!(
        "SELECT ",
        artifact_columns!(),
        " FROM job_artifacts WHERE build_id = $1 AND kind = 'trace'"
    ),
    newest_trace_artifact: concat!(
        "SELECT ",
        artifact_columns!(),
        " FROM job_artifacts WHERE kind = 'trace' ORDER BY id DESC LIMIT 1"
    ),
    insert_artifact: concat!(
        "INSERT INTO job_artifacts \
         (build_id, kind, object_path, size, crc32, sha256, expire_at, created_at) \
         VALUES ($1, 'trace', $2, $3, $4, $5, $6, $7) RETURNING ",
        artifact_columns!()
    ),
    record_archived: "INSERT INTO build_trace_metadata \
         (build_id, checksum, trace_artifact_id, archived_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (build_id) DO UPDATE SET checksum = excluded.checksum, \
         trace_artifact_id = excluded.trace_artifact_id, archived_at = excluded.archived_at",
    mark_trace_archived: "UPDATE builds SET trace_archived_at = $2 WHERE id = $1",
    // `locked = false` repeats the partial index's predicate word for word (both planners
    // need that); `expire_at <= $1` implies its `expire_at IS NOT NULL`.
    expired_artifacts: concat!(
        "SELECT ",
        artifact_columns!(),
        " FROM job_artifacts WHERE expire_at <= $1 AND locked = false AND kind = 'trace' \
         ORDER BY expire_at, id LIMIT $2"
    ),
    delete_artifact: "DELETE FROM job_artifacts WHERE id = $1",
};

/// PostgreSQL (READ COMMITTED): `lock_build` takes the build row's `FOR NO KEY UPDATE` lock,
/// which serializes archivers of one build without blocking the foreign-key checks of inserts
/// (chunk rows, attempts) that only need `KEY SHARE`.
const POSTGRES: Statements = Statements {
    begin: super::POSTGRES_BEGIN,
    lock_build: "SELECT id FROM builds WHERE id = $1 FOR NO KEY UPDATE",
    trace_artifact: SQLITE.trace_artifact,
    newest_trace_artifact: SQLITE.newest_trace_artifact,
    insert_artifact: SQLITE.insert_artifact,
    record_archived: SQLITE.record_archived,
    mark_trace_archived: SQLITE.mark_trace_archived,
    expired_artifacts: SQLITE.expired_artifacts,
    delete_artifact: SQLITE.delete_artifact,
};

#[async_trait]
impl ArtifactRowStore for SqlMetadata {
    async fn record_archive(
        &self,
        artifact: &NewArtifact,
        now_ms: i64,
    ) -> Result<Artifact, MetadataError> {
        let build = artifact.build_id;
        let size = to_sql(build, "artifact size", artifact.size)?;
        let crc32 = i64::from(artifact.crc32);
        let row: ArtifactTuple = on_db!(&self.db, |pool, q| {
            let mut tx = pool.begin_with(q.begin).await?;
            let locked: Option<i64> = sqlx::query_scalar(q.lock_build)
                .bind(build)
                .fetch_optional(&mut *tx)
                .await?;
            if locked.is_none() {
                tx.rollback().await?;
                return Err(MetadataError::NoBuild(build));
            }
            let existing: Option<ArtifactTuple> = sqlx::query_as(q.trace_artifact)
                .bind(build)
                .fetch_optional(&mut *tx)
                .await?;
            match existing {
                // Archived before (an earlier run, or a concurrent one that held the lock).
                Some(row) => {
                    tx.rollback().await?;
                    row
                }
                None => {
                    let row: ArtifactTuple = sqlx::query_as(q.insert_artifact)
                        .bind(build)
                        .bind(artifact.object_path.as_str())
                        .bind(size)
                        .bind(crc32)
                        .bind(artifact.sha256.as_str())
                        .bind(artifact.expire_at_ms)
                        .bind(now_ms)
                        .fetch_one(&mut *tx)
                        .await?;
                    sqlx::query(q.record_archived)
                        .bind(build)
                        .bind(crc32)
                        .bind(row.0)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(q.mark_trace_archived)
                        .bind(build)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    row
                }
            }
        });
        to_artifact(row)
    }

    async fn trace_artifact(&self, build_id: i64) -> Result<Option<Artifact>, MetadataError> {
        let row: Option<ArtifactTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.trace_artifact)
                .bind(build_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_artifact).transpose()
    }

    async fn newest_trace_artifact(&self) -> Result<Option<Artifact>, MetadataError> {
        let row: Option<ArtifactTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.newest_trace_artifact)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_artifact).transpose()
    }

    async fn expired_artifacts(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<Artifact>, MetadataError> {
        let rows: Vec<ArtifactTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.expired_artifacts)
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(to_artifact).collect()
    }

    async fn delete_artifact(&self, id: i64) -> Result<bool, MetadataError> {
        let deleted = on_db!(&self.db, |pool, q| {
            sqlx::query(q.delete_artifact)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }
}

pub(super) fn to_artifact(row: ArtifactTuple) -> Result<Artifact, MetadataError> {
    let (id, build, kind, object_path, size, crc32, sha256, expire_at, locked, created_at) = row;
    Ok(Artifact {
        id,
        build_id: build,
        kind,
        object_path,
        size: to_u64(build, "artifact size", size)?,
        crc32: to_u32(build, "artifact crc32", crc32)?,
        sha256,
        expire_at_ms: expire_at,
        locked,
        created_at_ms: created_at,
    })
}
