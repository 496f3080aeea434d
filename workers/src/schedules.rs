//! The cron schedules the `scheduler` role fires. The stale-trace recovery and artifact expiry
//! crons join this list with the build-log workers.

use buildlogs::jobs::cron::{CronEntry, CronError};

pub fn entries() -> Result<Vec<CronEntry>, CronError> {
    Ok(Vec::new())
}
