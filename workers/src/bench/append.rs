//! `buildlogs bench append`: concurrent simulated runners PATCHing a running `buildlogs web` on
//! the production stack (a private redis-server, a fresh PostgreSQL schema, a local object
//! folder). Each runner registers a job, then PATCHes `--patch-bytes` at a time for `--seconds`,
//! and the driver prints requests/s and latency percentiles.
//!
//! Runners PATCH on a schedule, as real runners do ("every interval"): together they offer
//! `--rate` PATCH/s, each runner one PATCH every `runners / rate` seconds, starts staggered.
//! Latency counts from the scheduled send time, so a slow server is not hidden by runners that
//! simply send less (no coordinated omission). `--rate 0` sends back to back instead: the
//! server's ceiling, with latency that is then mostly queueing (Little's law).
//! The first `--warmup` seconds are not measured (connections open, caches fill).
//! The server, Redis, PostgreSQL and the driver share this machine's cores.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::stack::PrivateRedis;

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
    /// PATCH/s offered by all runners together; 0 = each runner back to back.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds of PATCHes before measuring: connections open and caches fill, as on a server
    /// that has been up for a while (runners keep their connections).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
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
            .env("BUILDLOGS_METRICS_LISTEN", "off")
            // The simulated runners PATCH up to hundreds of times a second each, far above any
            // real runner: a rate this high keeps the limiter's bucket on the measured path
            // without ever refusing one.
            .env("BUILDLOGS_PATCH_RATE", "1000000000")
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

    let body = bytes::Bytes::from(vec![b'x'; args.patch_bytes]);
    // Each runner's period between PATCHes; None = back to back.
    let period =
        (args.rate > 0).then(|| Duration::from_secs_f64(args.runners as f64 / args.rate as f64));
    let started = Instant::now();
    let measured = started + Duration::from_secs(args.warmup);
    let deadline = measured + Duration::from_secs(args.seconds);
    let mut tasks = Vec::with_capacity(args.runners);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for (n, (id, token)) in jobs.into_iter().enumerate() {
        let body = body.clone();
        let path = format!("/api/v4/jobs/{id}/trace");
        // Stagger the runners evenly over one period.
        let mut next =
            started + period.map_or(Duration::ZERO, |p| p * n as u32 / args.runners as u32);
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut offset) = (Vec::new(), 0u64, 0u64);
            // One keep-alive connection per runner, as a real runner holds.
            let mut conn = RunnerConnection::open(addr).await?;
            while next < deadline {
                if period.is_some() {
                    tokio::time::sleep_until(next.into()).await;
                }
                let scheduled = if period.is_some() {
                    next
                } else {
                    Instant::now()
                };
                let request = http::Request::patch(path.as_str())
                    .header("host", "127.0.0.1")
                    .header("job-token", token.as_str())
                    .header(
                        "content-range",
                        format!("{offset}-{}", offset + body.len() as u64 - 1),
                    )
                    .body(http_body_util::Full::new(body.clone()))?;
                let status = conn.send(request).await;
                if scheduled >= measured {
                    latencies.push(scheduled.elapsed());
                }
                match status {
                    Ok(202) => offset += body.len() as u64,
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        conn = RunnerConnection::open(addr).await?;
                    }
                }
                next = match period {
                    Some(p) => next + p,
                    None => Instant::now(),
                };
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await??;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = measured.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "bench=append stack=postgres+redis runners={} patch_bytes={} offered_per_s={} seconds={:.1} requests={} requests_per_s={:.0} p50_ms={:.2} p99_ms={:.2} errors={}",
        args.runners,
        args.patch_bytes,
        if args.rate == 0 {
            "max".to_string()
        } else {
            args.rate.to_string()
        },
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

/// A runner's HTTP/1.1 keep-alive connection, on hyper's connection-level client: the driver
/// shares the machine with the server, so it spends as little CPU per PATCH as it can (no
/// pool, no URL parsing).
struct RunnerConnection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl RunnerConnection {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// Sends one request and reads the whole answer; its status.
    async fn send(
        &mut self,
        request: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> anyhow::Result<u16> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        http_body_util::BodyExt::collect(response.into_body()).await?;
        Ok(status)
    }
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("buildlogs-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
