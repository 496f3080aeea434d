//! `TestApp`: the API router over a real stack, driven in-process (`tower::ServiceExt::oneshot`).
//! - embedded: one SQLite file holds metadata, live chunks and the job queue;
//! - production: PostgreSQL (a schema of its own) + Redis (a key prefix of its own).
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use buildlogs::api::{AppState, BacklogHistory, router};
use buildlogs::jobs::broker::Ack;
use buildlogs::jobs::cron::{CronEntry, Scheduler};
use buildlogs::jobs::redis::RedisBroker;
use buildlogs::jobs::sqlite::SqliteBroker;
use buildlogs::jobs::{Broker, Clock, Job, JobClient, SystemClock};
use buildlogs::stores::fault_injection::{FaultSwitch, FaultyObjectStore};
use buildlogs::stores::redis_live::RedisLiveChunks;
use buildlogs::stores::sql_live::SqlLiveChunks;
use buildlogs::stores::sql_metadata::SqlMetadata;
use buildlogs::traces::archive::ArchiveService;
use buildlogs::traces::breaker::{BreakerConfig, ObjectStoreBreaker};
use buildlogs::traces::flush::FlushService;
use buildlogs::traces::jobs::RecoverStaleTraces;
use buildlogs::traces::jobs::{ArchiveTrace, FlushTraceChunk};
use buildlogs::traces::live::LiveChunkStore;
use buildlogs::traces::metadata::MetadataStore;
use buildlogs::traces::objects::ObjectStorage;
use buildlogs::traces::service::TraceService;
use buildlogs::traces::stores::TraceStores;
use http_body_util::BodyExt;
use object_store::ObjectStore;
use tokio_util::sync::CancellationToken;

use super::objects::TestObjects;
use super::sql::{TestPostgres, TestSqlite};

pub const ADMIN: &str = "test-admin-token";
/// The read-only token (`BUILDLOGS_READ_TOKEN`) of every test stack.
pub const READER: &str = "test-read-token";

/// The lease `run_flushes` and `run_archives` take their jobs under.
const WORK_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// The cron schedule the test stack's dashboard shows (the production one's name and
/// default expression).
pub const RECOVERY_SCHEDULE: &str = "recover_stale_traces";
pub const RECOVERY_CRON: &str = "0 */5 * * * *";

/// What `TestApp::build` wires: the router, its state, the broker, the job services, the stores.
type Built = (
    Router,
    AppState,
    Arc<dyn Broker>,
    (Arc<FlushService>, Arc<ArchiveService>),
    Parts,
);

/// The services and stores under the router, for tests that drive or inspect them directly.
#[derive(Clone)]
pub struct Parts {
    pub traces: Arc<TraceService>,
    pub meta: Arc<dyn MetadataStore>,
    /// Redis (production) or the database (embedded): `live.data_store()` says which.
    pub live: Arc<dyn LiveChunkStore>,
    /// The object store the services use (keys relative to the test's prefix).
    pub store: Arc<dyn ObjectStorage>,
    /// The same store through object_store's whole API, to look at what is stored (`head`,
    /// `list`).
    pub raw: Arc<dyn ObjectStore>,
    /// The switch of the object store the router's reads go through (a `FaultyObjectStore`
    /// around [`Self::store`], healthy unless a test says otherwise): counts their requests.
    pub reads: FaultSwitch,
}

impl Parts {
    /// A flush and an archive service over these stores but `store` for objects (e.g. a
    /// `FaultyObjectStore` around [`Self::store`]).
    pub fn services_over(&self, store: Arc<dyn ObjectStorage>) -> (FlushService, ArchiveService) {
        let stores = TraceStores {
            meta: self.meta.clone(),
            live: self.live.clone(),
            objects: store,
            clock: Arc::new(SystemClock),
        };
        (
            FlushService::new(stores.clone()),
            ArchiveService::new(stores),
        )
    }
}

pub struct TestApp {
    pub router: Router,
    /// What the router's handlers share: its shutdown token (cancel it to end trace streams),
    /// the backlog ring the dashboard reads (nothing samples it unless a test does).
    pub state: AppState,
    pub broker: Arc<dyn Broker>,
    pub kind: &'static str,
    /// The job handlers a worker of this stack runs (`flush_trace_chunk`, …).
    pub flush: Arc<FlushService>,
    pub archive: Arc<ArchiveService>,
    /// Where flushed chunks and archives go: a local folder (embedded) or a bucket of its own
    /// on the S3-compatible server (production).
    pub objects: TestObjects,
    /// The services and stores under the router.
    pub parts: Parts,
    _keep: Keep,
}

enum Keep {
    Sqlite(TestSqlite),
    Production(TestPostgres, String),
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Keep::Production(_, prefix) = &self._keep {
            super::delete_prefix(&super::redis_url(), prefix);
        }
    }
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

impl TestApp {
    pub async fn embedded(max_trace_size: Option<u64>) -> Self {
        let db = TestSqlite::new().await;
        let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::new(db.pool.clone()));
        let meta = Arc::new(SqlMetadata::sqlite(db.pool.clone()));
        let live = Arc::new(SqlLiveChunks::sqlite(db.pool.clone()));
        let objects = TestObjects::local();
        let (router, state, broker, (flush, archive), parts) =
            Self::build(broker, meta, live, &objects, max_trace_size);
        TestApp {
            router,
            state,
            broker,
            kind: "embedded",
            flush,
            archive,
            objects,
            parts,
            _keep: Keep::Sqlite(db),
        }
    }

    pub async fn production(test: &str, max_trace_size: Option<u64>) -> Self {
        let pg = TestPostgres::new(test).await;
        let prefix = super::unique_prefix(test);
        let broker: Arc<dyn Broker> = Arc::new(
            RedisBroker::connect(&super::redis_url(), &prefix)
                .await
                .unwrap(),
        );
        let client = redis::Client::open(super::redis_url()).unwrap();
        let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
        let meta = Arc::new(SqlMetadata::postgres(pg.pool.clone()));
        let live = Arc::new(RedisLiveChunks::new(conn, &prefix));
        let objects = TestObjects::s3(test);
        let (router, state, broker, (flush, archive), parts) =
            Self::build(broker, meta, live, &objects, max_trace_size);
        TestApp {
            router,
            state,
            broker,
            kind: "production",
            flush,
            archive,
            objects,
            parts,
            _keep: Keep::Production(pg, prefix),
        }
    }

    fn build(
        broker: Arc<dyn Broker>,
        meta: Arc<SqlMetadata>,
        live: Arc<dyn buildlogs::traces::live::LiveChunkStore>,
        test_objects: &TestObjects,
        max_trace_size: Option<u64>,
    ) -> Built {
        let clock = Arc::new(SystemClock);
        let opened = test_objects.config("").open().expect("object store");
        let objects = opened.store;
        let jobs = JobClient::new(broker.clone(), clock.clone());
        let recovery = CronEntry::new(RECOVERY_SCHEDULE, RECOVERY_CRON, RecoverStaleTraces {})
            .expect("cron expression");
        let cron = Arc::new(Scheduler::new(
            broker.clone(),
            clock.clone(),
            vec![recovery],
        ));
        let stores = TraceStores {
            meta: meta.clone(),
            live: live.clone(),
            objects: objects.clone(),
            clock: clock.clone(),
        };
        let flush = Arc::new(FlushService::new(stores.clone()));
        let archive = Arc::new(ArchiveService::new(stores.clone()));
        let (read_objects, reads) = FaultyObjectStore::wrap(objects.clone());
        // Reads see the shared breaker row at once (no sync interval), so a test that opens
        // it (`BreakerStore::set_breaker`) is answered accordingly by the next request.
        let breaker = ObjectStoreBreaker::new(
            meta.clone(),
            clock.clone(),
            BreakerConfig {
                sync_interval: std::time::Duration::ZERO,
                ..BreakerConfig::default()
            },
        );
        // Reads go through the fault switch (`Parts::reads`).
        let mut traces = TraceService::new(stores.with_objects(read_objects), jobs.clone())
            .with_breaker(Arc::new(breaker));
        if let Some(max) = max_trace_size {
            traces = traces.with_max_trace_size(max);
        }
        let traces = Arc::new(traces);
        let parts = Parts {
            traces: traces.clone(),
            meta: meta.clone(),
            live,
            store: objects,
            raw: opened.raw,
            reads,
        };
        let state = AppState {
            traces,
            admin_token: ADMIN.into(),
            read_token: Some(READER.into()),
            jobs,
            meta,
            cron,
            backlog: Arc::new(BacklogHistory::default()),
            shutdown: CancellationToken::new(),
            patch_rate: Default::default(),
            streams: Default::default(),
            logpage: Default::default(),
        };
        (
            router(state.clone()),
            state,
            broker,
            (flush, archive),
            parts,
        )
    }

    /// This stack's live store (same Redis prefix, or the same SQLite file) stamping activity
    /// with `clock`: a log "written an hour ago" for the stuck-build sweep, without waiting.
    pub async fn live_with_clock(&self, clock: Arc<dyn Clock>) -> Arc<dyn LiveChunkStore> {
        match &self._keep {
            Keep::Sqlite(db) => Arc::new(SqlLiveChunks::sqlite(db.pool.clone()).with_clock(clock)),
            Keep::Production(_, prefix) => {
                let client = redis::Client::open(super::redis_url()).unwrap();
                let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
                Arc::new(RedisLiveChunks::new(conn, prefix).with_clock(clock))
            }
        }
    }

    /// This stack's Redis key prefix (`None` on the embedded stack).
    pub fn redis_prefix(&self) -> Option<&str> {
        match &self._keep {
            Keep::Sqlite(_) => None,
            Keep::Production(_, prefix) => Some(prefix),
        }
    }

    /// Runs `sql` (no parameters) on this stack's database.
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self._keep {
            Keep::Sqlite(db) => sqlx::raw_sql(sql).execute(&db.pool).await.map(drop),
            Keep::Production(pg, _) => sqlx::raw_sql(sql).execute(&pg.pool).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// This app with its state changed by `change` (e.g. other limits), the router rebuilt.
    pub fn with_state(mut self, change: impl FnOnce(&mut AppState)) -> Self {
        change(&mut self.state);
        self.router = router(self.state.clone());
        self
    }

    /// The first column of the first row of `sql` on this stack's database, as an integer
    /// (`None`: no row, or NULL). Each test has its database (schema) to itself.
    pub async fn scalar_i64(&self, sql: &'static str) -> Option<i64> {
        match &self._keep {
            Keep::Sqlite(db) => sqlx::query_scalar::<_, Option<i64>>(sql)
                .fetch_optional(&db.pool)
                .await
                .map(Option::flatten),
            Keep::Production(pg, _) => sqlx::query_scalar::<_, Option<i64>>(sql)
                .fetch_optional(&pg.pool)
                .await
                .map(Option::flatten),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every Redis key under this stack's prefix, with `ttl <ms>` or `no ttl` (see
    /// [`super::redis_keys_with_ttl`]); none on the embedded stack.
    pub async fn redis_keys(&self) -> Vec<String> {
        match &self._keep {
            Keep::Production(_, prefix) => {
                super::redis_keys_with_ttl(&super::redis_url(), prefix).await
            }
            Keep::Sqlite(_) => Vec::new(),
        }
    }

    /// Runs every queued flush the way a worker would (straight through the service), until
    /// none is left; how many ran.
    pub async fn run_flushes(&self) -> usize {
        let mut done = 0;
        loop {
            let now = SystemClock.now_ms();
            let got = self
                .broker
                .fetch(FlushTraceChunk::NAME, 100, WORK_LEASE, now)
                .await
                .unwrap();
            if got.is_empty() {
                return done;
            }
            let mut acks = Vec::new();
            for d in got {
                let job: FlushTraceChunk = serde_json::from_str(&d.envelope.payload).unwrap();
                self.flush
                    .flush(job.build_id, job.chunk_index)
                    .await
                    .unwrap();
                acks.push(Ack::Complete { lease: d.lease });
                done += 1;
            }
            self.broker
                .ack(FlushTraceChunk::NAME, acks, now)
                .await
                .unwrap();
        }
    }

    /// Runs every queued archive (one batch) the way a worker would; how many ran.
    pub async fn run_archives(&self) -> usize {
        let now = SystemClock.now_ms();
        let got = self
            .broker
            .fetch(ArchiveTrace::NAME, 100, WORK_LEASE, now)
            .await
            .unwrap();
        let mut acks = Vec::new();
        for d in &got {
            let job: ArchiveTrace = serde_json::from_str(&d.envelope.payload).unwrap();
            self.archive.archive(job.build_id).await.unwrap();
            acks.push(Ack::Complete {
                lease: d.lease.clone(),
            });
        }
        self.broker
            .ack(ArchiveTrace::NAME, acks, now)
            .await
            .unwrap();
        got.len()
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        use tower::ServiceExt;
        let response = self.router.clone().oneshot(request).await.expect("router");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `POST /api/v4/jobs` → (id, token).
    pub async fn create_job(&self) -> (i64, String) {
        let reply = self
            .send(
                Request::post("/api/v4/jobs")
                    .header("authorization", format!("Bearer {ADMIN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let json = reply.json();
        (
            json["id"].as_i64().unwrap(),
            json["token"].as_str().unwrap().to_owned(),
        )
    }

    /// A runner's `PATCH /api/v4/jobs/:id/trace` at `start`.
    pub async fn patch(&self, id: i64, token: &str, start: u64, data: &[u8]) -> Reply {
        let end = (start + data.len() as u64).saturating_sub(1);
        let request = Request::patch(format!("/api/v4/jobs/{id}/trace"))
            .header("job-token", token)
            .header("content-range", format!("{start}-{end}"))
            .body(Body::from(data.to_vec()))
            .unwrap();
        self.send(request).await
    }

    pub async fn trace(&self, id: i64, token: &str) -> Reply {
        self.send(
            Request::get(format!("/api/v4/jobs/{id}/trace"))
                .header("job-token", token)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }
}

/// Runs each async test body `fn(&TestApp)` on both stacks, as `embedded::<name>` and
/// `production::<name>`; `on_both_stacks!(max_trace_size = N; …)` sets the trace size limit.
#[macro_export]
macro_rules! on_both_stacks {
    (@limit $max:expr; $($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&$crate::support::app::TestApp::embedded($max).await).await;
                }
            )*
        }
        mod production {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let app =
                        $crate::support::app::TestApp::production(stringify!($name), $max).await;
                    super::$name(&app).await;
                }
            )*
        }
    };
    (max_trace_size = $max:expr; $($name:ident),* $(,)?) => {
        $crate::on_both_stacks!(@limit Some($max); $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_both_stacks!(@limit None; $($name),*);
    };
}
