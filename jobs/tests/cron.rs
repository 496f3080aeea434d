//! Cron on each broker with an injected clock: once per tick across schedulers, one catch-up
//! after downtime, a new schedule starts with its next tick.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use buildlogs_jobs::clock::ManualClock;
use buildlogs_jobs::cron::{CronEntry, Scheduler};
use buildlogs_jobs::{Clock, Dedup, Job, JobOptions};
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use support::TestBroker;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sweep;

impl Job for Sweep {
    const NAME: &'static str = "sweep";
    fn options() -> JobOptions {
        // No dedup, so only the once-per-tick rule can prevent duplicates.
        JobOptions {
            dedup: Dedup::none(),
            ..JobOptions::default()
        }
    }
}

fn minute(m: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(2026, 11, 25, 10, m, s)
        .unwrap()
        .timestamp_millis()
}

fn scheduler(b: &TestBroker, clock: &ManualClock) -> Scheduler {
    let entry = CronEntry::new("sweep-every-minute", "0 * * * * *", Sweep).unwrap();
    Scheduler::new(b.broker.clone(), Arc::new(clock.clone()), vec![entry])
}

async fn queued(b: &TestBroker, clock: &ManualClock) -> u64 {
    b.broker
        .stats(Sweep::NAME, clock.now_ms())
        .await
        .unwrap()
        .ready
}

async fn three_schedulers_fire_each_tick_once(b: &TestBroker) {
    let clock = ManualClock::new(minute(0, 30));
    let schedulers: Vec<Scheduler> = (0..3).map(|_| scheduler(b, &clock)).collect();
    let mut seen: Vec<HashMap<String, i64>> = Vec::new();
    for s in &schedulers {
        seen.push(s.initial_seen().await.unwrap());
    }
    for tick in 1..=5 {
        clock.set_ms(minute(tick, 0) + 5);
        let mut fired = 0;
        for (s, seen) in schedulers.iter().zip(seen.iter_mut()) {
            fired += s.fire_due(seen).await.unwrap();
        }
        assert_eq!(fired, 1, "tick {tick} fired by exactly one scheduler");
    }
    assert_eq!(queued(b, &clock).await, 5);
}

async fn a_new_schedule_starts_with_its_next_tick(b: &TestBroker) {
    let clock = ManualClock::new(minute(7, 30));
    let s = scheduler(b, &clock);
    let mut seen = s.initial_seen().await.unwrap();
    assert_eq!(
        s.fire_due(&mut seen).await.unwrap(),
        0,
        "10:07:00 passed before the schedule existed"
    );
    clock.set_ms(minute(8, 0));
    assert_eq!(s.fire_due(&mut seen).await.unwrap(), 1);
    assert_eq!(s.fire_due(&mut seen).await.unwrap(), 0, "same tick again");
}

async fn downtime_replays_one_catch_up_tick_not_a_storm(b: &TestBroker) {
    let clock = ManualClock::new(minute(0, 0));
    let before = scheduler(b, &clock);
    let mut seen = before.initial_seen().await.unwrap();
    clock.set_ms(minute(1, 0));
    assert_eq!(before.fire_due(&mut seen).await.unwrap(), 1);
    // Every scheduler is down from 10:01:30 to 10:12:30: ten ticks missed.
    clock.set_ms(minute(12, 30));
    let after = scheduler(b, &clock);
    let mut seen = after.initial_seen().await.unwrap();
    assert_eq!(after.fire_due(&mut seen).await.unwrap(), 1, "one catch-up");
    assert_eq!(queued(b, &clock).await, 2);
    let status = after.status().await.unwrap();
    assert_eq!(status[0].last_fired_ms, Some(minute(12, 0)));
    assert_eq!(status[0].next_tick_ms, Some(minute(13, 0)));
}

on_both_brokers!(
    three_schedulers_fire_each_tick_once,
    a_new_schedule_starts_with_its_next_tick,
    downtime_replays_one_catch_up_tick_not_a_storm,
);
