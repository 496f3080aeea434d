//! The cron schedules the `scheduler` role fires: stale-trace recovery (and, with it, the
//! bounded loops that keep the stores tidy).

use buildlogs::jobs::cron::{CronEntry, CronError};
use buildlogs::traces::jobs::RecoverStaleTraces;

use crate::roles::SchedulerArgs;

pub fn entries(args: &SchedulerArgs) -> Result<Vec<CronEntry>, CronError> {
    Ok(vec![CronEntry::new(
        "recover_stale_traces",
        &args.recovery_cron,
        RecoverStaleTraces {},
    )?])
}
