//! `buildlogs status`: every queue's depth, latency, running jobs, limit, dead and lifetime counts;
//! then the object store's circuit breaker and stale-trace recovery. The same views the
//! dashboard serves ([`buildlogs::status`]).

use anyhow::Context;
use buildlogs::config::Settings;
use buildlogs::jobs::{Clock, SystemClock};
use buildlogs::status::{self, STALE_COUNT_MAX};

use super::table;

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let broker = settings
        .open_broker()
        .await
        .context("opening the job queue")?;
    let now = SystemClock.now_ms();
    let rows: Vec<Vec<String>> = status::queues(broker.as_ref(), now)
        .await
        .context("reading the job queue")?
        .into_iter()
        .map(|s| {
            vec![
                s.queue,
                s.ready.to_string(),
                s.scheduled.to_string(),
                s.running.to_string(),
                s.limit.map_or_else(|| "none".into(), |l| l.to_string()),
                table::millis(s.latency_ms),
                s.dead.to_string(),
                s.processed.to_string(),
                s.failed.to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no queues yet");
    } else {
        print!(
            "{}",
            table::render(
                &[
                    "queue",
                    "ready",
                    "scheduled",
                    "running",
                    "limit",
                    "latency",
                    "dead",
                    "processed",
                    "failed"
                ],
                &rows
            )
        );
    }
    let stack = settings.open_stack().await.context("opening the stores")?;
    outage(&stack, now).await
}

/// The breaker's state and stale-trace recovery (both shared through the metadata database).
async fn outage(stack: &buildlogs::config::Stack, now: i64) -> anyhow::Result<()> {
    let breaker = status::breaker(stack.meta.as_ref()).await?;
    match breaker.since_ms {
        _ if breaker.open => println!(
            "object store breaker: OPEN since {} ({}): flushes go to the database, archives wait",
            table::time(breaker.since_ms),
            breaker.reason.as_deref().unwrap_or("no reason recorded")
        ),
        Some(since) => println!(
            "object store breaker: closed since {}",
            table::time(Some(since))
        ),
        None => println!("object store breaker: closed (never opened)"),
    }
    // The last outages: when the store went down, why, and for how long.
    for change in breaker.history.iter().filter(|c| c.open).take(3) {
        let lasted = change.lasted_ms.map_or("still down".to_owned(), |ms| {
            format!("down {} s", ms / 1000)
        });
        println!(
            "  opened {} ({lasted}): {}",
            table::time(Some(change.at_ms)),
            change.reason.as_deref().unwrap_or("no reason recorded")
        );
    }
    let recovery = status::recovery(stack.meta.as_ref(), stack.meta.as_ref(), now).await?;
    let stale = if recovery.stale_more {
        format!("over {STALE_COUNT_MAX}")
    } else {
        recovery.stale.to_string()
    };
    match recovery.cursor {
        Some(0) | None => println!(
            "stale-trace recovery: between walks (next one starts at the first build); {stale} stale, last step {}",
            table::time(recovery.last_step_ms)
        ),
        Some(at) => println!(
            "stale-trace recovery: walking, at build {at}; {stale} stale, last step {}",
            table::time(recovery.last_step_ms)
        ),
    }
    Ok(())
}
