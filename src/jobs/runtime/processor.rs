//! Runs one queue in one process (Sidekiq's fetch + processor).
//!
//! Duties:
//! 1. Never claim more jobs than free local slots: wait for a slot, then fetch as many jobs as
//!    slots are free (the broker may give fewer: global limit, empty queue).
//! 2. Run each job under its timeout, map the result to an ack (complete, retry with backoff,
//!    snooze, dead), record metrics, leave the ack in the
//!    [`AckBuffer`]: the next fetch carries it (or the flusher, if none comes soon).
//! 3. Heartbeat: renew the leases of running jobs every third of the lease.
//! 4. Shutdown: stop fetching, wait up to `shutdown_timeout` for running jobs, then abort the
//!    rest and release them back to the queue without burning an attempt.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::acker::{self, AckBuffer};
use crate::jobs::broker::{Ack, Broker, Delivery, Lease};
use crate::jobs::clock::Clock;
use crate::jobs::job::{JobContext, JobError};
use crate::jobs::settle::{Failure, settle};
use crate::jobs::metrics;
use crate::jobs::registry::RegisteredJob;

/// Pause after a failed fetch (broker down) before trying again.
const FETCH_ERROR_BACKOFF: Duration = Duration::from_secs(1);

type InFlight = Arc<Mutex<HashMap<String, (Lease, AbortHandle)>>>;

pub struct Processor {
    job: RegisteredJob,
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    concurrency: usize,
    poll_interval: Duration,
    shutdown_timeout: Duration,
}

impl Processor {
    pub fn new(
        job: RegisteredJob,
        broker: Arc<dyn Broker>,
        clock: Arc<dyn Clock>,
        concurrency: usize,
        poll_interval: Duration,
        shutdown_timeout: Duration,
    ) -> Self {
        Self {
            job,
            broker,
            clock,
            concurrency,
            poll_interval,
            shutdown_timeout,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let queue = self.job.name.to_owned();
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let in_flight: InFlight = Arc::default();
        let acks = Arc::new(AckBuffer::default());
        let acker_stop = CancellationToken::new();
        let acker = tokio::spawn(acker::run(
            queue.clone(),
            self.broker.clone(),
            self.clock.clone(),
            acks.clone(),
            acker_stop.clone(),
        ));
        let heartbeat_stop = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            queue.clone(),
            self.broker.clone(),
            self.clock.clone(),
            self.job.options.lease,
            in_flight.clone(),
            heartbeat_stop.clone(),
        ));

        self.fetch_loop(&slots, &in_flight, &acks, &shutdown).await;

        // Shutdown: give running jobs their grace period, then hand back what is left.
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(self.shutdown_timeout, slots.acquire_many(all))
            .await
            .is_ok();
        if !drained {
            let leftovers: Vec<(Lease, AbortHandle)> = match in_flight.lock() {
                Ok(mut map) => map.drain().map(|(_, entry)| entry).collect(),
                Err(_) => Vec::new(),
            };
            tracing::warn!(
                queue,
                count = leftovers.len(),
                "shutdown timeout: handing unfinished jobs back"
            );
            for (lease, handle) in leftovers {
                handle.abort();
                acks.push(Ack::Release { lease });
            }
        }
        heartbeat_stop.cancel();
        let _ = heartbeat.await;
        acker_stop.cancel();
        let _ = acker.await;
        tracing::info!(queue, "queue stopped");
    }

    async fn fetch_loop(
        &self,
        slots: &Arc<Semaphore>,
        in_flight: &InFlight,
        acks: &Arc<AckBuffer>,
        shutdown: &CancellationToken,
    ) {
        let queue = self.job.name;
        loop {
            // Wait for one free slot, then take every other free one too.
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
            };
            let mut permits = first;
            // Let jobs that are about to finish do so, so one fetch takes their slots together
            // (bigger batches: fewer round trips per job).
            tokio::task::yield_now().await;
            let extra = slots.available_permits().min(u32::MAX as usize) as u32;
            if extra > 0
                && let Ok(more) = slots.clone().try_acquire_many_owned(extra)
            {
                permits.merge(more);
            }
            let wanted = permits.num_permits();
            // Finished jobs' acks ride along: one round trip frees their slots in the global
            // limit and takes the next jobs.
            let settled = acks.take();
            let fetched = self
                .broker
                .ack_and_fetch(
                    queue,
                    settled.clone(),
                    wanted,
                    self.job.options.lease,
                    self.clock.now_ms(),
                )
                .await;
            let deliveries = match fetched {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(queue, error = %e, "fetch failed; retrying");
                    acks.put_back(settled);
                    drop(permits);
                    if sleep_or_shutdown(FETCH_ERROR_BACKOFF, shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            let got = deliveries.len();
            for delivery in deliveries {
                let Some(permit) = permits.split(1) else {
                    break;
                };
                self.start(delivery, permit, in_flight, acks);
            }
            drop(permits);
            if got == 0 {
                let jitter = rand::rng().random_range(0.8..1.2);
                if sleep_or_shutdown(self.poll_interval.mul_f64(jitter), shutdown).await {
                    return;
                }
            }
        }
    }

    fn start(
        &self,
        delivery: Delivery,
        permit: tokio::sync::OwnedSemaphorePermit,
        in_flight: &InFlight,
        acks: &Arc<AckBuffer>,
    ) {
        let env = delivery.envelope;
        let lease = delivery.lease;
        let ctx = JobContext {
            id: env.id.clone(),
            queue: env.queue.clone(),
            attempt: env.attempt,
            max_attempts: env.max_attempts,
            enqueued_at_ms: env.enqueued_at_ms,
        };
        let job = self.job.clone();
        let clock = self.clock.clone();
        let acks = acks.clone();
        let map = in_flight.clone();
        let task_lease = lease.clone();
        // The map entry is inserted before the task can remove it: hold the lock across spawn.
        let mut guard = match in_flight.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let handle = tokio::spawn(async move {
            let ack = execute(&job, env.payload, ctx, task_lease, clock.as_ref()).await;
            if let Ok(mut m) = map.lock() {
                m.remove(&ack.lease().id);
            }
            acks.push(ack);
            drop(permit);
        });
        guard.insert(lease.id.clone(), (lease, handle.abort_handle()));
    }
}

/// Runs one delivery and decides its fate.
async fn execute(
    job: &RegisteredJob,
    payload: String,
    ctx: JobContext,
    lease: Lease,
    clock: &dyn Clock,
) -> Ack {
    let ctx_copy = ctx.clone();
    let started = Instant::now();
    let run = AssertUnwindSafe((job.call)(payload, ctx)).catch_unwind();
    let result = match tokio::time::timeout(job.options.timeout, run).await {
        Ok(Ok(r)) => r,
        Ok(Err(_panic)) => Err(JobError::retryable("handler panicked")),
        Err(_) => Err(JobError::retryable(format!(
            "timed out after {:?}",
            job.options.timeout
        ))),
    };
    metrics::record_run(job.name, started.elapsed());
    let result = result.map_err(|e| Failure::from(&e));
    settle(
        job.name,
        &job.options.retry,
        &ctx_copy,
        lease,
        result,
        clock.now_ms(),
    )
}

async fn heartbeat(
    queue: String,
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    lease: Duration,
    in_flight: InFlight,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(lease / 3);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let live: Vec<Lease> = match in_flight.lock() {
            Ok(map) => map.values().map(|(lease, _)| lease.clone()).collect(),
            Err(_) => continue,
        };
        if let Err(e) = broker
            .extend_leases(&queue, &live, lease, clock.now_ms())
            .await
        {
            tracing::warn!(queue, error = %e, "renewing leases failed; will retry");
        }
    }
}

/// Sleeps; true if shutdown came first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
