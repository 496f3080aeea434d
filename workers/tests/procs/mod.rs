//! A fleet of real `buildlogs` processes for scenario tests, on the production stack:
//! PostgreSQL (a schema of the test's own), Redis (a key prefix of its own) and a private
//! s3s-fs (a bucket of its own), started as children with the binary's env settings, as an
//! operator's Procfile would.
//!
//! Duties:
//! 1. [`Fleet::new`]: the schema (migrated), the prefix, the object store; [`Fleet::web`],
//!    [`Fleet::worker`], [`Fleet::scheduler`] start roles against them.
//! 2. Every child is killed (SIGKILL) and reaped when its [`Proc`] is dropped, so a failing
//!    test leaves no process behind; its stderr goes to a log file whose tail a failing
//!    assertion can print ([`Fleet::logs`]).
//! 3. Look at the stores as an operator would: queue lengths and dead jobs, Redis keys under
//!    the prefix, the schema's rows.
//! 4. On drop: print the process logs if the test failed, delete the keys under this test's
//!    prefix (nothing else), drop the schema.

pub mod checks;
pub mod runner;
pub mod s3;

#[path = "../../../jobs/tests/support/redis_keys.rs"]
pub mod redis_keys;
#[path = "../../../tests/support/s3s_fs.rs"]
pub mod s3s_fs;
#[path = "../../../tests/support/sql.rs"]
pub mod sql;
#[path = "../../../jobs/tests/support/wait.rs"]
pub mod wait;

pub use redis_keys::{START_REDIS, redis_url};

pub use wait::wait_for_value;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use buildlogs::jobs::redis::{Keys, RedisBroker};
use buildlogs::jobs::{JobClient, SystemClock};
use redis::aio::ConnectionManager;

use runner::{ADMIN, Runner};
use s3::S3Server;
use sql::TestPostgres;

/// A child process, SIGKILLed and reaped when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Still running (not exited on its own)?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`, and wait for it to be gone.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A running `buildlogs web` (killed when dropped) and a runner pointed at it.
pub struct Web {
    pub runner: Runner,
    _proc: Proc,
}

pub struct Fleet {
    /// Declared first: closed before the schema is dropped.
    pub pg: TestPostgres,
    pub prefix: String,
    pub keys: Keys,
    pub s3: S3Server,
    pub bucket: String,
    /// The bucket's directory on the s3s-fs root (objects are files under it).
    pub bucket_dir: PathBuf,
    redis: ConnectionManager,
    /// Process logs, and `BUILDLOGS_DATA_DIR` (nothing should land there on this stack).
    dir: tempfile::TempDir,
}

impl Fleet {
    pub async fn new(test: &str) -> Self {
        let s3 = S3Server::start();
        let bucket = format!("outage-{}", ulid::Ulid::new().to_string().to_lowercase());
        let bucket_dir = s3.create_bucket(&bucket);
        let prefix = format!("blt:{test}:{}", ulid::Ulid::new());
        let redis = buildlogs::jobs::redis::connection(&redis_url())
            .await
            .expect(START_REDIS);
        Self {
            pg: TestPostgres::new(test).await,
            keys: Keys::new(&prefix),
            prefix,
            s3,
            bucket,
            bucket_dir,
            redis,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// `DATABASE_URL` for this test's schema (every connection's `search_path`).
    pub fn database_url(&self) -> String {
        let url = sql::database_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{}", self.pg.schema())
    }

    /// Starts `buildlogs <args>` with the fleet's settings, the object store at `endpoint`,
    /// and `env` on top.
    pub fn spawn(&self, name: &str, args: &[&str], endpoint: &str, env: &[(&str, &str)]) -> Proc {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("process log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_buildlogs"));
        command
            .args(args)
            .env("DATABASE_URL", self.database_url())
            .env("REDIS_URL", redis_url())
            .env("BUILDLOGS_REDIS_PREFIX", &self.prefix)
            .env("BUILDLOGS_DATA_DIR", self.dir.path().join("data"))
            .env("OBJECT_STORE_URL", format!("s3://{}", self.bucket))
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true")
            .env("BUILDLOGS_ADMIN_TOKEN", ADMIN)
            .env("BUILDLOGS_METRICS_LISTEN", "off")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting buildlogs {args:?}: {e}"));
        Proc { child }
    }

    /// `buildlogs web` on a free port, once it answers.
    pub async fn web(&self) -> Web {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut proc = self.spawn(
            "web",
            &["web"],
            &self.s3.endpoint(),
            &[("BUILDLOGS_LISTEN", &listen)],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(
                proc.is_running(),
                "buildlogs web exited at start:\n{}",
                self.logs()
            );
            assert!(
                Instant::now() < deadline,
                "buildlogs web did not listen on {listen}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Web {
            runner: Runner::new(format!("http://{listen}")),
            _proc: proc,
        }
    }

    /// `buildlogs worker` with its object store at `endpoint`.
    pub fn worker(&self, endpoint: &str, env: &[(&str, &str)]) -> Proc {
        self.spawn("worker", &["worker"], endpoint, env)
    }

    pub fn scheduler(&self, env: &[(&str, &str)]) -> Proc {
        self.spawn("scheduler", &["scheduler"], &self.s3.endpoint(), env)
    }

    /// The last lines of every process's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["web", "worker", "scheduler"] {
            let Ok(text) = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name} (last 40 of {} lines)\n", lines.len()));
            for line in &lines[lines.len().saturating_sub(40)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Lines of `name`'s log containing `needle`.
    pub fn log_count(&self, name: &str, needle: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .map(|t| t.lines().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
    }

    pub fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// A job client on this fleet's queue (to enqueue what the web process would).
    pub async fn jobs(&self) -> JobClient {
        let broker = RedisBroker::connect(&redis_url(), &self.prefix)
            .await
            .expect("broker");
        JobClient::new(Arc::new(broker), Arc::new(SystemClock))
    }

    /// The live copy of chunk `index` of `build`, where `RedisLiveChunks` keeps it.
    pub fn live_chunk_key(&self, build: i64, index: u64) -> String {
        format!("{}:trace:{{{build}}}:chunk:{index}", self.prefix)
    }

    /// Keys matching `<prefix>:<pattern>` (SCAN, never KEYS).
    pub async fn keys_matching(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.redis();
        let pattern = format!("{}:{pattern}", self.prefix);
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            out.extend(keys);
            if next == 0 {
                return out;
            }
            cursor = next;
        }
    }

    /// Live chunk keys left in Redis (`<prefix>:trace:{<build>}:chunk:<index>`).
    pub async fn live_chunk_keys(&self) -> Vec<String> {
        self.keys_matching("trace:*:chunk:*").await
    }

    /// A queue's (ready, scheduled, running, dead), read in one MULTI so that a job moving
    /// between them is counted once.
    pub async fn queue(&self, queue: &str) -> (u64, u64, u64, u64) {
        redis::pipe()
            .atomic()
            .llen(self.keys.ready(queue))
            .zcard(self.keys.scheduled(queue))
            .zcard(self.keys.running(queue))
            .zcard(self.keys.dead(queue))
            .query_async(&mut self.redis())
            .await
            .expect("queue lengths")
    }

    /// Every dead job's error, per queue, for assertion messages.
    pub async fn dead_errors(&self, queue: &str) -> Vec<String> {
        let errors: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.dead_error(queue))
            .query_async(&mut self.redis())
            .await
            .expect("dead errors");
        errors.into_values().collect()
    }

    /// The queue is lost (a Redis failover without persistence, a wrong FLUSHDB): every key
    /// of `queue` under this test's prefix is deleted — jobs, schedules, leases, dedup keys.
    pub async fn lose_queue(&self, queue: &str) -> usize {
        let keys = self.keys_matching(&format!("{{{queue}}}:*")).await;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut self.redis())
                .await
                .expect("DEL queue keys");
        }
        keys.len()
    }

    /// The leases a SIGKILLed worker held on `queue` run out now instead of a lease's length
    /// (60–120 s) later: each member of `running` gets deadline 0, and the next worker's
    /// reaper re-delivers them (counting the lost run as an attempt) as it would once the
    /// clock had passed their deadline. Only for leases of processes that are gone: call it
    /// while no worker runs. Returns how many leases there were.
    pub async fn expire_leases_of_dead_workers(&self, queue: &str) -> usize {
        let mut conn = self.redis();
        let running: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.running(queue))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .expect("ZRANGE running");
        for member in &running {
            let _: () = redis::cmd("ZADD")
                .arg(self.keys.running(queue))
                .arg("XX")
                .arg(0)
                .arg(member)
                .query_async(&mut conn)
                .await
                .expect("ZADD XX running");
        }
        running.len()
    }

    /// One number from the test's schema.
    pub async fn sql_i64(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, Option<i64>>(sql)
            .fetch_one(&self.pg.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or(0)
    }

    /// The object store breaker's state row (`open` / `closed`), if any.
    pub async fn breaker_state(&self) -> Option<String> {
        sqlx::query_scalar("SELECT state FROM circuit_breakers WHERE name = 'object_store'")
            .fetch_optional(&self.pg.pool)
            .await
            .expect("circuit_breakers")
    }

    /// Flushed chunk objects in the bucket (`chunks/<build>/<index>.log`).
    pub fn chunk_objects(&self) -> Vec<PathBuf> {
        s3::files_under(&self.bucket_dir.join("chunks"))
    }

    /// Archived logs in the bucket (`traces/<yyyy>/<mm>/<dd>/<build>/job.log`).
    pub fn archive_objects(&self) -> Vec<PathBuf> {
        self.trace_objects(".log")
    }

    /// Archives' line indexes in the bucket (`…/job.log.lines.json`).
    pub fn line_index_objects(&self) -> Vec<PathBuf> {
        self.trace_objects(".lines.json")
    }

    fn trace_objects(&self, suffix: &str) -> Vec<PathBuf> {
        s3::files_under(&self.bucket_dir.join("traces"))
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "process logs of the failed test:\n{}",
                self.logs()
            );
        }
        // Only this test's keys: SCAN + DEL under its prefix, on a connection of its own
        // (drop may run inside the test's runtime, or during a panic).
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = format!("{}:*", self.prefix);
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}
