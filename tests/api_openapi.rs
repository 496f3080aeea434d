//! The OpenAPI document (`GET /api/v4/openapi.json`): served without a token, it parses, it
//! lists every route the router serves (and nothing it does not serve), and it names the three
//! ways to authenticate.

mod support;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use support::app::TestApp;

/// Every operation the router serves (src/api/mod.rs, src/api/admin.rs, src/api/logpage/), but
/// the static pages and assets (`/admin`, `/admin/`, `/admin/admin.js`, `/admin/admin.css`,
/// `/jobs/{id}`, `/jobs/assets/log.js`, `/jobs/assets/log.css`), which are not API.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v4/jobs"),
    ("get", "/api/v4/jobs/{id}"),
    ("put", "/api/v4/jobs/{id}"),
    ("patch", "/api/v4/jobs/{id}/trace"),
    ("get", "/api/v4/jobs/{id}/trace"),
    ("head", "/api/v4/jobs/{id}/trace"),
    ("get", "/api/v4/jobs/{id}/trace/stream"),
    ("get", "/api/v4/openapi.json"),
    ("get", "/admin/api/queues"),
    ("get", "/admin/api/builds"),
    ("get", "/admin/api/retries"),
    ("get", "/admin/api/queues/{queue}/dead"),
    ("post", "/admin/api/queues/{queue}/dead/{id}/retry"),
    ("delete", "/admin/api/queues/{queue}/dead/{id}"),
    ("put", "/admin/api/queues/{queue}/limit"),
    ("get", "/admin/api/cron"),
    ("get", "/admin/api/breaker"),
    ("get", "/admin/api/recovery"),
    ("post", "/admin/api/recovery/run"),
    ("get", "/admin/api/expiry"),
    ("get", "/admin/api/backlog"),
    ("post", "/api/v4/jobs/{id}/read_link"),
    ("post", "/jobs/{id}/session"),
    ("delete", "/jobs/{id}/session"),
    ("get", "/jobs/{id}/summary"),
    ("get", "/jobs/{id}/lines"),
    ("get", "/jobs/{id}/search"),
    ("get", "/jobs/{id}/stream"),
    ("get", "/jobs/{id}/raw"),
];

const METHODS: &[&str] = &["get", "head", "post", "put", "patch", "delete"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_route_with_its_answers_and_the_security_schemes() {
    let app = TestApp::embedded(None).await;
    let reply = app
        .send(
            Request::get("/api/v4/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "no token needed");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );

    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(*method) {
                listed.insert((method.to_string(), path.clone()));
                let responses = op["responses"].as_object().expect("responses");
                assert!(!responses.is_empty(), "{method} {path}: no responses");
            }
        }
    }
    let known: BTreeSet<_> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, known, "the document's operations vs the router's");

    // Each operation is really served: the router answers neither 405 nor its own (empty) 404.
    for (method, path) in &known {
        let uri = path
            .replace("{id}", "1")
            .replace("{queue}", "no_such_queue");
        let request = Request::builder()
            .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let reply = app.send(request).await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert!(
            reply.status != StatusCode::NOT_FOUND || !reply.body.is_empty(),
            "{method} {uri}: not routed"
        );
    }

    let schemes = &doc["components"]["securitySchemes"];
    for bearer in ["admin_token", "read_token"] {
        assert_eq!(schemes[bearer]["type"], "http", "{bearer}");
        assert_eq!(schemes[bearer]["scheme"], "bearer", "{bearer}");
    }
    assert_eq!(schemes["job_token"]["type"], "apiKey");
    assert_eq!(schemes["job_token"]["in"], "header");
    assert_eq!(schemes["job_token"]["name"], "JOB-TOKEN");
    assert_eq!(schemes["job_token_query"]["in"], "query");
    assert_eq!(schemes["job_token_query"]["name"], "token");

    // The runner's PATCH documents its protocol headers and refusals.
    let patch = &doc["paths"]["/api/v4/jobs/{id}/trace"]["patch"];
    for status in ["202", "400", "403", "408", "413", "416", "429", "503"] {
        assert!(patch["responses"][status].is_object(), "PATCH {status}");
    }
    assert!(patch["responses"]["202"]["headers"]["Range"].is_object());
    assert!(patch["responses"]["429"]["headers"]["Retry-After"].is_object());
    let params: Vec<&str> = patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(params.contains(&"Content-Range"), "{params:?}");
    assert!(doc["components"]["schemas"]["Job"].is_object());
}
