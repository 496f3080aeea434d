//! The production broker: one Lua script per queue operation, batched.
//!
//! Per-job Redis work is O(1) in the backlog: fetch pops with `LPOP count`, leases are a ZSET
//! keyed by "id|attempt", acks remove exactly those members. Scheduled jobs are promoted inside
//! `fetch` in bounded batches (`PROMOTE_BATCH`), so 100,000 retries due at once drain in slices.

mod keys;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

pub use keys::Keys;

use super::broker::{
    Ack, Broker, BrokerError, DeadJob, DeadSetBounds, Delivery, EnqueueOutcome, Lease, NewJob,
    QueueStats, ReapReport, ScheduledJob,
};
use super::envelope::Envelope;

/// How many due scheduled jobs one fetch moves to ready at most: enough to keep up with
/// 50k jobs/s at a few hundred fetches a second, small enough that one script stays well
/// under a millisecond.
const PROMOTE_BATCH: usize = 1000;

/// Connection attempts at start before giving up.
const CONNECT_RETRIES: usize = 2;

/// At most this many dead jobs are trimmed per call, so trimming never blocks Redis.
const TRIM_BUDGET: usize = 1000;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/lib.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

struct Scripts {
    enqueue: Script,
    fetch: Script,
    ack: Script,
    ack_fetch: Script,
    reap: Script,
    extend: Script,
    dead: Script,
    dead_trim: Script,
    cron_fire: Script,
    release: Script,
}

pub struct RedisBroker {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Scripts,
    /// Queues this process already registered in the `queues` set (one SADD per queue per process).
    registered: Mutex<HashSet<String>>,
}

impl RedisBroker {
    /// Connects to `url`; every key starts with `prefix` (tests use one prefix each).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BrokerError> {
        Ok(Self::new(connection(url).await?, prefix))
    }

    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            keys: Keys::new(prefix),
            scripts: Scripts {
                enqueue: script!("enqueue.lua"),
                fetch: script!("fetch.lua"),
                ack: script!("ack.lua"),
                ack_fetch: script!("ack_fetch.lua"),
                reap: script!("reap.lua"),
                extend: script!("extend.lua"),
                dead: script!("dead.lua"),
                dead_trim: script!("dead_trim.lua"),
                cron_fire: script!("cron_fire.lua"),
                release: script!("release.lua"),
            },
            registered: Mutex::new(HashSet::new()),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn register_queue(&self, queue: &str) -> Result<(), BrokerError> {
        let known = self
            .registered
            .lock()
            .map(|set| set.contains(queue))
            .unwrap_or(false);
        if !known {
            let mut conn = self.conn.clone();
            let _: () = conn.sadd(self.keys.queues(), queue).await?;
            if let Ok(mut set) = self.registered.lock() {
                set.insert(queue.to_owned());
            }
        }
        Ok(())
    }
}

/// A managed, multiplexed connection to `url`. Fails fast when Redis is unreachable at start (a
/// CLI answers in about a second; a worker exits and its supervisor restarts it); once
/// connected, it reconnects by itself after a Redis restart.
pub async fn connection(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(CONNECT_RETRIES)
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    ConnectionManager::new_with_config(client, config).await
}

fn ttl_ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// Leased envelopes as stored → deliveries (the attempt counts the run being delivered).
fn deliveries(
    queue: &str,
    stored: Vec<String>,
    now_ms: i64,
    lease: Duration,
) -> Result<Vec<Delivery>, BrokerError> {
    let lease_until_ms = now_ms + lease.as_millis() as i64;
    stored
        .into_iter()
        .map(|raw| {
            let mut envelope = decode(queue, &raw)?;
            envelope.attempt += 1;
            let lease = Lease {
                id: envelope.id.clone(),
                attempt: envelope.attempt,
                token: raw,
            };
            Ok(Delivery {
                envelope,
                lease,
                lease_until_ms,
            })
        })
        .collect()
}

/// Appends the ack quads (op, leased envelope, a, b) the scripts' `ack_all` reads.
fn push_acks(
    inv: &mut redis::ScriptInvocation<'_>,
    queue: &str,
    acks: &[Ack],
) -> Result<(), BrokerError> {
    for ack in acks {
        match ack {
            // A run after the first may follow a retry whose error is kept: "c" drops it;
            // first runs, nearly all, stay on the cheap path.
            Ack::Complete { lease } if lease.attempt > 1 => {
                inv.arg("c").arg(&lease.token).arg("").arg("")
            }
            Ack::Complete { lease } => inv.arg("C").arg(&lease.token).arg("").arg(""),
            Ack::Retry {
                lease,
                run_at_ms,
                error,
            } => inv
                .arg("R")
                .arg(&lease.token)
                .arg(spent(queue, lease)?)
                .arg(format!("{run_at_ms}|{error}")),
            Ack::Snooze { lease, run_at_ms } => {
                inv.arg("S").arg(&lease.token).arg(run_at_ms).arg("")
            }
            Ack::Dead { lease, error } => inv
                .arg("D")
                .arg(&lease.token)
                .arg(spent(queue, lease)?)
                .arg(error),
            Ack::Release { lease } => inv.arg("L").arg(&lease.token).arg("").arg(""),
        };
    }
    Ok(())
}

/// The stored form of a delivery with its run counted (what a retry or the dead set keeps).
fn spent(queue: &str, lease: &Lease) -> Result<String, BrokerError> {
    let mut envelope = decode(queue, &lease.token)?;
    envelope.attempt = lease.attempt;
    Ok(envelope.encode())
}

fn decode(queue: &str, raw: &str) -> Result<Envelope, BrokerError> {
    Envelope::decode(raw).map_err(|e| match e {
        BrokerError::Corrupt { detail, .. } => BrokerError::Corrupt {
            queue: queue.to_owned(),
            detail,
        },
        other => other,
    })
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now_ms: i64,
    ) -> Result<Vec<EnqueueOutcome>, BrokerError> {
        // Group by queue, keeping each job's position for the outcome list.
        let mut by_queue: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            job.envelope.validate()?;
            match by_queue.iter_mut().find(|(q, _)| *q == job.envelope.queue) {
                Some((_, idx)) => idx.push(i),
                None => by_queue.push((job.envelope.queue.clone(), vec![i])),
            }
        }
        let mut outcomes = vec![EnqueueOutcome::Duplicate; jobs.len()];
        for (queue, idx) in by_queue {
            self.register_queue(&queue).await?;
            let mut inv = self.scripts.enqueue.key(self.keys.base(&queue));
            inv.arg(now_ms);
            for &i in &idx {
                let job = &jobs[i];
                inv.arg(job.envelope.encode())
                    .arg(job.run_at_ms.unwrap_or(0))
                    .arg(ttl_ms(job.dedup_ttl));
            }
            let codes: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await?;
            for (&i, code) in idx.iter().zip(codes) {
                outcomes[i] = match code {
                    1 => EnqueueOutcome::Enqueued,
                    2 => EnqueueOutcome::RescheduledOnce,
                    _ => EnqueueOutcome::Duplicate,
                };
            }
        }
        Ok(outcomes)
    }

    async fn fetch(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let stored: Vec<String> = self
            .scripts
            .fetch
            .key(self.keys.base(queue))
            .arg(now_ms)
            .arg(max)
            .arg(lease.as_millis() as u64)
            .arg(PROMOTE_BATCH)
            .arg(0)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(deliveries(queue, stored, now_ms, lease)?)
    }

    async fn ack(&self, queue: &str, acks: Vec<Ack>, now_ms: i64) -> Result<(), BrokerError> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut inv = self.scripts.ack.key(self.keys.base(queue));
        inv.arg(now_ms);
        push_acks(&mut inv, queue, &acks)?;
        let _: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn ack_and_fetch(
        &self,
        queue: &str,
        acks: Vec<Ack>,
        max: usize,
        ahead: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let mut inv = self.scripts.ack_fetch.key(self.keys.base(queue));
        inv.arg(now_ms)
            .arg(max)
            .arg(lease.as_millis() as u64)
            .arg(PROMOTE_BATCH)
            .arg(ahead);
        push_acks(&mut inv, queue, &acks)?;
        let stored: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        deliveries(queue, stored, now_ms, lease)
    }

    async fn extend_leases(
        &self,
        queue: &str,
        leases: &[Lease],
        lease: Duration,
        now_ms: i64,
    ) -> Result<(), BrokerError> {
        if leases.is_empty() {
            return Ok(());
        }
        let mut inv = self.scripts.extend.key(self.keys.base(queue));
        inv.arg(now_ms + lease.as_millis() as i64)
            .arg(lease.as_millis() as u64);
        for l in leases {
            inv.arg(&l.token);
        }
        let _: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn reap_expired(
        &self,
        queue: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<ReapReport, BrokerError> {
        let (redelivered, dead): (u64, u64) = self
            .scripts
            .reap
            .key(self.keys.base(queue))
            .arg(now_ms)
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(ReapReport { redelivered, dead })
    }

    async fn set_limit(&self, queue: &str, limit: Option<u32>) -> Result<(), BrokerError> {
        self.register_queue(queue).await?;
        let mut conn = self.conn.clone();
        match limit {
            Some(n) => conn.set::<_, _, ()>(self.keys.limit(queue), n).await?,
            None => conn.del::<_, ()>(self.keys.limit(queue)).await?,
        }
        Ok(())
    }

    async fn queues(&self) -> Result<Vec<String>, BrokerError> {
        let mut queues: Vec<String> = self.conn.clone().smembers(self.keys.queues()).await?;
        queues.sort();
        Ok(queues)
    }

    async fn stats(&self, queue: &str, now_ms: i64) -> Result<QueueStats, BrokerError> {
        let k = &self.keys;
        #[allow(clippy::type_complexity)]
        let (ready, scheduled, running, dead, limit, head, (processed, failed)): (
            u64,
            u64,
            u64,
            u64,
            Option<u32>,
            Option<String>,
            (Option<u64>, Option<u64>),
        ) = redis::pipe()
            .llen(k.ready(queue))
            .zcard(k.scheduled(queue))
            .zcard(k.running(queue))
            .zcard(k.dead(queue))
            .get(k.limit(queue))
            .lindex(k.ready(queue), 0)
            .hmget(k.stats(queue), &["processed", "failed"])
            .query_async(&mut self.conn.clone())
            .await?;
        let latency_ms = match head {
            Some(raw) => (now_ms - decode(queue, &raw)?.enqueued_at_ms).max(0),
            None => 0,
        };
        Ok(QueueStats {
            queue: queue.to_owned(),
            ready,
            scheduled,
            running,
            dead,
            limit,
            latency_ms,
            processed: processed.unwrap_or(0),
            failed: failed.unwrap_or(0),
        })
    }

    async fn dead_list(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, BrokerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let entries: Vec<(String, i64)> = conn
            .zrevrange_withscores(self.keys.dead(queue), 0, limit as isize - 1)
            .await?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&String> = entries.iter().map(|(id, _)| id).collect();
        let (data, errors): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
            .hmget(self.keys.dead_data(queue), &ids)
            .hmget(self.keys.dead_error(queue), &ids)
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(entries.len());
        for (((_, died_at_ms), raw), error) in entries.iter().zip(data).zip(errors) {
            if let Some(raw) = raw {
                out.push(DeadJob {
                    envelope: decode(queue, &raw)?,
                    died_at_ms: *died_at_ms,
                    error: error.unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    async fn scheduled_list(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<ScheduledJob>, BrokerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let entries: Vec<(String, i64)> = conn
            .zrange_withscores(self.keys.scheduled(queue), 0, limit as isize - 1)
            .await?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let envelopes = entries
            .iter()
            .map(|(raw, _)| decode(queue, raw))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<&String> = envelopes.iter().map(|e| &e.id).collect();
        // HMGET explicitly: one field through `hget` would be an HGET, and its nil no list.
        let errors: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.retry_error(queue))
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        Ok(envelopes
            .into_iter()
            .zip(entries)
            .zip(errors)
            .map(|((envelope, (_, run_at_ms)), last_error)| ScheduledJob {
                envelope,
                run_at_ms,
                last_error,
            })
            .collect())
    }

    async fn dead_retry(&self, queue: &str, id: &str, _now_ms: i64) -> Result<bool, BrokerError> {
        let found: i64 = self
            .scripts
            .dead
            .key(self.keys.base(queue))
            .arg("retry")
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(found == 1)
    }

    async fn dead_discard(&self, queue: &str, id: &str) -> Result<bool, BrokerError> {
        let found: i64 = self
            .scripts
            .dead
            .key(self.keys.base(queue))
            .arg("discard")
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(found == 1)
    }

    async fn release_scheduled(
        &self,
        queue: &str,
        max: usize,
        now_ms: i64,
    ) -> Result<u64, BrokerError> {
        let released: u64 = self
            .scripts
            .release
            .key(self.keys.base(queue))
            .arg(now_ms)
            .arg(max)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(released)
    }

    async fn dead_trim(
        &self,
        queue: &str,
        bounds: DeadSetBounds,
        now_ms: i64,
    ) -> Result<u64, BrokerError> {
        let cutoff = now_ms - bounds.max_age.as_millis() as i64;
        let removed: u64 = self
            .scripts
            .dead_trim
            .key(self.keys.base(queue))
            .arg(cutoff)
            .arg(bounds.max_jobs)
            .arg(TRIM_BUDGET)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(removed)
    }

    async fn cron_fire(
        &self,
        schedule: &str,
        tick_ms: i64,
        job: NewJob,
        now_ms: i64,
    ) -> Result<bool, BrokerError> {
        job.envelope.validate()?;
        super::broker::validate_schedule_name(schedule)?;
        let queue = job.envelope.queue.clone();
        self.register_queue(&queue).await?;
        let fired: i64 = self
            .scripts
            .cron_fire
            .key(self.keys.base(&queue))
            .arg(schedule)
            .arg(tick_ms)
            .arg(now_ms)
            .arg(job.envelope.encode())
            .arg(job.run_at_ms.unwrap_or(0))
            .arg(ttl_ms(job.dedup_ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(fired == 1)
    }

    async fn cron_last(&self, schedule: &str, queue: &str) -> Result<Option<i64>, BrokerError> {
        Ok(self
            .conn
            .clone()
            .get(self.keys.cron(queue, schedule))
            .await?)
    }
}
