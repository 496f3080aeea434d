//! `buildlogs status`: every queue's depth, latency, running jobs, limit, dead and lifetime counts.

use anyhow::Context;
use buildlogs::config::Settings;
use buildlogs::jobs::{Clock, SystemClock};

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
        return Ok(());
    }
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
    Ok(())
}
