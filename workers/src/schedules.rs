//! The cron schedules the `scheduler` role fires: stale-trace recovery, artifact expiry and the
//! stuck-build sweep, the bounded loops that keep the stores tidy.

use buildlogs::jobs::cron::{CronEntry, CronError};
use buildlogs::traces::jobs::{DropStuckBuilds, ExpireArtifacts, RecoverStaleTraces};

use crate::roles::SchedulerArgs;

pub fn entries(args: &SchedulerArgs) -> Result<Vec<CronEntry>, CronError> {
    Ok(vec![
        CronEntry::new(
            "recover_stale_traces",
            &args.recovery_cron,
            RecoverStaleTraces {},
        )?,
        CronEntry::new("expire_artifacts", &args.expiry_cron, ExpireArtifacts {})?,
        CronEntry::new("drop_stuck_builds", &args.stuck_cron, DropStuckBuilds {})?,
    ])
}
