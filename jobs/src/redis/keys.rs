//! Every Redis key the queue uses, built in one place.
//!
//! Per queue, under the base `<prefix>:{<queue>}:` (one hash tag, one cluster slot):
//! `ready` LIST of envelopes · `scheduled` ZSET envelope→run_at · `running` ZSET
//! leased envelope→lease deadline · `dead` ZSET id→died_at · `dead:data`/`dead:error` HASH
//! id→envelope/error · `retry:error` HASH id→error of its last failed run · `stats` HASH · `limit` STRING · `dedup:<key>` STRING→holder id ·
//! `active:<id>` STRING (a reschedule_once job is running) · `rerun:<id>` STRING (its one
//! pending rerun) · `cron:<schedule>` STRING→last fired tick.
//!
//! Who removes what (nothing per job outlives the job): a job's envelope leaves
//! `ready`/`scheduled`/`running` when it is fetched, promoted or settled; `dedup:<key>` is
//! deleted at fetch (`until_executing`) or when the job completes or dies, and carries the
//! dedup TTL; `active:<id>` is deleted when the job is settled in any way (or reaped) and
//! expires two leases after its last fetch or heartbeat; `rerun:<id>` is taken when its holder
//! completes or dies and carries the dedup TTL; `retry:error` of a job is set when it is
//! scheduled for a retry and deleted when it completes after that retry or dies (the dead set
//! keeps its own error); a dead job's `dead`/`dead:data`/`dead:error`
//! entries go on retry, discard or trim. Per queue, kept for the queue's life: `stats`,
//! `limit`, `cron:<schedule>`, and the global `queues` set.
//! Global: `<prefix>:queues` SET of queue names.

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn base(&self, queue: &str) -> String {
        format!("{}:{{{}}}:", self.prefix, queue)
    }

    pub fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    pub fn ready(&self, queue: &str) -> String {
        self.base(queue) + "ready"
    }

    pub fn scheduled(&self, queue: &str) -> String {
        self.base(queue) + "scheduled"
    }

    pub fn running(&self, queue: &str) -> String {
        self.base(queue) + "running"
    }

    pub fn dead(&self, queue: &str) -> String {
        self.base(queue) + "dead"
    }

    pub fn dead_data(&self, queue: &str) -> String {
        self.base(queue) + "dead:data"
    }

    pub fn dead_error(&self, queue: &str) -> String {
        self.base(queue) + "dead:error"
    }

    pub fn retry_error(&self, queue: &str) -> String {
        self.base(queue) + "retry:error"
    }

    pub fn stats(&self, queue: &str) -> String {
        self.base(queue) + "stats"
    }

    pub fn limit(&self, queue: &str) -> String {
        self.base(queue) + "limit"
    }

    pub fn cron(&self, queue: &str, schedule: &str) -> String {
        format!("{}cron:{}", self.base(queue), schedule)
    }
}
