//! The operator dashboard (`/admin`, `/admin/api/…`) on both stacks (embedded: SQLite;
//! production: PostgreSQL + Redis): the token is required, the JSON shows what the broker and
//! the metadata store hold, and what the dashboard changes (limits, dead jobs) is changed in
//! the broker; bad input changes nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use buildlogs::api::BacklogHistory;
use buildlogs::jobs::broker::{Ack, NewJob};
use buildlogs::jobs::client::new_job;
use buildlogs::jobs::{Clock, Envelope, SystemClock};
use buildlogs::traces::breaker::OBJECT_STORE_BREAKER;
use buildlogs::traces::jobs::RecoverStaleTraces;
use buildlogs::traces::metadata::BreakerRecord;
use buildlogs::traces::model::{BuildStatus, NewArtifact};
use buildlogs::traces::recovery::RECOVERY_CURSOR;
use serde_json::{Value, json};
use support::app::{ADMIN, RECOVERY_CRON, RECOVERY_SCHEDULE, Reply, TestApp};
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "admin_test";
const LEASE: Duration = Duration::from_secs(60);

/// A request with the given `authorization` header (none when `None`) and JSON body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let body = match body {
        Some(text) => {
            request = request.header("content-type", "application/json");
            Body::from(text.to_owned())
        }
        None => Body::empty(),
    };
    app.send(request.body(body).unwrap()).await
}

/// A call with the admin token.
async fn admin(app: &TestApp, method: Method, path: &str, body: Option<&str>) -> Reply {
    call(app, method, path, Some(&format!("Bearer {ADMIN}")), body).await
}

/// `GET` with the admin token, 200 expected; the JSON.
async fn get_json(app: &TestApp, path: &str) -> Value {
    let reply = admin(app, Method::GET, path, None).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{path}");
    reply.json()
}

fn message(reply: &Reply) -> String {
    reply.json()["message"]
        .as_str()
        .expect("an error message")
        .to_owned()
}

/// Stores `n` jobs in `queue`, due at `run_at_ms` (now when `None`); their ids.
async fn enqueue(app: &TestApp, queue: &str, n: usize, run_at_ms: Option<i64>) -> Vec<String> {
    let now = SystemClock.now_ms();
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            envelope: Envelope::new(queue, format!("{{\"n\":{i}}}"), 3, now),
            run_at_ms,
            dedup_ttl: Duration::from_secs(60),
        })
        .collect();
    let ids = jobs.iter().map(|j| j.envelope.id.clone()).collect();
    app.broker.enqueue(jobs, now).await.unwrap();
    ids
}

/// The `queue` row of `GET /admin/api/queues`.
async fn queue_row(app: &TestApp, queue: &str) -> Value {
    let json = get_json(app, "/admin/api/queues").await;
    json["queues"]
        .as_array()
        .expect("a list of queues")
        .iter()
        .find(|q| q["queue"] == queue)
        .cloned()
        .unwrap_or_else(|| panic!("{queue} listed in {json}"))
}

async fn limit_of(app: &TestApp, queue: &str) -> Option<u32> {
    app.broker
        .stats(queue, SystemClock.now_ms())
        .await
        .unwrap()
        .limit
}

/// Every dashboard endpoint, as (method, path, body).
fn endpoints() -> Vec<(Method, String, Option<&'static str>)> {
    vec![
        (Method::GET, "/admin/api/queues".into(), None),
        (Method::GET, "/admin/api/builds".into(), None),
        (Method::GET, "/admin/api/retries".into(), None),
        (Method::GET, format!("/admin/api/queues/{QUEUE}/dead"), None),
        (
            Method::POST,
            format!("/admin/api/queues/{QUEUE}/dead/x/retry"),
            None,
        ),
        (
            Method::DELETE,
            format!("/admin/api/queues/{QUEUE}/dead/x"),
            None,
        ),
        (
            Method::PUT,
            format!("/admin/api/queues/{QUEUE}/limit"),
            Some(r#"{"limit": 1}"#),
        ),
        (Method::GET, "/admin/api/cron".into(), None),
        (Method::GET, "/admin/api/breaker".into(), None),
        (Method::GET, "/admin/api/recovery".into(), None),
        (Method::POST, "/admin/api/recovery/run".into(), None),
        (Method::GET, "/admin/api/expiry".into(), None),
        (Method::GET, "/admin/api/backlog".into(), None),
    ]
}

async fn every_endpoint_needs_the_admin_token_401_without_403_with_a_wrong_one(app: &TestApp) {
    let (_, job_token) = app.create_job().await;
    enqueue(app, QUEUE, 1, None).await;
    for (method, path, body) in endpoints() {
        let none = call(app, method.clone(), &path, None, body).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        assert!(message(&none).contains("admin token"), "{}", message(&none));

        let basic = call(app, method.clone(), &path, Some("Basic YWRtaW4="), body).await;
        assert_eq!(basic.status, StatusCode::UNAUTHORIZED, "{method} {path}");

        for wrong in ["Bearer wrong", "Bearer ", &format!("Bearer {ADMIN}x")] {
            let reply = call(app, method.clone(), &path, Some(wrong), body).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{method} {path} {wrong}"
            );
            assert_eq!(reply.header("cache-control"), Some("no-store"));
        }
        // A job token is no admin token.
        let request = Request::builder()
            .method(method.clone())
            .uri(&path)
            .header("job-token", &job_token)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.send(request).await.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a job token"
        );
    }
    assert_eq!(
        limit_of(app, QUEUE).await,
        None,
        "the refused PUTs set no limit"
    );
    for (method, path, body) in endpoints() {
        let reply = admin(app, method.clone(), &path, body).await;
        assert!(
            reply.status == StatusCode::OK || reply.status == StatusCode::NOT_FOUND,
            "{method} {path} with the token: {}",
            reply.status
        );
    }
}

async fn the_page_is_served_without_the_token_and_holds_no_data(app: &TestApp) {
    let page = call(app, Method::GET, "/admin", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(html.contains(r#"<script src="/admin/admin.js""#), "{html}");
    assert!(!html.contains("<script>"), "no inline script");
    let policy = page.header("content-security-policy").expect("a CSP");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!html.contains(ADMIN));

    let slash = call(app, Method::GET, "/admin/", None, None).await;
    assert_eq!(slash.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(slash.header("location"), Some("/admin"));

    let script = call(app, Method::GET, "/admin/admin.js", None, None).await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let js = String::from_utf8(script.body).unwrap();
    assert!(
        js.contains("Authorization: `Bearer ${token}`"),
        "the token goes in a header"
    );
    assert!(js.contains("sessionStorage"));
    assert!(
        !js.contains("innerHTML"),
        "server data is shown as text only"
    );
    // Every endpoint the page calls is one the API serves.
    for path in [
        "/admin/api/queues",
        "/admin/api/backlog",
        "/admin/api/breaker",
        "/admin/api/recovery",
        "/admin/api/cron",
        "/admin/api/builds",
        "/admin/api/retries?limit=50",
        "/admin/api/expiry",
        "/admin/api/recovery/run",
    ] {
        assert!(js.contains(&format!("\"{path}\"")), "{path}");
    }
    let style = call(app, Method::GET, "/admin/admin.css", None, None).await;
    assert_eq!(style.status, StatusCode::OK);
    assert_eq!(
        style.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    // Browsers ask every page's server for an icon: none, and no 404 in the console.
    let icon = call(app, Method::GET, "/favicon.ico", None, None).await;
    assert_eq!(icon.status, StatusCode::NO_CONTENT);
    assert!(icon.body.is_empty());
}

async fn the_queues_view_shows_what_the_broker_holds(app: &TestApp) {
    let now = SystemClock.now_ms();
    enqueue(app, QUEUE, 3, None).await;
    enqueue(app, QUEUE, 2, Some(now + 3_600_000)).await;
    let running = app.broker.fetch(QUEUE, 1, LEASE, now).await.unwrap();
    assert_eq!(running.len(), 1);
    // One job in the dead set, one processed.
    let more = app.broker.fetch(QUEUE, 2, LEASE, now).await.unwrap();
    let acks = vec![
        Ack::Dead {
            lease: more[0].lease.clone(),
            error: "boom".into(),
        },
        Ack::Complete {
            lease: more[1].lease.clone(),
        },
    ];
    app.broker.ack(QUEUE, acks, now).await.unwrap();
    enqueue(app, QUEUE, 1, None).await;

    let row = queue_row(app, QUEUE).await;
    let stats = app.broker.stats(QUEUE, SystemClock.now_ms()).await.unwrap();
    assert_eq!(
        (stats.ready, stats.scheduled, stats.running, stats.dead),
        (1, 2, 1, 1),
        "the setup"
    );
    assert_eq!(row["ready"], 1);
    assert_eq!(row["scheduled"], 2);
    assert_eq!(row["running"], 1);
    assert_eq!(row["dead"], 1);
    assert_eq!(row["limit"], Value::Null);
    assert_eq!(row["processed"], stats.processed);
    assert_eq!(row["failed"], stats.failed);
    assert!(
        row["latency_ms"].as_i64().unwrap() >= 0,
        "the oldest ready job's age: {row}"
    );
    assert!(get_json(app, "/admin/api/queues").await["now_ms"].is_i64());
}

async fn a_limit_set_through_the_api_shows_in_the_broker_and_bad_values_change_nothing(
    app: &TestApp,
) {
    enqueue(app, QUEUE, 5, None).await;
    let path = format!("/admin/api/queues/{QUEUE}/limit");
    let reply = admin(app, Method::PUT, &path, Some(r#"{"limit": 2}"#)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", message_or_body(&reply));
    assert_eq!(reply.json(), json!({"queue": QUEUE, "limit": 2}));
    assert_eq!(limit_of(app, QUEUE).await, Some(2));
    assert_eq!(queue_row(app, QUEUE).await["limit"], 2);
    let fetched = app
        .broker
        .fetch(QUEUE, 10, LEASE, SystemClock.now_ms())
        .await
        .unwrap();
    assert_eq!(fetched.len(), 2, "workers take no more than the limit");

    for bad in [
        r#"{"limit": 0}"#,
        r#"{"limit": -3}"#,
        r#"{"limit": 2.5}"#,
        r#"{"limit": 4294967296}"#,
        r#"{"limit": "7"}"#,
        r#"{"limit": "unlimited"}"#,
        r#"{"limit": true}"#,
        r#"{"max": 7}"#,
        "7",
        "limit=7",
        "",
    ] {
        let reply = admin(app, Method::PUT, &path, Some(bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            message(&reply).starts_with("limit:"),
            "{bad}: {}",
            message(&reply)
        );
        assert_eq!(limit_of(app, QUEUE).await, Some(2), "{bad} changed nothing");
    }

    // An unknown queue: 404, and no queue created.
    let reply = admin(
        app,
        Method::PUT,
        "/admin/api/queues/no_such_queue/limit",
        Some(r#"{"limit": 1}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        !app.broker
            .queues()
            .await
            .unwrap()
            .contains(&"no_such_queue".to_owned())
    );

    for remove in [r#"{"limit": "none"}"#, r#"{"limit": null}"#] {
        admin(app, Method::PUT, &path, Some(r#"{"limit": 9}"#)).await;
        assert_eq!(limit_of(app, QUEUE).await, Some(9));
        let reply = admin(app, Method::PUT, &path, Some(remove)).await;
        assert_eq!(reply.status, StatusCode::OK, "{remove}");
        assert_eq!(reply.json()["limit"], Value::Null);
        assert_eq!(
            limit_of(app, QUEUE).await,
            None,
            "{remove} removes the limit"
        );
    }
}

fn message_or_body(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

async fn dead_jobs_are_listed_retried_and_discarded_through_the_api(app: &TestApp) {
    let ids = enqueue(app, QUEUE, 3, None).await;
    let now = SystemClock.now_ms();
    let deliveries = app.broker.fetch(QUEUE, 3, LEASE, now).await.unwrap();
    for (i, d) in deliveries.iter().enumerate() {
        let ack = Ack::Dead {
            lease: d.lease.clone(),
            error: format!("<b>boom {}</b>", d.envelope.id),
        };
        app.broker
            .ack(QUEUE, vec![ack], now + i as i64)
            .await
            .unwrap();
    }
    let list = get_json(app, &format!("/admin/api/queues/{QUEUE}/dead")).await;
    assert_eq!(list["queue"], QUEUE);
    let jobs = list["jobs"].as_array().unwrap();
    let listed: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "every dead job listed");
    let first = &jobs[0];
    assert_eq!(
        first["error"],
        format!("<b>boom {}</b>", first["id"].as_str().unwrap())
    );
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["max_attempts"], 3);
    assert!(first["payload"].as_str().unwrap().starts_with("{\"n\":"));
    assert!(first["died_at_ms"].as_i64().unwrap() >= now);

    let two = get_json(app, &format!("/admin/api/queues/{QUEUE}/dead?limit=2")).await;
    assert_eq!(two["jobs"].as_array().unwrap().len(), 2);
    for bad in ["0", "x", "1001", "-1"] {
        let reply = admin(
            app,
            Method::GET,
            &format!("/admin/api/queues/{QUEUE}/dead?limit={bad}"),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(message(&reply).starts_with("limit:"), "{}", message(&reply));
    }
    let unknown = admin(app, Method::GET, "/admin/api/queues/nope/dead", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Retry: back to ready with fresh attempts, out of the dead set.
    let retry = format!("/admin/api/queues/{QUEUE}/dead/{}/retry", ids[0]);
    let reply = admin(app, Method::POST, &retry, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", message_or_body(&reply));
    assert_eq!(reply.json()["retried"], true);
    let stats = app.broker.stats(QUEUE, SystemClock.now_ms()).await.unwrap();
    assert_eq!((stats.ready, stats.dead), (1, 2));
    let rerun = app
        .broker
        .fetch(QUEUE, 5, LEASE, SystemClock.now_ms())
        .await
        .unwrap();
    assert_eq!(rerun.len(), 1);
    assert_eq!(
        (rerun[0].envelope.id.as_str(), rerun[0].envelope.attempt),
        (ids[0].as_str(), 1),
        "the retried job runs again, its attempts afresh"
    );
    assert_eq!(
        admin(app, Method::POST, &retry, None).await.status,
        StatusCode::NOT_FOUND,
        "no longer dead"
    );

    // Discard: gone for good.
    let discard = format!("/admin/api/queues/{QUEUE}/dead/{}", ids[1]);
    let reply = admin(app, Method::DELETE, &discard, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", message_or_body(&reply));
    assert_eq!(reply.json()["discarded"], true);
    assert_eq!(
        admin(app, Method::DELETE, &discard, None).await.status,
        StatusCode::NOT_FOUND
    );
    let left = app.broker.dead_list(QUEUE, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].envelope.id, ids[2]);
    assert_eq!(queue_row(app, QUEUE).await["dead"], 1);
}

async fn jobs_waiting_to_retry_are_listed_next_first_with_their_last_error(app: &TestApp) {
    let empty = get_json(app, "/admin/api/retries").await;
    assert_eq!(empty["jobs"], json!([]), "nothing waits yet");

    let now = SystemClock.now_ms();
    let later = enqueue(app, "mail", 1, Some(now + 600_000)).await;
    let ids = enqueue(app, QUEUE, 2, None).await;
    let got = app.broker.fetch(QUEUE, 2, LEASE, now).await.unwrap();
    let acks = vec![
        Ack::Retry {
            lease: got[0].lease.clone(),
            run_at_ms: now + 60_000,
            error: "s3: 503 Slow Down".into(),
        },
        Ack::Complete {
            lease: got[1].lease.clone(),
        },
    ];
    app.broker.ack(QUEUE, acks, now).await.unwrap();

    let list = get_json(app, "/admin/api/retries").await;
    let jobs = list["jobs"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j["queue"].as_str().unwrap(), j["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [(QUEUE, ids[0].as_str()), ("mail", later[0].as_str())]
    );
    assert_eq!(jobs[0]["last_error"], "s3: 503 Slow Down");
    assert_eq!(jobs[0]["run_at_ms"], now + 60_000);
    assert_eq!(
        (&jobs[0]["attempts"], &jobs[0]["max_attempts"]),
        (&json!(1), &json!(3))
    );
    assert_eq!(
        jobs[1]["last_error"],
        Value::Null,
        "not failed: enqueued for later"
    );
    assert_eq!(jobs[1]["attempts"], 0);

    let one = get_json(app, "/admin/api/retries?limit=1").await;
    assert_eq!(one["jobs"].as_array().unwrap().len(), 1);
    let bad = admin(app, Method::GET, "/admin/api/retries?limit=0", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(message(&bad).starts_with("limit:"), "{}", message(&bad));
}

async fn the_breaker_view_shows_the_shared_state(app: &TestApp) {
    let closed = get_json(app, "/admin/api/breaker").await;
    assert_eq!(closed["name"], OBJECT_STORE_BREAKER);
    assert_eq!(closed["open"], false);
    assert_eq!(closed["since_ms"], Value::Null, "never opened");
    assert_eq!(closed["reason"], Value::Null);
    assert_eq!(closed["history"], json!([]));

    let opened_at = SystemClock.now_ms() - 60_000;
    app.parts
        .meta
        .set_breaker(&BreakerRecord {
            name: OBJECT_STORE_BREAKER.to_owned(),
            open: true,
            reason: Some("s3: connection refused".into()),
            changed_at_ms: opened_at,
        })
        .await
        .unwrap();
    let open = get_json(app, "/admin/api/breaker").await;
    assert_eq!(open["open"], true);
    assert_eq!(open["since_ms"], opened_at);
    assert_eq!(open["reason"], "s3: connection refused");

    let closed_at = SystemClock.now_ms();
    app.parts
        .meta
        .set_breaker(&BreakerRecord {
            name: OBJECT_STORE_BREAKER.to_owned(),
            open: false,
            reason: None,
            changed_at_ms: closed_at,
        })
        .await
        .unwrap();
    let closed = get_json(app, "/admin/api/breaker").await;
    assert_eq!(closed["open"], false);
    assert_eq!(closed["since_ms"], closed_at);
    assert_eq!(closed["reason"], Value::Null);
    // Its history: the outage, with how long the store was down.
    assert_eq!(
        closed["history"],
        json!([
            { "open": false, "at_ms": closed_at, "reason": null, "lasted_ms": null },
            { "open": true, "at_ms": opened_at, "reason": "s3: connection refused",
              "lasted_ms": closed_at - opened_at },
        ])
    );
}

async fn cron_and_recovery_views_show_last_and_next_ticks_and_the_cursor(app: &TestApp) {
    let before = get_json(app, "/admin/api/cron").await;
    let now = before["now_ms"].as_i64().unwrap();
    let schedules = before["schedules"].as_array().unwrap();
    assert_eq!(schedules.len(), 1, "{before}");
    let s = &schedules[0];
    assert_eq!(s["name"], RECOVERY_SCHEDULE);
    assert_eq!(s["expression"], RECOVERY_CRON);
    assert_eq!(s["queue"], "recover_stale_traces");
    assert_eq!(s["last_fired_ms"], Value::Null, "never fired");
    let next = s["next_tick_ms"].as_i64().unwrap();
    assert!(next > now && next <= now + 5 * 60_000, "{next} vs {now}");

    let tick = now - now % 300_000;
    let job = new_job(&RecoverStaleTraces {}, None, now).unwrap();
    assert!(
        app.broker
            .cron_fire(RECOVERY_SCHEDULE, tick, job, now)
            .await
            .unwrap()
    );
    let after = get_json(app, "/admin/api/cron").await;
    assert_eq!(after["schedules"][0]["last_fired_ms"], tick);

    let recovery = get_json(app, "/admin/api/recovery").await;
    assert_eq!(recovery["cursor_name"], RECOVERY_CURSOR);
    assert_eq!(recovery["cursor"], Value::Null);
    assert_eq!(recovery["last_step_ms"], Value::Null, "never ran");
    assert_eq!(recovery["stale"], 0);
    assert_eq!(recovery["stale_more"], false);
    assert_eq!(recovery["stale_after_ms"], 3_600_000);
    assert_eq!(
        recovery["schedule"],
        json!({"last_fired_ms": tick, "next_tick_ms": next})
    );
    app.parts
        .meta
        .set_cursor(RECOVERY_CURSOR, 4242, now)
        .await
        .unwrap();
    let recovery = get_json(app, "/admin/api/recovery").await;
    assert_eq!(recovery["cursor"], 4242);
    assert_eq!(recovery["last_step_ms"], now);

    // Builds finished over an hour ago and not archived are stale; a recent one is not yet.
    let (old, _) = app.create_job().await;
    let (recent, _) = app.create_job().await;
    let meta = &app.parts.meta;
    meta.finish_build(old, BuildStatus::Success, None, now - 2 * 3_600_000)
        .await
        .unwrap();
    meta.finish_build(recent, BuildStatus::Success, None, now)
        .await
        .unwrap();
    assert_eq!(get_json(app, "/admin/api/recovery").await["stale"], 1);
}

async fn expiry_shows_off_until_an_archive_is_written_with_an_expiry(app: &TestApp) {
    let none = get_json(app, "/admin/api/expiry").await;
    assert_eq!(none["archived"], false);
    assert_eq!(none["on"], Value::Null);
    let archive = |build_id, expire_at_ms| NewArtifact {
        build_id,
        object_path: format!("traces/{build_id}/job.log"),
        size: 1,
        crc32: 0,
        sha256: "ab".repeat(32),
        expire_at_ms,
    };
    let (kept, _) = app.create_job().await;
    let meta = &app.parts.meta;
    meta.record_archive(&archive(kept, None), 1_000)
        .await
        .unwrap();
    let off = get_json(app, "/admin/api/expiry").await;
    assert_eq!(
        (off["archived"].clone(), off["on"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(off["keep_ms"], Value::Null);

    let (expiring, _) = app.create_job().await;
    let day = 24 * 3_600_000;
    meta.record_archive(&archive(expiring, Some(2_000 + 30 * day)), 2_000)
        .await
        .unwrap();
    let on = get_json(app, "/admin/api/expiry").await;
    assert_eq!(on["on"], true);
    assert_eq!(on["keep_ms"], 30 * day);
    assert_eq!(on["newest_expires_at_ms"], 2_000 + 30 * day);
}

async fn run_now_enqueues_one_recovery_run_at_a_time(app: &TestApp) {
    let queued = admin(app, Method::POST, "/admin/api/recovery/run", None).await;
    assert_eq!(queued.status, StatusCode::OK);
    assert_eq!(queued.json()["queued"], true, "{}", queued.json());
    let stats = app
        .broker
        .stats("recover_stale_traces", SystemClock.now_ms())
        .await
        .unwrap();
    assert_eq!(stats.ready, 1, "one run waits for a worker");
    let again = admin(app, Method::POST, "/admin/api/recovery/run", None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["queued"], false);
    assert!(
        again.json()["message"]
            .as_str()
            .unwrap()
            .contains("already queued"),
        "{}",
        again.json()
    );
    let stats = app
        .broker
        .stats("recover_stale_traces", SystemClock.now_ms())
        .await
        .unwrap();
    assert_eq!(stats.ready, 1, "still one");
}

async fn the_backlog_series_holds_each_queues_ready_scheduled_and_running(app: &TestApp) {
    let empty = get_json(app, "/admin/api/backlog").await;
    assert_eq!(empty["samples"], json!([]));
    assert_eq!(empty["interval_ms"], 5_000);
    assert_eq!(empty["capacity"], 720);

    let now = SystemClock.now_ms();
    enqueue(app, QUEUE, 2, None).await;
    let history = &app.state.backlog;
    history.sample(app.broker.as_ref(), now).await.unwrap();
    enqueue(app, QUEUE, 1, Some(now + 3_600_000)).await;
    app.broker.fetch(QUEUE, 1, LEASE, now).await.unwrap();
    history
        .sample(app.broker.as_ref(), now + 5_000)
        .await
        .unwrap();

    let json = get_json(app, "/admin/api/backlog").await;
    let samples = json["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0]["at_ms"], now);
    assert_eq!(samples[0]["queues"][QUEUE], 2);
    assert_eq!(
        samples[1]["queues"][QUEUE], 3,
        "1 ready + 1 scheduled + 1 running"
    );
}

async fn the_builds_list_pages_newest_first_with_sizes_states_and_log_links(app: &TestApp) {
    let (older, older_token) = app.create_job().await;
    let (newer, newer_token) = app.create_job().await;
    let (finished, _) = app.create_job().await;
    assert_eq!(
        app.patch(older, &older_token, 0, b"hello ").await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.patch(newer, &newer_token, 0, b"hi").await.status,
        StatusCode::ACCEPTED
    );
    let now = SystemClock.now_ms();
    let meta = &app.parts.meta;
    meta.finish_build(finished, BuildStatus::Failed, Some("script_failure"), now)
        .await
        .unwrap();
    meta.record_lost_bytes(finished, 131_072).await.unwrap();
    meta.record_checksums(finished, 1, Some(2), Some(false))
        .await
        .unwrap();

    let all = get_json(app, "/admin/api/builds").await;
    let ids: Vec<i64> = all["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![finished, newer, older], "newest first: {all}");
    assert_eq!(all["next_before"], Value::Null, "one page");
    assert!(all["now_ms"].is_i64());
    let first = &all["builds"][0];
    assert_eq!(first["status"], "failed");
    assert_eq!(first["failure_reason"], "script_failure");
    assert_eq!(first["web_url"], format!("/jobs/{finished}"));
    assert_eq!(
        first["trace"],
        json!({"size": 0, "state": "flushing", "checksum_valid": false, "partial": true,
            "lost_bytes": 131_072})
    );
    assert!(
        first["finished_at"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );
    let live = &all["builds"][2];
    assert_eq!(live["trace"]["size"], 6, "the live length: {live}");
    assert_eq!(live["trace"]["state"], "live");
    assert_eq!(live["finished_at"], Value::Null);
    // The job JSON agrees on what they share.
    let job = admin(app, Method::GET, &format!("/api/v4/jobs/{older}"), None)
        .await
        .json();
    assert_eq!(live["created_at"], job["created_at"]);
    assert_eq!(live["trace"]["size"], job["trace"]["size"]);

    // Keyset pages.
    let page1 = get_json(app, "/admin/api/builds?state=running&limit=1").await;
    assert_eq!(page1["builds"][0]["id"], newer);
    assert_eq!(page1["next_before"], newer);
    let page2 = get_json(
        app,
        &format!("/admin/api/builds?state=running&limit=1&before={newer}"),
    )
    .await;
    assert_eq!(page2["builds"][0]["id"], older);
    let page3 = get_json(
        app,
        &format!("/admin/api/builds?state=running&limit=1&before={older}"),
    )
    .await;
    assert_eq!(page3["builds"], json!([]));
    assert_eq!(page3["next_before"], Value::Null);
    for filter in ["finished", "partial", "mismatch"] {
        let only = get_json(app, &format!("/admin/api/builds?state={filter}")).await;
        assert_eq!(
            only["builds"].as_array().unwrap().len(),
            1,
            "{filter}: {only}"
        );
        assert_eq!(only["builds"][0]["id"], finished, "{filter}");
    }

    for (query, field) in [
        ("state=done", "state:"),
        ("limit=0", "limit:"),
        ("limit=201", "limit:"),
        ("before=-3", "before:"),
        ("before=x", "before:"),
    ] {
        let reply = admin(
            app,
            Method::GET,
            &format!("/admin/api/builds?{query}"),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            message(&reply).starts_with(field),
            "{query}: {}",
            message(&reply)
        );
    }
}

on_both_stacks!(
    the_builds_list_pages_newest_first_with_sizes_states_and_log_links,
    every_endpoint_needs_the_admin_token_401_without_403_with_a_wrong_one,
    the_page_is_served_without_the_token_and_holds_no_data,
    the_queues_view_shows_what_the_broker_holds,
    a_limit_set_through_the_api_shows_in_the_broker_and_bad_values_change_nothing,
    dead_jobs_are_listed_retried_and_discarded_through_the_api,
    jobs_waiting_to_retry_are_listed_next_first_with_their_last_error,
    the_breaker_view_shows_the_shared_state,
    cron_and_recovery_views_show_last_and_next_ticks_and_the_cursor,
    run_now_enqueues_one_recovery_run_at_a_time,
    expiry_shows_off_until_an_archive_is_written_with_an_expiry,
    the_backlog_series_holds_each_queues_ready_scheduled_and_running,
);

/// The web process's sampler fills a bounded ring until shutdown, then stops. Embedded only:
/// it reads the broker through the same trait on every stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_sampler_keeps_a_bounded_ring_and_stops_on_shutdown() {
    let app = TestApp::embedded(None).await;
    enqueue(&app, QUEUE, 4, None).await;
    let history = Arc::new(BacklogHistory::new(3, Duration::from_millis(10)));
    let shutdown = CancellationToken::new();
    let sampler = tokio::spawn(
        history
            .clone()
            .run(app.state.jobs.clone(), shutdown.clone()),
    );
    // Wait until the first sample has left the ring: more were taken than it holds.
    let started = std::time::Instant::now();
    let mut first = None;
    loop {
        let samples = history.samples();
        assert!(samples.len() <= 3, "bounded: {}", samples.len());
        match (first, samples.first()) {
            (None, Some(s)) => first = Some(s.at_ms),
            (Some(f), Some(s)) if s.at_ms > f => {
                assert_eq!(samples.len(), 3);
                assert!(samples.iter().all(|s| s.queues[QUEUE] == 4));
                assert!(samples.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
                break;
            }
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sampler samples"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), sampler)
        .await
        .expect("the sampler stops on shutdown")
        .unwrap();
}
