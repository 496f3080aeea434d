//! `buildlogs dead`: the jobs that used up their attempts.

use anyhow::{Context, bail};
use buildlogs::config::Settings;
use buildlogs::jobs::{Clock, SystemClock};

use super::table;

#[derive(clap::Subcommand, Debug)]
pub enum DeadAction {
    /// Newest first.
    List {
        /// Only this job type (default: all).
        job: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Put a dead job back in its queue with fresh attempts.
    Retry { job: String, id: String },
    /// Delete a dead job for good.
    Discard { job: String, id: String },
}

pub async fn run(settings: &Settings, action: DeadAction) -> anyhow::Result<()> {
    let broker = settings
        .open_broker()
        .await
        .context("opening the job queue")?;
    match action {
        DeadAction::List { job, limit } => {
            let queues = match job {
                Some(j) => vec![j],
                None => broker.queues().await?,
            };
            let mut rows = Vec::new();
            for q in queues {
                for d in broker.dead_list(&q, limit).await? {
                    let mut error = d.error.replace('\n', " ");
                    error.truncate(80);
                    rows.push(vec![
                        q.clone(),
                        d.envelope.id,
                        d.envelope.attempt.to_string(),
                        table::time(Some(d.died_at_ms)),
                        error,
                    ]);
                }
            }
            print!(
                "{}",
                table::render(&["queue", "id", "attempts", "died", "error"], &rows)
            );
        }
        DeadAction::Retry { job, id } => {
            if !broker.dead_retry(&job, &id, SystemClock.now_ms()).await? {
                bail!("no dead job {id} in queue {job}");
            }
            println!("{job} {id}: queued again");
        }
        DeadAction::Discard { job, id } => {
            if !broker.dead_discard(&job, &id).await? {
                bail!("no dead job {id} in queue {job}");
            }
            println!("{job} {id}: discarded");
        }
    }
    Ok(())
}
