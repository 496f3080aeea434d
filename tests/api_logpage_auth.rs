//! The log page's browser auth on both stacks (embedded: SQLite; production: PostgreSQL +
//! Redis): `web_url` and `read_link` in the job JSON, read links, the exchange of a read link's
//! grant or a token for a session cookie scoped to one job, and what the page's data endpoints
//! accept and refuse (expired, tampered and other jobs' grants; no token ever in a cookie).

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use buildlogs::api::LogPage;
use buildlogs::api::logpage::grant::{GrantKey, Purpose};
use buildlogs::traces::log_view::LogView;
use support::app::{ADMIN, READER, Reply, TestApp};

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn read_link(app: &TestApp, id: i64, bearer: Option<&str>) -> Reply {
    let mut request = Request::post(format!("/api/v4/jobs/{id}/read_link"));
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    app.send(request.body(Body::empty()).unwrap()).await
}

async fn sign_in(app: &TestApp, id: i64, body: &str) -> Reply {
    app.send(
        Request::post(format!("/jobs/{id}/session"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap(),
    )
    .await
}

/// The `name=value` part of a reply's `Set-Cookie`.
fn cookie_pair(reply: &Reply) -> String {
    let set = reply.header("set-cookie").expect("Set-Cookie");
    set.split(';').next().unwrap().to_owned()
}

async fn summary_with_cookie(app: &TestApp, id: i64, cookie: &str) -> Reply {
    app.send(
        Request::get(format!("/jobs/{id}/summary"))
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

fn grant_of(url: &str) -> &str {
    url.split_once("#grant=")
        .expect("a grant in the fragment")
        .1
}

async fn a_new_job_carries_its_page_url_and_a_read_link(app: &TestApp) {
    let reply = app
        .send(
            Request::post("/api/v4/jobs")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let job = reply.json();
    let id = job["id"].as_i64().unwrap();
    let web_url = format!("http://127.0.0.1:8080/jobs/{id}");
    assert_eq!(job["web_url"], web_url.as_str());
    let link = job["read_link"].as_str().unwrap();
    assert!(link.starts_with(&format!("{web_url}#grant=")), "{link}");
    assert!(!link.contains(ADMIN) && !link.contains(job["token"].as_str().unwrap()));

    let shown = app
        .send(
            Request::get(format!("/api/v4/jobs/{id}"))
                .header("authorization", format!("Bearer {READER}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(shown.json()["web_url"], web_url.as_str());

    // The link registration returned opens the page.
    let signed_in = sign_in(app, id, &format!(r#"{{"grant":"{}"}}"#, grant_of(link))).await;
    assert_eq!(signed_in.status, StatusCode::NO_CONTENT, "{}", app.kind);
}

async fn a_read_link_becomes_a_session_cookie_scoped_to_its_job(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let (other, _) = app.create_job().await;
    let reply = read_link(app, id, Some(READER)).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let link = reply.json();
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://127.0.0.1:8080/jobs/{id}#grant=")));
    let expires = chrono::DateTime::parse_from_rfc3339(link["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!((expires - now_s() - 86_400).abs() <= 5, "a day by default");
    let grant = grant_of(url);

    let reply = sign_in(app, id, &format!(r#"{{"grant":"{grant}"}}"#)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let set = reply.header("set-cookie").unwrap().to_owned();
    let attributes: Vec<&str> = set.split("; ").collect();
    assert!(
        attributes[0].starts_with(&format!("buildlogs_job_{id}=")),
        "{set}"
    );
    for wanted in [
        format!("Path=/jobs/{id}"),
        "HttpOnly".into(),
        "SameSite=Strict".into(),
    ] {
        assert!(attributes.contains(&wanted.as_str()), "{set}: {wanted}");
    }
    assert!(!attributes.contains(&"Secure"), "http: no Secure ({set})");
    let max_age: i64 = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (43_000..=43_200).contains(&max_age),
        "at most 12 h: {max_age}"
    );
    let cookie = cookie_pair(&reply);
    let value = cookie.split_once('=').unwrap().1;
    assert_ne!(value, grant, "the cookie is not the link's grant");
    assert!(!cookie.contains(&token) && !cookie.contains(ADMIN) && !cookie.contains(READER));

    // The cookie opens this job's page data, and no other job's.
    let summary = summary_with_cookie(app, id, &cookie).await;
    assert_eq!(summary.status, StatusCode::OK, "{}", app.kind);
    assert_eq!(summary.json()["job"]["id"], id);
    let elsewhere =
        summary_with_cookie(app, other, &format!("buildlogs_job_{other}={value}")).await;
    assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);
    assert!(elsewhere.json()["message"].is_string());

    // A grant for this job exchanged on another job's page: refused, no cookie.
    let reply = sign_in(app, other, &format!(r#"{{"grant":"{grant}"}}"#)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("set-cookie").is_none());

    // A session value is not a read link (and the other way round).
    let reply = sign_in(app, id, &format!(r#"{{"grant":"{value}"}}"#)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let as_cookie = summary_with_cookie(app, id, &format!("buildlogs_job_{id}={grant}")).await;
    assert_eq!(as_cookie.status, StatusCode::UNAUTHORIZED);

    // Sign out clears it.
    let out = app
        .send(
            Request::delete(format!("/jobs/{id}/session"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let cleared = out.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with(&format!("buildlogs_job_{id}=;")) && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

async fn expired_tampered_and_malformed_grants_are_refused(app: &TestApp) {
    let (id, _) = app.create_job().await;
    let key = GrantKey::from_admin_token(ADMIN);
    let expired = key.sign(Purpose::Link, id, now_s() - 1);
    let reply = sign_in(app, id, &format!(r#"{{"grant":"{expired}"}}"#)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{:?}",
        reply.json()
    );
    assert!(reply.header("set-cookie").is_none());

    let good = key.sign(Purpose::Link, id, now_s() + 600);
    let mut tampered = good.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    // Another admin token's key (a rotated token revokes every grant).
    let foreign =
        GrantKey::from_admin_token("another-admin-token").sign(Purpose::Link, id, now_s() + 600);
    for grant in [
        tampered.as_str(),
        foreign.as_str(),
        "",
        "not a grant",
        &good[..40],
    ] {
        let reply = sign_in(app, id, &format!(r#"{{"grant":"{grant}"}}"#)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{grant:?}");
        assert!(reply.header("set-cookie").is_none());
    }
    let reply = sign_in(app, id, &format!(r#"{{"grant":"{good}"}}"#)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    // A session that ends with a link that has 10 minutes left lasts 10 minutes.
    let max_age: i64 = reply
        .header("set-cookie")
        .unwrap()
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=600).contains(&max_age), "{max_age}");

    // An expired or tampered session cookie.
    let stale = key.sign(Purpose::Session, id, now_s() - 1);
    let reply = summary_with_cookie(app, id, &format!("buildlogs_job_{id}={stale}")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = summary_with_cookie(app, id, &format!("buildlogs_job_{id}={tampered}")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    for body in [
        "",
        "{",
        "[]",
        r#"{"grant":1}"#,
        r#"{}"#,
        r#"{"grant":"a","token":"b"}"#,
        r#"{"nope":"x"}"#,
    ] {
        let reply = sign_in(app, id, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("body:"),
            "{body:?}"
        );
    }
}

async fn the_sign_in_form_takes_any_reading_token_and_keeps_none(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let (other, _) = app.create_job().await;
    for given in [token.as_str(), ADMIN, READER] {
        let reply = sign_in(app, id, &format!(r#"{{"token":"{given}"}}"#)).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", app.kind);
        let set = reply.header("set-cookie").unwrap();
        assert!(!set.contains(given), "the cookie holds no token: {set}");
        let cookie = cookie_pair(&reply);
        assert_eq!(
            summary_with_cookie(app, id, &cookie).await.status,
            StatusCode::OK
        );
    }
    // A job's token opens only that job; wrong tokens set nothing.
    for (job, given) in [(other, token.as_str()), (id, "wrong"), (id, "")] {
        let reply = sign_in(app, job, &format!(r#"{{"token":"{given}"}}"#)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{given:?}");
        assert!(reply.header("set-cookie").is_none());
    }
    // An unknown job: 404 for an operator, 401 for anyone else.
    let reply = sign_in(app, 999_999, &format!(r#"{{"token":"{READER}"}}"#)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = sign_in(app, 999_999, &format!(r#"{{"token":"{token}"}}"#)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

async fn read_links_need_an_operator_token(app: &TestApp) {
    let (id, token) = app.create_job().await;
    assert_eq!(
        read_link(app, id, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        read_link(app, id, Some("wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let with_job_token = app
        .send(
            Request::post(format!("/api/v4/jobs/{id}/read_link"))
                .header("job-token", &token)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(with_job_token.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        read_link(app, 999_999, Some(ADMIN)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        read_link(app, id, Some(ADMIN)).await.status,
        StatusCode::CREATED
    );
}

async fn page_data_refuses_a_reader_without_credentials(app: &TestApp) {
    let (id, token) = app.create_job().await;
    for path in ["summary", "lines", "search?q=x", "stream", "raw"] {
        let uri = format!("/jobs/{id}/{path}");
        for (name, value) in [
            (None, ""),
            (Some("authorization"), "Bearer wrong"),
            (Some("job-token"), "wrong"),
            (Some("cookie"), "buildlogs_job_1=x"),
        ] {
            let mut request = Request::get(&uri);
            if let Some(name) = name {
                request = request.header(name, value);
            }
            let reply = app.send(request.body(Body::empty()).unwrap()).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri} {name:?}");
            assert!(reply.json()["message"].is_string(), "{uri}");
        }
        if path == "stream" {
            // A running job's stream never ends: its answer is checked in api_logpage_data.rs.
            continue;
        }
        for (name, value) in [
            ("authorization", format!("Bearer {READER}")),
            ("job-token", token.clone()),
        ] {
            let reply = app
                .send(
                    Request::get(&uri)
                        .header(name, &value)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{uri} {name}");
        }
        let unknown = app
            .send(
                Request::get(format!("/jobs/999999/{path}"))
                    .header("authorization", format!("Bearer {ADMIN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{path}");
    }
}

async fn an_https_public_url_makes_secure_cookies_and_sets_the_link_lifetime(app: &TestApp) {
    let (id, _) = app.create_job().await;
    let state = {
        let mut state = app.state.clone();
        state.logpage = Arc::new(LogPage::new(
            "https://logs.example.com/ci/",
            Duration::from_secs(60),
            LogView::default(),
        ));
        state
    };
    let router = buildlogs::api::router(state);
    let send = |request: Request<Body>| {
        let router = router.clone();
        async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let response = router.oneshot(request).await.unwrap();
            let headers = response.headers().clone();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, headers, body)
        }
    };
    let (status, _, body) = send(
        Request::post(format!("/api/v4/jobs/{id}/read_link"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let link: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("https://logs.example.com/ci/jobs/{id}#grant=")),
        "{url}"
    );
    let (status, headers, _) = send(
        Request::post(format!("/jobs/{id}/session"))
            .body(Body::from(format!(r#"{{"grant":"{}"}}"#, grant_of(url))))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let set = headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
    let max_age: i64 = set
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (55..=60).contains(&max_age),
        "no longer than the link: {max_age}"
    );
}

on_both_stacks!(
    a_new_job_carries_its_page_url_and_a_read_link,
    a_read_link_becomes_a_session_cookie_scoped_to_its_job,
    expired_tampered_and_malformed_grants_are_refused,
    the_sign_in_form_takes_any_reading_token_and_keeps_none,
    read_links_need_an_operator_token,
    page_data_refuses_a_reader_without_credentials,
    an_https_public_url_makes_secure_cookies_and_sets_the_link_lifetime,
);
