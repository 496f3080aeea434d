//! Cron: periodic jobs fired exactly once per tick across any number of schedulers.
//!
//! Every scheduler process wakes at each tick and asks the broker to fire it
//! ([`Broker::cron_fire`]); the broker records the last fired tick per schedule and enqueues
//! atomically, so of N schedulers exactly one enqueues each tick. After downtime a scheduler fires
//! only the latest missed tick (one catch-up), never the whole backlog of missed ticks. A schedule
//! that never fired starts with the next tick.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, BrokerError, NewJob};
use super::client::new_job;
use super::clock::Clock;
use super::job::Job;

/// Longest sleep between checks, so a clock jump or a lost wake-up costs at most this.
const MAX_SLEEP: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("cron expression {expr:?} for {name}: {source}")]
    Expression {
        name: String,
        expr: String,
        source: cron::error::Error,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

type MakeJob = Arc<dyn Fn(i64) -> Result<NewJob, BrokerError> + Send + Sync>;

/// One periodic job.
#[derive(Clone)]
pub struct CronEntry {
    pub name: String,
    pub expression: String,
    pub queue: &'static str,
    schedule: cron::Schedule,
    make: MakeJob,
}

impl CronEntry {
    /// `expression` has six or seven fields: `sec min hour day-of-month month day-of-week [year]`.
    pub fn new<J: Job + Clone>(name: &str, expression: &str, job: J) -> Result<Self, CronError> {
        let schedule =
            cron::Schedule::from_str(expression).map_err(|source| CronError::Expression {
                name: name.to_owned(),
                expr: expression.to_owned(),
                source,
            })?;
        let make: MakeJob = Arc::new(move |now_ms| new_job(&job, None, now_ms));
        Ok(Self {
            name: name.to_owned(),
            expression: expression.to_owned(),
            queue: J::NAME,
            schedule,
            make,
        })
    }

    /// The latest tick at or before `now_ms`.
    pub fn latest_tick(&self, now_ms: i64) -> Option<i64> {
        let probe = to_datetime(now_ms + 1000)?;
        self.schedule
            .after(&probe)
            .rev()
            .map(|t| t.timestamp_millis())
            .find(|t| *t <= now_ms)
    }

    /// The first tick after `now_ms`.
    pub fn next_tick(&self, now_ms: i64) -> Option<i64> {
        let now = to_datetime(now_ms)?;
        self.schedule
            .after(&now)
            .next()
            .map(|t| t.timestamp_millis())
    }
}

fn to_datetime(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// A row of `buildlogs cron list`.
#[derive(Debug, Clone)]
pub struct CronStatus {
    pub name: String,
    pub expression: String,
    pub queue: &'static str,
    pub last_fired_ms: Option<i64>,
    pub next_tick_ms: Option<i64>,
}

pub struct Scheduler {
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    entries: Vec<CronEntry>,
}

impl Scheduler {
    pub fn new(broker: Arc<dyn Broker>, clock: Arc<dyn Clock>, entries: Vec<CronEntry>) -> Self {
        Self {
            broker,
            clock,
            entries,
        }
    }

    pub async fn status(&self) -> Result<Vec<CronStatus>, CronError> {
        let now = self.clock.now_ms();
        let mut out = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            out.push(CronStatus {
                name: e.name.clone(),
                expression: e.expression.clone(),
                queue: e.queue,
                last_fired_ms: self.broker.cron_last(&e.name, e.queue).await?,
                next_tick_ms: e.next_tick(now),
            });
        }
        Ok(out)
    }

    /// Fires every tick that is due and not yet seen by this scheduler. `seen` holds, per entry,
    /// the latest tick this scheduler already handled. Returns how many ticks *this* call fired.
    pub async fn fire_due(&self, seen: &mut HashMap<String, i64>) -> Result<u32, CronError> {
        let now = self.clock.now_ms();
        let mut fired = 0;
        for e in &self.entries {
            let Some(tick) = e.latest_tick(now) else {
                continue;
            };
            if seen.get(&e.name).is_some_and(|s| *s >= tick) {
                continue;
            }
            let job = (e.make)(now)?;
            if self.broker.cron_fire(&e.name, tick, job, now).await? {
                tracing::info!(schedule = %e.name, tick_ms = tick, queue = e.queue, "cron tick fired");
                fired += 1;
            }
            seen.insert(e.name.clone(), tick);
        }
        Ok(fired)
    }

    /// What this scheduler treats as already handled at start: the stored last tick, or, for a
    /// schedule that never fired, the latest past tick (so it starts with the next one).
    pub async fn initial_seen(&self) -> Result<HashMap<String, i64>, CronError> {
        let now = self.clock.now_ms();
        let mut seen = HashMap::new();
        for e in &self.entries {
            let last = self.broker.cron_last(&e.name, e.queue).await?;
            if let Some(t) = last.or_else(|| e.latest_tick(now)) {
                seen.insert(e.name.clone(), t);
            }
        }
        Ok(seen)
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut seen = loop {
            match self.initial_seen().await {
                Ok(seen) => break seen,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler cannot read cron state; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(MAX_SLEEP) => {}
                    }
                }
            }
        };
        loop {
            if let Err(e) = self.fire_due(&mut seen).await {
                tracing::warn!(error = %e, "firing cron ticks failed; retrying at the next wake-up");
            }
            let now = self.clock.now_ms();
            let next = self.entries.iter().filter_map(|e| e.next_tick(now)).min();
            let sleep = next.map_or(MAX_SLEEP, |t| {
                Duration::from_millis((t - now).max(1) as u64).min(MAX_SLEEP)
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Tick;
    impl Job for Tick {
        const NAME: &'static str = "tick";
    }

    #[test]
    fn latest_and_next_tick_bracket_now() {
        let e = CronEntry::new("five", "0 */5 * * * *", Tick).unwrap();
        let now = Utc
            .with_ymd_and_hms(2026, 11, 25, 10, 7, 30)
            .unwrap()
            .timestamp_millis();
        let at = |h, m| {
            Utc.with_ymd_and_hms(2026, 11, 25, h, m, 0)
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(e.latest_tick(now), Some(at(10, 5)));
        assert_eq!(e.next_tick(now), Some(at(10, 10)));
        assert_eq!(
            e.latest_tick(at(10, 10)),
            Some(at(10, 10)),
            "a tick exactly now is due"
        );
    }

    #[test]
    fn rejects_a_malformed_expression_naming_the_schedule() {
        let err = CronEntry::new("broken", "every tuesday", Tick)
            .err()
            .unwrap();
        assert!(err.to_string().contains("broken"), "{err}");
    }
}
