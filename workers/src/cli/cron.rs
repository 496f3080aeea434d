//! `buildlogs cron list`: every schedule with its last fired and next tick.

use std::sync::Arc;

use anyhow::Context;
use buildlogs::config::Settings;
use buildlogs::jobs::SystemClock;
use buildlogs::jobs::cron::Scheduler;

use super::table;

#[derive(clap::Subcommand, Debug)]
pub enum CronAction {
    List(crate::roles::SchedulerArgs),
}

pub async fn run(settings: &Settings, action: CronAction) -> anyhow::Result<()> {
    let CronAction::List(args) = action;
    let broker = settings
        .open_broker()
        .await
        .context("opening the job queue")?;
    let scheduler = Scheduler::new(
        broker,
        Arc::new(SystemClock),
        crate::schedules::entries(&args)?,
    );
    let rows: Vec<Vec<String>> = scheduler
        .status()
        .await?
        .into_iter()
        .map(|s| {
            vec![
                s.name,
                s.expression,
                s.queue.to_owned(),
                table::time(s.last_fired_ms),
                table::time(s.next_tick_ms),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no cron schedules");
    } else {
        print!(
            "{}",
            table::render(
                &["schedule", "expression", "queue", "last fired", "next"],
                &rows
            )
        );
    }
    Ok(())
}
