//! The job workers' Prometheus metrics, read back through a real exporter's rendering.

mod support;

use std::time::Duration;

use buildlogs_jobs::{
    Clock, Dedup, Job, JobClient, JobError, JobOptions, RetrySchedule, SystemClock,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};
use support::TestBroker;
use support::runtime::{Behaviour, Probe, config, start, workers};
use support::wait::wait_for;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Metered {
    fail: bool,
}

impl Job for Metered {
    const NAME: &'static str = "metered";
    fn options() -> JobOptions {
        JobOptions {
            max_attempts: 2,
            retry: RetrySchedule::Fixed(Duration::from_millis(10)),
            dedup: Dedup::none(),
            ..JobOptions::default()
        }
    }
}

// A current-thread runtime, so the thread-local recorder sees every task.
#[tokio::test]
async fn workers_record_outcomes_durations_and_queue_gauges() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let b = TestBroker::sqlite("metrics").await;
    let (probe, _) = Probe::<Metered>::new(|job, _| {
        if job.fail {
            Behaviour::Fail(JobError::retryable("nope"))
        } else {
            Behaviour::Succeed
        }
    });
    let client = JobClient::new(b.broker.clone(), std::sync::Arc::new(SystemClock));
    client
        .enqueue_bulk(&[
            Metered { fail: false },
            Metered { fail: false },
            Metered { fail: true },
        ])
        .await
        .unwrap();
    let mut cfg = config(4);
    cfg.stats_interval = Duration::from_millis(50);
    let (stop, done) = start(workers(&b.broker, cfg).register(probe));
    wait_for("2 processed, 1 dead", Duration::from_secs(20), || async {
        let s = b
            .broker
            .stats(Metered::NAME, SystemClock.now_ms())
            .await
            .unwrap();
        s.processed == 2 && s.dead == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(120)).await; // one more gauge sample
    stop.cancel();
    done.await.unwrap();

    let text = handle.render();
    for line in [
        r#"buildlogs_jobs_processed_total{job="metered"} 2"#,
        r#"buildlogs_jobs_retried_total{job="metered"} 1"#,
        r#"buildlogs_jobs_failed_total{job="metered"} 2"#,
        r#"buildlogs_jobs_dead_total{job="metered"} 1"#,
        r#"buildlogs_job_duration_seconds_count{job="metered"} 4"#,
        r#"buildlogs_queue_depth{job="metered",state="dead"} 1"#,
        r#"buildlogs_queue_depth{job="metered",state="ready"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
