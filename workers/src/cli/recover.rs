//! `buildlogs recover`: stale-trace recovery by hand. `--dry-run` prints what a run would
//! enqueue now (stale builds from the cursor on, the archive queue's room) and changes nothing;
//! without it a recovery run is enqueued for the workers (deduplicated against one queued or
//! running).

use std::sync::Arc;

use anyhow::Context;
use buildlogs::config::Settings;
use buildlogs::jobs::{Clock, JobClient, SystemClock};
use buildlogs::traces::jobs::RecoverStaleTraces;
use buildlogs::traces::recovery::{RECOVERY_CURSOR, RecoveryMetadata, TraceRecovery};

use crate::roles::OutageArgs;

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// Print what would be enqueued; enqueue nothing.
    #[arg(long)]
    dry_run: bool,
    /// Stale builds to look at, at most (dry run).
    #[arg(long, default_value_t = 100_000)]
    max: u64,
    #[command(flatten)]
    outage: OutageArgs,
}

pub async fn run(settings: &Settings, args: RecoverArgs) -> anyhow::Result<()> {
    let stack = settings.open_stack().await.context("opening the stores")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let jobs = JobClient::new(stack.broker.clone(), clock.clone());
    if !args.dry_run {
        let outcome = jobs.enqueue(&RecoverStaleTraces {}).await?;
        println!(
            "recovery run enqueued: {outcome:?} (Duplicate: one is already queued or running)"
        );
        return Ok(());
    }
    let config = args.outage.handler_config().recovery;
    let recovery = TraceRecovery::new(
        RecoveryMetadata::from_one(&stack.meta),
        jobs,
        clock,
        config.clone(),
    );
    let cursor = stack.meta.cursor(RECOVERY_CURSOR).await?.unwrap_or(0);
    let (capacity, backlog) = recovery.archive_queue().await?;
    let ids = recovery.dry_run(args.max).await?;
    println!(
        "stale traces: finished more than {} min ago, not archived, build id above the cursor {cursor}",
        config.stale_after.as_secs() / 60
    );
    match (ids.first(), ids.last()) {
        (Some(first), Some(last)) => println!(
            "would enqueue {} archive jobs{} (builds {first}..={last}) in batches of {}",
            ids.len(),
            if ids.len() as u64 >= args.max {
                " or more"
            } else {
                ""
            },
            config.batch
        ),
        _ => println!("would enqueue nothing"),
    }
    println!(
        "archive queue: {backlog} ready or running, capacity {capacity}: {}",
        if backlog >= u64::from(capacity) {
            "full, a run would wait for it to drain".to_owned()
        } else {
            format!(
                "room for {} now, then a batch each time it drains",
                u64::from(capacity) - backlog
            )
        }
    );
    for id in ids.iter().take(20) {
        println!("  build {id}");
    }
    if ids.len() > 20 {
        println!("  … and {} more", ids.len() - 20);
    }
    Ok(())
}
