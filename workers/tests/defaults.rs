//! Safe defaults of the `buildlogs` processes, run as an operator would (embedded SQLite in a
//! temp data dir, nothing shared): `/metrics` never on the API's listener, and the Procfile's
//! roles on ports of their own; `web` refuses to start without `BUILDLOGS_ADMIN_TOKEN` while
//! `all` keeps one in its data dir and says where, and `worker` and `scheduler` do not need it;
//! logs written to a file or pipe carry no colour codes; a CLI call logs nothing at the default
//! level.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to listen, log or exit: generous, this machine is shared.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `buildlogs` child in a data dir of its own; SIGKILLed and reaped when dropped.
struct Proc {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// `buildlogs <args>` with `env` in a data dir of its own, stderr to a file (as under a
    /// process manager).
    fn start(args: &[&str], env: &[(&str, &str)], stdout: Stdio) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        Self::spawn(args, env, stdout, data, dir)
    }

    /// The same in the data dir `data` (shared, or kept across runs).
    fn start_in(args: &[&str], env: &[(&str, &str)], stdout: Stdio, data: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn(args, env, stdout, data, dir)
    }

    fn spawn(
        args: &[&str],
        env: &[(&str, &str)],
        stdout: Stdio,
        data: PathBuf,
        dir: tempfile::TempDir,
    ) -> Self {
        let stderr = dir.path().join("stderr.log");
        let mut command = bare(args, data);
        command
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(std::fs::File::create(&stderr).expect("log file"));
        let child = command.spawn().expect("start buildlogs");
        Self {
            child,
            stderr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the process exits (its status) or `ready` holds (`None`).
    async fn exit_or(&mut self, mut ready: impl FnMut(&Self) -> bool) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status.code().unwrap_or(-1));
            }
            if ready(self) {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "neither exited nor ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until it listens on `addr`; fails if it exits first.
    async fn listening(&mut self, addr: &str) {
        let exited = self
            .exit_or(|_| std::net::TcpStream::connect(addr).is_ok())
            .await;
        assert_eq!(
            exited,
            None,
            "exited before listening on {addr}:\n{}",
            self.log()
        );
    }

    /// SIGTERM, then its exit status once it is gone.
    async fn terminate(&mut self) -> i32 {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(term.success());
        self.exit_or(|_| false).await.expect("exited")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `buildlogs <args>` on the embedded stack in `data`, with none of the settings under test
/// inherited from the environment.
fn bare(args: &[&str], data: PathBuf) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_buildlogs"));
    command
        .args(args)
        .env("BUILDLOGS_DATA_DIR", data)
        .stdin(Stdio::null());
    for name in [
        "DATABASE_URL",
        "REDIS_URL",
        "OBJECT_STORE_URL",
        "BUILDLOGS_ADMIN_TOKEN",
        "BUILDLOGS_READ_TOKEN",
        "BUILDLOGS_LISTEN",
        "BUILDLOGS_METRICS_LISTEN",
        "BUILDLOGS_THREADS",
        "RUST_LOG",
        "NO_COLOR",
    ] {
        command.env_remove(name);
    }
    command
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

async fn get(url: &str) -> reqwest::StatusCode {
    reqwest::get(url).await.expect("GET").status()
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_never_on_the_api() {
    for role in ["web", "all"] {
        let (api, metrics) = (free_addr(), free_addr());
        let mut proc = Proc::start(
            &[role],
            &[
                ("BUILDLOGS_ADMIN_TOKEN", "defaults-test-admin"),
                ("BUILDLOGS_LISTEN", &api),
                ("BUILDLOGS_METRICS_LISTEN", &metrics),
            ],
            Stdio::null(),
        );
        proc.listening(&api).await;
        proc.listening(&metrics).await;
        assert_eq!(
            get(&format!("http://{api}/metrics")).await,
            reqwest::StatusCode::NOT_FOUND,
            "{role}: /metrics on the API's listener"
        );
        assert_eq!(
            get(&format!("http://{metrics}/metrics")).await,
            reqwest::StatusCode::OK,
            "{role}: /metrics on BUILDLOGS_METRICS_LISTEN"
        );
        assert_eq!(proc.terminate().await, 0, "{role}:\n{}", proc.log());
    }
}

#[tokio::test]
async fn web_refuses_to_start_without_an_admin_token_naming_the_variable() {
    for (env, expected) in [
        (vec![], "BUILDLOGS_ADMIN_TOKEN is not set"),
        (
            vec![("BUILDLOGS_ADMIN_TOKEN", "")],
            "BUILDLOGS_ADMIN_TOKEN is not set",
        ),
        (
            vec![
                ("BUILDLOGS_ADMIN_TOKEN", "same"),
                ("BUILDLOGS_READ_TOKEN", "same"),
            ],
            "BUILDLOGS_READ_TOKEN is the admin token",
        ),
    ] {
        let api = free_addr();
        let mut env = env;
        env.extend([
            ("BUILDLOGS_LISTEN", api.as_str()),
            ("BUILDLOGS_METRICS_LISTEN", "off"),
        ]);
        let mut proc = Proc::start(&["web"], &env, Stdio::null());
        let exited = proc
            .exit_or(|_| std::net::TcpStream::connect(&api).is_ok())
            .await;
        let log = proc.log();
        assert_eq!(exited, Some(1), "{env:?}: it started:\n{log}");
        assert!(log.starts_with("error: "), "{log}");
        assert!(log.contains(expected), "{env:?}: {log}");
        assert_eq!(log.trim_end().lines().count(), 1, "one clear line: {log}");
    }
}

#[tokio::test]
async fn all_keeps_a_made_up_admin_token_in_its_data_dir_says_where_and_reuses_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = data.join("admin-token");
    let mut tokens = Vec::new();
    for said in ["made up and saved in", "kept in"] {
        let api = free_addr();
        let mut proc = Proc::start_in(
            &["all"],
            &[
                ("BUILDLOGS_LISTEN", &api),
                ("BUILDLOGS_METRICS_LISTEN", "off"),
            ],
            Stdio::piped(),
            data.clone(),
        );
        let stdout = proc.child.stdout.take().expect("stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .expect("a line on stdout");
        let path = file.display();
        assert_eq!(
            line.trim_end(),
            format!(
                "admin token: {said} {path} (read it with `cat {path}`; BUILDLOGS_ADMIN_TOKEN \
                 overrides it)"
            )
        );
        proc.listening(&api).await;
        let token = std::fs::read_to_string(&file).expect("the token file");
        let token = token.trim_end().to_owned();
        assert!(token.len() >= 32, "{token}");
        assert!(!line.contains(&token), "the token itself printed: {line}");
        assert!(!proc.log().contains(&token), "the token logged");
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
        let client = reqwest::Client::new();
        let register = |token: &str| {
            client
                .post(format!("http://{api}/api/v4/jobs"))
                .bearer_auth(token)
                .send()
        };
        assert_eq!(register(&token).await.unwrap().status(), 201);
        assert_eq!(register("guess").await.unwrap().status(), 401);
        assert_eq!(proc.terminate().await, 0, "{}", proc.log());
        tokens.push(token);
    }
    assert_eq!(
        tokens[0], tokens[1],
        "the second start reuses the first's token"
    );
}

#[tokio::test]
async fn a_set_admin_token_wins_and_no_token_file_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let api = free_addr();
    let mut proc = Proc::start_in(
        &["all"],
        &[
            ("BUILDLOGS_ADMIN_TOKEN", "defaults-test-admin"),
            ("BUILDLOGS_LISTEN", &api),
            ("BUILDLOGS_METRICS_LISTEN", "off"),
        ],
        Stdio::null(),
        data.clone(),
    );
    proc.listening(&api).await;
    let created = reqwest::Client::new()
        .post(format!("http://{api}/api/v4/jobs"))
        .bearer_auth("defaults-test-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(!data.join("admin-token").exists());
    assert_eq!(proc.terminate().await, 0, "{}", proc.log());
}

#[tokio::test]
async fn worker_and_scheduler_start_without_an_admin_token_and_log_without_colours() {
    for (role, started) in [
        ("worker", "worker started"),
        ("scheduler", "scheduler started"),
    ] {
        let mut proc = Proc::start(
            &[role],
            &[("BUILDLOGS_METRICS_LISTEN", "off"), ("RUST_LOG", "info")],
            Stdio::null(),
        );
        let exited = proc.exit_or(|p| p.log().contains(started)).await;
        assert_eq!(exited, None, "{role} exited:\n{}", proc.log());
        assert_eq!(proc.terminate().await, 0, "{role}:\n{}", proc.log());
        let log = proc.log();
        assert!(
            !log.contains('\u{1b}'),
            "{role}: colour codes in a file:\n{log:?}"
        );
        if role == "worker" {
            assert!(log.contains("stores opened objects=file://"), "{log}");
        }
    }
}

#[tokio::test]
async fn a_cli_call_logs_nothing_by_default_and_no_colours_when_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = bare(&["status"], dir.path().join("data"))
        .output()
        .expect("buildlogs status");
    assert!(status.status.success());
    assert_eq!(
        String::from_utf8_lossy(&status.stderr),
        "",
        "quiet by default"
    );

    let debug = bare(&["status"], dir.path().join("data"))
        .env("RUST_LOG", "debug")
        .output()
        .expect("buildlogs status");
    let log = String::from_utf8_lossy(&debug.stderr);
    assert!(debug.status.success(), "{log}");
    assert!(
        log.contains("object store opened objects=file://"),
        "says where: {log}"
    );
    assert!(!log.contains('\u{1b}'), "colour codes in a pipe: {log:?}");
}

/// The Procfile's roles, started as it says on one host with no metrics setting: `web` and
/// `worker` serve `/metrics` on ports of their own (9394 and 9395), so neither refuses to start.
#[tokio::test]
async fn the_procfiles_roles_share_one_host_with_metrics_ports_of_their_own() {
    let help = |role: &str| {
        let out = bare(&[role, "--help"], PathBuf::from("unused"))
            .output()
            .expect("help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(help("web").contains("[default: 127.0.0.1:9394]"));
    assert!(help("all").contains("[default: 127.0.0.1:9394]"));
    assert!(help("worker").contains("[default: 127.0.0.1:9395]"));

    // The roles start on their default metrics ports, which nothing else may hold: a test that
    // cannot check what it claims fails and says why, rather than passing without checking.
    let taken: Vec<&str> = ["127.0.0.1:9394", "127.0.0.1:9395"]
        .into_iter()
        .filter(|a| std::net::TcpListener::bind(a).is_err())
        .collect();
    assert!(
        taken.is_empty(),
        "{taken:?} in use on this host: stop what listens there (`ss -ltnp`) to run this test"
    );
    let procfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Procfile"))
        .expect("Procfile");
    let dir = tempfile::tempdir().expect("temp dir");
    let api = free_addr();
    let mut procs: Vec<(String, Proc)> = Vec::new();
    // One after the other: on one fresh SQLite file, processes starting at once race to
    // migrate it (the production stack's PostgreSQL migrations take a lock).
    for line in procfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (role, command) = line.split_once(':').expect("role: command");
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"buildlogs"), "{line}");
        let mut proc = Proc::start_in(
            &words[1..],
            &[
                ("BUILDLOGS_ADMIN_TOKEN", "defaults-test-admin"),
                ("BUILDLOGS_LISTEN", &api),
            ],
            Stdio::null(),
            dir.path().join("data"),
        );
        match role {
            "web" => {
                proc.listening(&api).await;
                proc.listening("127.0.0.1:9394").await;
            }
            "worker" => proc.listening("127.0.0.1:9395").await,
            _ => {
                let exited = proc
                    .exit_or(|p| p.log().contains("scheduler started"))
                    .await;
                assert_eq!(exited, None, "{role}:\n{}", proc.log());
            }
        }
        procs.push((role.to_owned(), proc));
    }
    let roles: Vec<&str> = procs.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["web", "worker", "scheduler"]);
    for metrics in ["127.0.0.1:9394", "127.0.0.1:9395"] {
        assert_eq!(
            get(&format!("http://{metrics}/metrics")).await,
            reqwest::StatusCode::OK,
            "{metrics}"
        );
    }
    for (role, proc) in &mut procs {
        assert_eq!(proc.terminate().await, 0, "{role}:\n{}", proc.log());
    }
}
