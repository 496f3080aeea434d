//! Our [`JobHandler`]s as apalis services: the decoded job and its [`JobContext`] in, the
//! handler's `Result<(), JobError>` out.

use std::sync::Arc;
use std::task::{Context, Poll};

use apalis_core::layers::Service;
use apalis_core::task::Task;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::job::{Job, JobContext, JobError, JobHandler};

pub struct HandlerService<H> {
    handler: Arc<H>,
}

impl<H> HandlerService<H> {
    pub fn new(handler: Arc<H>) -> Self {
        Self { handler }
    }
}

impl<H> Clone for HandlerService<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
        }
    }
}

impl<H: JobHandler> Service<Task<H::Job>> for HandlerService<H> {
    type Response = ();
    type Error = JobError;
    type Future = BoxFuture<'static, Result<(), JobError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<H::Job>) -> Self::Future {
        let handler = self.handler.clone();
        let Some(ctx) = task.data().get::<JobContext>().cloned() else {
            // Only a backend of ours makes tasks for a `JobHandler`.
            let name = <H::Job as Job>::NAME;
            return async move {
                Err(JobError::fatal(format!(
                    "{name}: the task carries no job context (not from a BrokerBackend)"
                )))
            }
            .boxed();
        };
        let job = task.args;
        async move { handler.perform(job, ctx).await }.boxed()
    }
}
