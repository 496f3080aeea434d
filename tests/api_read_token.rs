//! The read-only token (`BUILDLOGS_READ_TOKEN`): it reads any job, its log and its stream and
//! opens the dashboard's views, and is refused (403, saying why) everything that changes
//! something: registering jobs, re-running or discarding dead jobs, setting limits. The refused
//! calls change nothing. On the embedded stack: who may call is decided before any store is
//! touched, the same on every stack.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use buildlogs::jobs::broker::{Ack, NewJob};
use buildlogs::jobs::{Clock, Envelope, SystemClock};
use support::app::{ADMIN, READER, Reply, TestApp};

const QUEUE: &str = "read_token_test";

async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    app.send(request).await
}

fn message(reply: &Reply) -> String {
    reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn builds(app: &TestApp) -> i64 {
    app.scalar_i64("SELECT COUNT(*) FROM builds")
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_token_reads_jobs_logs_and_streams_but_registers_no_job() {
    let app = TestApp::embedded(None).await;
    let (id, token) = app.create_job().await;
    assert_eq!(app.patch(id, &token, 0, b"hello").await.status, 202);

    let job = call(&app, Method::GET, &format!("/api/v4/jobs/{id}"), READER, "").await;
    assert_eq!(job.status, StatusCode::OK, "{}", message(&job));
    assert_eq!(job.json()["status"], "running");
    assert_eq!(job.json()["trace"]["size"], 5);
    let trace = call(
        &app,
        Method::GET,
        &format!("/api/v4/jobs/{id}/trace"),
        READER,
        "",
    )
    .await;
    assert_eq!(trace.status, StatusCode::OK);
    assert_eq!(trace.body, b"hello");
    let unknown = call(&app, Method::GET, "/api/v4/jobs/999999", READER, "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "as for the admin");

    // The stream of a running job never ends: look at its head only.
    let stream = {
        use tower::ServiceExt;
        let request = Request::get(format!("/api/v4/jobs/{id}/trace/stream"))
            .header("authorization", format!("Bearer {READER}"))
            .body(Body::empty())
            .unwrap();
        app.router.clone().oneshot(request).await.unwrap()
    };
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(
        stream.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    drop(stream);

    let before = builds(&app).await;
    let refused = call(&app, Method::POST, "/api/v4/jobs", READER, "").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        message(&refused).contains("read-only token (BUILDLOGS_READ_TOKEN) cannot register jobs"),
        "{}",
        message(&refused)
    );
    assert_eq!(builds(&app).await, before, "no job registered");

    // Near misses of the read-only token read nothing.
    for wrong in [&format!("{READER}x"), &READER[1..], ""] {
        let reply = call(
            &app,
            Method::GET,
            &format!("/api/v4/jobs/{id}/trace"),
            wrong,
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{wrong:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_token_opens_dashboard_views_and_changes_nothing() {
    let app = TestApp::embedded(None).await;
    let now = SystemClock.now_ms();
    let envelope = Envelope::new(QUEUE, "{\"n\":1}".into(), 3, now);
    let dead_id = envelope.id.clone();
    let job = NewJob {
        envelope,
        run_at_ms: None,
        dedup_ttl: Duration::from_secs(60),
    };
    app.broker.enqueue(vec![job], now).await.unwrap();
    let leased = app
        .broker
        .fetch(QUEUE, 1, Duration::from_secs(60), now)
        .await
        .unwrap();
    let ack = Ack::Dead {
        lease: leased[0].lease.clone(),
        error: "boom".into(),
    };
    app.broker.ack(QUEUE, vec![ack], now).await.unwrap();

    for path in [
        "/admin/api/queues".to_owned(),
        "/admin/api/builds".to_owned(),
        "/admin/api/expiry".to_owned(),
        format!("/admin/api/queues/{QUEUE}/dead"),
        "/admin/api/cron".to_owned(),
        "/admin/api/breaker".to_owned(),
        "/admin/api/recovery".to_owned(),
        "/admin/api/backlog".to_owned(),
    ] {
        let reply = call(&app, Method::GET, &path, READER, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", message(&reply));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    let dead = call(
        &app,
        Method::GET,
        &format!("/admin/api/queues/{QUEUE}/dead"),
        READER,
        "",
    )
    .await;
    assert_eq!(dead.json()["jobs"][0]["id"], dead_id.as_str());

    for (method, path, body) in [
        (
            Method::POST,
            format!("/admin/api/queues/{QUEUE}/dead/{dead_id}/retry"),
            "",
        ),
        (
            Method::DELETE,
            format!("/admin/api/queues/{QUEUE}/dead/{dead_id}"),
            "",
        ),
        (
            Method::PUT,
            format!("/admin/api/queues/{QUEUE}/limit"),
            r#"{"limit": 1}"#,
        ),
        (Method::POST, "/admin/api/recovery/run".to_owned(), ""),
    ] {
        let reply = call(&app, method.clone(), &path, READER, body).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert!(
            message(&reply).contains("read-only token (BUILDLOGS_READ_TOKEN) cannot change"),
            "{method} {path}: {}",
            message(&reply)
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    let stats = app.broker.stats(QUEUE, SystemClock.now_ms()).await.unwrap();
    assert_eq!(
        (stats.dead, stats.ready, stats.limit),
        (1, 0, None),
        "the dead job is neither re-run nor discarded, no limit set"
    );

    // The admin token still does everything.
    let limit = call(
        &app,
        Method::PUT,
        &format!("/admin/api/queues/{QUEUE}/limit"),
        ADMIN,
        r#"{"limit": 1}"#,
    )
    .await;
    assert_eq!(limit.status, StatusCode::OK, "{}", message(&limit));
    let retry = call(
        &app,
        Method::POST,
        &format!("/admin/api/queues/{QUEUE}/dead/{dead_id}/retry"),
        ADMIN,
        "",
    )
    .await;
    assert_eq!(retry.status, StatusCode::OK, "{}", message(&retry));
    let stats = app.broker.stats(QUEUE, SystemClock.now_ms()).await.unwrap();
    assert_eq!((stats.dead, stats.ready, stats.limit), (0, 1, Some(1)));
}
