//! `buildlogs limits`: global concurrency limits per job type, changed at runtime.
//! Every worker process reads the limit on each fetch, so a change applies within one poll.

use anyhow::{Context, bail};
use buildlogs::config::Settings;
use buildlogs::jobs::{Clock, SystemClock};

use super::table;

#[derive(clap::Subcommand, Debug)]
pub enum LimitsAction {
    /// Set the limit of JOB to N jobs running at once across all workers ("none" removes it).
    Set { job: String, limit: String },
    /// Show every queue's limit and how much of it is in use.
    List,
}

pub async fn run(settings: &Settings, action: LimitsAction) -> anyhow::Result<()> {
    let broker = settings
        .open_broker()
        .await
        .context("opening the job queue")?;
    match action {
        LimitsAction::Set { job, limit } => {
            let limit = parse_limit(&limit)?;
            broker.set_limit(&job, limit).await?;
            match limit {
                Some(n) => println!("{job}: at most {n} running at once"),
                None => println!("{job}: no limit"),
            }
        }
        LimitsAction::List => {
            let now = SystemClock.now_ms();
            let mut rows = Vec::new();
            for q in broker.queues().await? {
                let s = broker.stats(&q, now).await?;
                rows.push(vec![
                    q,
                    s.limit.map_or_else(|| "none".into(), |l| l.to_string()),
                    s.running.to_string(),
                ]);
            }
            print!("{}", table::render(&["queue", "limit", "running"], &rows));
        }
    }
    Ok(())
}

fn parse_limit(raw: &str) -> anyhow::Result<Option<u32>> {
    if raw == "none" {
        return Ok(None);
    }
    match raw.parse::<u32>() {
        Ok(0) | Err(_) => {
            bail!("limit: expected a whole number of at least 1, or \"none\"; got {raw:?}")
        }
        Ok(n) => Ok(Some(n)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limit_must_be_positive_or_none() {
        assert_eq!(super::parse_limit("3").unwrap(), Some(3));
        assert_eq!(super::parse_limit("none").unwrap(), None);
        for bad in ["0", "-1", "x", ""] {
            assert!(
                super::parse_limit(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("limit"),
                "{bad}"
            );
        }
    }
}
