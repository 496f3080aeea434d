//! The browser pages' files (the log page, the dashboard): HTML, script and style built into
//! the binary, each answered with the page's content security policy and the headers that keep
//! it from being framed, sniffed or leaking its address; and `/favicon.ico`, which browsers ask
//! for on every page (no icon: 204, cached for a day, instead of a 404 in every console).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `body` as `content_type` under `policy`.
pub(super) fn page_asset(
    content_type: &'static str,
    policy: &'static str,
    body: &'static str,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // Revalidated each load, so a new release's page and script arrive together.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /favicon.ico`: no icon.
pub(super) async fn favicon() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::CACHE_CONTROL, "public, max-age=86400")],
    )
        .into_response()
}
