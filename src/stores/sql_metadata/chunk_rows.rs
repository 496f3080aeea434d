//! Chunk rows ([`ChunkRowStore`]) in SQL: `ensure_chunks` inserts the missing rows (size 0,
//! `lock_version` 0, `ON CONFLICT DO NOTHING`) in one transaction; `flip_chunk` is one UPDATE
//! conditional on `lock_version`, which it bumps; `chunk_data` reads a `database` row's bytes;
//! `delete_chunks` drops a build's rows once its log is archived.
//!
//! Callers: the chunk flush (`ensure_chunks` for a live chunk's first row, `chunks`,
//! `flip_chunk`), readers (`chunks`, `chunk_data`), the archiver (`delete_chunks`).
//!
//! Guarantees:
//! - `ensure_chunks` never touches an existing row (its store, size and `lock_version` stay).
//!   It inserts in ascending index order, so two calls cannot deadlock each other. For an
//!   unknown build it fails the foreign key: [`MetadataError::NoBuild`].
//! - Of two flips read at one `lock_version` exactly one applies: the UPDATE re-checks the
//!   version under the row lock (PostgreSQL re-evaluates it on the committed row; SQLite has one
//!   writer). Every flip bumps the version, so a flush that lost the race, or read the row
//!   before an append (`SqlLiveChunks` bumps it too), matches nothing. Only a flip to
//!   `database` keeps bytes in `raw_data`; any other flip clears them.

use async_trait::async_trait;

use super::{SqlMetadata, corrupt, on_db, or_no_build, to_sql, to_u32, to_u64};
use crate::traces::metadata::{ChunkFlip, ChunkRowStore, MetadataError};
use crate::traces::model::{ChunkRow, DataStore};

/// `build_trace_chunks` columns, in [`ChunkTuple`] order.
macro_rules! chunk_columns {
    () => {
        "build_id, chunk_index, data_store, size, crc32, lock_version"
    };
}

type ChunkTuple = (i64, i64, String, i64, Option<i64>, i64);

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// Opens a write transaction.
    begin: &'static str,
    /// $1 build, $2 index, $3 data store, $4 now → 1 row unless the chunk's row exists.
    ensure_chunk: &'static str,
    /// $1 build → its chunk rows, in index order.
    chunks: &'static str,
    /// $1 build, $2 index → raw_data of a `database` row holding bytes.
    chunk_data: &'static str,
    /// $1 build, $2 index, $3 expected lock_version, $4 data store, $5 size, $6 crc32,
    /// $7 raw_data, $8 now → 1 row if the version was $3.
    flip_chunk: &'static str,
    /// $1 build.
    delete_chunks: &'static str,
}

/// SQLite; PostgreSQL runs the same statements in a transaction of its own kind (`begin`).
const SQLITE: Statements = Statements {
    begin: super::SQLITE_BEGIN,
    ensure_chunk: "INSERT INTO build_trace_chunks \
         (build_id, chunk_index, data_store, size, lock_version, created_at, updated_at) \
         VALUES ($1, $2, $3, 0, 0, $4, $4) \
         ON CONFLICT (build_id, chunk_index) DO NOTHING",
    chunks: concat!(
        "SELECT ",
        chunk_columns!(),
        " FROM build_trace_chunks WHERE build_id = $1 ORDER BY chunk_index"
    ),
    chunk_data: "SELECT raw_data FROM build_trace_chunks \
         WHERE build_id = $1 AND chunk_index = $2 AND data_store = 'database' \
         AND raw_data IS NOT NULL",
    flip_chunk: "UPDATE build_trace_chunks SET data_store = $4, size = $5, crc32 = $6, \
         raw_data = $7, lock_version = lock_version + 1, updated_at = $8 \
         WHERE build_id = $1 AND chunk_index = $2 AND lock_version = $3",
    delete_chunks: "DELETE FROM build_trace_chunks WHERE build_id = $1",
};

/// PostgreSQL.
const POSTGRES: Statements = Statements {
    begin: super::POSTGRES_BEGIN,
    ensure_chunk: SQLITE.ensure_chunk,
    chunks: SQLITE.chunks,
    chunk_data: SQLITE.chunk_data,
    flip_chunk: SQLITE.flip_chunk,
    delete_chunks: SQLITE.delete_chunks,
};

#[async_trait]
impl ChunkRowStore for SqlMetadata {
    async fn ensure_chunks(
        &self,
        build_id: i64,
        indexes: &[u64],
        store: DataStore,
        now_ms: i64,
    ) -> Result<(), MetadataError> {
        let mut rows = indexes
            .iter()
            .map(|&i| to_sql(build_id, "chunk index", i))
            .collect::<Result<Vec<_>, _>>()?;
        // One order for every caller: two transactions inserting rows of one build cannot each
        // wait for a row the other inserted.
        rows.sort_unstable();
        rows.dedup();
        if rows.is_empty() {
            return Ok(());
        }
        on_db!(&self.db, |pool, q| {
            let mut tx = pool.begin_with(q.begin).await?;
            for &index in &rows {
                sqlx::query(q.ensure_chunk)
                    .bind(build_id)
                    .bind(index)
                    .bind(store.as_str())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(or_no_build(build_id))?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn chunks(&self, build_id: i64) -> Result<Vec<ChunkRow>, MetadataError> {
        let rows: Vec<ChunkTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.chunks)
                .bind(build_id)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(to_chunk).collect()
    }

    async fn chunk_data(
        &self,
        build_id: i64,
        chunk_index: u64,
    ) -> Result<Option<Vec<u8>>, MetadataError> {
        let index = to_sql(build_id, "chunk index", chunk_index)?;
        let data: Option<Vec<u8>> = on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.chunk_data)
                .bind(build_id)
                .bind(index)
                .fetch_optional(pool)
                .await?
        });
        Ok(data)
    }

    async fn flip_chunk(&self, flip: &ChunkFlip, now_ms: i64) -> Result<bool, MetadataError> {
        let build = flip.build_id;
        let index = to_sql(build, "chunk index", flip.chunk_index)?;
        let size = to_sql(build, "chunk size", flip.size)?;
        // Only a `database` row holds bytes (a CHECK constraint says so too).
        let raw = match flip.to {
            DataStore::Database => flip.raw_data.as_deref(),
            DataStore::Redis | DataStore::Object => None,
        };
        let flipped = on_db!(&self.db, |pool, q| {
            sqlx::query(q.flip_chunk)
                .bind(build)
                .bind(index)
                .bind(flip.expected_lock_version)
                .bind(flip.to.as_str())
                .bind(size)
                .bind(i64::from(flip.crc32))
                .bind(raw)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(flipped == 1)
    }

    async fn delete_chunks(&self, build_id: i64) -> Result<u64, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query(q.delete_chunks)
                .bind(build_id)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}

pub(super) fn to_chunk(row: ChunkTuple) -> Result<ChunkRow, MetadataError> {
    let (build_id, chunk_index, data_store, size, crc32, lock_version) = row;
    Ok(ChunkRow {
        build_id,
        chunk_index: to_u64(build_id, "chunk index", chunk_index)?,
        data_store: data_store
            .parse()
            .map_err(|e: String| corrupt(build_id, e))?,
        size: to_u64(build_id, "chunk size", size)?,
        crc32: crc32
            .map(|c| to_u32(build_id, "chunk crc32", c))
            .transpose()?,
        lock_version,
    })
}
