//! The job system across real processes on Redis (`examples/queue_node.rs`): a worker killed
//! with SIGKILL mid-job, a job that crashes every worker, a concurrency limit shared by two
//! worker processes, and three schedulers firing one cron.

mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use buildlogs_jobs::{Clock, JobClient, SystemClock};
use redis::Commands;
use support::TestBroker;
use support::wait::wait_for;

#[path = "../examples/queue_node.rs"]
#[allow(dead_code)]
mod node;

use node::Probe;

const SECS: Duration = Duration::from_secs(30);

/// The example binary cargo built next to this test binary.
fn node_binary() -> std::path::PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join("queue_node")
}

struct Node(Child);

impl Node {
    fn start(b: &TestBroker, role: &str, concurrency: usize) -> Self {
        let child = Command::new(node_binary())
            .env("NODE_REDIS_URL", support::redis_url())
            .env("NODE_PREFIX", b.redis_prefix().expect("redis broker"))
            .env("NODE_ROLE", role)
            .env("NODE_CONCURRENCY", concurrency.to_string())
            .env("NODE_LEASE_MS", "1000")
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start examples/queue_node: plain `cargo test` builds it; with a test filter run `cargo build --examples` first");
        Self(child)
    }

    fn sigkill(&mut self) {
        let _ = self.0.kill(); // SIGKILL on Unix
        let _ = self.0.wait();
    }

    fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn conn() -> redis::Connection {
    redis::Client::open(support::redis_url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn list(b: &TestBroker, name: &str) -> Vec<String> {
    conn()
        .lrange(format!("{}:probe:{name}", b.redis_prefix().unwrap()), 0, -1)
        .unwrap()
}

fn peak(b: &TestBroker) -> i64 {
    conn()
        .get::<_, Option<i64>>(format!("{}:probe:peak", b.redis_prefix().unwrap()))
        .unwrap()
        .unwrap_or(0)
}

fn probe(n: u64, sleep_ms: u64) -> Probe {
    Probe {
        n,
        sleep_ms,
        first_attempt_sleep_ms: 0,
        crash: false,
    }
}

fn client(b: &TestBroker) -> JobClient {
    JobClient::new(b.broker.clone(), std::sync::Arc::new(SystemClock))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_of_a_sigkilled_worker_is_redelivered_after_its_lease() {
    let b = TestBroker::redis("sigkill").await;
    let job = Probe {
        n: 7,
        sleep_ms: 10,
        first_attempt_sleep_ms: 60_000,
        crash: false,
    };
    client(&b).enqueue(&job).await.unwrap();
    let mut first = Node::start(&b, "worker", 4);
    wait_for("the first worker to start the job", SECS, || async {
        list(&b, "started").len() == 1
    })
    .await;
    first.sigkill();
    let _second = Node::start(&b, "worker", 4);
    wait_for("the job to finish elsewhere", SECS, || async {
        !list(&b, "done").is_empty()
    })
    .await;
    assert_eq!(
        list(&b, "done"),
        vec!["7:2"],
        "re-delivered once, the lost run counted as attempt 1"
    );
    // The handler records "done" before its worker acks the job (acks are batched): wait for
    // the ack rather than reading the counts in between.
    wait_for("the second worker's ack", SECS, || async {
        b.broker
            .stats("probe", SystemClock.now_ms())
            .await
            .unwrap()
            .processed
            == 1
    })
    .await;
    let s = b.broker.stats("probe", SystemClock.now_ms()).await.unwrap();
    assert_eq!((s.processed, s.running, s.dead), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_that_crashes_every_worker_ends_in_the_dead_set() {
    let b = TestBroker::redis("crashloop").await;
    client(&b)
        .enqueue(&Probe {
            n: 1,
            sleep_ms: 0,
            first_attempt_sleep_ms: 0,
            crash: true,
        })
        .await
        .unwrap();
    let deadline = Instant::now() + SECS;
    let dead = loop {
        let dead = b.broker.dead_list("probe", 10).await.unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(Instant::now() < deadline, "job never reached the dead set");
        // Each worker takes the job and dies; the next one reaps the lost lease.
        let mut node = Node::start(&b, "worker", 1);
        let until = Instant::now() + Duration::from_secs(5);
        while !node.exited() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(
        list(&b, "started").len(),
        3,
        "max_attempts = 3 runs, then no more"
    );
    assert!(dead[0].error.contains("lease expired"), "{}", dead[0].error);
    assert_eq!(dead[0].envelope.attempt, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_holds_across_two_worker_processes_and_changes_at_runtime() {
    let b = TestBroker::redis("capacity").await;
    b.broker.set_limit("probe", Some(3)).await.unwrap();
    let jobs: Vec<Probe> = (0..60).map(|n| probe(n, 40)).collect();
    client(&b).enqueue_bulk(&jobs).await.unwrap();
    let _a = Node::start(&b, "worker", 10);
    let _b = Node::start(&b, "worker", 10);
    wait_for("60 done", SECS, || async { list(&b, "done").len() == 60 }).await;
    assert!(peak(&b) <= 3, "peak {} over the limit of 3", peak(&b));
    assert!(peak(&b) >= 2, "the limit was used, peak {}", peak(&b));
    let pids: std::collections::HashSet<String> = list(&b, "started")
        .iter()
        .filter_map(|t| t.rsplit(':').next().map(str::to_owned))
        .collect();
    assert_eq!(pids.len(), 2, "both processes took jobs");

    // Lower it while both run: the next fetches obey it.
    b.broker.set_limit("probe", Some(1)).await.unwrap();
    let _: () = conn()
        .set(format!("{}:probe:peak", b.redis_prefix().unwrap()), 0)
        .unwrap();
    client(&b)
        .enqueue_bulk(&(100..115).map(|n| probe(n, 20)).collect::<Vec<_>>())
        .await
        .unwrap();
    wait_for("75 done", SECS, || async { list(&b, "done").len() == 75 }).await;
    assert_eq!(peak(&b), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_enqueue_each_cron_tick_once() {
    let b = TestBroker::redis("cron3").await;
    let started = Instant::now();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&b, "scheduler", 1)).collect();
    // Wait until at least 4 ticks were fired.
    wait_for("4 ticks", SECS, || async {
        b.broker
            .stats("tick", SystemClock.now_ms())
            .await
            .map(|s| s.ready >= 4)
            .unwrap_or(false)
    })
    .await;
    drop(nodes);
    let elapsed = started.elapsed().as_secs_f64();
    let ticks = b
        .broker
        .stats("tick", SystemClock.now_ms())
        .await
        .unwrap()
        .ready as f64;
    // One job per elapsed second at most (plus the boundary); three per second if every
    // scheduler had enqueued its own.
    assert!(
        ticks <= elapsed.ceil() + 1.0,
        "{ticks} jobs in {elapsed:.1}s: duplicates"
    );
}
