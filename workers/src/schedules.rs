//! The cron schedules the `scheduler` role fires: stale-trace recovery and artifact expiry,
//! the bounded loops that keep the stores tidy.

use buildlogs::jobs::cron::{CronEntry, CronError};
use buildlogs::traces::jobs::{ExpireArtifacts, RecoverStaleTraces};

use crate::roles::SchedulerArgs;

pub fn entries(args: &SchedulerArgs) -> Result<Vec<CronEntry>, CronError> {
    Ok(vec![
        CronEntry::new(
            "recover_stale_traces",
            &args.recovery_cron,
            RecoverStaleTraces {},
        )?,
        CronEntry::new("expire_artifacts", &args.expiry_cron, ExpireArtifacts {})?,
    ])
}
