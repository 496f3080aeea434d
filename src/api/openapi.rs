//! The OpenAPI document of the HTTP API, served at `GET /api/v4/openapi.json` (no token: it
//! holds no secret).
//!
//! Duties:
//! 1. Gather the handlers' `#[utoipa::path]` annotations (in `runner`, `jobs`, `stream`,
//!    `admin`, `logpage`) into one document ([`document`]): every route the router serves
//!    except the static pages and assets (`/admin`, `/admin/`, `admin.js`, `admin.css`,
//!    `/jobs/{id}`, `/jobs/assets/log.js`, `log.css`).
//! 2. Describe the bodies the handlers read and write (the `ToSchema` types below; the handlers
//!    build their JSON themselves, these types only describe it) and the three ways to
//!    authenticate: the admin bearer token, the read-only bearer token and a job's token
//!    (`JOB-TOKEN` header or `?token=`).
//!
//! Guarantees: the document is built once per process and is the same on every call; it is
//! generated at compile time from the annotations beside the handlers, so a route added
//! without one fails `tests/api_openapi.rs`, which compares the document with the router.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Security scheme: `Authorization: Bearer <BUILDLOGS_ADMIN_TOKEN>`.
pub const ADMIN_TOKEN: &str = "admin_token";
/// Security scheme: `Authorization: Bearer <BUILDLOGS_READ_TOKEN>`.
pub const READ_TOKEN: &str = "read_token";
/// Security scheme: a job's token in the `JOB-TOKEN` header.
pub const JOB_TOKEN: &str = "job_token";
/// Security scheme: a job's token in the `token` query parameter.
pub const JOB_TOKEN_QUERY: &str = "job_token_query";
/// Security scheme: the log page's session cookie for one job (`buildlogs_job_<id>`).
pub const PAGE_SESSION: &str = "page_session";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "buildlogs",
        description = "CI job logs in GitLab's runner wire format (PATCH a job's trace, PUT its final state), job registration and reads, live tailing, and the operator dashboard's JSON API. Every error answer is JSON `{\"message\": …}`."
    ),
    paths(
        super::jobs::create,
        super::jobs::show,
        super::runner::update_job,
        super::runner::append_trace,
        super::jobs::trace,
        super::stream::trace_stream,
        openapi_json,
        super::admin::queues,
        super::admin_builds::builds,
        super::admin_retries::retries,
        super::admin::dead_list,
        super::admin::dead_retry,
        super::admin::dead_discard,
        super::admin::set_limit,
        super::admin::cron,
        super::admin::breaker,
        super::admin::recovery,
        super::admin::recovery_run,
        super::admin::expiry,
        super::admin::backlog,
        super::logpage::session::create_read_link,
        super::logpage::session::sign_in,
        super::logpage::session::sign_out,
        super::logpage::data::summary,
        super::logpage::data::lines,
        super::logpage::data::search,
        super::logpage::data::stream,
        super::logpage::data::raw,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "runner", description = "GitLab's runner wire format"),
        (name = "jobs", description = "Job registration (standing in for the CI coordinator) and reads"),
        (name = "log page", description = "What the log page (`/jobs/{id}`) reads: a session from a read link or a token, the log by lines, search, the live stream, the raw log"),
        (name = "admin", description = "The operator dashboard's JSON API. Times are integers, milliseconds since the Unix epoch, in fields named `*_ms`."),
    )
)]
struct ApiDoc;

/// The three ways to authenticate.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            ADMIN_TOKEN,
            bearer(
                "BUILDLOGS_ADMIN_TOKEN: registers jobs, reads any job, everything on the dashboard",
            ),
        );
        components.add_security_scheme(
            READ_TOKEN,
            bearer("BUILDLOGS_READ_TOKEN: reads any job, its log and stream, the dashboard's views; changes nothing"),
        );
        components.add_security_scheme(
            JOB_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "JOB-TOKEN",
                "the token POST /api/v4/jobs returned: opens that one job",
            ))),
        );
        components.add_security_scheme(
            PAGE_SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "buildlogs_job_<id>",
                "the log page's session for job <id>, set by POST /jobs/{id}/session",
            ))),
        );
        components.add_security_scheme(
            JOB_TOKEN_QUERY,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "the job's token as a query parameter (as JOB-TOKEN)",
            ))),
        );
    }
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// `GET /api/v4/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/v4/openapi.json",
    tag = "jobs",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json"))
)]
pub async fn openapi_json() -> Response {
    // Serializing a document built from string literals cannot fail.
    let body = serde_json::to_vec(document()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Every error answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// What was wrong, for a person (names the field or header at fault).
    message: String,
}

/// `POST /api/v4/jobs`: the new job.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreatedJob {
    id: i64,
    /// The job's token: the runner sends it as `JOB-TOKEN`.
    token: String,
    /// The job's log page (`BUILDLOGS_PUBLIC_URL`/jobs/<id>).
    web_url: String,
    /// A signed, expiring, read-only link to the log page (`…/jobs/<id>#grant=…`).
    read_link: String,
}

/// `POST /api/v4/jobs/{id}/read_link`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReadLink {
    /// `<public url>/jobs/<id>#grant=<grant>`: the grant is in the fragment, which no server sees.
    url: String,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// `POST /jobs/{id}/session`: exactly one of the two.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SessionRequest {
    /// The grant of a read link (its fragment after `#grant=`).
    grant: Option<String>,
    /// A read-only, admin or this job's token (the sign-in form).
    token: Option<String>,
}

/// A GitLab section of the log.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LogSection {
    name: String,
    /// Header text, escapes dropped.
    header: String,
    /// The line holding `section_start`.
    start_line: u64,
    /// The line holding `section_end`; null while open.
    end_line: Option<u64>,
    /// Unix seconds.
    start_ts: i64,
    end_ts: Option<i64>,
    collapsed: bool,
    /// Nesting level, 0 at the top.
    depth: u32,
}

/// `GET /jobs/{id}/summary`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LogSummary {
    job: Job,
    /// Lines so far (a last line without its newline counts).
    lines: u64,
    bytes: u64,
    sections: Vec<LogSection>,
    /// The log carries the runner's per-line timestamps.
    timestamps: bool,
    /// The first runner timestamp, or the job's `created_at`.
    #[schema(format = DateTime)]
    started_at: String,
}

/// `GET /jobs/{id}/lines`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LinesPage {
    /// The line number of `lines[0]`.
    first: u64,
    /// Raw lines as lossy UTF-8, escapes and `\r` kept, the newline removed.
    lines: Vec<String>,
    total_lines: u64,
    total_bytes: u64,
    /// The byte offset right after the last byte returned (resume the stream there).
    end_offset: u64,
    /// The last line returned ended with a newline.
    last_complete: bool,
    /// Lines longer than 64 KiB, cut there: `{"line", "bytes"}` (bytes not returned; the raw
    /// view has them).
    cut: Vec<LineCut>,
    /// The job finished: no more bytes will come.
    #[schema(rename = "final")]
    is_final: bool,
}

/// A line of a page cut at 64 KiB.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LineCut {
    line: u64,
    /// Bytes of the line not returned.
    bytes: u64,
}

/// `GET /jobs/{id}/search`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SearchResult {
    /// Matching lines in the whole log.
    total: u64,
    /// Matching line numbers at or after `from`, ascending.
    matches: Vec<u64>,
    /// More matches after the last one returned.
    truncated: bool,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum JobStatus {
    Running,
    Success,
    Failed,
    Canceled,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum FinalState {
    Running,
    Success,
    Failed,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum TraceState {
    Live,
    Flushing,
    Archived,
    Expired,
}

/// `GET /api/v4/jobs/{id}`. Times are RFC 3339 in UTC with milliseconds.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Job {
    id: i64,
    /// The job's log page (`BUILDLOGS_PUBLIC_URL`/jobs/<id>).
    web_url: String,
    status: JobStatus,
    failure_reason: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
    trace: JobTrace,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JobTrace {
    size: u64,
    state: TraceState,
    /// `crc32:%08x` of the log, once known.
    crc32: Option<String>,
    /// The checksum the runner sent.
    remote_checksum: Option<String>,
    checksum_valid: Option<bool>,
    archival_attempts: u32,
    #[schema(format = DateTime)]
    archived_at: Option<String>,
    /// Bytes were lost for good before the archive (a marker line holds their place).
    partial: bool,
    lost_bytes: u64,
    object_path: Option<String>,
}

/// `PUT /api/v4/jobs/{id}` as JSON.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FinishJob {
    /// The job's token (or `JOB-TOKEN`).
    token: Option<String>,
    /// Absent: `running` (the runner's keep-alive).
    state: Option<FinalState>,
    /// One of GitLab's `CommitStatus` failure reasons, e.g. `script_failure`.
    #[schema(max_length = 64)]
    failure_reason: Option<String>,
    exit_code: Option<i32>,
    output: Option<FinishOutput>,
    /// Legacy place of `output.checksum`.
    #[schema(pattern = "^crc32:[0-9a-fA-F]{8}$")]
    checksum: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FinishOutput {
    #[schema(pattern = "^crc32:[0-9a-fA-F]{8}$")]
    checksum: Option<String>,
    #[schema(maximum = 9223372036854775807_u64)]
    bytesize: Option<u64>,
}

/// `PUT /api/v4/jobs/{id}` as a form (the runner's own encoding).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FinishJobForm {
    token: Option<String>,
    state: Option<FinalState>,
    #[schema(max_length = 64)]
    failure_reason: Option<String>,
    exit_code: Option<i32>,
    #[schema(rename = "output[checksum]", pattern = "^crc32:[0-9a-fA-F]{8}$")]
    output_checksum: Option<String>,
    #[schema(rename = "output[bytesize]", maximum = 9223372036854775807_u64)]
    output_bytesize: Option<u64>,
    #[schema(pattern = "^crc32:[0-9a-fA-F]{8}$")]
    checksum: Option<String>,
}

/// `GET /admin/api/queues`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Queues {
    /// The job system's clock, ms since the epoch.
    now_ms: i64,
    queues: Vec<QueueRow>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct QueueRow {
    queue: String,
    ready: u64,
    scheduled: u64,
    running: u64,
    /// Jobs of this queue run at once, at most (none: no limit).
    limit: Option<u32>,
    /// Age of the oldest ready job, ms.
    latency_ms: i64,
    dead: u64,
    processed: u64,
    failed: u64,
}

/// `GET /admin/api/builds`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Builds {
    now_ms: i64,
    /// Newest first.
    builds: Vec<BuildRow>,
    /// `before=` for the next page; null on the last one.
    next_before: Option<i64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BuildRow {
    id: i64,
    #[schema(example = "running")]
    status: String,
    failure_reason: Option<String>,
    /// RFC 3339, UTC, milliseconds.
    created_at: String,
    finished_at: Option<String>,
    trace: BuildRowTrace,
    /// The job's log page: `/jobs/<id>`.
    web_url: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BuildRowTrace {
    /// Bytes; null once an archive expired.
    size: Option<u64>,
    /// `live`, `flushing`, `archived` or `expired`.
    state: String,
    /// False: the runner's checksum did not match the log.
    checksum_valid: Option<bool>,
    /// Bytes were lost before the archive (a marker line holds their place).
    partial: bool,
    lost_bytes: u64,
}

/// `GET /admin/api/retries`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RetryList {
    now_ms: i64,
    jobs: Vec<RetryRow>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RetryRow {
    queue: String,
    id: String,
    /// Runs so far.
    attempts: u32,
    max_attempts: u32,
    /// When it runs next.
    run_at_ms: i64,
    /// The error of its last failed run; null if it has not failed (snoozed, or enqueued
    /// for later).
    last_error: Option<String>,
    /// The job's arguments, as enqueued.
    payload: serde_json::Value,
}

/// `GET /admin/api/queues/{queue}/dead`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeadList {
    queue: String,
    jobs: Vec<DeadJobRow>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeadJobRow {
    id: String,
    attempts: u32,
    max_attempts: u32,
    enqueued_at_ms: i64,
    died_at_ms: i64,
    error: String,
    /// The job's arguments, as enqueued.
    payload: serde_json::Value,
}

/// A dead job re-run (`retried`) or discarded (`discarded`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeadDone {
    queue: String,
    id: String,
    retried: Option<bool>,
    discarded: Option<bool>,
}

/// `PUT /admin/api/queues/{queue}/limit`: a whole number of at least 1, or `"none"` / `null`
/// to remove it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SetLimit {
    #[schema(schema_with = limit_schema)]
    limit: Option<u32>,
}

fn limit_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(u32::MAX)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["none"])),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

/// The limit now set.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LimitSet {
    queue: String,
    limit: Option<u32>,
}

/// `GET /admin/api/cron`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Cron {
    now_ms: i64,
    schedules: Vec<CronRow>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CronRow {
    name: String,
    expression: String,
    queue: String,
    last_fired_ms: Option<i64>,
    next_tick_ms: Option<i64>,
}

/// `GET /admin/api/breaker`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Breaker {
    now_ms: i64,
    name: String,
    open: bool,
    since_ms: Option<i64>,
    reason: Option<String>,
    /// Its last changes, newest first (at most 10).
    history: Vec<BreakerChange>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BreakerChange {
    /// True: it opened (the store went down); false: it closed.
    open: bool,
    at_ms: i64,
    /// Why it opened; null for a close.
    reason: Option<String>,
    /// How long this state held, until the next change; null while it holds.
    lasted_ms: Option<i64>,
}

/// `GET /admin/api/recovery`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Recovery {
    now_ms: i64,
    cursor_name: String,
    /// The last build id recovery looked at.
    cursor: Option<i64>,
    /// When a run last moved (or reset) the cursor.
    last_step_ms: Option<i64>,
    /// Finished builds not archived after `stale_after_ms`, counted up to 1,000.
    stale: u32,
    /// More than 1,000 are stale.
    stale_more: bool,
    stale_after_ms: i64,
    /// Its cron schedule: `{last_fired_ms, next_tick_ms}`; null when this process has none.
    schedule: Option<serde_json::Value>,
}

/// `GET /admin/api/expiry`: what the newest archive says about artifact expiry.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Expiry {
    now_ms: i64,
    /// Any log archived yet.
    archived: bool,
    /// The newest archive expires (BUILDLOGS_TRACE_EXPIRE_DAYS was set on the worker that
    /// wrote it); null before the first archive.
    on: Option<bool>,
    /// How long the newest archive is kept, ms.
    keep_ms: Option<i64>,
    newest_archived_at_ms: Option<i64>,
    newest_expires_at_ms: Option<i64>,
}

/// `POST /admin/api/recovery/run`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RecoveryRun {
    /// False: a run was already queued or running (one at a time).
    queued: bool,
    message: String,
}

/// `GET /admin/api/backlog`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Backlog {
    now_ms: i64,
    interval_ms: u64,
    capacity: u64,
    samples: Vec<BacklogSample>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BacklogSample {
    at_ms: i64,
    /// Queue name → ready + scheduled + running jobs.
    queues: std::collections::BTreeMap<String, u64>,
}
