//! What the benches start and measure with: a throwaway production stack, a private Redis,
//! a process's CPU time and peak RSS, and flushing a log's chunks as workers would.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use buildlogs::traces::flush::{FlushOutcome, FlushService};

/// The Redis key prefix of the benches' stacks.
const PREFIX: &str = "bench";

/// A throwaway production stack for a benchmark: a private redis-server, a fresh PostgreSQL
/// schema (dropped by [`Self::tear_down`]), and a temp dir for the data dir and, unless an
/// object store URL is given, the objects.
pub(crate) struct BenchStack {
    pub(crate) redis: PrivateRedis,
    pub(crate) settings: buildlogs::config::Settings,
    admin: sqlx::PgConnection,
    schema: String,
    dir: std::path::PathBuf,
}

impl BenchStack {
    pub(crate) async fn start(
        name: &str,
        database_url: &str,
        redis_server: &str,
        object_store_url: Option<String>,
    ) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let redis = PrivateRedis::start(redis_server).await?;
        let dir =
            std::env::temp_dir().join(format!("buildlogs-bench-{name}-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let schema = format!("bench_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut admin = sqlx::PgConnection::connect(database_url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&mut admin)
            .await?;
        let sep = if database_url.contains('?') { '&' } else { '?' };
        let settings = buildlogs::config::Settings {
            database_url: Some(format!(
                "{database_url}{sep}options=-c%20search_path%3D{schema}"
            )),
            redis_url: Some(redis.url.clone()),
            data_dir: dir.clone(),
            redis_prefix: PREFIX.into(),
            object_store_url: Some(
                object_store_url
                    .unwrap_or_else(|| format!("file://{}", dir.join("objects").display())),
            ),
            ..buildlogs::config::Settings::default()
        };
        Ok(Self {
            redis,
            settings,
            admin,
            schema,
            dir,
        })
    }

    /// Drops the schema and the temp dir (the private Redis goes with `self`).
    pub(crate) async fn tear_down(mut self) -> anyhow::Result<()> {
        let schema = &self.schema;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(&mut self.admin)
        .await?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

pub(crate) struct PrivateRedis {
    child: Child,
    pub(crate) url: String,
}

impl PrivateRedis {
    pub(crate) async fn start(bin: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str())?;
        for _ in 0..200 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(Self { child, url });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("private redis-server on port {port} did not answer")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (user+system CPU seconds, peak RSS MB) of a process, from /proc.
pub(crate) fn proc_usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" that closes the command name; utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    // Linux reports CPU in clock ticks of 1/100 s (USER_HZ).
    Ok((ticks / 100.0, hwm_kb / 1024.0))
}

/// Chunks flushed at once by [`flush_all`] (a worker's default slots for flush jobs).
const FLUSH_CONCURRENCY: u64 = 8;

/// Flushes chunks `from..to`, [`FLUSH_CONCURRENCY`] at once; how many it flushed.
pub(crate) async fn flush_all(
    flush: &Arc<FlushService>,
    id: i64,
    from: u64,
    to: u64,
) -> anyhow::Result<u64> {
    let next = Arc::new(AtomicU64::new(from));
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..FLUSH_CONCURRENCY {
        let (flush, next) = (flush.clone(), next.clone());
        slots.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= to {
                    return anyhow::Ok(());
                }
                match flush.flush(id, index).await? {
                    FlushOutcome::Flushed { .. } => {}
                    other => bail!("chunk {index}: {other:?}"),
                }
            }
        });
    }
    while let Some(slot) = slots.join_next().await {
        slot??;
    }
    Ok(to.saturating_sub(from))
}
