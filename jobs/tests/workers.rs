//! The job workers (apalis, over each broker) end to end: handlers run, results become acks, retries
//! follow the schedule, limits hold, shutdown is graceful.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use buildlogs_jobs::broker::NewJob;
use buildlogs_jobs::limited_capacity::{
    LimitedCapacityHandler, LimitedCapacityWork, perform_with_capacity,
};
use buildlogs_jobs::{
    Clock, Dedup, Envelope, Job, JobClient, JobError, JobOptions, RetrySchedule, SystemClock,
};
use serde::{Deserialize, Serialize};
use support::TestBroker;
use support::runtime::{Behaviour, Probe, config, start, workers};
use support::wait::{wait_for, wait_for_value};

const SECS: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    n: u64,
}

impl Job for Work {
    const NAME: &'static str = "work";

    fn options() -> JobOptions {
        JobOptions {
            max_attempts: 3,
            retry: RetrySchedule::Fixed(Duration::from_millis(20)),
            dedup: Dedup::none(),
            timeout: Duration::from_millis(300),
            ..JobOptions::default()
        }
    }
}

fn client(b: &TestBroker) -> JobClient {
    JobClient::new(b.broker.clone(), Arc::new(SystemClock))
}

async fn stats(b: &TestBroker) -> buildlogs_jobs::QueueStats {
    b.broker
        .stats(Work::NAME, SystemClock.now_ms())
        .await
        .unwrap()
}

async fn runs_every_job_once_and_acks_it(b: &TestBroker) {
    let (probe, seen) = Probe::<Work>::new(|_, _| Behaviour::Succeed);
    let jobs: Vec<Work> = (0..200).map(|n| Work { n }).collect();
    client(b).enqueue_bulk(&jobs).await.unwrap();
    let (stop, done) = start(workers(&b.broker, config(8)).register(probe));
    wait_for("200 processed", SECS, || async {
        stats(b).await.processed == 200
    })
    .await;
    stop.cancel();
    done.await.unwrap();
    let mut ns: Vec<String> = seen.runs().into_iter().map(|(j, _)| j).collect();
    ns.sort();
    ns.dedup();
    assert_eq!(ns.len(), 200, "every job ran");
    let s = stats(b).await;
    assert_eq!((s.ready, s.running, s.failed), (0, 0, 0));
}

async fn retryable_failure_follows_the_schedule_then_goes_dead(b: &TestBroker) {
    let (probe, seen) =
        Probe::<Work>::new(|_, _| Behaviour::Fail(JobError::retryable("storage unreachable")));
    client(b).enqueue(&Work { n: 1 }).await.unwrap();
    let (stop, done) = start(workers(&b.broker, config(2)).register(probe));
    wait_for("dead", SECS, || async { stats(b).await.dead == 1 }).await;
    stop.cancel();
    done.await.unwrap();
    let attempts: Vec<u32> = seen.runs().into_iter().map(|(_, a)| a).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let dead = b.broker.dead_list(Work::NAME, 10).await.unwrap();
    assert!(
        dead[0].error.contains("storage unreachable"),
        "{}",
        dead[0].error
    );
    assert_eq!(stats(b).await.failed, 3);
}

async fn fatal_failure_goes_straight_to_the_dead_set(b: &TestBroker) {
    let (probe, seen) =
        Probe::<Work>::new(|_, _| Behaviour::Fail(JobError::fatal("checksum mismatch")));
    client(b).enqueue(&Work { n: 1 }).await.unwrap();
    let (stop, done) = start(workers(&b.broker, config(2)).register(probe));
    wait_for("dead", SECS, || async { stats(b).await.dead == 1 }).await;
    stop.cancel();
    done.await.unwrap();
    assert_eq!(seen.runs().len(), 1, "no retry after a fatal error");
}

async fn snooze_runs_again_later_without_burning_an_attempt(b: &TestBroker) {
    // The first delivery snoozes; the second (same attempt number) succeeds.
    let snoozed = std::sync::atomic::AtomicBool::new(false);
    let (probe, seen) = Probe::<Work>::new(move |_, _| {
        if snoozed.swap(true, Ordering::SeqCst) {
            Behaviour::Succeed
        } else {
            Behaviour::Fail(JobError::Snooze(Duration::from_millis(50)))
        }
    });
    client(b).enqueue(&Work { n: 1 }).await.unwrap();
    let (stop, done) = start(workers(&b.broker, config(2)).register(probe));
    wait_for("processed", SECS, || async {
        stats(b).await.processed == 1
    })
    .await;
    stop.cancel();
    done.await.unwrap();
    let attempts: Vec<u32> = seen.runs().into_iter().map(|(_, a)| a).collect();
    assert_eq!(attempts, vec![1, 1]);
    assert_eq!(stats(b).await.failed, 0);
}

async fn timeout_and_panic_are_retryable_failures(b: &TestBroker) {
    let (probe, seen) = Probe::<Work>::new(|job, ctx| match (job.n, ctx.attempt) {
        (1, 1) => Behaviour::SleepThenSucceed(Duration::from_secs(5)), // past the 300 ms timeout
        (2, 1) => Behaviour::Panic,
        _ => Behaviour::Succeed,
    });
    client(b)
        .enqueue_bulk(&[Work { n: 1 }, Work { n: 2 }])
        .await
        .unwrap();
    let (stop, done) = start(workers(&b.broker, config(2)).register(probe));
    wait_for("both processed", SECS, || async {
        stats(b).await.processed == 2
    })
    .await;
    stop.cancel();
    done.await.unwrap();
    let mut runs = seen.runs();
    runs.sort();
    assert_eq!(
        runs,
        vec![
            ("Work { n: 1 }".into(), 1),
            ("Work { n: 1 }".into(), 2),
            ("Work { n: 2 }".into(), 1),
            ("Work { n: 2 }".into(), 2)
        ]
    );
    assert_eq!(stats(b).await.failed, 2);
}

async fn undecodable_payload_goes_to_the_dead_set(b: &TestBroker) {
    let (probe, seen) = Probe::<Work>::new(|_, _| Behaviour::Succeed);
    let env = Envelope::new(Work::NAME, "not json".into(), 3, SystemClock.now_ms());
    let job = NewJob {
        envelope: env,
        run_at_ms: None,
        dedup_ttl: Duration::from_secs(60),
    };
    b.broker
        .enqueue(vec![job], SystemClock.now_ms())
        .await
        .unwrap();
    let (stop, done) = start(workers(&b.broker, config(2)).register(probe));
    wait_for("dead", SECS, || async { stats(b).await.dead == 1 }).await;
    stop.cancel();
    done.await.unwrap();
    assert!(seen.runs().is_empty());
    let dead = b.broker.dead_list(Work::NAME, 1).await.unwrap();
    assert!(
        dead[0].error.contains("cannot decode work payload"),
        "{}",
        dead[0].error
    );
}

async fn shutdown_finishes_short_jobs_and_hands_long_ones_back(b: &TestBroker) {
    // Long jobs need a timeout past the test; `Work`'s is 300 ms, so they get their own type.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Slow(u64);
    impl Job for Slow {
        const NAME: &'static str = "slow";
        fn options() -> JobOptions {
            JobOptions {
                dedup: Dedup::none(),
                timeout: Duration::from_secs(120),
                ..JobOptions::default()
            }
        }
    }
    let (slow, slow_seen) =
        Probe::<Slow>::new(|_, _| Behaviour::SleepThenSucceed(Duration::from_secs(60)));
    let (fast, fast_seen) =
        Probe::<Work>::new(|_, _| Behaviour::SleepThenSucceed(Duration::from_millis(100)));
    client(b)
        .enqueue_bulk(&[Work { n: 0 }, Work { n: 1 }])
        .await
        .unwrap();
    client(b).enqueue_bulk(&[Slow(0), Slow(1)]).await.unwrap();
    let mut cfg = config(4);
    cfg.shutdown_timeout = Duration::from_millis(600);
    let (stop, done) = start(workers(&b.broker, cfg).register(fast).register(slow));
    wait_for("all four started", SECS, || async {
        fast_seen.started() == 2 && slow_seen.started() == 2
    })
    .await;
    stop.cancel();
    done.await.unwrap();
    let now = SystemClock.now_ms();
    let fast_stats = b.broker.stats(Work::NAME, now).await.unwrap();
    assert_eq!(
        (fast_stats.processed, fast_stats.running),
        (2, 0),
        "short jobs finished within the grace period"
    );
    let slow_stats = b.broker.stats(Slow::NAME, now).await.unwrap();
    assert_eq!(
        (slow_stats.ready, slow_stats.running, slow_stats.processed),
        (2, 0, 0),
        "long jobs handed back"
    );
    let again = b
        .broker
        .fetch(Slow::NAME, 10, Duration::from_secs(30), now)
        .await
        .unwrap();
    assert!(
        again.iter().all(|d| d.envelope.attempt == 1),
        "a hand-back burns no attempt"
    );
}

async fn local_concurrency_is_never_exceeded(b: &TestBroker) {
    let (probe, seen) =
        Probe::<Work>::new(|_, _| Behaviour::SleepThenSucceed(Duration::from_millis(20)));
    client(b)
        .enqueue_bulk(&(0..30).map(|n| Work { n }).collect::<Vec<_>>())
        .await
        .unwrap();
    let (stop, done) = start(workers(&b.broker, config(3)).register(probe));
    wait_for("30 processed", SECS, || async {
        stats(b).await.processed == 30
    })
    .await;
    stop.cancel();
    done.await.unwrap();
    assert_eq!(seen.peak(), 3);
}

/// Samples the queue's leased jobs (the broker's `running`: running, or fetched and waiting to
/// start) every millisecond until `done` holds; returns the most seen.
async fn peak_leased_until(
    b: &TestBroker,
    done: impl Fn(&buildlogs_jobs::QueueStats) -> bool,
) -> u64 {
    let peak = AtomicU64::new(0);
    let every = Duration::from_millis(1);
    wait_for_value("the queue to get there", SECS, every, || async {
        let s = stats(b).await;
        peak.fetch_max(s.running, Ordering::SeqCst);
        done(&s).then_some(())
    })
    .await;
    peak.load(Ordering::SeqCst)
}

async fn short_jobs_are_fetched_ahead_never_run_past_the_concurrency_and_go_back(b: &TestBroker) {
    let (probe, seen) = Probe::<Work>::new(|_, _| Behaviour::Succeed);
    client(b)
        .enqueue_bulk(&(0..10_000).map(|n| Work { n }).collect::<Vec<_>>())
        .await
        .unwrap();
    let (stop, done) = start(workers(&b.broker, config(3)).register(probe));
    let peak = peak_leased_until(b, |s| s.processed >= 300).await;
    stop.cancel();
    done.await.unwrap();
    // The worker holds at most 6 (3 running, 3 ahead); the broker also counts finished jobs
    // whose acks are on their way (riding on the next fetch, or sent after the linger).
    assert!(
        (4..=12).contains(&peak),
        "leased ahead, and bounded: {peak}"
    );
    assert!(seen.peak() <= 3, "ran {} at once", seen.peak());
    let s = stats(b).await;
    assert_eq!(s.running, 0, "what was fetched ahead went back on shutdown");
    assert_eq!(s.ready + s.processed, 10_000);
    assert_eq!(seen.runs().len() as u64, s.processed, "each ran once");
}

async fn global_limit_holds_across_worker_sets_and_changes_at_runtime(b: &TestBroker) {
    let (probe, seen) =
        Probe::<Work>::new(|_, _| Behaviour::SleepThenSucceed(Duration::from_millis(30)));
    let shared = Arc::new(probe);
    b.broker.set_limit(Work::NAME, Some(3)).await.unwrap();
    client(b)
        .enqueue_bulk(&(0..40).map(|n| Work { n }).collect::<Vec<_>>())
        .await
        .unwrap();
    // Two sets of workers of concurrency 10 each, as two worker processes would be.
    let (stop1, done1) =
        start(workers(&b.broker, config(10)).register(SharedProbe(shared.clone())));
    let (stop2, done2) =
        start(workers(&b.broker, config(10)).register(SharedProbe(shared.clone())));
    wait_for("40 processed", SECS, || async {
        stats(b).await.processed == 40
    })
    .await;
    assert!(
        seen.peak() <= 3 && seen.peak() >= 2,
        "peak {} with limit 3",
        seen.peak()
    );

    b.broker.set_limit(Work::NAME, Some(1)).await.unwrap();
    seen.reset_peak();
    client(b)
        .enqueue_bulk(&(0..10).map(|n| Work { n }).collect::<Vec<_>>())
        .await
        .unwrap();
    wait_for("50 processed", SECS, || async {
        stats(b).await.processed == 50
    })
    .await;
    assert_eq!(seen.peak(), 1, "the lowered limit applies without restart");
    stop1.cancel();
    stop2.cancel();
    done1.await.unwrap();
    done2.await.unwrap();
}

/// Lets two worker sets share one probe (and its observations).
struct SharedProbe(Arc<Probe<Work>>);

impl buildlogs_jobs::JobHandler for SharedProbe {
    type Job = Work;

    async fn perform(&self, job: Work, ctx: buildlogs_jobs::JobContext) -> Result<(), JobError> {
        self.0.perform(job, ctx).await
    }
}

/// 25 units of work, one per run; at most 3 runs at once.
struct Backlog {
    left: AtomicU64,
    done: AtomicU64,
    probe: Probe<Unit>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Unit;

impl Job for Unit {
    const NAME: &'static str = "unit";
    fn options() -> JobOptions {
        JobOptions {
            dedup: Dedup::none(),
            ..JobOptions::default()
        }
    }
}

impl LimitedCapacityWork for Backlog {
    type Job = Unit;

    fn max_running(&self) -> u32 {
        3
    }

    async fn remaining_work(&self) -> Result<u64, JobError> {
        Ok(self.left.load(Ordering::SeqCst))
    }

    async fn perform_work(&self) -> Result<(), JobError> {
        let taken = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
            .is_ok();
        use buildlogs_jobs::JobHandler;
        self.probe
            .perform(
                Unit,
                buildlogs_jobs::JobContext {
                    id: String::new(),
                    queue: String::new(),
                    attempt: 1,
                    max_attempts: 1,
                    enqueued_at_ms: 0,
                },
            )
            .await?;
        if taken {
            self.done.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

async fn limited_capacity_worker_keeps_max_running_busy_until_work_runs_out(b: &TestBroker) {
    let (probe, seen) =
        Probe::<Unit>::new(|_, _| Behaviour::SleepThenSucceed(Duration::from_millis(15)));
    let work = Arc::new(Backlog {
        left: AtomicU64::new(25),
        done: AtomicU64::new(0),
        probe,
    });
    let c = client(b);
    assert_eq!(
        perform_with_capacity(&c, work.as_ref()).await.unwrap(),
        3,
        "starts max_running copies"
    );
    assert_eq!(
        perform_with_capacity(&c, work.as_ref()).await.unwrap(),
        0,
        "never more than max_running"
    );
    // An operator widens the fan-out at runtime; the pattern follows the queue's limit.
    b.broker.set_limit(Unit::NAME, Some(4)).await.unwrap();
    assert_eq!(perform_with_capacity(&c, work.as_ref()).await.unwrap(), 1);
    b.broker.set_limit(Unit::NAME, Some(3)).await.unwrap();
    let handler = LimitedCapacityHandler::new(work.clone(), c.clone());
    let (stop, done) = start(workers(&b.broker, config(10)).register(handler));
    let now = || SystemClock.now_ms();
    wait_for("work drained and queue idle", SECS, || async {
        let s = b.broker.stats(Unit::NAME, now()).await.unwrap();
        work.done.load(Ordering::SeqCst) == 25 && s.ready + s.scheduled + s.running == 0
    })
    .await;
    stop.cancel();
    done.await.unwrap();
    assert!(seen.peak() <= 3, "peak {}", seen.peak());
    assert!(seen.peak() >= 2, "capacity was used: peak {}", seen.peak());
}

on_both_brokers!(
    runs_every_job_once_and_acks_it,
    retryable_failure_follows_the_schedule_then_goes_dead,
    fatal_failure_goes_straight_to_the_dead_set,
    snooze_runs_again_later_without_burning_an_attempt,
    timeout_and_panic_are_retryable_failures,
    undecodable_payload_goes_to_the_dead_set,
    shutdown_finishes_short_jobs_and_hands_long_ones_back,
    local_concurrency_is_never_exceeded,
    short_jobs_are_fetched_ahead_never_run_past_the_concurrency_and_go_back,
    global_limit_holds_across_worker_sets_and_changes_at_runtime,
    limited_capacity_worker_keeps_max_running_busy_until_work_runs_out,
);
