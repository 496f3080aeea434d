//! The typed client that enqueues jobs, and the stored form of a typed job.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::broker::{Broker, BrokerError, EnqueueOutcome, NewJob};
use super::clock::Clock;
use super::dedup::DedupMode;
use super::envelope::Envelope;
use super::job::Job;

/// Enqueues typed jobs through a broker.
#[derive(Clone)]
pub struct JobClient {
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
}

impl JobClient {
    pub fn new(broker: Arc<dyn Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<EnqueueOutcome, BrokerError> {
        self.enqueue_at(job, None).await
    }

    /// Enqueues `job` to run at `run_at_ms` (now when `None`).
    pub async fn enqueue_at<J: Job>(
        &self,
        job: &J,
        run_at_ms: Option<i64>,
    ) -> Result<EnqueueOutcome, BrokerError> {
        let now = self.clock.now_ms();
        let new = new_job(job, run_at_ms, now)?;
        let outcome = self.broker.enqueue(vec![new], now).await?;
        Ok(outcome
            .into_iter()
            .next()
            .unwrap_or(EnqueueOutcome::Duplicate))
    }

    pub async fn enqueue_in<J: Job>(
        &self,
        job: &J,
        delay: Duration,
    ) -> Result<EnqueueOutcome, BrokerError> {
        let at = self.clock.now_ms() + delay.as_millis() as i64;
        self.enqueue_at(job, Some(at)).await
    }

    /// Enqueues many jobs in one broker call.
    pub async fn enqueue_bulk<J: Job>(
        &self,
        jobs: &[J],
    ) -> Result<Vec<EnqueueOutcome>, BrokerError> {
        let now = self.clock.now_ms();
        let new = jobs
            .iter()
            .map(|j| new_job(j, None, now))
            .collect::<Result<Vec<_>, _>>()?;
        self.broker.enqueue(new, now).await
    }
}

/// Builds the stored form of a typed job: payload, attempts and dedup from its declaration.
pub fn new_job<J: Job>(
    job: &J,
    run_at_ms: Option<i64>,
    now_ms: i64,
) -> Result<NewJob, BrokerError> {
    let options = J::options();
    let payload = serde_json::to_string(job).map_err(|e| BrokerError::Invalid {
        field: "payload",
        detail: e.to_string(),
    })?;
    let mode = options.dedup.mode();
    let mut envelope = Envelope::new(J::NAME, payload, options.max_attempts, now_ms);
    if mode != DedupMode::None {
        let key = job
            .dedup_key()
            .unwrap_or_else(|| payload_digest(&envelope.payload));
        envelope = envelope.with_dedup(mode, key);
    }
    Ok(NewJob {
        envelope,
        run_at_ms,
        dedup_ttl: options.dedup.ttl,
    })
}

/// Default dedup key: the first 128 bits of the payload's SHA-256, hex.
fn payload_digest(payload: &str) -> String {
    let digest = Sha256::digest(payload.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}
