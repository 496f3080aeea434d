//! The short soak: `buildlogs bench soak` for 75 seconds with 12 runners, run as a child
//! process exactly as an operator runs it — 2 web, 2 worker and 1 scheduler processes, a
//! private redis-server with AOF, a PostgreSQL schema of its own, s3s-fs behind the fault
//! relay; runners that vanish, readers, resuming tails; the object store down, workers
//! SIGKILLed, Redis and a web restarted.
//!
//! It must exit 0 and print `invariants=ok`: every build final and archived byte-identical,
//! reads and tails correct, Redis keys back to the baseline, RSS flat, dead jobs explained,
//! queues drained, no process died on its own, no runner refused while it writes — so no later change can bring a leak back
//! unseen. It also checks that the traffic and the faults happened (a soak that sent nothing
//! would hold every invariant).
//!
//! Isolation: the soak starts its own Redis and s3s-fs and creates and drops its own schema in
//! `BUILDLOGS_TEST_DATABASE_URL`; it removes its temp dir (keeping only the process logs of a
//! failed run, whose path it prints).

#[path = "../../tests/support/s3s_fs.rs"]
mod s3s_fs;

use std::collections::HashMap;
use std::process::Command;

#[test]
fn a_short_soak_with_faults_holds_every_invariant() {
    let s3s_fs = s3s_fs::binary();
    let database_url = std::env::var("BUILDLOGS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let out = Command::new(env!("CARGO_BIN_EXE_buildlogs"))
        .args(["bench", "soak", "--seconds", "75", "--runners", "12"])
        .args([
            "--patch-interval",
            "2",
            "--job-min-seconds",
            "5",
            "--job-max-seconds",
            "25",
        ])
        .args([
            "--max-log-mib",
            "8",
            "--big-log-mib",
            "16",
            "--drain-seconds",
            "150",
        ])
        .arg("--s3s-fs")
        .arg(&s3s_fs)
        .env("BUILDLOGS_BENCH_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running buildlogs bench soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let figures: HashMap<&str, &str> = stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let number = |key: &str| -> u64 {
        figures
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no figure {key} in the soak's output:\n{stdout}\n{stderr}"))
    };
    // The traffic and the faults happened.
    assert!(number("builds_started") >= 20, "too few builds:\n{stdout}");
    assert!(
        number("vanished_mid_job") >= 1,
        "no runner vanished mid-job:\n{stdout}"
    );
    assert!(
        number("vanished_after_put") >= 1,
        "no runner vanished after its PUT:\n{stdout}"
    );
    assert!(number("reads_served") > 0, "no reads:\n{stdout}");
    assert!(number("range_reads") > 0, "no range reads:\n{stdout}");
    assert!(
        number("big_log_reads") > 0,
        "the big log was never read:\n{stdout}"
    );
    assert!(number("tail_resumes") > 0, "no tail resumed:\n{stdout}");
    assert!(
        number("store_connections_refused") > 0,
        "the store outage refused nothing:\n{stdout}"
    );
    // Every invariant held.
    assert!(
        out.status.success() && figures.get("invariants") == Some(&"ok"),
        "the soak found violations (exit {}):\n{stdout}\n--- stderr (last 40 lines)\n{}",
        out.status,
        stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
