//! The log page: a job's log for people, in a browser, at `/jobs/:id`.
//!
//! - this file: the routes, the page and its assets (`log.html`, `log.js`, `log.css`, built
//!   into the binary), and [`LogPage`], the page's settings and line index cache;
//! - [`session`]: read links, the sign-in exchange for a session cookie, and who may read;
//! - [`grant`]: the signed grants read links and session cookies carry;
//! - [`data`]: what the page's script reads: summary, pages of lines, search, the live
//!   stream, the raw log.
//!
//! The page itself holds no secret and is the same for every job (its script reads the id
//! from the path), so it is served to anyone; every data endpoint checks the reader.

pub mod data;
pub mod grant;
pub mod session;

use std::time::Duration;

use axum::Router;
use axum::response::Response;
use axum::routing::{get, post};

use super::AppState;
use super::page_asset::page_asset;
use crate::traces::log_view::LogView;

const PAGE: &str = include_str!("log.html");
const SCRIPT: &str = include_str!("log.js");
const STYLE: &str = include_str!("log.css");

/// Only the page's own script and style, data from this server; no framing, no referrer.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// `BUILDLOGS_READ_LINK_TTL`'s default: a read link opens its log page for a day.
pub const DEFAULT_READ_LINK_TTL: Duration = Duration::from_secs(86_400);

/// The log page's settings and per-process line index cache.
pub struct LogPage {
    /// `BUILDLOGS_PUBLIC_URL` without a trailing `/`: where readers reach this service.
    public_url: String,
    /// `BUILDLOGS_READ_LINK_TTL`.
    read_link_ttl: Duration,
    /// The line indexes of recently read logs.
    pub view: LogView,
}

impl Default for LogPage {
    fn default() -> Self {
        Self::new(
            "http://127.0.0.1:8080",
            DEFAULT_READ_LINK_TTL,
            LogView::default(),
        )
    }
}

impl LogPage {
    pub fn new(public_url: &str, read_link_ttl: Duration, view: LogView) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
            read_link_ttl,
            view,
        }
    }

    /// The job's log page: `<public url>/jobs/<id>` (the job JSON's `web_url`).
    pub fn web_url(&self, id: i64) -> String {
        format!("{}/jobs/{id}", self.public_url)
    }

    /// Readers come over https: session cookies get `Secure`.
    pub fn https(&self) -> bool {
        self.public_url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    pub fn read_link_ttl_s(&self) -> i64 {
        i64::try_from(self.read_link_ttl.as_secs()).unwrap_or(i64::MAX)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}", get(page))
        .route("/jobs/assets/log.js", get(script))
        .route("/jobs/assets/log.css", get(style))
        .route(
            "/jobs/{id}/session",
            post(session::sign_in).delete(session::sign_out),
        )
        .route("/jobs/{id}/summary", get(data::summary))
        .route("/jobs/{id}/lines", get(data::lines))
        .route("/jobs/{id}/search", get(data::search))
        .route("/jobs/{id}/stream", get(data::stream))
        .route("/jobs/{id}/raw", get(data::raw))
        .route(
            "/api/v4/jobs/{id}/read_link",
            post(session::create_read_link),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    page_asset(content_type, PAGE_POLICY, body)
}

/// `GET /jobs/:id`: the page (the same for every job; no secret in it).
async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
