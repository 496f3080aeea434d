//! Helpers for tests of the job workers: a configurable probe handler that records what it saw,
//! and workers run in the background (waiting on conditions: [`super::wait`]).
#![allow(dead_code)]

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buildlogs_jobs::apalis::{WorkerConfig, Workers};
use buildlogs_jobs::{Broker, Job, JobContext, JobError, JobHandler, SystemClock};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the probe does on one run.
pub enum Behaviour {
    Succeed,
    Fail(JobError),
    SleepThenSucceed(Duration),
    Panic,
}

type Decide<J> = dyn Fn(&J, &JobContext) -> Behaviour + Send + Sync;

/// Records every run (payload debug string, attempt) and the peak of concurrent runs.
#[derive(Default)]
pub struct Observed {
    pub runs: Mutex<Vec<(String, u32)>>,
    running: AtomicUsize,
    pub peak: AtomicUsize,
    pub started: AtomicUsize,
}

impl Observed {
    pub fn runs(&self) -> Vec<(String, u32)> {
        self.runs.lock().unwrap().clone()
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    pub fn reset_peak(&self) {
        self.peak
            .store(self.running.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
}

pub struct Probe<J> {
    pub observed: Arc<Observed>,
    decide: Arc<Decide<J>>,
    _job: PhantomData<fn() -> J>,
}

impl<J: Job + std::fmt::Debug> Probe<J> {
    pub fn new(
        decide: impl Fn(&J, &JobContext) -> Behaviour + Send + Sync + 'static,
    ) -> (Self, Arc<Observed>) {
        let observed = Arc::new(Observed::default());
        (
            Self {
                observed: observed.clone(),
                decide: Arc::new(decide),
                _job: PhantomData,
            },
            observed,
        )
    }
}

impl<J: Job + std::fmt::Debug> JobHandler for Probe<J> {
    type Job = J;

    async fn perform(&self, job: J, ctx: JobContext) -> Result<(), JobError> {
        let o = &self.observed;
        o.started.fetch_add(1, Ordering::SeqCst);
        let now = o.running.fetch_add(1, Ordering::SeqCst) + 1;
        o.peak.fetch_max(now, Ordering::SeqCst);
        o.runs
            .lock()
            .unwrap()
            .push((format!("{job:?}"), ctx.attempt));
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&o.running);
        match (self.decide)(&job, &ctx) {
            Behaviour::Succeed => Ok(()),
            Behaviour::Fail(e) => Err(e),
            Behaviour::SleepThenSucceed(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Behaviour::Panic => panic!("probe asked to panic"),
        }
    }
}

/// Workers over `broker` tuned by `config`, to register handlers on.
pub fn workers(broker: &Arc<dyn Broker>, config: WorkerConfig) -> Workers {
    Workers::new(broker.clone(), Arc::new(SystemClock), config)
}

/// `workers` running in the background until the returned token is cancelled.
pub fn start(workers: Workers) -> (CancellationToken, JoinHandle<()>) {
    let token = CancellationToken::new();
    let handle = tokio::spawn(workers.run(token.clone()));
    (token, handle)
}

/// Fast polling so tests are quick; everything else default.
pub fn config(concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        poll_interval: Duration::from_millis(10),
        shutdown_timeout: Duration::from_secs(5),
        reap_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}
