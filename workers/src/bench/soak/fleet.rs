//! The soak's production stack, as separate processes an operator's Procfile would run:
//! 2 × `buildlogs web`, 2 × `buildlogs worker`, 1 × `buildlogs scheduler` (this binary), a
//! private `redis-server` with AOF on, a fresh PostgreSQL schema, and s3s-fs behind the
//! in-repo fault relay ([`crate::bench::relay`]).
//!
//! Duties:
//! 1. Start everything on free 127.0.0.1 ports under one temp dir (Redis' AOF, the s3s-fs
//!    root, each process's stderr log), with the env settings given.
//! 2. Faults: SIGKILL or SIGTERM a role and start it again with the same settings (a web on
//!    the same port); restart Redis (SIGTERM: it writes its AOF; then the same port and dir).
//! 3. Tell the sampler which pid each process has now and since when.
//! 4. [`Fleet::tear_down`]: stop every process, drop the schema, remove the temp dir. Every
//!    child is also SIGKILLed and reaped when the fleet is dropped (an error or a panic on
//!    the way out leaves no process behind).

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;

use crate::bench::relay::Relay;

/// How long a process gets to listen (or Redis to load its AOF) after a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of each process's log printed after a failed run.
const LOG_TAIL: usize = 15;
pub const S3_ACCESS_KEY: &str = "buildlogs-soak";
pub const S3_SECRET_KEY: &str = "buildlogs-soak-secret";
pub const BUCKET: &str = "soak";

/// A child process, SIGKILLed and reaped when dropped.
pub struct Proc {
    pub name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// `host:port` a web process listens on.
    listen: Option<String>,
    child: Child,
    pub started: Instant,
    pub restarts: u32,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL if still there after `grace`.
    async fn terminate(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    /// Exited on its own?
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Settings {
    pub database_url: String,
    pub redis_server: String,
    pub s3s_fs: PathBuf,
    /// Settings every buildlogs role gets on top of the stores (`BUILDLOGS_*`).
    pub env: Vec<(String, String)>,
    pub webs: usize,
    pub workers: usize,
}

pub struct Fleet {
    pub dir: PathBuf,
    pub redis_url: String,
    redis_port: u16,
    redis_bin: String,
    pub relay: Relay,
    pub procs: Vec<Proc>,
    /// Base URLs of the web processes, in order.
    pub webs: Vec<String>,
    admin: sqlx::PgConnection,
    schema: String,
    exe: PathBuf,
    env: Vec<(String, String)>,
}

impl Fleet {
    pub async fn start(s: Settings) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("buildlogs-soak-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::create_dir_all(dir.join("redis"))?;
        std::fs::create_dir_all(dir.join("s3").join(BUCKET))?;

        let redis_port = free_port()?;
        let redis = spawn_redis(&s.redis_server, redis_port, &dir)?;
        let redis_url = format!("redis://127.0.0.1:{redis_port}");

        let s3_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let s3 = Command::new(&s.s3s_fs)
            .args(["--host", "127.0.0.1", "--port", &s3_addr.port().to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(dir.join("s3"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "s3s-fs")?)
            .spawn()
            .with_context(|| format!("starting {}", s.s3s_fs.display()))?;
        let relay = Relay::start(s3_addr).await?;

        let schema = format!("soak_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut admin = sqlx::PgConnection::connect(&s.database_url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&mut admin)
            .await?;
        let sep = if s.database_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let database_url = format!("{}{sep}options=-c%20search_path%3D{schema}", s.database_url);
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url.clone()),
            ("REDIS_URL".into(), redis_url.clone()),
            ("OBJECT_STORE_URL".into(), format!("s3://{BUCKET}")),
            ("AWS_ENDPOINT_URL".into(), relay.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            (
                "BUILDLOGS_DATA_DIR".into(),
                dir.join("data").display().to_string(),
            ),
            ("BUILDLOGS_METRICS_LISTEN".into(), "off".into()),
        ];
        env.extend(s.env);
        let mut fleet = Self {
            dir,
            redis_url,
            redis_port,
            redis_bin: s.redis_server,
            relay,
            procs: Vec::new(),
            webs: Vec::new(),
            admin,
            schema,
            exe: std::env::current_exe()?,
            env,
        };
        fleet.procs.push(Proc {
            name: "redis".into(),
            args: Vec::new(),
            env: Vec::new(),
            listen: None,
            child: redis,
            started: Instant::now(),
            restarts: 0,
        });
        fleet.wait_for_redis().await?;
        fleet.procs.push(Proc {
            name: "s3s-fs".into(),
            args: Vec::new(),
            env: Vec::new(),
            listen: Some(s3_addr.to_string()),
            child: s3,
            started: Instant::now(),
            restarts: 0,
        });
        wait_listening(&s3_addr.to_string(), "s3s-fs").await?;
        // The first web applies the migrations; the others start once it listens.
        for n in 1..=s.webs {
            let listen = format!("127.0.0.1:{}", free_port()?);
            fleet.webs.push(format!("http://{listen}"));
            fleet.spawn(
                &format!("web-{n}"),
                &["web"],
                vec![("BUILDLOGS_LISTEN".into(), listen.clone())],
                Some(listen),
            )?;
            fleet.wait_ready(&format!("web-{n}")).await?;
        }
        for n in 1..=s.workers {
            fleet.spawn(&format!("worker-{n}"), &["worker"], Vec::new(), None)?;
        }
        fleet.spawn("scheduler", &["scheduler"], Vec::new(), None)?;
        Ok(fleet)
    }

    fn spawn(
        &mut self,
        name: &str,
        args: &[&str],
        env: Vec<(String, String)>,
        listen: Option<String>,
    ) -> anyhow::Result<()> {
        let child = self.command(name, args, &env)?;
        self.procs.push(Proc {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            listen,
            child,
            started: Instant::now(),
            restarts: 0,
        });
        Ok(())
    }

    fn command(
        &self,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<Child> {
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, name)?)
            .stderr(log_file(&self.dir, name)?);
        command
            .spawn()
            .with_context(|| format!("starting buildlogs {args:?} ({name})"))
    }

    fn proc(&mut self, name: &str) -> anyhow::Result<&mut Proc> {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no process {name}"))
    }

    /// Waits until `name` listens (a web), failing early if it exits.
    async fn wait_ready(&mut self, name: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let dir = self.dir.clone();
        let proc = self.proc(name)?;
        let Some(listen) = proc.listen.clone() else {
            return Ok(());
        };
        while std::net::TcpStream::connect(&listen).is_err() {
            if let Some(status) = proc.exited() {
                bail!(
                    "{name} exited at start ({status}):\n{}",
                    log_tail(&dir, name, 20)
                );
            }
            if Instant::now() > deadline {
                bail!("{name} did not listen on {listen} within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops `name` (SIGKILL, or SIGTERM with a grace period) and starts it again with the
    /// same settings; a web comes back on its port before this returns.
    pub async fn restart(&mut self, name: &str, sigkill: bool) -> anyhow::Result<()> {
        let proc = self.proc(name)?;
        if sigkill {
            proc.kill();
        } else {
            proc.terminate(Duration::from_secs(30)).await;
        }
        let args: Vec<String> = proc.args.clone();
        let env = proc.env.clone();
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self.command(name, &arg_refs, &env)?;
        let proc = self.proc(name)?;
        proc.child = child;
        proc.started = Instant::now();
        proc.restarts += 1;
        self.wait_ready(name).await
    }

    /// Redis restarted (SIGTERM: it finishes its AOF), on the same port and dir; returns once
    /// it answers PING again (its AOF loaded).
    pub async fn restart_redis(&mut self) -> anyhow::Result<()> {
        let (bin, port, dir) = (self.redis_bin.clone(), self.redis_port, self.dir.clone());
        let proc = self.proc("redis")?;
        proc.terminate(Duration::from_secs(30)).await;
        proc.child = spawn_redis(&bin, port, &dir)?;
        proc.started = Instant::now();
        proc.restarts += 1;
        self.wait_for_redis().await
    }

    async fn wait_for_redis(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the private redis-server did not answer within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// (name, pid, started) of every process now.
    pub fn pids(&self) -> Vec<(String, u32, Instant)> {
        self.procs
            .iter()
            .map(|p| (p.name.clone(), p.pid(), p.started))
            .collect()
    }

    /// Processes that exited on their own (none should).
    pub fn exited(&mut self) -> Vec<String> {
        let dir = self.dir.clone();
        self.procs
            .iter_mut()
            .filter_map(|p| {
                p.exited()
                    .map(|s| format!("{} exited ({s}): {}", p.name, log_tail(&dir, &p.name, 5)))
            })
            .collect()
    }

    /// Stops every process, drops the schema, removes the temp dir. After a failed run
    /// (`failed`) the last lines of each buildlogs process's log go to stderr first, and with
    /// `keep_logs` the logs stay (their path is printed).
    pub async fn tear_down(mut self, failed: bool, keep_logs: bool) -> anyhow::Result<()> {
        let names: Vec<String> = self.procs.iter().map(|p| p.name.clone()).collect();
        for p in self.procs.iter_mut().rev() {
            p.kill();
        }
        self.procs.clear();
        if failed {
            for name in names
                .iter()
                .filter(|n| !matches!(n.as_str(), "redis" | "s3s-fs"))
            {
                eprintln!(
                    "--- {name} (last {LOG_TAIL} lines)\n{}",
                    log_tail(&self.dir, name, LOG_TAIL)
                );
            }
        }
        let schema = &self.schema;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(&mut self.admin)
        .await?;
        if keep_logs {
            // Only the logs are worth keeping; the objects and the AOF can be large.
            let _ = std::fs::remove_dir_all(self.dir.join("s3"));
            let _ = std::fs::remove_dir_all(self.dir.join("redis"));
            let _ = std::fs::remove_dir_all(self.dir.join("data"));
            eprintln!(
                "soak: process logs kept in {}",
                self.dir.join("logs").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Ok(())
    }
}

fn spawn_redis(bin: &str, port: u16, dir: &Path) -> anyhow::Result<Child> {
    Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(dir.join("redis"))
        .stdin(Stdio::null())
        .stdout(log_file(dir, "redis")?)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {bin}"))
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = dir.join("logs").join(format!("{name}.log"));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

fn log_tail(dir: &Path, name: &str, lines: usize) -> String {
    let text =
        std::fs::read_to_string(dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_listening(addr: &str, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr} within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
