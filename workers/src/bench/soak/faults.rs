//! The faults a soak run injects while traffic flows, at fixed fractions of the traffic
//! phase so that a short run and an hour-long one see the same story:
//!
//! | at | fault |
//! |---|---|
//! | 10%, 30%, 50%, 70% | a worker SIGKILLed (alternately worker-1, worker-2), started again |
//! | 20%–37% | the object store unreachable: the relay refuses new connections (20%), also cuts open ones (24%), then accepts and never answers (28%), then answers slowly (33%, 200 ms a read), then passes again (37%) |
//! | 45% | Redis restarted (SIGTERM, AOF on, same port and dir) |
//! | 60% | web-2 restarted (SIGTERM: graceful, then started on the same port) |
//!
//! Each fault is logged with its time; a fault that cannot be applied (a process that does
//! not come back) ends the run with an error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::fleet::Fleet;
use crate::bench::relay::Mode;

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWorker(usize),
    Store(Mode),
    RestartRedis,
    RestartWeb(usize),
}

const TIMELINE: [(f64, Fault); 11] = [
    (0.10, Fault::KillWorker(1)),
    (0.20, Fault::Store(Mode::Refuse)),
    (0.24, Fault::Store(Mode::Cut)),
    (0.28, Fault::Store(Mode::Hang)),
    (0.30, Fault::KillWorker(2)),
    (0.33, Fault::Store(Mode::Delay(Duration::from_millis(200)))),
    (0.37, Fault::Store(Mode::Pass)),
    (0.45, Fault::RestartRedis),
    (0.50, Fault::KillWorker(1)),
    (0.60, Fault::RestartWeb(2)),
    (0.70, Fault::KillWorker(2)),
];

/// Applies the timeline over `traffic` from `begun`; what happened goes to `log`.
pub async fn inject(
    fleet: Arc<tokio::sync::Mutex<Fleet>>,
    begun: Instant,
    traffic: Duration,
    log: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    for (at, fault) in TIMELINE {
        let when = begun + traffic.mul_f64(at);
        tokio::select! {
            () = tokio::time::sleep_until(when.into()) => {}
            () = stop.cancelled() => return Ok(()),
        }
        let t = begun.elapsed().as_secs_f64();
        let mut f = fleet.lock().await;
        let what = match fault {
            Fault::KillWorker(n) => {
                f.restart(&format!("worker-{n}"), true).await?;
                format!("worker-{n} SIGKILLed and started again")
            }
            Fault::Store(mode) => {
                f.relay.set(mode);
                let (accepted, refused) = f.relay.counts();
                format!(
                    "object store relay {mode:?} (so far {accepted} connections passed, {refused} refused)"
                )
            }
            Fault::RestartRedis => {
                let started = Instant::now();
                f.restart_redis().await?;
                format!(
                    "redis restarted (SIGTERM, AOF), answering again after {:.1}s",
                    started.elapsed().as_secs_f64()
                )
            }
            Fault::RestartWeb(n) => {
                let started = Instant::now();
                f.restart(&format!("web-{n}"), false).await?;
                format!(
                    "web-{n} restarted (SIGTERM), listening again after {:.1}s",
                    started.elapsed().as_secs_f64()
                )
            }
        };
        drop(f);
        tracing::info!(t, fault = %what, "soak");
        if let Ok(mut l) = log.lock() {
            l.push(format!("{t:.1}s {what}"));
        }
    }
    Ok(())
}
