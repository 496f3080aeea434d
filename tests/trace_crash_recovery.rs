//! A crash at every step of the chunk flush and of the archive, and reads racing both, on both
//! stacks (embedded: SQLite + a local folder; production: PostgreSQL + Redis + S3).
//!
//! Each intermediate state is reached with the real stores: by doing a step's real write and
//! stopping there (the object written, the row flipped, the artifact recorded), or by running
//! the real service over a `FaultyObjectStore` that fails or hangs at a chosen call (a hung
//! call whose future is dropped is a worker killed mid-step). At every state the log must read
//! back byte-identical, through the API and through `TraceService::read`; then the step is run
//! again (and twice at once) and must leave exactly one correct copy.
//!
//! Reader and archiver interleavings that object store faults cannot reach (between two
//! metadata/live-store calls) are held open by `PausingLive`, a real live store whose
//! `length` waits for a signal.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use buildlogs::jobs::broker::{
    Ack, BrokerError, DeadJob, DeadSetBounds, Delivery, EnqueueOutcome, Lease, NewJob, QueueStats,
    ReapReport, ScheduledJob,
};
use buildlogs::jobs::{Broker, Clock, JobClient, SystemClock};
use buildlogs::stores::fault_injection::{Fault, FaultyObjectStore, Op, is_injected};
use buildlogs::traces::archive::{ArchiveError, ArchiveOutcome, ArchiveService, archive_path};
use buildlogs::traces::archived_lines;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::flush::{FlushError, FlushOutcome, FlushService, chunk_path};
use buildlogs::traces::line_index::LineIndex;
use buildlogs::traces::live::{AppendOutcome, CLOSED_AFTER_DELETE, LiveChunkStore, LiveStoreError};
use buildlogs::traces::metadata::ChunkFlip;
use buildlogs::traces::model::{Artifact, BuildStatus, DataStore, NewArtifact};
use buildlogs::traces::objects::{ObjectStorage, PART_SIZE, is_not_found};
use buildlogs::traces::service::{TraceError, TraceService};
use buildlogs::traces::stores::TraceStores;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use sha2::{Digest, Sha256};
use support::app::TestApp;
use tokio::sync::watch;

const CHUNK: usize = CHUNK_SIZE as usize;

on_both_stacks!(
    a_flush_recovers_from_a_crash_at_every_step,
    concurrent_flushes_leave_one_correct_copy,
    an_archive_recovers_from_a_failure_or_crash_mid_upload,
    an_archive_recovers_from_a_crash_after_the_object_or_the_transaction,
    concurrent_archives_record_one_artifact,
    a_second_archive_that_starts_before_the_first_finishes_never_overwrites_it,
    a_reader_paused_while_the_archive_completes_still_gets_the_whole_log,
    an_archive_racing_a_flush_finds_the_chunk_where_the_flush_moved_it,
    a_flush_that_loses_to_the_archive_leaves_no_chunk_behind,
    a_flush_that_read_the_live_chunk_before_the_archive_completed_leaves_no_row,
    reads_are_whole_and_identical_while_flushes_and_archives_run,
    an_archived_log_leaves_nothing_in_redis_but_a_short_lived_closed_flag,
    a_full_chunk_whose_flush_enqueue_failed_is_enqueued_when_the_runner_resends,
);

// ---------------------------------------------------------------------------------------------
// Fixtures and checks
// ---------------------------------------------------------------------------------------------

/// A log of `len` bytes: every byte value, invalid UTF-8 (`\xc3\x28`, lone `\xff`), newlines.
fn log_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut log: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(31) as u8).wrapping_add(seed))
        .collect();
    for (i, b) in [0xc3, 0x28, 0xff, b'\n', 0xfe, 0x80]
        .into_iter()
        .enumerate()
    {
        if i < len {
            log[i] = b;
        }
    }
    log
}

/// Registers a job and PATCHes `log` in pieces that straddle chunk boundaries.
async fn write_log(app: &TestApp, log: &[u8]) -> (i64, String) {
    let (id, token) = app.create_job().await;
    let mut at = 0u64;
    for piece in log.chunks(CHUNK + CHUNK / 3) {
        let reply = app.patch(id, &token, at, piece).await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "{}: PATCH at {at}",
            app.kind
        );
        at += piece.len() as u64;
    }
    (id, token)
}

/// The runner's final PUT (`success`, with the log's CRC32): 202 while chunks are live, 200
/// once committed (archive enqueued).
async fn put_final(app: &TestApp, id: i64, token: &str, log: &[u8]) -> StatusCode {
    let body = serde_json::json!({
        "token": token,
        "state": "success",
        "output": {"checksum": format!("crc32:{:08x}", crc32fast::hash(log)), "bytesize": log.len()},
    });
    let put = Request::put(format!("/api/v4/jobs/{id}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    app.send(put).await.status
}

/// The runner's final PUT (202 while chunks are live), every chunk flushed, the PUT again
/// (200: committed, archive enqueued).
async fn finish_and_flush(app: &TestApp, id: i64, token: &str, log: &[u8]) {
    assert_eq!(put_final(app, id, token, log).await, StatusCode::ACCEPTED);
    for index in 0..chunk_count(log) {
        let outcome = app.flush.flush(id, index).await.unwrap();
        assert!(
            matches!(outcome, FlushOutcome::Flushed { .. }),
            "{outcome:?}"
        );
    }
    let done = put_final(app, id, token, log).await;
    assert_eq!(done, StatusCode::OK, "{}", app.kind);
}

/// What is left in Redis of build `id`'s live log that should not be: any key but `closed`
/// with a TTL of at most [`CLOSED_AFTER_DELETE`].
async fn live_leftovers(app: &TestApp, id: i64) -> Vec<String> {
    let base = format!(":trace:{{{id}}}:");
    app.redis_keys()
        .await
        .into_iter()
        .filter(|k| k.contains(&base) && !short_lived_closed_flag(k))
        .collect()
}

fn short_lived_closed_flag(key: &str) -> bool {
    let bound = CLOSED_AFTER_DELETE.as_millis() as i64;
    key.contains(":trace:{")
        && key
            .split_once("}:closed ttl ")
            .and_then(|(_, ms)| ms.parse::<i64>().ok())
            .is_some_and(|ms| ms > 0 && ms <= bound)
}

fn chunk_count(log: &[u8]) -> u64 {
    (log.len() as u64).div_ceil(CHUNK_SIZE)
}

fn chunk_of(log: &[u8], index: u64) -> &[u8] {
    let from = index as usize * CHUNK;
    &log[from..(from + CHUNK).min(log.len())]
}

/// `Ok` if equal, else where they first differ (no megabytes of bytes in the message).
fn same(got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b);
    Err(format!(
        "got {} bytes, want {}; first difference at {:?}",
        got.len(),
        want.len(),
        at
    ))
}

macro_rules! assert_same {
    ($got:expr, $want:expr, $($what:tt)+) => {
        if let Err(e) = same(&$got, &$want) {
            panic!("{}: {e}", format!($($what)+));
        }
    };
}

/// A byte range of the log that spans chunk boundaries (inclusive end, as HTTP has it).
fn span(log: &[u8]) -> (usize, usize) {
    (CHUNK / 2 + 7, log.len() - CHUNK / 3)
}

/// The log read every way a reader can: the whole of it and a range, through the API and
/// through `TraceService::read`. `Err` says which read was wrong and how.
async fn check_reads(app: &TestApp, id: i64, token: &str, log: &[u8]) -> Result<(), String> {
    check_reads_with(&app.router, &app.parts.traces, id, token, log).await
}

async fn check_reads_with(
    router: &axum::Router,
    traces: &TraceService,
    id: i64,
    token: &str,
    log: &[u8],
) -> Result<(), String> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let (lo, hi) = span(log);
    let get = |range: Option<String>| {
        let mut request =
            Request::get(format!("/api/v4/jobs/{id}/trace")).header("job-token", token);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.body(Body::empty()).unwrap()
    };
    for (range, status, want) in [
        (None, StatusCode::OK, log),
        (
            Some(format!("bytes={lo}-{hi}")),
            StatusCode::PARTIAL_CONTENT,
            &log[lo..=hi],
        ),
    ] {
        let what = format!("GET trace range {range:?}");
        let response = router
            .clone()
            .oneshot(get(range))
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let got_status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{what}: body: {e}"))?
            .to_bytes();
        if got_status != status {
            return Err(format!(
                "{what}: status {got_status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        same(&body, want).map_err(|e| format!("{what}: {e}"))?;
    }
    let whole = traces
        .read(id, 0, u64::MAX)
        .await
        .map_err(|e| format!("TraceService::read whole: {e}"))?;
    same(&whole, log).map_err(|e| format!("TraceService::read whole: {e}"))?;
    let part = traces
        .read(id, lo as u64, hi as u64 + 1)
        .await
        .map_err(|e| format!("TraceService::read {lo}..={hi}: {e}"))?;
    same(&part, &log[lo..=hi]).map_err(|e| format!("TraceService::read {lo}..={hi}: {e}"))?;
    let length = traces
        .length(id)
        .await
        .map_err(|e| format!("TraceService::length: {e}"))?;
    if length != log.len() as u64 {
        return Err(format!(
            "TraceService::length: {length}, want {}",
            log.len()
        ));
    }
    Ok(())
}

async fn assert_reads(app: &TestApp, id: i64, token: &str, log: &[u8], state: &str) {
    if let Err(e) = check_reads(app, id, token, log).await {
        panic!("{} stack, {state}: {e}", app.kind);
    }
}

/// Object keys under `prefix`.
async fn keys(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    keys
}

async fn object(store: &dyn ObjectStorage, path: &Path) -> Option<Vec<u8>> {
    match store.get(path).await {
        Ok(bytes) => Some(bytes.to_vec()),
        Err(e) if is_not_found(&e) => None,
        Err(e) => panic!("get {path}: {e}"),
    }
}

/// Where chunk `index` is, per its row, and whether a live copy exists.
async fn chunk_state(app: &TestApp, id: i64, index: u64) -> (Option<DataStore>, bool) {
    let row = app
        .parts
        .meta
        .chunks(id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.chunk_index == index);
    let live = app
        .parts
        .live
        .read_chunk(id, index)
        .await
        .unwrap()
        .is_some();
    (row.map(|r| r.data_store), live)
}

/// Chunk `index` is flushed, once and right: its row says object with the chunk's size and
/// CRC32, the object holds its bytes, no live copy is left.
async fn assert_flushed(app: &TestApp, id: i64, index: u64, want: &[u8]) {
    let row = app
        .parts
        .meta
        .chunks(id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.chunk_index == index)
        .expect("chunk row");
    assert_eq!(
        row.data_store,
        DataStore::Object,
        "{}: chunk {index}",
        app.kind
    );
    assert_eq!(
        row.size,
        want.len() as u64,
        "{}: chunk {index} size",
        app.kind
    );
    assert_eq!(
        row.crc32,
        Some(crc32fast::hash(want)),
        "{}: chunk {index} crc32",
        app.kind
    );
    let stored = object(app.parts.store.as_ref(), &chunk_path(id, index))
        .await
        .expect("the chunk's object");
    assert_same!(stored, want, "{}: chunk {index} object", app.kind);
    assert!(
        app.parts
            .live
            .read_chunk(id, index)
            .await
            .unwrap()
            .is_none(),
        "{}: chunk {index} still has a live copy",
        app.kind
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The build is archived, once and right, and nothing of its chunks is left anywhere.
async fn assert_archived(app: &TestApp, id: i64, token: &str, log: &[u8]) -> Artifact {
    let parts = &app.parts;
    let artifact = parts
        .meta
        .trace_artifact(id)
        .await
        .unwrap()
        .expect("an artifact");
    assert_eq!(
        app.scalar_i64(
            "SELECT count(*) FROM job_artifacts GROUP BY build_id ORDER BY count(*) DESC LIMIT 1"
        )
        .await,
        Some(1),
        "{}: one artifact per build",
        app.kind
    );
    let build = parts.meta.build(id).await.unwrap().expect("build");
    let path = archive_path(id, build.finished_at_ms.expect("finished"));
    assert_eq!(artifact.object_path, path.to_string());
    assert_eq!(artifact.size, log.len() as u64, "{}: size", app.kind);
    assert_eq!(artifact.crc32, crc32fast::hash(log), "{}: crc32", app.kind);
    assert_eq!(artifact.sha256, sha256_hex(log), "{}: sha256", app.kind);
    let stored = object(parts.store.as_ref(), &path)
        .await
        .expect("the archive object");
    assert_same!(stored, log, "{}: archive object", app.kind);
    let meta = parts
        .meta
        .trace_metadata(id)
        .await
        .unwrap()
        .expect("metadata");
    assert_eq!(meta.trace_artifact_id, Some(artifact.id));
    assert!(meta.archived_at_ms.is_some());
    assert!(
        parts.meta.chunks(id).await.unwrap().is_empty(),
        "{}: chunk rows left",
        app.kind
    );
    for index in 0..chunk_count(log) {
        assert!(
            parts.live.read_chunk(id, index).await.unwrap().is_none(),
            "{}: live chunk {index} left",
            app.kind
        );
    }
    assert_eq!(
        keys(parts.raw.as_ref(), &format!("chunks/{id}")).await,
        Vec::<String>::new(),
        "{}: flushed chunk objects left",
        app.kind
    );
    assert_eq!(
        parts.live.length(id).await.unwrap(),
        0,
        "{}: live length",
        app.kind
    );
    assert_eq!(
        live_leftovers(app, id).await,
        Vec::<String>::new(),
        "{}: live keys left",
        app.kind
    );
    let folder = path.to_string();
    let folder = folder.rsplit_once('/').map_or("", |(dir, _)| dir);
    assert_eq!(
        keys(parts.raw.as_ref(), folder).await,
        vec![
            path.to_string(),
            archived_lines::path_for(&path).to_string()
        ],
        "{}: exactly one archive object and its line index",
        app.kind
    );
    assert_reads(app, id, token, log, "archived").await;
    artifact
}

fn artifact_of(outcome: &ArchiveOutcome) -> &Artifact {
    match outcome {
        ArchiveOutcome::Archived(a) | ArchiveOutcome::AlreadyArchived(a) => a,
        ArchiveOutcome::Expired => panic!("no artifact: the archive expired"),
    }
}

// ---------------------------------------------------------------------------------------------
// Flush: object written → lock_version flip → live copy deleted
// ---------------------------------------------------------------------------------------------

async fn a_flush_recovers_from_a_crash_at_every_step(app: &TestApp) {
    let log = log_bytes(3 * CHUNK + 5_000, 1);
    let (id, token) = write_log(app, &log).await;
    let parts = &app.parts;
    let live_kind = parts.live.data_store();
    assert_reads(app, id, &token, &log, "live").await;

    // Step 1 fails: the object store refuses the write.
    let (faulty, switch) = FaultyObjectStore::wrap(parts.store.clone());
    let flush = Arc::new(parts.services_over(faulty).0);
    let index = 1;
    let chunk = chunk_of(&log, index);
    switch.fail_only(&[Op::Put]);
    match flush.flush(id, index).await {
        Err(FlushError::Objects(e)) if is_injected(&e) => {}
        other => panic!("{}: expected the injected failure, got {other:?}", app.kind),
    }
    assert_eq!(chunk_state(app, id, index).await, (Some(live_kind), true));
    assert_eq!(
        object(parts.store.as_ref(), &chunk_path(id, index)).await,
        None
    );
    assert_reads(app, id, &token, &log, "after a failed object write").await;

    // Step 1 never returns: the worker dies while the write hangs.
    switch.hang();
    let hung = {
        let flush = flush.clone();
        tokio::spawn(async move { flush.flush(id, index).await })
    };
    switch.wait_hanging(1).await;
    hung.abort();
    assert!(hung.await.unwrap_err().is_cancelled());
    switch.heal();
    assert_eq!(chunk_state(app, id, index).await, (Some(live_kind), true));
    assert_eq!(
        object(parts.store.as_ref(), &chunk_path(id, index)).await,
        None
    );
    assert_reads(
        app,
        id,
        &token,
        &log,
        "after a crash during the object write",
    )
    .await;

    // A crash after step 1: the object is written, the row still says live, the live copy is
    // there.
    parts
        .store
        .put(&chunk_path(id, index), chunk.to_vec().into())
        .await
        .unwrap();
    assert_eq!(chunk_state(app, id, index).await, (Some(live_kind), true));
    assert_reads(app, id, &token, &log, "object written, row not flipped").await;
    let rerun = app.flush.flush(id, index).await.unwrap();
    assert_eq!(
        rerun,
        FlushOutcome::Flushed {
            size: CHUNK_SIZE,
            crc32: crc32fast::hash(chunk)
        }
    );
    assert_flushed(app, id, index, chunk).await;
    assert_reads(app, id, &token, &log, "chunk 1 flushed").await;

    // A crash after step 2: the row says object, the live copy is still there (Redis: the
    // flip and the delete are separate writes; the database store clears its copy in the flip).
    let index = 0;
    let chunk = chunk_of(&log, index);
    // The flush's first write: the chunk's row (a live Redis chunk has none before).
    parts
        .meta
        .ensure_chunks(id, &[index], live_kind, SystemClock.now_ms())
        .await
        .unwrap();
    let row = parts
        .meta
        .chunks(id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.chunk_index == index)
        .expect("row of chunk 0");
    parts
        .store
        .put(&chunk_path(id, index), chunk.to_vec().into())
        .await
        .unwrap();
    let flipped = parts
        .meta
        .flip_chunk(
            &ChunkFlip {
                build_id: id,
                chunk_index: index,
                expected_lock_version: row.lock_version,
                to: DataStore::Object,
                size: chunk.len() as u64,
                crc32: crc32fast::hash(chunk),
                raw_data: None,
            },
            SystemClock.now_ms(),
        )
        .await
        .unwrap();
    assert!(flipped);
    assert_eq!(
        chunk_state(app, id, index).await,
        (Some(DataStore::Object), live_kind == DataStore::Redis)
    );
    assert_reads(app, id, &token, &log, "row flipped, live copy not deleted").await;
    assert_eq!(
        app.flush.flush(id, index).await.unwrap(),
        FlushOutcome::AlreadyFlushed
    );
    assert_flushed(app, id, index, chunk).await;
    assert_flushed(app, id, 1, chunk_of(&log, 1)).await;

    // One object per flushed chunk, nothing else; the other chunks stay live.
    assert_eq!(
        keys(parts.raw.as_ref(), &format!("chunks/{id}")).await,
        vec![chunk_path(id, 0).to_string(), chunk_path(id, 1).to_string()]
    );
    // A chunk no flush touched: live, with a row only in the database store (Redis chunks
    // get theirs from their first flush).
    let untouched = (live_kind == DataStore::Database).then_some(live_kind);
    assert_eq!(chunk_state(app, id, 2).await, (untouched, true));
    assert_reads(app, id, &token, &log, "two chunks flushed").await;
}

async fn concurrent_flushes_leave_one_correct_copy(app: &TestApp) {
    let log = log_bytes(4 * CHUNK + 77, 2);
    let (id, token) = write_log(app, &log).await;
    let parts = &app.parts;
    // Chunk 2 from a crash after its object was written; chunks 0 and 3 from scratch.
    parts
        .store
        .put(&chunk_path(id, 2), chunk_of(&log, 2).to_vec().into())
        .await
        .unwrap();
    for index in [0u64, 2, 3] {
        let chunk = chunk_of(&log, index);
        let want = FlushOutcome::Flushed {
            size: chunk.len() as u64,
            crc32: crc32fast::hash(chunk),
        };
        let (a, b) = tokio::join!(app.flush.flush(id, index), app.flush.flush(id, index));
        let outcomes = [a, b];
        let won = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(o) if *o == want))
            .count();
        assert_eq!(won, 1, "{}: chunk {index}: {outcomes:?}", app.kind);
        for outcome in &outcomes {
            // The loser found it done (before or after losing the flip) or its live copy
            // gone: never an error for the job to retry.
            assert!(
                matches!(
                    outcome,
                    Ok(FlushOutcome::Flushed { .. }
                        | FlushOutcome::AlreadyFlushed
                        | FlushOutcome::Missing)
                ),
                "{}: chunk {index}: {outcome:?}",
                app.kind
            );
        }
        assert_eq!(
            app.flush.flush(id, index).await.unwrap(),
            FlushOutcome::AlreadyFlushed
        );
        assert_flushed(app, id, index, chunk).await;
        assert_reads(
            app,
            id,
            &token,
            &log,
            &format!("chunk {index} flushed twice at once"),
        )
        .await;
    }
    assert_eq!(
        keys(parts.raw.as_ref(), &format!("chunks/{id}")).await,
        [0, 2, 3].map(|i| chunk_path(id, i).to_string()).to_vec()
    );
}

// ---------------------------------------------------------------------------------------------
// Archive: multipart upload → metadata + artifact transaction → chunk deletion
// ---------------------------------------------------------------------------------------------

/// A log of three multipart parts (5 MiB each but the last), so an upload can stop mid-way.
fn big_log() -> Vec<u8> {
    log_bytes(2 * PART_SIZE + 3 * CHUNK + 4_321, 3)
}

async fn assert_not_archived(app: &TestApp, id: i64, token: &str, log: &[u8], state: &str) {
    let parts = &app.parts;
    assert!(
        parts.meta.trace_artifact(id).await.unwrap().is_none(),
        "{}: {state}: artifact recorded",
        app.kind
    );
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM job_artifacts").await,
        Some(0)
    );
    let rows = parts.meta.chunks(id).await.unwrap();
    assert_eq!(rows.len() as u64, chunk_count(log), "{}: {state}", app.kind);
    assert!(rows.iter().all(|r| r.data_store == DataStore::Object));
    assert_reads(app, id, token, log, state).await;
}

async fn an_archive_recovers_from_a_failure_or_crash_mid_upload(app: &TestApp) {
    let log = big_log();
    let (id, token) = write_log(app, &log).await;
    finish_and_flush(app, id, &token, &log).await;
    let parts = &app.parts;
    let build = parts.meta.build(id).await.unwrap().unwrap();
    let path = archive_path(id, build.finished_at_ms.unwrap());
    assert_not_archived(app, id, &token, &log, "finished, all chunks flushed").await;

    // The second part's upload fails: the archive raises, aborts the upload, records nothing.
    let (faulty, switch) = FaultyObjectStore::wrap(parts.store.clone());
    let archive = Arc::new(parts.services_over(faulty).1);
    switch.fail_after(1, &[Op::PutPart]);
    match archive.archive(id).await {
        Err(ArchiveError::Objects(e)) if is_injected(&e) => {}
        other => panic!("{}: expected the injected failure, got {other:?}", app.kind),
    }
    assert!(
        switch.calls(Op::PutPart) >= 2,
        "stopped after a part was stored"
    );
    assert_eq!(switch.calls(Op::CompleteMultipart), 0);
    assert_eq!(object(parts.store.as_ref(), &path).await, None);
    assert_eq!(
        app.objects.pending_uploads(),
        Vec::<String>::new(),
        "{}: the failed upload is aborted",
        app.kind
    );
    assert_not_archived(app, id, &token, &log, "after a failed part").await;
    assert_eq!(
        parts
            .meta
            .trace_metadata(id)
            .await
            .unwrap()
            .unwrap()
            .archival_attempts,
        1,
        "the attempt is recorded"
    );

    // The worker dies while the second part hangs: no abort, no completion.
    switch.set(Fault::hang().only(&[Op::PutPart]).after(1));
    let hung = {
        let archive = archive.clone();
        tokio::spawn(async move { archive.archive(id).await })
    };
    switch.wait_hanging(1).await;
    hung.abort();
    assert!(hung.await.unwrap_err().is_cancelled());
    switch.heal();
    assert_eq!(object(parts.store.as_ref(), &path).await, None);
    assert_not_archived(app, id, &token, &log, "after a crash mid-upload").await;
    // A dropped archive (its job timed out, its task was cancelled) aborts its upload too.
    support::wait::wait_for(
        "the dropped upload aborted",
        std::time::Duration::from_secs(10),
        || async { app.objects.pending_uploads().is_empty() },
    )
    .await;

    // Every part is stored, the completion fails: nothing at the key, no upload left.
    switch.fail_only(&[Op::CompleteMultipart]);
    match archive.archive(id).await {
        Err(ArchiveError::Objects(e)) if is_injected(&e) => {}
        other => panic!("{}: expected the injected failure, got {other:?}", app.kind),
    }
    switch.heal();
    assert_eq!(object(parts.store.as_ref(), &path).await, None);
    assert_eq!(
        app.objects.pending_uploads(),
        Vec::<String>::new(),
        "{}: the upload whose completion failed is aborted",
        app.kind
    );
    assert_not_archived(app, id, &token, &log, "after a failed completion").await;

    // The retry completes it.
    let outcome = app.archive.archive(id).await.unwrap();
    assert!(
        matches!(outcome, ArchiveOutcome::Archived(_)),
        "{outcome:?}"
    );
    let artifact = assert_archived(app, id, &token, &log).await;
    assert_eq!(artifact_of(&outcome), &artifact);
    assert_eq!(
        parts
            .meta
            .trace_metadata(id)
            .await
            .unwrap()
            .unwrap()
            .archival_attempts,
        4
    );
    assert_eq!(app.objects.pending_uploads(), Vec::<String>::new());
}

async fn an_archive_recovers_from_a_crash_after_the_object_or_the_transaction(app: &TestApp) {
    let parts = &app.parts;

    // A crash after the upload: the object is complete, no artifact, every chunk still there.
    let log = log_bytes(3 * CHUNK + 999, 4);
    let (id, token) = write_log(app, &log).await;
    finish_and_flush(app, id, &token, &log).await;
    let finished = parts
        .meta
        .build(id)
        .await
        .unwrap()
        .unwrap()
        .finished_at_ms
        .unwrap();
    let path = archive_path(id, finished);
    parts.store.put(&path, log.clone().into()).await.unwrap();
    assert_not_archived(app, id, &token, &log, "object written, no transaction").await;
    let outcome = app.archive.archive(id).await.unwrap();
    assert!(
        matches!(outcome, ArchiveOutcome::Archived(_)),
        "{outcome:?}"
    );
    assert_archived(app, id, &token, &log).await;

    // A crash after the transaction: the artifact is recorded, the chunks are all still there.
    let log = log_bytes(4 * CHUNK + 1, 5);
    let (id, token) = write_log(app, &log).await;
    finish_and_flush(app, id, &token, &log).await;
    let finished = parts
        .meta
        .build(id)
        .await
        .unwrap()
        .unwrap()
        .finished_at_ms
        .unwrap();
    let path = archive_path(id, finished);
    parts.store.put(&path, log.clone().into()).await.unwrap();
    // The archiver stores the line index before it records the archive.
    let mut lines = LineIndex::new();
    lines.feed(&log);
    lines.finish();
    let (size, crc32) = (log.len() as u64, crc32fast::hash(&log));
    archived_lines::store(parts.store.as_ref(), &path, size, crc32, lines)
        .await
        .unwrap();
    let recorded = parts
        .meta
        .record_archive(
            &NewArtifact {
                build_id: id,
                object_path: path.to_string(),
                size: log.len() as u64,
                crc32: crc32fast::hash(&log),
                sha256: sha256_hex(&log),
                expire_at_ms: None,
            },
            SystemClock.now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(parts.meta.chunks(id).await.unwrap().len(), 5);
    assert_reads(
        app,
        id,
        &token,
        &log,
        "artifact recorded, chunks not deleted",
    )
    .await;
    // … and a crash half-way through deleting them: some chunk objects gone, rows still there.
    for index in [0, 3] {
        parts.store.delete(&chunk_path(id, index)).await.unwrap();
    }
    assert_reads(app, id, &token, &log, "chunks half deleted").await;
    match app.archive.archive(id).await.unwrap() {
        ArchiveOutcome::AlreadyArchived(a) => assert_eq!(a, recorded),
        other => panic!("{}: archived twice: {other:?}", app.kind),
    }
    assert_archived(app, id, &token, &log).await;

    // A flush job delivered after the archive (a retry, a redelivery) changes nothing.
    for index in 0..chunk_count(&log) {
        let outcome = app.flush.flush(id, index).await.unwrap();
        assert_eq!(
            outcome,
            FlushOutcome::Missing,
            "{}: chunk {index}",
            app.kind
        );
    }
    assert_archived(app, id, &token, &log).await;
}

async fn concurrent_archives_record_one_artifact(app: &TestApp) {
    let log = log_bytes(5 * CHUNK + 3, 6);
    let (id, token) = write_log(app, &log).await;
    finish_and_flush(app, id, &token, &log).await;
    let (a, b) = tokio::join!(app.archive.archive(id), app.archive.archive(id));
    let done: Vec<&ArchiveOutcome> = [&a, &b]
        .into_iter()
        .filter_map(|r| r.as_ref().ok())
        .collect();
    // One that read a chunk the other had just deleted finds the other's archive: both succeed.
    assert_eq!(done.len(), 2, "{}: {a:?} {b:?}", app.kind);
    let artifact = assert_archived(app, id, &token, &log).await;
    for outcome in done {
        assert_eq!(artifact_of(outcome), &artifact);
    }
    assert!(matches!(
        app.archive.archive(id).await.unwrap(),
        ArchiveOutcome::AlreadyArchived(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Interleavings held open by a paused live store
// ---------------------------------------------------------------------------------------------

/// The real live store, except that while paused `length` waits for [`Self::release`] (or,
/// made with [`Self::after_read_chunk`], `read_chunk` waits once it has read): it holds a
/// reader, an archiver or a flush between two of its calls while another process runs.
struct PausingLive {
    inner: Arc<dyn LiveChunkStore>,
    pause: AtomicBool,
    /// Pause in `read_chunk` (after reading) instead of in `length` (before).
    on_read_chunk: bool,
    paused: watch::Sender<usize>,
    released: watch::Sender<bool>,
}

impl PausingLive {
    fn new(inner: Arc<dyn LiveChunkStore>) -> Arc<Self> {
        Self::pausing(inner, false)
    }

    fn after_read_chunk(inner: Arc<dyn LiveChunkStore>) -> Arc<Self> {
        Self::pausing(inner, true)
    }

    fn pausing(inner: Arc<dyn LiveChunkStore>, on_read_chunk: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            pause: AtomicBool::new(true),
            on_read_chunk,
            paused: watch::Sender::new(0),
            released: watch::Sender::new(false),
        })
    }

    async fn hold(&self) {
        if self.pause.load(Ordering::SeqCst) {
            let mut released = self.released.subscribe();
            self.paused.send_modify(|n| *n += 1);
            let _ = released.wait_for(|r| *r).await;
        }
    }

    async fn wait_paused(&self, n: usize) {
        let _ = self.paused.subscribe().wait_for(|p| *p >= n).await;
    }

    fn release(&self) {
        self.pause.store(false, Ordering::SeqCst);
        self.released.send_replace(true);
    }
}

#[async_trait]
impl LiveChunkStore for PausingLive {
    fn data_store(&self) -> DataStore {
        self.inner.data_store()
    }
    async fn append(&self, b: i64, o: u64, d: &[u8]) -> Result<AppendOutcome, LiveStoreError> {
        self.inner.append(b, o, d).await
    }
    async fn length(&self, build: i64) -> Result<u64, LiveStoreError> {
        if !self.on_read_chunk {
            self.hold().await;
        }
        self.inner.length(build).await
    }
    async fn close(&self, build: i64) -> Result<(), LiveStoreError> {
        self.inner.close(build).await
    }
    async fn read_chunk(&self, b: i64, i: u64) -> Result<Option<Vec<u8>>, LiveStoreError> {
        let read = self.inner.read_chunk(b, i).await;
        if self.on_read_chunk {
            self.hold().await;
        }
        read
    }
    async fn delete_chunk(&self, b: i64, i: u64) -> Result<(), LiveStoreError> {
        self.inner.delete_chunk(b, i).await
    }
    async fn delete_build(&self, build: i64) -> Result<(), LiveStoreError> {
        self.inner.delete_build(build).await
    }

    async fn watch(&self, build: i64, ttl: std::time::Duration) -> Result<(), LiveStoreError> {
        self.inner.watch(build, ttl).await
    }
    async fn touch(&self, build: i64) -> Result<(), LiveStoreError> {
        self.inner.touch(build).await
    }
    async fn last_activity(&self, builds: &[i64]) -> Result<Vec<Option<i64>>, LiveStoreError> {
        self.inner.last_activity(builds).await
    }
}

/// A second archive of the build reads the log's length only after the first one completed
/// (and deleted the chunks): it must not replace the archive with what it finds (nothing).
async fn a_second_archive_that_starts_before_the_first_finishes_never_overwrites_it(app: &TestApp) {
    let log = log_bytes(3 * CHUNK + 10, 7);
    let (id, token) = write_log(app, &log).await;
    finish_and_flush(app, id, &token, &log).await;
    let parts = &app.parts;
    let live = PausingLive::new(parts.live.clone());
    let late = ArchiveService::new(TraceStores {
        meta: parts.meta.clone(),
        live: live.clone(),
        objects: parts.store.clone(),
        clock: Arc::new(SystemClock),
    });
    let late = tokio::spawn(async move { late.archive(id).await });
    live.wait_paused(1).await;
    let first = app.archive.archive(id).await.unwrap();
    assert!(matches!(first, ArchiveOutcome::Archived(_)));
    live.release();
    let second = late.await.unwrap();
    assert!(
        matches!(&second, Ok(o) if artifact_of(o) == artifact_of(&first)),
        "{}: {second:?}",
        app.kind
    );
    assert_archived(app, id, &token, &log).await;
}

/// A reader that checked for an archive (none yet) and is held before reading the live
/// length while the archive completes: it must read the archive, not an empty log.
async fn a_reader_paused_while_the_archive_completes_still_gets_the_whole_log(app: &TestApp) {
    let log = log_bytes(3 * CHUNK + 10, 8);
    let (id, token) = write_log(app, &log).await;
    finish_and_flush(app, id, &token, &log).await;
    let parts = &app.parts;
    let live = PausingLive::new(parts.live.clone());
    let reader = Arc::new(TraceService::new(
        TraceStores {
            meta: parts.meta.clone(),
            live: live.clone(),
            objects: parts.store.clone(),
            clock: Arc::new(SystemClock),
        },
        JobClient::new(app.broker.clone(), Arc::new(SystemClock)),
    ));
    let read = {
        let reader = reader.clone();
        tokio::spawn(async move { reader.read(id, 0, u64::MAX).await })
    };
    let length = {
        let reader = reader.clone();
        tokio::spawn(async move { reader.length(id).await })
    };
    live.wait_paused(2).await;
    app.archive.archive(id).await.unwrap();
    live.release();
    let read = read.await.unwrap().unwrap();
    assert_same!(read, log, "{}: read held across the archive", app.kind);
    assert_eq!(
        length.await.unwrap().unwrap(),
        log.len() as u64,
        "{}",
        app.kind
    );
    assert_archived(app, id, &token, &log).await;
}

/// The archive read the chunk rows while a chunk was live; the chunk is flushed (and its live
/// copy deleted) before the archive reads it: the archive must find it in the object store.
async fn an_archive_racing_a_flush_finds_the_chunk_where_the_flush_moved_it(app: &TestApp) {
    let log = log_bytes(2 * CHUNK + 500, 9);
    let (id, token) = write_log(app, &log).await;
    let parts = &app.parts;
    // Chunk 0 flushed; 1 and 2 live; the build committed with live chunks (as after the final
    // PUT's accept timeout, or the size limit).
    app.flush.flush(id, 0).await.unwrap();
    parts.live.close(id).await.unwrap();
    parts
        .meta
        .finish_build(id, BuildStatus::Success, None, SystemClock.now_ms())
        .await
        .unwrap();
    // The archive holds at its first object read (chunk 0), after reading the rows.
    let (faulty, switch) = FaultyObjectStore::wrap(parts.store.clone());
    switch.set(Fault::hang().only(&[Op::Get]));
    let archive = parts.services_over(faulty).1;
    let archiving = tokio::spawn(async move { archive.archive(id).await });
    switch.wait_hanging(1).await;
    for index in [1, 2] {
        assert!(matches!(
            app.flush.flush(id, index).await.unwrap(),
            FlushOutcome::Flushed { .. }
        ));
    }
    switch.heal();
    let outcome = archiving.await.unwrap();
    assert!(
        matches!(outcome, Ok(ArchiveOutcome::Archived(_))),
        "{}: {outcome:?}",
        app.kind
    );
    assert_archived(app, id, &token, &log).await;
}

/// A flush that read a live chunk and then hung on its object write while the archive
/// completed: when it resumes it must not leave an object (or a row) no one will delete. Nor
/// may a flush that crashed after writing its object, before the archive ran.
async fn a_flush_that_loses_to_the_archive_leaves_no_chunk_behind(app: &TestApp) {
    let log = log_bytes(2 * CHUNK + 500, 10);
    let (id, token) = write_log(app, &log).await;
    let parts = &app.parts;
    // A flush of chunk 0 that crashed after its object write: its row was written first.
    parts
        .meta
        .ensure_chunks(id, &[0], parts.live.data_store(), SystemClock.now_ms())
        .await
        .unwrap();
    parts
        .store
        .put(&chunk_path(id, 0), chunk_of(&log, 0).to_vec().into())
        .await
        .unwrap();
    parts.live.close(id).await.unwrap();
    parts
        .meta
        .finish_build(id, BuildStatus::Success, None, SystemClock.now_ms())
        .await
        .unwrap();
    let (faulty, switch) = FaultyObjectStore::wrap(parts.store.clone());
    switch.set(Fault::hang().only(&[Op::Put]));
    let flush = parts.services_over(faulty).0;
    let flushing = tokio::spawn(async move { flush.flush(id, 1).await });
    switch.wait_hanging(1).await;
    assert!(matches!(
        app.archive.archive(id).await.unwrap(),
        ArchiveOutcome::Archived(_)
    ));
    switch.heal();
    let outcome = flushing.await.unwrap();
    assert!(
        matches!(outcome, Ok(FlushOutcome::Missing)),
        "{}: {outcome:?}",
        app.kind
    );
    assert_archived(app, id, &token, &log).await;
}

// ---------------------------------------------------------------------------------------------
// Reads racing the move
// ---------------------------------------------------------------------------------------------

/// A flush reads the live chunk (there), then is held while the archive completes (reads the
/// chunk itself, records the artifact, deletes rows, live bytes and objects); when it resumes
/// it must not leave a row behind: on the production stack a live Redis chunk has no row
/// until its flush creates one, which here would come after the archive deleted the rows.
async fn a_flush_that_read_the_live_chunk_before_the_archive_completed_leaves_no_row(
    app: &TestApp,
) {
    let log = log_bytes(2 * CHUNK + 500, 14);
    let (id, token) = write_log(app, &log).await;
    let parts = &app.parts;
    parts.live.close(id).await.unwrap();
    parts
        .meta
        .finish_build(id, BuildStatus::Success, None, SystemClock.now_ms())
        .await
        .unwrap();
    let live = PausingLive::after_read_chunk(parts.live.clone());
    let flush = FlushService::new(TraceStores {
        meta: parts.meta.clone(),
        live: live.clone(),
        objects: parts.store.clone(),
        clock: Arc::new(SystemClock),
    });
    let flushing = tokio::spawn(async move { flush.flush(id, 1).await });
    live.wait_paused(1).await;
    assert!(matches!(
        app.archive.archive(id).await.unwrap(),
        ArchiveOutcome::Archived(_)
    ));
    live.release();
    let outcome = flushing.await.unwrap();
    assert!(
        matches!(outcome, Ok(FlushOutcome::Missing)),
        "{}: {outcome:?}",
        app.kind
    );
    assert_archived(app, id, &token, &log).await;
}

/// Readers read the whole log and a range of it, again and again, while every chunk is flushed
/// (twice at once) and the build archived (twice at once), through a store slowed a little so
/// that each step's calls interleave with the readers'. Every read must be the whole log.
async fn reads_are_whole_and_identical_while_flushes_and_archives_run(app: &TestApp) {
    for round in 0..2u8 {
        let log = Arc::new(log_bytes(6 * CHUNK + 12_345, 20 + round));
        let (id, token) = write_log(app, &log).await;
        let parts = &app.parts;
        parts.live.close(id).await.unwrap();
        parts
            .meta
            .finish_build(id, BuildStatus::Failed, None, SystemClock.now_ms())
            .await
            .unwrap();
        let (faulty, switch) = FaultyObjectStore::wrap(parts.store.clone());
        switch.slow(std::time::Duration::from_millis(3));
        let (flush, archive) = parts.services_over(faulty);
        let (flush, archive) = (Arc::new(flush), Arc::new(archive));

        let done = AtomicBool::new(false);
        let reads = AtomicU64::new(0);
        let reader = || async {
            // At least one full round of reads after the work is done.
            loop {
                let last = done.load(Ordering::SeqCst);
                if let Err(e) = check_reads(app, id, &token, &log[..]).await {
                    panic!(
                        "{} stack, round {round}: a read during the move: {e}",
                        app.kind
                    );
                }
                reads.fetch_add(1, Ordering::Relaxed);
                if last {
                    return;
                }
            }
        };
        let work = async {
            let mut tasks = Vec::new();
            for index in 0..chunk_count(&log) {
                for _ in 0..2 {
                    let flush = flush.clone();
                    tasks.push(tokio::spawn(async move {
                        flush
                            .flush(id, index)
                            .await
                            .map(drop)
                            .map_err(|e| format!("flush of chunk {index}: {e}"))
                    }));
                }
            }
            for _ in 0..2 {
                let archive = archive.clone();
                tasks.push(tokio::spawn(async move {
                    match archive.archive(id).await {
                        // One that read a chunk the other had just deleted finds its archive.
                        Ok(_) => Ok(()),
                        Err(e) => Err(format!("archive: {e}")),
                    }
                }));
            }
            let mut failures = Vec::new();
            for task in tasks {
                if let Err(e) = task.await.unwrap() {
                    failures.push(e);
                }
            }
            // An archive that raised is retried, as the job system would.
            let retried = app.archive.archive(id).await;
            done.store(true, Ordering::SeqCst);
            (failures, retried)
        };
        let ((failures, retried), (), ()) = tokio::join!(work, reader(), reader());
        let retried = retried.unwrap_or_else(|e| panic!("{}: archive retry: {e}", app.kind));
        assert!(matches!(
            retried,
            ArchiveOutcome::AlreadyArchived(_) | ArchiveOutcome::Archived(_)
        ));
        assert!(reads.load(Ordering::Relaxed) >= 2);
        assert!(failures.is_empty(), "{}: {failures:?}", app.kind);
        assert_archived(app, id, &token, &log).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Nothing left behind
// ---------------------------------------------------------------------------------------------

/// A log streamed, tailed, flushed by its queued jobs, finished and archived by its queued job:
/// afterwards Redis holds nothing of the build or of its jobs but per-queue bookkeeping (the
/// queue registry and counters) and the trace's `closed` flag, for at most
/// [`CLOSED_AFTER_DELETE`]; the database store keeps no live bytes and a zero length.
async fn an_archived_log_leaves_nothing_in_redis_but_a_short_lived_closed_flag(app: &TestApp) {
    let log = log_bytes(3 * CHUNK + 999, 12);
    let (id, token) = write_log(app, &log).await;
    app.parts
        .traces
        .watch(id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        app.run_flushes().await >= 3,
        "{}: full chunks' flushes",
        app.kind
    );
    assert_eq!(put_final(app, id, &token, &log).await, StatusCode::ACCEPTED);
    assert!(
        app.run_flushes().await >= 1,
        "{}: the last chunk's flush",
        app.kind
    );
    assert_eq!(put_final(app, id, &token, &log).await, StatusCode::OK);
    assert_eq!(app.run_archives().await, 1);
    assert_archived(app, id, &token, &log).await;
    let left: Vec<String> = app
        .redis_keys()
        .await
        .into_iter()
        .filter(|k| {
            !(k == ":queues no ttl"
                || (k.starts_with(":{") && k.ends_with("}:stats no ttl"))
                || short_lived_closed_flag(k))
        })
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "{}: keys left in Redis",
        app.kind
    );
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM build_trace_chunks")
            .await,
        Some(0),
        "{}",
        app.kind
    );
    // Still refused: the build is not running, and the trace is closed.
    let late = app.patch(id, &token, log.len() as u64, b"late").await;
    assert_eq!(late.status, StatusCode::FORBIDDEN, "{}", app.kind);
    assert_eq!(
        app.parts
            .live
            .append(id, log.len() as u64, b"late")
            .await
            .unwrap(),
        AppendOutcome::Closed,
        "{}: closed after archiving",
        app.kind
    );
}

// ---------------------------------------------------------------------------------------------
// A flush enqueue lost after the append landed
// ---------------------------------------------------------------------------------------------

/// The stack's real broker, except that `enqueue` fails while `down` is set (the queue's Redis
/// unreachable for a moment, after the live store took the bytes).
struct EnqueueOutage {
    inner: Arc<dyn Broker>,
    down: AtomicBool,
}

#[async_trait]
impl Broker for EnqueueOutage {
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now_ms: i64,
    ) -> Result<Vec<EnqueueOutcome>, BrokerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BrokerError::Invalid {
                field: "connection",
                detail: "injected queue outage".into(),
            });
        }
        self.inner.enqueue(jobs, now_ms).await
    }
    async fn fetch(
        &self,
        queue: &str,
        max: usize,
        lease: std::time::Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.inner.fetch(queue, max, lease, now_ms).await
    }
    async fn ack(&self, queue: &str, acks: Vec<Ack>, now_ms: i64) -> Result<(), BrokerError> {
        self.inner.ack(queue, acks, now_ms).await
    }
    async fn extend_leases(
        &self,
        queue: &str,
        leases: &[Lease],
        lease: std::time::Duration,
        now_ms: i64,
    ) -> Result<(), BrokerError> {
        self.inner.extend_leases(queue, leases, lease, now_ms).await
    }
    async fn reap_expired(
        &self,
        queue: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<ReapReport, BrokerError> {
        self.inner.reap_expired(queue, limit, now_ms).await
    }
    async fn set_limit(&self, queue: &str, limit: Option<u32>) -> Result<(), BrokerError> {
        self.inner.set_limit(queue, limit).await
    }
    async fn queues(&self) -> Result<Vec<String>, BrokerError> {
        self.inner.queues().await
    }
    async fn stats(&self, queue: &str, now_ms: i64) -> Result<QueueStats, BrokerError> {
        self.inner.stats(queue, now_ms).await
    }
    async fn dead_list(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, BrokerError> {
        self.inner.dead_list(queue, limit).await
    }
    async fn scheduled_list(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<ScheduledJob>, BrokerError> {
        self.inner.scheduled_list(queue, limit).await
    }
    async fn dead_retry(&self, queue: &str, id: &str, now_ms: i64) -> Result<bool, BrokerError> {
        self.inner.dead_retry(queue, id, now_ms).await
    }
    async fn dead_discard(&self, queue: &str, id: &str) -> Result<bool, BrokerError> {
        self.inner.dead_discard(queue, id).await
    }
    async fn release_scheduled(
        &self,
        queue: &str,
        max: usize,
        now_ms: i64,
    ) -> Result<u64, BrokerError> {
        self.inner.release_scheduled(queue, max, now_ms).await
    }
    async fn dead_trim(
        &self,
        queue: &str,
        bounds: DeadSetBounds,
        now_ms: i64,
    ) -> Result<u64, BrokerError> {
        self.inner.dead_trim(queue, bounds, now_ms).await
    }
    async fn cron_fire(
        &self,
        schedule: &str,
        tick_ms: i64,
        job: NewJob,
        now_ms: i64,
    ) -> Result<bool, BrokerError> {
        self.inner.cron_fire(schedule, tick_ms, job, now_ms).await
    }
    async fn cron_last(&self, schedule: &str, queue: &str) -> Result<Option<i64>, BrokerError> {
        self.inner.cron_last(schedule, queue).await
    }
}

/// A PATCH fills chunk 0; its bytes land, then enqueueing the chunk's flush fails, so the
/// runner gets an error (no `Range`) and sends the same bytes again: that resend is refused
/// (416, the bytes are there) and enqueues the flush, instead of the full chunk waiting in the
/// live store until the final PUT.
async fn a_full_chunk_whose_flush_enqueue_failed_is_enqueued_when_the_runner_resends(
    app: &TestApp,
) {
    let (id, token) = app.create_job().await;
    let parts = &app.parts;
    let broker = Arc::new(EnqueueOutage {
        inner: app.broker.clone(),
        down: AtomicBool::new(true),
    });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let traces = TraceService::new(
        TraceStores {
            meta: parts.meta.clone(),
            live: parts.live.clone(),
            objects: parts.store.clone(),
            clock: clock.clone(),
        },
        JobClient::new(broker.clone(), clock),
    );
    let log = log_bytes(CHUNK + 100, 13);
    match traces.append(id, &token, 0, &log).await {
        Err(TraceError::Queue(_)) => {}
        other => panic!("{}: expected the queue outage, got {other:?}", app.kind),
    }
    broker.down.store(false, Ordering::SeqCst);
    assert_eq!(
        app.run_flushes().await,
        0,
        "{}: no flush was enqueued",
        app.kind
    );
    assert!(
        chunk_state(app, id, 0).await.1,
        "{}: chunk 0 live",
        app.kind
    );

    // The runner resends what it did not get a reply for.
    match traces.append(id, &token, 0, &log).await {
        Err(TraceError::RangeMismatch { length }) => assert_eq!(length, log.len() as u64),
        other => panic!("{}: expected 416, got {other:?}", app.kind),
    }
    assert_eq!(
        app.run_flushes().await,
        1,
        "{}: the resend enqueued the flush",
        app.kind
    );
    assert_flushed(app, id, 0, chunk_of(&log, 0)).await;
    // Once flushed, a refused resend has nothing to enqueue; the partial chunk 1 never counts.
    match traces.append(id, &token, 0, &log).await {
        Err(TraceError::RangeMismatch { .. }) => {}
        other => panic!("{}: expected 416, got {other:?}", app.kind),
    }
    assert_eq!(app.run_flushes().await, 0, "{}", app.kind);
    assert_reads(app, id, &token, &log, "after the resend").await;
}
