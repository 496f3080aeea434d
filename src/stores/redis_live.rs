//! Live chunks in Redis: one Lua script per append checks the offset against the trace length
//! and writes every piece (see `lua/append_trace.lua` for the contract). Per PATCH: one round
//! trip, whatever the number of chunks it touches.
//!
//! Keys of build B, under `<prefix>:trace:{B}:` (one hash tag): `len`, `chunk:<i>`, `closed`, `at`
//! (each with [`LIVE_TTL`] from the last write), `watched` (the tail's short TTL). Nothing left
//! behind: a flush deletes its chunk; `delete_build` (after archiving) deletes `len`, `at`, every
//! chunk and `watched` and leaves only `closed`, with its TTL cut to [`CLOSED_AFTER_DELETE`]
//! (longer than the append path's one-minute cache of "running"), in one atomic step.
//!
//! A build's last activity (for the stuck-build sweep) is the `at` key: the append script sets
//! it to the application's clock in the same call (no extra round trip), at most once per
//! [`ACTIVITY_RESOLUTION`]; `touch` sets it for a keep-alive PUT; it has the live TTL like every
//! other key of the build, and goes with `delete_build`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};

use crate::jobs::clock::{Clock, SystemClock};
use crate::traces::chunk::CHUNK_SIZE;
use crate::traces::live::{
    ACTIVITY_RESOLUTION, AppendOutcome, CLOSED_AFTER_DELETE, LiveChunkStore, LiveStoreError,
};
use crate::traces::model::DataStore;

/// GitLab's `CHUNK_REDIS_TTL`: a live trace untouched for a week is abandoned. Archiving
/// retries are scheduled to finish well inside it.
pub const LIVE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct RedisLiveChunks {
    conn: ConnectionManager,
    prefix: String,
    append: Script,
    /// Stamps the last activity (`at`).
    clock: Arc<dyn Clock>,
}

impl RedisLiveChunks {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            append: Script::new(include_str!("lua/append_trace.lua")),
            clock: Arc::new(SystemClock),
        }
    }

    /// The clock stamping the last activity.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// All of a build's keys share the `{<build>}` hash tag.
    fn base(&self, build: i64) -> String {
        format!("{}:trace:{{{build}}}:", self.prefix)
    }

    fn activity_key(&self, build: i64) -> String {
        format!("{}at", self.base(build))
    }

    fn chunk_key(&self, build: i64, index: u64) -> String {
        format!("{}chunk:{index}", self.base(build))
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn ints(v: &Value) -> Vec<u64> {
    match v {
        Value::Array(items) => items.iter().filter_map(int).map(|i| i as u64).collect(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl LiveChunkStore for RedisLiveChunks {
    fn data_store(&self) -> DataStore {
        DataStore::Redis
    }

    async fn append(
        &self,
        build: i64,
        offset: u64,
        data: &[u8],
    ) -> Result<AppendOutcome, LiveStoreError> {
        let reply: Vec<Value> = self
            .append
            .key(self.base(build))
            .arg(offset)
            .arg(CHUNK_SIZE)
            .arg(LIVE_TTL.as_millis() as u64)
            .arg(data)
            .arg(self.clock.now_ms())
            .arg(ACTIVITY_RESOLUTION.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let bad = |detail: String| LiveStoreError::Inconsistent { build, detail };
        match reply.first().and_then(int) {
            Some(1) => Ok(AppendOutcome::Appended {
                length: reply.get(1).and_then(int).unwrap_or(0) as u64,
                started: reply.get(2).map(ints).unwrap_or_default(),
                filled: reply.get(3).map(ints).unwrap_or_default(),
                watched: reply.get(4).and_then(int) == Some(1),
            }),
            Some(2) => Ok(AppendOutcome::Closed),
            Some(0) => Ok(AppendOutcome::Mismatch {
                length: reply.get(1).and_then(int).unwrap_or(0) as u64,
                unflushed: reply.get(2).map(ints).unwrap_or_default(),
            }),
            Some(-1) => Err(bad(format!(
                "chunk {} holds {} bytes, not what the trace length implies",
                reply.get(1).and_then(int).unwrap_or(-1),
                reply.get(2).and_then(int).unwrap_or(-1)
            ))),
            _ => Err(bad(format!("unexpected reply {reply:?}"))),
        }
    }

    async fn close(&self, build: i64) -> Result<(), LiveStoreError> {
        let key = format!("{}closed", self.base(build));
        let _: () = self
            .conn
            .clone()
            .pset_ex(key, 1, LIVE_TTL.as_millis() as u64)
            .await?;
        Ok(())
    }

    async fn length(&self, build: i64) -> Result<u64, LiveStoreError> {
        let len: Option<u64> = self
            .conn
            .clone()
            .get(format!("{}len", self.base(build)))
            .await?;
        Ok(len.unwrap_or(0))
    }

    async fn read_chunk(
        &self,
        build: i64,
        chunk_index: u64,
    ) -> Result<Option<Vec<u8>>, LiveStoreError> {
        Ok(self
            .conn
            .clone()
            .get(self.chunk_key(build, chunk_index))
            .await?)
    }

    async fn delete_chunk(&self, build: i64, chunk_index: u64) -> Result<(), LiveStoreError> {
        let _: () = self
            .conn
            .clone()
            .del(self.chunk_key(build, chunk_index))
            .await?;
        Ok(())
    }

    async fn touch(&self, build: i64) -> Result<(), LiveStoreError> {
        let _: () = self
            .conn
            .clone()
            .pset_ex(
                self.activity_key(build),
                self.clock.now_ms(),
                LIVE_TTL.as_millis() as u64,
            )
            .await?;
        Ok(())
    }

    async fn last_activity(&self, builds: &[i64]) -> Result<Vec<Option<i64>>, LiveStoreError> {
        if builds.is_empty() {
            return Ok(Vec::new());
        }
        // One round trip; GETs rather than one MGET, whose keys would span hash slots.
        let mut pipe = redis::pipe();
        for &build in builds {
            pipe.get(self.activity_key(build));
        }
        Ok(pipe.query_async(&mut self.conn.clone()).await?)
    }

    async fn watch(&self, build: i64, ttl: Duration) -> Result<(), LiveStoreError> {
        let key = format!("{}watched", self.base(build));
        let _: () = self
            .conn
            .clone()
            .pset_ex(key, 1, ttl.as_millis() as u64)
            .await?;
        Ok(())
    }

    async fn delete_build(&self, build: i64) -> Result<(), LiveStoreError> {
        let mut conn = self.conn.clone();
        let len = self.length(build).await?;
        let base = self.base(build);
        let mut keys = vec![
            format!("{base}len"),
            format!("{base}watched"),
            self.activity_key(build),
        ];
        keys.extend((0..len.div_ceil(CHUNK_SIZE)).map(|i| self.chunk_key(build, i)));
        let closed = format!("{base}closed");
        let ttl_ms = CLOSED_AFTER_DELETE.as_millis() as u64;
        // Closed before anything goes (one MULTI): an append never lands between the two.
        let mut batches = keys.chunks(500);
        let first = batches.next().unwrap_or_default();
        let _: () = redis::pipe()
            .atomic()
            .pset_ex(&closed, 1, ttl_ms)
            .ignore()
            .del(first)
            .ignore()
            .query_async(&mut conn)
            .await?;
        for batch in batches {
            let _: () = conn.del(batch).await?;
        }
        Ok(())
    }
}
