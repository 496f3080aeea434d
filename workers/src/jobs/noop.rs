//! A job that does nothing: the unit of the queue benchmark and a smoke check of a deployment
//! (`buildlogs enqueue-noop`, then watch `processed` grow in `buildlogs status`).

use buildlogs::jobs::{Dedup, Job, JobContext, JobError, JobHandler, JobOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {
    pub n: u64,
}

impl Job for Noop {
    const NAME: &'static str = "noop";

    fn options() -> JobOptions {
        JobOptions {
            dedup: Dedup::none(),
            ..JobOptions::default()
        }
    }
}

pub struct NoopHandler;

impl JobHandler for NoopHandler {
    type Job = Noop;

    async fn perform(&self, _job: Noop, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}
