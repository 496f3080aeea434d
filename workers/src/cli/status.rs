//! `buildlogs status`: every queue's depth, latency, running jobs, limit, dead and lifetime counts;
//! then the object store's circuit breaker and where stale-trace recovery's walk is.

use anyhow::Context;
use buildlogs::config::Settings;
use buildlogs::jobs::{Clock, SystemClock};
use buildlogs::traces::breaker::OBJECT_STORE_BREAKER;
use buildlogs::traces::recovery::RECOVERY_CURSOR;

use super::table;

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let broker = settings
        .open_broker()
        .await
        .context("opening the job queue")?;
    let now = SystemClock.now_ms();
    let mut rows = Vec::new();
    for queue in broker.queues().await? {
        let s = broker
            .stats(&queue, now)
            .await
            .with_context(|| format!("reading queue {queue}"))?;
        rows.push(vec![
            s.queue,
            s.ready.to_string(),
            s.scheduled.to_string(),
            s.running.to_string(),
            s.limit.map_or_else(|| "none".into(), |l| l.to_string()),
            table::millis(s.latency_ms),
            s.dead.to_string(),
            s.processed.to_string(),
            s.failed.to_string(),
        ]);
    }
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
    outage(&stack).await
}

/// The breaker's state and the recovery cursor (both shared through the metadata database).
async fn outage(stack: &buildlogs::config::Stack) -> anyhow::Result<()> {
    match stack.meta.breaker(OBJECT_STORE_BREAKER).await? {
        Some(b) if b.open => println!(
            "object store breaker: OPEN since {} ({}): flushes go to the database, archives wait",
            table::time(Some(b.changed_at_ms)),
            b.reason.as_deref().unwrap_or("no reason recorded")
        ),
        Some(b) => println!(
            "object store breaker: closed since {}",
            table::time(Some(b.changed_at_ms))
        ),
        None => println!("object store breaker: closed (never opened)"),
    }
    match stack.meta.cursor(RECOVERY_CURSOR).await? {
        Some(0) | None => {
            println!("stale-trace recovery: between walks (next one starts at the first build)")
        }
        Some(at) => println!("stale-trace recovery: walking, at build {at}"),
    }
    Ok(())
}
