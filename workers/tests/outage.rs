//! Outage scenarios with real processes (`buildlogs web`, `worker`, `scheduler` started from
//! the built binary) on the production stack: PostgreSQL (a schema per test), Redis (a key
//! prefix per test), a private s3s-fs per test. Runners talk HTTP to the web process; the
//! assertions read what an operator would: the API, the schema's rows, the queue's keys, the
//! bucket's files.
//!
//! 1. The object store is down while 200 jobs write and finish: the circuit breaker opens,
//!    chunks go to the database, every final PUT completes, Redis holds no chunk (not even
//!    one a crashed flush left behind), archives wait without spending attempts; when the
//!    store is back they are all archived at once.
//! 2. The worker is SIGKILLed over and over at random points while 50 jobs write and finish,
//!    with the object store slowed so that kills land inside flushes and archives: every log
//!    is archived once, byte-identical, and nothing is left behind.
//! 3. 300 finished logs were never archived and their queue is lost: stale-trace recovery
//!    archives them all, in batches that never let the archive queue pass capacity + batch.
//! 4. The same with the object store down when recovery starts: while the breaker is open
//!    recovery enqueues nothing (an archive could only snooze, outside the capacity count),
//!    and once the store is back the backlog drains within the same bound.
//!
//! The scenarios run one at a time (each runs a web, a worker and an s3s-fs; on a 2-core
//! machine running them together only makes their time bounds noisy, and PostgreSQL's 100
//! connections are shared with the rest of the suite).

mod procs;

use std::time::{Duration, Instant};

use buildlogs::traces::jobs::FlushTraceChunk;
use reqwest::StatusCode;
use tokio::task::JoinSet;

use procs::checks::{
    ARCHIVE, CHUNK, FLUSH, archived, assert_all_archived, assert_archived_once,
    assert_no_chunk_left, assert_no_dead_jobs, chunks_of, for_each, plan, watch_archive_queue,
};
use procs::runner::{Job, Rng, Runner};
use procs::s3::SlowProxy;
use procs::{Fleet, wait_for_value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_written_while_the_object_store_is_down_are_kept_and_archived_once_it_is_back() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let test = "outage_store_down";
    let mut fleet = Fleet::new(test).await;
    let started = Instant::now();
    let mut rng = Rng::from_env_or_time(test);
    let web = fleet.web().await;
    let _worker = fleet.worker(
        &fleet.s3.endpoint(),
        &[
            ("BUILDLOGS_BREAKER_FAILURES", "2"),
            ("BUILDLOGS_BREAKER_PROBE_SECONDS", "1"),
        ],
    );
    fleet.s3.stop();

    // 200 jobs; every fourth writes 2-3 full chunks while it runs.
    let mut jobs = Vec::new();
    for n in 0..200 {
        let size = if n % 4 == 0 {
            rng.range(260_000, 420_000)
        } else {
            rng.range(500, 60_000)
        } as usize;
        let (log, cuts) = plan(&mut rng, n, size, (3, 8));
        jobs.push((web.runner.register(log).await, cuts));
    }
    let runner = web.runner.clone();
    for_each(jobs.clone(), 20, move |(job, cuts)| {
        let runner = runner.clone();
        async move {
            runner.stream(&job, &cuts, |_| Duration::ZERO).await;
            runner
                .finish(&job, Instant::now() + Duration::from_secs(60))
                .await;
        }
    })
    .await;
    let jobs: Vec<Job> = jobs.into_iter().map(|(job, _)| job).collect();
    let written = started.elapsed();

    // Storage is still down, and every job is finished: its chunks are in the database.
    wait_for_value(
        "no live chunk left in Redis (all flushed to the database)",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { fleet.live_chunk_keys().await.is_empty().then_some(()) },
    )
    .await;
    assert_eq!(
        fleet.breaker_state().await.as_deref(),
        Some("open"),
        "{}",
        fleet.logs()
    );
    assert_eq!(
        fleet
            .sql_i64("SELECT count(*) FROM build_trace_chunks WHERE data_store = 'database' AND raw_data IS NOT NULL AND crc32 IS NOT NULL")
            .await,
        chunks_of(&jobs),
        "every chunk of every log is in the database"
    );
    assert_eq!(
        fleet
            .sql_i64("SELECT count(*) FROM build_trace_chunks")
            .await,
        chunks_of(&jobs)
    );
    assert_eq!(fleet.sql_i64("SELECT count(*) FROM job_artifacts").await, 0);
    // Every archive ran, found the breaker open and snoozed: waiting, no attempt spent.
    wait_for_value(
        "all 200 archives snoozed",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let (ready, scheduled, running, _) = fleet.queue(ARCHIVE).await;
            (ready == 0 && running == 0 && scheduled == 200).then_some(())
        },
    )
    .await;
    assert_eq!(
        fleet
            .sql_i64("SELECT coalesce(sum(archival_attempts), 0)::bigint FROM build_trace_metadata")
            .await,
        0,
        "an archive spent an attempt while the breaker was open"
    );
    assert_no_dead_jobs(&fleet).await;
    let runner = web.runner.clone();
    for_each(jobs.clone(), 16, move |job| {
        let runner = runner.clone();
        async move {
            let json = runner.job(job.id).await;
            assert_eq!(json["status"], "success", "job {}: {json}", job.id);
            assert_eq!(json["trace"]["state"], "flushing", "job {}: {json}", job.id);
            assert_eq!(
                json["trace"]["checksum_valid"], true,
                "job {}: {json}",
                job.id
            );
            runner.assert_log_intact(&job, "during the outage").await;
        }
    })
    .await;

    // A flush SIGKILLed between its flip to the database and deleting the live copy leaves
    // the chunk in both (rebuilt here: the window is one Redis round trip). The flush's rerun
    // must drop the live copy, or Redis keeps it until the store is back and the log archived.
    let crashed = &jobs[0];
    assert!(crashed.log.len() > CHUNK);
    let key = fleet.live_chunk_key(crashed.id, 0);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&crashed.log[..CHUNK])
        .query_async(&mut fleet.redis())
        .await
        .expect("SET live chunk");
    fleet
        .jobs()
        .await
        .enqueue(&FlushTraceChunk {
            build_id: crashed.id,
            chunk_index: 0,
        })
        .await
        .expect("enqueue the flush's rerun");
    wait_for_value(
        "the rerun of a crashed flush to drop the leftover live copy",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { fleet.live_chunk_keys().await.is_empty().then_some(()) },
    )
    .await;
    web.runner
        .assert_log_intact(crashed, "after a crashed flush's rerun")
        .await;

    // The store is back: the probe closes the breaker and releases the snoozed archives
    // (they would otherwise sleep out their 5-minute snooze).
    fleet.s3.restart();
    let back = Instant::now();
    wait_for_value(
        "every log archived within 120 s of the store's return (seconds when the machine is idle)",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            (fleet.sql_i64("SELECT count(*) FROM job_artifacts").await == 200).then_some(())
        },
    )
    .await;
    let archived = back.elapsed();
    assert_all_archived(&web.runner, &jobs).await;
    assert_eq!(fleet.breaker_state().await.as_deref(), Some("closed"));
    assert_eq!(
        fleet
            .sql_i64("SELECT count(DISTINCT build_id) FROM job_artifacts WHERE kind = 'trace'")
            .await,
        200
    );
    assert_eq!(fleet.archive_objects().len(), 200);
    assert_eq!(
        fleet.line_index_objects().len(),
        200,
        "one line index per archive"
    );
    assert_no_chunk_left(&fleet).await;
    assert_no_dead_jobs(&fleet).await;
    eprintln!(
        "{test}: 200 jobs written and finished in {written:?} with the store down; all archived {archived:?} after it came back; {:?} in all",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_points_of_flushes_and_archives_loses_and_duplicates_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let test = "outage_worker_kills";
    let fleet = Fleet::new(test).await;
    let started = Instant::now();
    let mut rng = Rng::from_env_or_time(test);
    let web = fleet.web().await;
    // Every read between the worker and the store waits 25 ms: a chunk flush takes ~0.15 s
    // and an archive ~0.5 s, so kills land inside them.
    let slow = SlowProxy::start(fleet.s3.addr(), Duration::from_millis(25)).await;

    // 50 jobs, half of them 2-5 chunks long, written in 6-14 PATCHes over ~5-15 s.
    let mut runners = JoinSet::new();
    for n in 0..50 {
        let size = if n % 2 == 0 {
            rng.range(200_000, 600_000)
        } else {
            rng.range(2_000, 120_000)
        } as usize;
        let (log, cuts) = plan(&mut rng, n, size, (6, 15));
        let job = web.runner.register(log).await;
        let delay = Duration::from_millis(rng.range(0, 6_000));
        let pauses: Vec<Duration> = (0..cuts.len())
            .map(|_| Duration::from_millis(rng.range(50, 700)))
            .collect();
        let runner = web.runner.clone();
        runners.spawn(async move {
            tokio::time::sleep(delay).await;
            runner.stream(&job, &cuts, |i| pauses[i]).await;
            runner
                .finish(&job, Instant::now() + Duration::from_secs(90))
                .await;
            job
        });
    }

    // Kill -9 the worker 100-700 ms after it is up (a start takes ~0.2 s, more on a loaded
    // machine: a worker killed before it fetches anything tests nothing), start another, for
    // at least 12 s and until kills have caught both flushes and archives in flight (at most
    // 30 s).
    let (mut kills, mut in_flush, mut in_archive, mut lost_runs) = (0u32, 0u32, 0u32, 0usize);
    // Flushed chunk objects seen in the bucket at a kill: shows where they are, so that "none
    // left" at the end means something.
    let mut chunk_objects = 0;
    let chaos = Instant::now();
    let mut worker = fleet.worker(&slow.endpoint(), &[]);
    let mut incarnations = 1;
    while chaos.elapsed() < Duration::from_secs(12)
        || ((in_flush == 0 || in_archive == 0) && chaos.elapsed() < Duration::from_secs(30))
    {
        wait_for_value(
            "the worker to start",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async {
                (fleet.log_count("worker", "worker started") >= incarnations).then_some(())
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.range(100, 700))).await;
        worker.kill();
        kills += 1;
        // Its leases would run out after 60 s (flush) or 120 s (archive), fixed per job type:
        // waiting them out would make every kill cost a minute or two. They are expired now
        // instead, as the clock would; the next worker's reaper re-delivers the jobs.
        let flushes = fleet.expire_leases_of_dead_workers(FLUSH).await;
        let archives = fleet.expire_leases_of_dead_workers(ARCHIVE).await;
        in_flush += u32::from(flushes > 0);
        in_archive += u32::from(archives > 0);
        lost_runs += flushes + archives;
        chunk_objects = chunk_objects.max(fleet.chunk_objects().len());
        worker = fleet.worker(&slow.endpoint(), &[]);
        incarnations += 1;
    }
    let chaos_took = chaos.elapsed();

    let mut jobs = Vec::new();
    while let Some(done) = runners.join_next().await {
        match done {
            Ok(job) => jobs.push(job),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let finished = started.elapsed();
    wait_for_value(
        "every log archived after the kills",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            (fleet.sql_i64("SELECT count(*) FROM job_artifacts").await == 50).then_some(())
        },
    )
    .await;
    assert!(
        chunk_objects > 0,
        "never saw a flushed chunk object in the bucket"
    );
    // Which step a kill lands on is random; at least one must have caught one in flight, or
    // the test proved nothing.
    assert!(
        in_flush + in_archive > 0,
        "{kills} kills caught flushes {in_flush} times and archives {in_archive} times"
    );
    // Archived once: one artifact row per build (and one object), whatever the reruns.
    assert_eq!(
        fleet
            .sql_i64("SELECT count(DISTINCT build_id) FROM job_artifacts WHERE kind = 'trace'")
            .await,
        50
    );
    assert_eq!(
        fleet
            .sql_i64("SELECT count(*) FROM builds WHERE trace_archived_at IS NULL")
            .await,
        0
    );
    assert_eq!(
        fleet.archive_objects().len(),
        50,
        "{:?}",
        fleet.archive_objects()
    );
    assert_all_archived(&web.runner, &jobs).await;
    assert_no_chunk_left(&fleet).await;
    assert_no_dead_jobs(&fleet).await;
    assert!(
        worker.is_running(),
        "the last worker died:\n{}",
        fleet.logs()
    );
    eprintln!(
        "{test}: {kills} kills in {chaos_took:?} ({in_flush} with flushes in flight, {in_archive} with archives, {lost_runs} runs lost); all finished after {finished:?}, archived after {:?}",
        started.elapsed()
    );
}

/// `n` finished jobs whose logs were never archived and whose queue is lost, built while no
/// worker runs: each runner's final PUT is accepted (202) with the chunks still live; five
/// minutes pass (GitLab's accept timeout, moved back on the pending states rather than waited
/// for) and its next PUT commits the state and enqueues the archive, as the accept-timeout
/// path does; then the queue is lost (archives, flushes, their dedup keys), as in the incident.
async fn stale_backlog(fleet: &Fleet, runner: &Runner, rng: &mut Rng, n: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    for i in 0..n {
        let size = rng.range(100, 200_000) as usize;
        let (log, cuts) = plan(rng, i, size, (2, 5));
        jobs.push((runner.register(log).await, cuts));
    }
    let streaming = runner.clone();
    for_each(jobs.clone(), 20, move |(job, cuts)| {
        let runner = streaming.clone();
        async move {
            runner.stream(&job, &cuts, |_| Duration::ZERO).await;
            let (status, _) = runner.put_final(&job).await;
            assert_eq!(status, StatusCode::ACCEPTED, "job {}", job.id);
        }
    })
    .await;
    let jobs: Vec<Job> = jobs.into_iter().map(|(job, _)| job).collect();
    sqlx::query("UPDATE build_pending_states SET created_at = created_at - 300001")
        .execute(&fleet.pg.pool)
        .await
        .expect("age the pending states");
    let finishing = runner.clone();
    for_each(jobs.clone(), 20, move |job| {
        let runner = finishing.clone();
        async move {
            let (status, _) = runner.put_final(&job).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "job {} after the accept timeout",
                job.id
            );
        }
    })
    .await;
    assert_eq!(
        fleet
            .sql_i64(
                "SELECT count(*) FROM builds WHERE status = 'success' AND finished_at IS NOT NULL"
            )
            .await,
        n as i64
    );
    assert_eq!(fleet.queue(ARCHIVE).await.0, n as u64, "archives enqueued");
    assert!(!fleet.live_chunk_keys().await.is_empty());
    assert!(fleet.lose_queue(ARCHIVE).await > 0);
    fleet.lose_queue(FLUSH).await;
    assert_eq!(fleet.queue(ARCHIVE).await, (0, 0, 0, 0));
    assert_eq!(fleet.sql_i64("SELECT count(*) FROM job_artifacts").await, 0);
    jobs
}

/// Stale-trace recovery's settings for a worker and a scheduler: every trace is stale at once,
/// a run every second.
fn recovery_env(batch: u64, capacity: u64) -> Vec<(&'static str, String)> {
    vec![
        ("BUILDLOGS_RECOVERY_STALE_MINUTES", "0".into()),
        ("BUILDLOGS_RECOVERY_CRON", "* * * * * *".into()),
        ("BUILDLOGS_RECOVERY_BATCH", batch.to_string()),
        ("BUILDLOGS_ARCHIVE_CAPACITY", capacity.to_string()),
    ]
}

fn as_env<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_traces_whose_queue_was_lost_are_archived_in_batches_within_capacity() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let test = "outage_lost_queue";
    let fleet = Fleet::new(test).await;
    const JOBS: usize = 300;
    const BATCH: u64 = 50;
    const CAPACITY: u64 = 20;
    let started = Instant::now();
    let mut rng = Rng::from_env_or_time(test);
    let web = fleet.web().await;
    let jobs = stale_backlog(&fleet, &web.runner, &mut rng, JOBS).await;
    let built = started.elapsed();

    let env = recovery_env(BATCH, CAPACITY);
    let mut worker = fleet.worker(&fleet.s3.endpoint(), &as_env(&env));
    let _scheduler = fleet.scheduler(&as_env(&env));
    let recovering = Instant::now();
    let longest = watch_archive_queue(
        &fleet,
        &mut worker,
        CAPACITY + BATCH,
        "every stale trace archived",
        Duration::from_secs(60),
        || archived(&fleet, JOBS),
    )
    .await;
    let took = recovering.elapsed();
    assert!(longest > 0, "never saw an archive queued");
    assert_archived_once(&fleet, JOBS as i64).await;
    assert!(
        fleet.log_count("worker", "stale traces: archives enqueued") >= JOBS / BATCH as usize,
        "recovery enqueued in batches of {BATCH}:\n{}",
        fleet.logs()
    );
    assert_all_archived(&web.runner, &jobs).await;
    assert_no_chunk_left(&fleet).await;
    assert_no_dead_jobs(&fleet).await;
    eprintln!(
        "{test}: {JOBS} stale traces built in {built:?}, recovered in {took:?}; archive queue at most {longest} long"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_traces_found_while_the_object_store_is_down_wait_outside_the_queue() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let test = "outage_lost_queue_store_down";
    let mut fleet = Fleet::new(test).await;
    const JOBS: usize = 120;
    const BATCH: u64 = 20;
    const CAPACITY: u64 = 10;
    let started = Instant::now();
    let mut rng = Rng::from_env_or_time(test);
    let web = fleet.web().await;
    let jobs = stale_backlog(&fleet, &web.runner, &mut rng, JOBS).await;

    // The store is down when recovery starts: the first archives fail and open the breaker.
    fleet.s3.stop();
    let mut env = recovery_env(BATCH, CAPACITY);
    env.extend([
        ("BUILDLOGS_BREAKER_FAILURES", "2".to_owned()),
        ("BUILDLOGS_BREAKER_PROBE_SECONDS", "1".to_owned()),
    ]);
    let mut worker = fleet.worker(&fleet.s3.endpoint(), &as_env(&env));
    let _scheduler = fleet.scheduler(&as_env(&env));
    // Until the breaker is open and three recovery runs found it so (each of them could have
    // walked the whole backlog into the queue, where the archives could only wait).
    let longest_down = watch_archive_queue(
        &fleet,
        &mut worker,
        CAPACITY + BATCH,
        "the breaker open and recovery waiting for the store",
        Duration::from_secs(30),
        || async {
            fleet.breaker_state().await.as_deref() == Some("open")
                && fleet.log_count("worker", "stale-trace recovery waits") >= 3
        },
    )
    .await;

    fleet.s3.restart();
    let back = Instant::now();
    let longest_up = watch_archive_queue(
        &fleet,
        &mut worker,
        CAPACITY + BATCH,
        "every stale trace archived once the store is back",
        Duration::from_secs(60),
        || archived(&fleet, JOBS),
    )
    .await;
    let took = back.elapsed();
    assert_eq!(fleet.breaker_state().await.as_deref(), Some("closed"));
    assert_archived_once(&fleet, JOBS as i64).await;
    assert_all_archived(&web.runner, &jobs).await;
    assert_no_chunk_left(&fleet).await;
    assert_no_dead_jobs(&fleet).await;
    eprintln!(
        "{test}: queue at most {longest_down} while the store was down, {longest_up} after; {JOBS} archived {took:?} after it came back, {:?} in all",
        started.elapsed()
    );
}
