//! The operator CLI against a real Redis (own key prefix): limits, status, dead set.

use std::process::{Command, Output};
use std::time::Duration;

use buildlogs::jobs::broker::{Ack, NewJob};
use buildlogs::jobs::redis::RedisBroker;
use buildlogs::jobs::{Broker, Envelope};

#[path = "../../jobs/tests/support/redis_keys.rs"]
mod redis_keys;

use redis_keys::{START_REDIS, redis_url};

struct Cli {
    prefix: String,
    /// The data dir (SQLite metadata, local objects): a temp dir, never the source tree.
    data: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Self {
            prefix: format!("blt:cli:{}", ulid::Ulid::new()),
            data: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_buildlogs"))
            .args(args)
            .env("REDIS_URL", redis_url())
            .env("BUILDLOGS_REDIS_PREFIX", &self.prefix)
            .env("BUILDLOGS_DATA_DIR", self.data.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run buildlogs")
    }

    async fn broker(&self) -> RedisBroker {
        RedisBroker::connect(&redis_url(), &self.prefix)
            .await
            .expect(START_REDIS)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if let Ok(mut c) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut c)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
            }
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn limits_set_shows_in_status_and_bad_input_changes_nothing() {
    let cli = Cli::new();
    let out = cli.run(&["limits", "set", "archive", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "archive: at most 3 running at once");
    let bad = cli.run(&["limits", "set", "archive", "0"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("limit: expected a whole number"),
        "{}",
        stderr(&bad)
    );
    let status = stdout(&cli.run(&["status"]));
    let row = status
        .lines()
        .find(|l| l.starts_with("archive"))
        .expect("archive row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[4], "3", "limit column in {status}");
    let none = cli.run(&["limits", "set", "archive", "none"]);
    assert!(none.status.success());
    assert!(stdout(&cli.run(&["limits", "list"])).contains("none"));
}

#[tokio::test]
async fn dead_jobs_are_listed_retried_and_discarded_from_the_cli() {
    let cli = Cli::new();
    let broker = cli.broker().await;
    let now = chrono::Utc::now().timestamp_millis();
    let jobs = ["a", "b"].map(|p| NewJob {
        envelope: Envelope::new("flush", format!("{{\"p\":\"{p}\"}}"), 1, now),
        run_at_ms: None,
        dedup_ttl: Duration::from_secs(60),
    });
    broker.enqueue(jobs.to_vec(), now).await.unwrap();
    let leased = broker
        .fetch("flush", 2, Duration::from_secs(30), now)
        .await
        .unwrap();
    let acks = leased
        .iter()
        .map(|d| Ack::Dead {
            lease: d.lease.clone(),
            error: "bucket gone".into(),
        })
        .collect();
    broker.ack("flush", acks, now).await.unwrap();

    let list = stdout(&cli.run(&["dead", "list"]));
    assert_eq!(
        list.lines().filter(|l| l.contains("bucket gone")).count(),
        2,
        "{list}"
    );
    let (a, b) = (&leased[0].envelope.id, &leased[1].envelope.id);
    let retried = cli.run(&["dead", "retry", "flush", a]);
    assert!(retried.status.success(), "{}", stderr(&retried));
    assert!(cli.run(&["dead", "discard", "flush", b]).status.success());
    let missing = cli.run(&["dead", "retry", "flush", b]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains(&format!("no dead job {b} in queue flush")),
        "{}",
        stderr(&missing)
    );
    let s = broker.stats("flush", now).await.unwrap();
    assert_eq!((s.ready, s.dead), (1, 0));
}

#[tokio::test]
async fn status_with_unreachable_redis_fails_with_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .arg("status")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("BUILDLOGS_DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.starts_with("error: opening the job queue"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn worker_runs_jobs_and_exits_cleanly_on_sigterm() {
    use buildlogs::jobs::{Clock, SystemClock};
    let cli = Cli::new();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .args(["worker", "--concurrency", "2"])
        .env("REDIS_URL", redis_url())
        .env("BUILDLOGS_REDIS_PREFIX", &cli.prefix)
        .env("BUILDLOGS_DATA_DIR", cli.data.path())
        .env("BUILDLOGS_METRICS_LISTEN", "off")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let broker = cli.broker().await;
    let now = SystemClock.now_ms();
    let noop = NewJob {
        envelope: Envelope::new("noop", "{\"n\":1}".into(), 3, now),
        run_at_ms: None,
        dedup_ttl: Duration::from_secs(60),
    };
    broker.enqueue(vec![noop], now).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while broker
        .stats("noop", SystemClock.now_ms())
        .await
        .unwrap()
        .processed
        < 1
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never ran the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let term = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn recover_dry_run_lists_stale_traces_and_recover_enqueues_one_run() {
    use buildlogs::jobs::{Clock, SystemClock};
    use buildlogs::stores::sql_metadata::SqlMetadata;
    use buildlogs::traces::metadata::{BreakerRecord, BreakerStore, BuildStore};
    use buildlogs::traces::model::BuildStatus;

    let cli = Cli::new();
    let status = cli.run(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        stdout(&status).contains("object store breaker: closed (never opened)"),
        "{}",
        stdout(&status)
    );
    assert!(
        stdout(&status).contains("0 stale, last step -"),
        "{}",
        stdout(&status)
    );
    // The metadata database `status` just created in the data dir: three builds finished two
    // hours ago (stale), one a minute ago (not yet), one running.
    let url = format!(
        "sqlite://{}",
        cli.data.path().join("buildlogs.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let meta = SqlMetadata::sqlite(pool);
    let now = SystemClock.now_ms();
    let mut stale = Vec::new();
    for finished in [
        now - 7_200_000,
        now - 7_200_000,
        now - 7_200_000,
        now - 60_000,
    ] {
        let b = meta.create_build("digest", finished - 1_000).await.unwrap();
        meta.finish_build(b.id, BuildStatus::Success, None, finished)
            .await
            .unwrap();
        stale.push(b.id);
    }
    stale.pop();
    meta.create_build("digest", now).await.unwrap();

    let dry = cli.run(&["recover", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let out = stdout(&dry);
    assert!(
        out.contains(&format!(
            "would enqueue 3 archive jobs (builds {}..={})",
            stale[0], stale[2]
        )),
        "{out}"
    );
    assert!(out.contains("capacity 32"), "{out}");
    let broker = cli.broker().await;
    let queued = |name: &'static str| {
        let broker = &broker;
        async move { broker.stats(name, SystemClock.now_ms()).await.unwrap() }
    };
    assert_eq!(
        queued("archive_trace").await.ready,
        0,
        "a dry run enqueues nothing"
    );
    let tighter = cli.run(&["recover", "--dry-run", "--recovery-stale-minutes", "0"]);
    assert!(
        stdout(&tighter).contains("would enqueue 4 archive jobs"),
        "{}",
        stdout(&tighter)
    );

    assert!(cli.run(&["recover"]).status.success());
    assert!(cli.run(&["recover"]).status.success());
    assert_eq!(
        queued("recover_stale_traces").await.ready,
        1,
        "one run queued, the second deduplicated"
    );

    meta.set_breaker(&BreakerRecord {
        name: "object_store".into(),
        open: true,
        reason: Some("connection refused".into()),
        changed_at_ms: now,
    })
    .await
    .unwrap();
    let status = stdout(&cli.run(&["status"]));
    assert!(
        status.contains("object store breaker: OPEN since")
            && status.contains("connection refused"),
        "{status}"
    );
    // The three stale builds, as the dashboard's recovery view counts them.
    assert!(status.contains("; 3 stale,"), "{status}");
}

/// The worker runs the stuck-build sweep with its settings: a build silent for longer than
/// `BUILDLOGS_STUCK_TIMEOUT` is failed and archived, a final state pending for longer than
/// `BUILDLOGS_ACCEPT_TIMEOUT` (shorter than its default) is committed, a fresh build is left.
#[tokio::test]
async fn the_worker_drops_stuck_builds_and_commits_overdue_final_states_by_its_settings() {
    use buildlogs::jobs::{Clock, SystemClock};
    use buildlogs::stores::sql_metadata::SqlMetadata;
    use buildlogs::traces::metadata::{ArtifactRowStore, BuildStore, PendingStateStore};
    use buildlogs::traces::model::{BuildStatus, PendingState};

    let cli = Cli::new();
    // `status` creates and migrates the metadata database in the data dir.
    assert!(cli.run(&["status"]).status.success());
    let url = format!(
        "sqlite://{}",
        cli.data.path().join("buildlogs.db").display()
    );
    let meta = SqlMetadata::sqlite(sqlx::SqlitePool::connect(&url).await.unwrap());
    let now = SystemClock.now_ms();
    let silent = meta.create_build("digest", now - 1_200_000).await.unwrap();
    let fresh = meta.create_build("digest", now).await.unwrap();
    let finishing = meta.create_build("digest", now).await.unwrap();
    meta.upsert_pending_state(&PendingState {
        build_id: finishing.id,
        state: BuildStatus::Success,
        failure_reason: None,
        exit_code: Some(0),
        trace_checksum: None,
        trace_bytesize: None,
        created_at_ms: now - 120_000,
    })
    .await
    .unwrap();

    let mut worker = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .args(["worker", "--concurrency", "2"])
        .env("REDIS_URL", redis_url())
        .env("BUILDLOGS_REDIS_PREFIX", &cli.prefix)
        .env("BUILDLOGS_DATA_DIR", cli.data.path())
        .env("BUILDLOGS_METRICS_LISTEN", "off")
        .env("BUILDLOGS_STUCK_TIMEOUT", "600")
        .env("BUILDLOGS_ACCEPT_TIMEOUT", "60")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let broker = cli.broker().await;
    let sweep = NewJob {
        envelope: Envelope::new("drop_stuck_builds", "{}".into(), 3, now),
        run_at_ms: None,
        dedup_ttl: Duration::from_secs(60),
    };
    broker.enqueue(vec![sweep], now).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let archived = meta.trace_artifact(silent.id).await.unwrap().is_some()
            && meta.trace_artifact(finishing.id).await.unwrap().is_some();
        if archived {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never dropped and archived the stuck build"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    let silent = meta.build(silent.id).await.unwrap().unwrap();
    assert_eq!(
        (silent.status, silent.failure_reason.as_deref()),
        (BuildStatus::Failed, Some("stuck_or_timeout_failure"))
    );
    let finishing = meta.build(finishing.id).await.unwrap().unwrap();
    assert_eq!(finishing.status, BuildStatus::Success);
    let fresh = meta.build(fresh.id).await.unwrap().unwrap();
    assert_eq!(fresh.status, BuildStatus::Running);
}

/// `buildlogs <path> --help`'s text.
fn help(path: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .args(path)
        .arg("--help")
        .output()
        .expect("buildlogs --help");
    assert!(out.status.success(), "{path:?}: {}", stderr(&out));
    stdout(&out)
}

/// The environment variables a help text names (`[env: NAME=…]` or `[env: NAME]`).
fn env_names(help: &str) -> Vec<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The subcommands a help text lists under "Commands:" (but `help`).
fn subcommands(help: &str) -> Vec<String> {
    let Some((_, rest)) = help.split_once("Commands:\n") else {
        return Vec::new();
    };
    rest.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_top_level_help_lists_every_setting_of_every_command() {
    let top = help(&[]);
    let (_, settings) = top
        .split_once("Settings: ")
        .unwrap_or_else(|| panic!("no settings list:\n{top}"));
    // Every command's own help, at any depth: each variable it names is in the list.
    let mut pending: Vec<Vec<String>> = subcommands(&top).into_iter().map(|c| vec![c]).collect();
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for name in env_names(&text) {
            assert!(
                settings.contains(&format!("  {name} ")),
                "`buildlogs {} --help` names {name}; `buildlogs --help` does not:\n{top}",
                path.join(" ")
            );
            seen += 1;
        }
        for sub in subcommands(&text) {
            let mut deeper = path.clone();
            deeper.push(sub);
            pending.push(deeper);
        }
    }
    assert!(seen > 30, "only {seen} settings found");
    // Read outside the flags of any one role.
    for name in ["BUILDLOGS_THREADS", "RUST_LOG", "AWS_ENDPOINT_URL"] {
        assert!(settings.contains(name), "{name}:\n{top}");
    }
    // Each role's metrics default, as it behaves.
    assert!(
        settings.contains("Read by worker:\n  BUILDLOGS_METRICS_LISTEN"),
        "{settings}"
    );
    assert!(settings.contains("[default: 127.0.0.1:9395]"), "{settings}");
    assert!(settings.contains("[default: 127.0.0.1:9394]"), "{settings}");
    // `-h` shows the same list.
    let short = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .arg("-h")
        .output()
        .expect("buildlogs -h");
    assert!(stdout(&short).contains(settings.trim_end()));
}

#[test]
fn a_bad_thread_count_is_refused_naming_the_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .arg("status")
        .env("BUILDLOGS_THREADS", "0")
        .output()
        .expect("buildlogs status");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--threads"), "{}", stderr(&out));
}
