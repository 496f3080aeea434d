//! `buildlogs bench append`: concurrent simulated runners PATCHing a running `buildlogs web` on
//! the production stack (a private redis-server, a fresh PostgreSQL schema, a local object
//! folder). Each runner registers a job, then PATCHes `--patch-bytes` at a time, back to back,
//! for `--seconds`; the driver prints requests/s and latency percentiles.
//! The server, Redis, PostgreSQL and the driver share this machine's cores.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::bench::PrivateRedis;

const ADMIN: &str = "bench-admin-token";

#[derive(clap::Args, Debug)]
pub struct AppendArgs {
    /// Simulated runners, each with its own job.
    #[arg(long, default_value_t = 1000)]
    runners: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 4096)]
    patch_bytes: usize,
    /// PostgreSQL to hold a throwaway schema (dropped at the end).
    #[arg(
        long,
        env = "BUILDLOGS_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(args: AppendArgs) -> anyhow::Result<()> {
    let redis = PrivateRedis::start(&args.redis_server).await?;
    let schema = format!("bench_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut admin = PgConnection::connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut admin)
        .await?;
    let result = drive(&args, &redis.url, &schema).await;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
        .execute(&mut admin)
        .await?;
    result
}

async fn drive(args: &AppendArgs, redis_url: &str, schema: &str) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let objects = tempfile_dir()?;
    let sep = if args.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let database_url = format!(
        "{}{sep}options=-c%20search_path%3D{schema}",
        args.database_url
    );
    let _server = Server(
        Command::new(std::env::current_exe()?)
            .arg("web")
            .env("REDIS_URL", redis_url)
            .env("DATABASE_URL", &database_url)
            .env("OBJECT_STORE_URL", format!("file://{}", objects.display()))
            .env("BUILDLOGS_LISTEN", format!("127.0.0.1:{port}"))
            .env("BUILDLOGS_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting buildlogs web")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.runners)
        .build()?;
    let ready = Instant::now() + Duration::from_secs(30);
    while client
        .post(format!("{base}/api/v4/jobs"))
        .send()
        .await
        .is_err()
    {
        if Instant::now() > ready {
            bail!("buildlogs web did not come up on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut jobs = Vec::with_capacity(args.runners);
    for _ in 0..args.runners {
        let body = client
            .post(format!("{base}/api/v4/jobs"))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let reply: serde_json::Value = serde_json::from_slice(&body)?;
        let id = reply["id"].as_i64().context("job id")?;
        let token = reply["token"].as_str().context("job token")?.to_owned();
        jobs.push((id, token));
    }

    let body = Arc::new(vec![b'x'; args.patch_bytes]);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.runners);
    for (id, token) in jobs {
        let (client, base, body) = (client.clone(), base.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut offset) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                let sent = client
                    .patch(format!("{base}/api/v4/jobs/{id}/trace"))
                    .header("JOB-TOKEN", &token)
                    .header(
                        "Content-Range",
                        format!("{offset}-{}", offset + body.len() as u64 - 1),
                    )
                    .body(body.as_ref().clone())
                    .send()
                    .await;
                latencies.push(t.elapsed());
                match sent {
                    Ok(r) if r.status().as_u16() == 202 => offset += body.len() as u64,
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "bench=append stack=postgres+redis runners={} patch_bytes={} seconds={:.1} requests={} requests_per_s={:.0} p50_ms={:.2} p99_ms={:.2} errors={}",
        args.runners,
        args.patch_bytes,
        elapsed,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        ms(pct(0.50)),
        ms(pct(0.99)),
        errors
    );
    let _ = std::fs::remove_dir_all(&objects);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("buildlogs-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
