//! Reproduces the two apalis-redis 1.0.0 bugs that made us write our own Redis broker
//! (`buildlogs_jobs::redis::RedisBroker`), against a real Redis, next to our broker doing the
//! same work (job-systems.md §4.2, L2 and L3):
//!
//! 1. **Fetch fails for good past ~8,000 due tasks.** Every pushed task lands in
//!    `{queue}:scheduled` (its `run_at` is clamped to now), and `fetch_next.lua` promotes all due
//!    ids at once with `RPUSH active unpack(ids)`. Lua's `unpack` cannot return that many values,
//!    so with a plain backlog of 10,000 pushed tasks every fetch errors and the worker stops
//!    without running one task. An outage backlog or a burst of chunk flushes is enough.
//! 2. **Task locking costs O(backlog) per task.** With `lock_tasks(true)` (the default),
//!    `acquire_leases.lua` runs `LREM {queue}:active 1 <id>` for every task that starts, but the
//!    fetch already `LTRIM`med that id away, so each LREM scans the whole waiting list and finds
//!    nothing. Redis CPU per job grows with the backlog, O(backlog²) to drain it.
//!
//! Test 1 uses the shared Redis (own key prefix, own keys deleted at the end). Test 2 reads
//! `INFO commandstats`, which other tests would disturb, so it starts a private `redis-server`.

mod support;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis_core::backend::TaskSink;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_redis::{Config, RedisStorage};
use buildlogs_jobs::broker::{Ack, NewJob};
use buildlogs_jobs::redis::RedisBroker;
use buildlogs_jobs::{Broker, Envelope};
use tokio::sync::Notify;

/// The broker's clock for our side of each comparison (time is passed explicitly).
const T0: i64 = 1_800_000_000_000;
const LEASE: Duration = Duration::from_secs(30);
/// Bound on every wait; the tests normally finish in seconds.
const WAIT: Duration = Duration::from_secs(60);
/// Measurement runs per backlog size in the locking test.
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apalis_redis_fetch_fails_past_eight_thousand_due_tasks() {
    const BACKLOG: usize = 10_000;
    let url = support::redis_url();
    let prefix = support::unique_prefix("apalis_unpack");
    let queue = format!("{prefix}:q");
    let _cleanup = SharedRedisKeys {
        url: url.clone(),
        prefix: prefix.clone(),
        apalis_queue: queue.clone(),
    };
    let mut redis = redis_conn(&url).await;

    let mut storage = apalis_storage(&url, &queue).await;
    storage
        .push_bulk((0..BACKLOG as u32).collect())
        .await
        .expect("push 10,000 tasks");
    // L1, the premise: a plain push is "scheduled now", so the whole backlog waits for promotion.
    let scheduled: usize = redis::cmd("ZCARD")
        .arg(format!("{queue}:scheduled"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let active: usize = redis::cmd("LLEN")
        .arg(format!("{queue}:active"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!((scheduled, active), (BACKLOG, 0));

    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let worker = WorkerBuilder::new(format!("{prefix}:worker"))
        .backend(storage)
        .build(move |_task: u32| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
    let outcome = tokio::time::timeout(WAIT, worker.run())
        .await
        .expect("the worker gives up on its first fetch");
    let error = outcome
        .expect_err("fetching from a 10,000-task backlog fails")
        .to_string();
    println!("apalis-redis worker error: {error}");
    assert!(
        error.contains("too many results to unpack"),
        "unexpected error: {error}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0, "not one task ran");

    // Our broker with the same backlog, all due at once: bounded promotion, no error.
    let broker = RedisBroker::connect(&url, &format!("{prefix}:ours"))
        .await
        .expect("redis");
    let due = T0 + 1_000;
    enqueue_backlog(&broker, "backlog", BACKLOG, Some(due)).await;
    let mut drained = 0;
    while drained < BACKLOG {
        let got = broker.fetch("backlog", 500, LEASE, due).await.unwrap();
        assert!(!got.is_empty(), "our broker stalled at {drained}");
        drained += got.len();
        let acks = got.into_iter().map(complete).collect();
        broker.ack("backlog", acks, due).await.unwrap();
    }
    let stats = broker.stats("backlog", due).await.unwrap();
    assert_eq!(
        (stats.ready, stats.scheduled, stats.processed),
        (0, 0, BACKLOG as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apalis_redis_task_locking_cost_grows_with_the_backlog() {
    const SMALL: usize = 500;
    const LARGE: usize = 4_000;
    /// Tasks measured per run: enough samples to average out the µs rounding of each LREM,
    /// few enough that the waiting list stays near its starting length.
    const MEASURED: usize = 250;
    let server = PrivateRedis::start();

    let mut apalis = [f64::MAX; 2];
    let mut ours = [f64::MAX; 2];
    // Each figure is the least of a few runs on fresh queues: a run can only be slowed down
    // (the machine is shared), never sped up, so the minimum is the steady cost.
    for round in 0..ROUNDS {
        for (i, backlog) in [SMALL, LARGE].into_iter().enumerate() {
            let queue = format!("r{round}-{backlog}");
            apalis[i] =
                apalis[i].min(apalis_lrem_per_task(&server, &queue, backlog, MEASURED).await);
            ours[i] =
                ours[i].min(broker_script_usec_per_job(&server, &queue, backlog, MEASURED).await);
        }
    }

    let [apalis_small, apalis_large] = apalis;
    let [ours_small, ours_large] = ours;
    let apalis_ratio = apalis_large / apalis_small;
    let ours_ratio = ours_large / ours_small;
    println!(
        "apalis-redis LREM µs per started task: {apalis_small:.2} at {SMALL} waiting, \
         {apalis_large:.2} at {LARGE} waiting ({apalis_ratio:.1}x)"
    );
    println!(
        "our broker script µs per job: {ours_small:.2} at {SMALL} waiting, \
         {ours_large:.2} at {LARGE} waiting ({ours_ratio:.2}x)"
    );
    assert!(
        apalis_ratio > 3.0,
        "apalis LREM cost per task should grow with the backlog: {apalis_small:.2} -> {apalis_large:.2} µs"
    );
    assert!(
        ours_ratio < 2.0,
        "our per-job Redis time should not grow with the backlog: {ours_small:.2} -> {ours_large:.2} µs"
    );
}

/// Pushes `backlog` tasks to a fresh apalis queue on `server`, runs a default-config worker
/// (`lock_tasks(true)`) until `measured` tasks ran, and returns the LREM µs per LREM call
/// (one call per started task).
async fn apalis_lrem_per_task(
    server: &PrivateRedis,
    queue: &str,
    backlog: usize,
    measured: usize,
) -> f64 {
    let queue = format!("apalis-{queue}");
    let mut storage = apalis_storage(&server.url, &queue).await;
    assert!(storage.get_config().lock_tasks, "the default locks tasks");
    storage
        .push_bulk((0..backlog as u32).collect())
        .await
        .expect("push backlog");
    let mut redis = redis_conn(&server.url).await;
    reset_stats(&mut redis).await;

    let ran = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let (counter, signal) = (ran.clone(), enough.clone());
    let worker = WorkerBuilder::new(format!("{queue}-worker"))
        .backend(storage)
        .build(move |_task: u32| {
            let (counter, signal) = (counter.clone(), signal.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) + 1 == measured {
                    signal.notify_one();
                }
            }
        });
    let running = tokio::spawn(worker.run());
    tokio::time::timeout(WAIT, enough.notified())
        .await
        .unwrap_or_else(|_| panic!("{measured} tasks did not run: {ran:?} ran"));
    running.abort();
    let _ = running.await;

    let stats = command_stats(&mut redis).await;
    let lrem = stats.get("lrem").copied().unwrap_or_default();
    let evalsha = stats.get("evalsha").copied().unwrap_or_default();
    println!(
        "apalis-redis, {backlog} waiting: {} LREM calls, {} µs; EVALSHA {} calls, {} µs",
        lrem.calls, lrem.usec, evalsha.calls, evalsha.usec
    );
    assert!(
        lrem.calls >= measured as u64 / 2,
        "each started task runs one LREM: {lrem:?}"
    );
    lrem.usec as f64 / lrem.calls as f64
}

/// Enqueues `backlog` ready jobs for our broker on `server`, then settles and leases `measured`
/// jobs with `ack_and_fetch` (10 at a time, as a worker would) and returns the script µs per job.
async fn broker_script_usec_per_job(
    server: &PrivateRedis,
    queue: &str,
    backlog: usize,
    measured: usize,
) -> f64 {
    const BATCH: usize = 10;
    let queue = format!("ours-{queue}");
    let broker = RedisBroker::connect(&server.url, "blt")
        .await
        .expect("private redis");
    enqueue_backlog(&broker, &queue, backlog, None).await;
    // Load the scripts first, so the measured calls are all EVALSHA.
    let mut leased = broker.fetch(&queue, BATCH, LEASE, T0).await.unwrap();
    let mut redis = redis_conn(&server.url).await;
    reset_stats(&mut redis).await;

    let mut done = 0;
    while done < measured {
        done += leased.len();
        let acks = leased.into_iter().map(complete).collect();
        leased = broker
            .ack_and_fetch(&queue, acks, BATCH, 0, LEASE, T0)
            .await
            .unwrap();
        assert!(!leased.is_empty(), "backlog ran dry at {done}");
    }

    let stats = command_stats(&mut redis).await;
    let scripts = ["evalsha", "eval"]
        .iter()
        .filter_map(|name| stats.get(*name))
        .fold(CmdStat::default(), |sum, s| CmdStat {
            calls: sum.calls + s.calls,
            usec: sum.usec + s.usec,
        });
    println!(
        "our broker, {backlog} waiting: {done} jobs, {} script calls, {} µs",
        scripts.calls, scripts.usec
    );
    scripts.usec as f64 / done as f64
}

async fn apalis_storage(url: &str, queue: &str) -> RedisStorage<u32> {
    let conn = apalis_redis::connect(url).await.expect("redis");
    RedisStorage::new(conn).with_config(Config::default().queue(queue))
}

async fn enqueue_backlog(broker: &RedisBroker, queue: &str, n: usize, run_at_ms: Option<i64>) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            envelope: Envelope::new(queue, i.to_string(), 3, T0),
            run_at_ms,
            dedup_ttl: Duration::from_secs(3600),
        })
        .collect();
    for chunk in jobs.chunks(1_000) {
        broker.enqueue(chunk.to_vec(), T0).await.unwrap();
    }
}

fn complete(d: buildlogs_jobs::Delivery) -> Ack {
    Ack::Complete { lease: d.lease }
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

/// One line of `INFO commandstats`.
#[derive(Debug, Default, Clone, Copy)]
struct CmdStat {
    calls: u64,
    usec: u64,
}

async fn reset_stats(redis: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(redis)
        .await
        .unwrap();
}

/// `INFO commandstats` by lower-case command name
/// (`cmdstat_lrem:calls=250,usec=1234,usec_per_call=4.94,...`).
async fn command_stats(redis: &mut redis::aio::MultiplexedConnection) -> HashMap<String, CmdStat> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let mut stat = CmdStat::default();
            for (key, value) in fields.split(',').filter_map(|f| f.split_once('=')) {
                match key {
                    "calls" => stat.calls = value.parse().ok()?,
                    "usec" => stat.usec = value.parse().ok()?,
                    _ => {}
                }
            }
            Some((name.to_owned(), stat))
        })
        .collect()
}

/// Deletes a test's keys from the shared Redis when it ends, passed or failed.
struct SharedRedisKeys {
    url: String,
    prefix: String,
    apalis_queue: String,
}

impl Drop for SharedRedisKeys {
    fn drop(&mut self) {
        support::delete_prefix(&self.url, &self.prefix);
        // apalis also lists its queue in a global key; take out only our entry.
        if let Ok(mut conn) =
            redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
        {
            let _: redis::RedisResult<()> = redis::cmd("ZREM")
                .arg("core:apalis:queues:list")
                .arg(format!("{}:workers", self.apalis_queue))
                .query(&mut conn);
        }
    }
}

/// A `redis-server` of this test's own (no persistence), killed on drop.
struct PrivateRedis {
    child: Child,
    url: String,
}

impl PrivateRedis {
    fn start() -> Self {
        // Ask the OS for a free port; the tiny window before redis-server binds it is fine here.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let client = redis::Client::open(server.url.as_str()).unwrap();
        let started = Instant::now();
        while !client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok_and(|pong| pong == "PONG")
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
