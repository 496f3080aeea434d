//! Pending final states ([`PendingStateStore`]) in SQL: the runner's first final PUT is stored
//! (`ON CONFLICT DO NOTHING`), every later one gets the stored one back. For an unknown build
//! the insert fails its foreign key: [`MetadataError::NoBuild`].

use async_trait::async_trait;

use super::{SqlMetadata, corrupt, on_db, or_no_build, to_sql, to_u32, to_u64};
use crate::traces::metadata::{MetadataError, PendingStateStore};
use crate::traces::model::{BuildStatus, PendingState};

/// `build_pending_states` columns, in [`PendingTuple`] order.
macro_rules! pending_columns {
    () => {
        "build_id, state, failure_reason, exit_code, trace_checksum, trace_bytesize, created_at"
    };
}

type PendingTuple = (
    i64,
    String,
    Option<String>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    i64,
);

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// $1 build, $2 state, $3 failure reason, $4 exit code, $5 checksum, $6 bytesize, $7 created
    /// at → 1 row unless a pending state is stored.
    insert_pending_state: &'static str,
    /// $1 build → its pending state.
    pending_state: &'static str,
    /// $1 build.
    delete_pending_state: &'static str,
}

/// SQLite's statements, which PostgreSQL runs as they are.
const SQLITE: Statements = Statements {
    insert_pending_state: concat!(
        "INSERT INTO build_pending_states (",
        pending_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (build_id) DO NOTHING"
    ),
    pending_state: concat!(
        "SELECT ",
        pending_columns!(),
        " FROM build_pending_states WHERE build_id = $1"
    ),
    delete_pending_state: "DELETE FROM build_pending_states WHERE build_id = $1",
};

const POSTGRES: Statements = SQLITE;

#[async_trait]
impl PendingStateStore for SqlMetadata {
    async fn upsert_pending_state(
        &self,
        state: &PendingState,
    ) -> Result<PendingState, MetadataError> {
        let build = state.build_id;
        let bytesize = state
            .trace_bytesize
            .map(|n| to_sql(build, "trace bytesize", n))
            .transpose()?;
        // The stored row is only ever deleted (once the state is committed). If that happened
        // between the insert and the read, the second insert stores this state.
        for _ in 0..2 {
            on_db!(&self.db, |pool, q| {
                sqlx::query(q.insert_pending_state)
                    .bind(build)
                    .bind(state.state.as_str())
                    .bind(state.failure_reason.as_deref())
                    .bind(state.exit_code)
                    .bind(state.trace_checksum.map(i64::from))
                    .bind(bytesize)
                    .bind(state.created_at_ms)
                    .execute(pool)
                    .await
                    .map_err(or_no_build(build))?;
            });
            if let Some(stored) = self.pending_state(build).await? {
                return Ok(stored);
            }
        }
        Err(corrupt(
            build,
            "the pending state was deleted as fast as it was stored",
        ))
    }

    async fn pending_state(&self, build_id: i64) -> Result<Option<PendingState>, MetadataError> {
        let row: Option<PendingTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.pending_state)
                .bind(build_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_pending).transpose()
    }

    async fn delete_pending_state(&self, build_id: i64) -> Result<(), MetadataError> {
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.delete_pending_state)
                .bind(build_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

pub(super) fn to_pending(row: PendingTuple) -> Result<PendingState, MetadataError> {
    let (build_id, state, failure_reason, exit_code, checksum, bytesize, created_at_ms) = row;
    Ok(PendingState {
        build_id,
        state: state
            .parse::<BuildStatus>()
            .map_err(|e| corrupt(build_id, e))?,
        failure_reason,
        exit_code,
        trace_checksum: checksum
            .map(|c| to_u32(build_id, "trace checksum", c))
            .transpose()?,
        trace_bytesize: bytesize
            .map(|n| to_u64(build_id, "trace bytesize", n))
            .transpose()?,
        created_at_ms,
    })
}
