//! What the outage scenarios run and check, shared by them: runners in parallel, and the
//! assertions on a fleet's stores once logs are archived (every log archived once, with its
//! CRC32 and bytes; no chunk, live copy or chunk object left; no dead job), and the archive
//! queue's length watched while recovery runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use buildlogs::jobs::Job as _;
use buildlogs::traces::jobs::{ArchiveTrace, FlushTraceChunk};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::runner::{Job, Rng, Runner, cuts, make_log};
use super::{Fleet, Proc};

pub const FLUSH: &str = FlushTraceChunk::NAME;
pub const ARCHIVE: &str = ArchiveTrace::NAME;
/// The live chunk size (128 KiB): a log longer than this fills chunks that flush while the
/// job still runs.
pub const CHUNK: usize = 128 * 1024;

/// Runs `work` for every item, `at_once` at a time; a panic in one is re-raised here.
pub async fn for_each<T, F, Fut>(items: Vec<T>, at_once: usize, work: F)
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(at_once));
    let mut tasks = JoinSet::new();
    for item in items {
        let slot = slots.clone().acquire_owned().await.expect("semaphore");
        let run = work(item);
        tasks.spawn(async move {
            run.await;
            drop(slot);
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// A log of `size` bytes for job `n`, and where its runner cuts it into PATCHes.
pub fn plan(rng: &mut Rng, n: usize, size: usize, pieces: (u64, u64)) -> (Vec<u8>, Vec<usize>) {
    let log = make_log(rng, n, size);
    let count = rng.range(pieces.0, pieces.1) as usize;
    let cuts = cuts(rng, size, count);
    (log, cuts)
}

pub fn chunks_of(jobs: &[Job]) -> i64 {
    jobs.iter()
        .map(|j| j.log.len().div_ceil(CHUNK) as i64)
        .sum()
}

/// Every job: archived per the API, with the runner's CRC32, read back byte-identical.
pub async fn assert_all_archived(runner: &Runner, jobs: &[Job]) {
    let runner = runner.clone();
    for_each(jobs.to_vec(), 16, move |job| {
        let runner = runner.clone();
        async move {
            let json = runner.job(job.id).await;
            assert_eq!(json["status"], "success", "job {}: {json}", job.id);
            assert_eq!(json["trace"]["state"], "archived", "job {}: {json}", job.id);
            assert_eq!(
                json["trace"]["crc32"],
                job.crc32_text(),
                "job {}: {json}",
                job.id
            );
            assert_eq!(
                json["trace"]["size"],
                job.log.len(),
                "job {}: {json}",
                job.id
            );
            runner.assert_log_intact(&job, "after archiving").await;
        }
    })
    .await;
}

/// No chunk left anywhere once every log is archived: no row, no live copy, no object (the
/// archive deletes them just after recording the artifact: given a few seconds).
pub async fn assert_no_chunk_left(fleet: &Fleet) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = fleet
            .sql_i64("SELECT count(*) FROM build_trace_chunks")
            .await;
        let live = fleet.live_chunk_keys().await;
        let objects = fleet.chunk_objects();
        if rows == 0 && live.is_empty() && objects.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left after archiving: {rows} chunk rows, live chunks {live:?}, chunk objects {objects:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn assert_no_dead_jobs(fleet: &Fleet) {
    for queue in [FLUSH, ARCHIVE] {
        let (_, _, _, dead) = fleet.queue(queue).await;
        assert_eq!(
            dead,
            0,
            "dead {queue} jobs: {:?}\n{}",
            fleet.dead_errors(queue).await,
            fleet.logs()
        );
    }
}

/// Watches the archive queue's length (ready + scheduled + running, read atomically) every
/// 5 ms while the worker runs, until `done` says so (asked every 50 ms; a panic naming `what`
/// after `timeout`); panics as soon as the length passes `limit`. The longest length seen.
pub async fn watch_archive_queue<F, Fut>(
    fleet: &Fleet,
    worker: &mut Proc,
    limit: u64,
    what: &str,
    timeout: Duration,
    mut done: F,
) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut longest = 0;
    loop {
        for _ in 0..10 {
            let (ready, scheduled, running, _) = fleet.queue(ARCHIVE).await;
            longest = longest.max(ready + scheduled + running);
            assert!(
                longest <= limit,
                "waiting for {what}: the archive queue holds {ready} ready + {scheduled} \
                 scheduled + {running} running jobs, more than capacity + batch = {limit}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(worker.is_running(), "worker exited:\n{}", fleet.logs());
        if done().await {
            return longest;
        }
        assert!(
            Instant::now() < deadline,
            "not within {timeout:?}: {what} (archive queue at most {longest}, {} archived)",
            fleet.sql_i64("SELECT count(*) FROM job_artifacts").await
        );
    }
}

/// Have `n` logs been archived?
pub async fn archived(fleet: &Fleet, n: usize) -> bool {
    fleet.sql_i64("SELECT count(*) FROM job_artifacts").await >= n as i64
}

/// Exactly one trace artifact per build, every build marked archived.
pub async fn assert_archived_once(fleet: &Fleet, builds: i64) {
    assert_eq!(
        fleet
            .sql_i64("SELECT count(*) FROM job_artifacts WHERE kind = 'trace'")
            .await,
        builds
    );
    assert_eq!(
        fleet
            .sql_i64("SELECT count(DISTINCT build_id) FROM job_artifacts WHERE kind = 'trace'")
            .await,
        builds
    );
    assert_eq!(
        fleet
            .sql_i64("SELECT count(*) FROM builds WHERE trace_archived_at IS NULL")
            .await,
        0
    );
}
