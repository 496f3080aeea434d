//! Samples, every [`EVERY`], the RSS of every process of the fleet (`VmRSS` of
//! `/proc/<pid>/status`) and Redis' `used_memory` and key count, through the whole run; the
//! report reads peaks, finals and the figures at 25/50/75/100% of the run from it.
//!
//! A process restarted by a fault starts a new series (its `started` changes), so growth is
//! always measured within one process lifetime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::fleet::Fleet;

/// One sample a second: enough to see a trend in a 60-second run, cheap in an hour-long one.
pub const EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the run began.
    pub t: f64,
    pub rss_mb: f64,
}

#[derive(Default)]
pub struct Samples {
    /// Per process name: its lifetimes (one per start), each a series of samples.
    pub rss: BTreeMap<String, Vec<Vec<Sample>>>,
    pub redis_used_memory_peak_mb: f64,
    /// (t, used_memory MB, keys) over the run.
    pub redis: Vec<(f64, f64, u64)>,
}

pub async fn sample(
    fleet: Arc<tokio::sync::Mutex<Fleet>>,
    begun: Instant,
    out: Arc<Mutex<Samples>>,
    stop: CancellationToken,
) {
    let redis_url = fleet.lock().await.redis_url.clone();
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut lifetimes: BTreeMap<String, Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let t = begun.elapsed().as_secs_f64();
        let pids = fleet.lock().await.pids();
        let redis = redis_figures(&redis_url, &mut conn).await;
        let Ok(mut s) = out.lock() else { return };
        for (name, pid, started) in pids {
            let Some(rss_mb) = rss_mb(pid) else { continue };
            let series = s.rss.entry(name.clone()).or_default();
            if lifetimes.get(&name) != Some(&started) || series.is_empty() {
                lifetimes.insert(name.clone(), started);
                series.push(Vec::new());
            }
            if let Some(current) = series.last_mut() {
                current.push(Sample { t, rss_mb });
            }
        }
        if let Some((used_mb, keys)) = redis {
            s.redis_used_memory_peak_mb = s.redis_used_memory_peak_mb.max(used_mb);
            s.redis.push((t, used_mb, keys));
        }
    }
}

/// (used_memory MB, DBSIZE), reconnecting after a Redis restart.
async fn redis_figures(
    url: &str,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
) -> Option<(f64, u64)> {
    if conn.is_none() {
        let client = redis::Client::open(url).ok()?;
        *conn = client.get_multiplexed_async_connection().await.ok();
    }
    let c = conn.as_mut()?;
    let figures = async {
        let info: String = redis::cmd("INFO").arg("memory").query_async(c).await?;
        let keys: u64 = redis::cmd("DBSIZE").query_async(c).await?;
        redis::RedisResult::Ok((info, keys))
    }
    .await;
    match figures {
        Ok((info, keys)) => {
            let used = info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<f64>().ok())?;
            Some((used / 1e6, keys))
        }
        Err(_) => {
            *conn = None;
            None
        }
    }
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kb / 1024.0)
}
