//! A CI runner and a reader against `buildlogs web`, over HTTP as GitLab Runner talks to it:
//! register a job (standing in for the coordinator), PATCH its log piece by piece at the
//! offsets the server acknowledged, finish it with the log's CRC32 and repeat the PUT while it
//! answers 202 (after the interval it asks for), read the job and its log back.
//!
//! Also what the scenarios write: logs with ANSI colours, CR/LF and bytes that are not UTF-8,
//! their CRC32 (computed here, independently of the server's crate), and a small seeded PRNG.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

/// The admin token every fleet's web process is given.
pub const ADMIN: &str = "outage-test-admin-token";

/// Longest wait between two PUTs of one job: the server's interval doubles up to 64 s, which
/// a real runner honours; these runners cap it so that a scenario's runtime stays bounded
/// (a PUT is idempotent, asking sooner changes nothing but the load).
const MAX_PUT_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Runner {
    client: reqwest::Client,
    base: String,
}

/// A registered job, its token and the log its runner writes.
#[derive(Clone)]
pub struct Job {
    pub id: i64,
    pub token: String,
    pub log: Vec<u8>,
}

impl Job {
    pub fn crc32(&self) -> u32 {
        crc32(&self.log)
    }

    /// `trace.crc32` as the API shows it.
    pub fn crc32_text(&self) -> String {
        format!("crc32:{:08x}", self.crc32())
    }
}

impl Runner {
    pub fn new(base: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Self { client, base }
    }

    /// `POST /api/v4/jobs` → a job that will write `log`.
    pub async fn register(&self, log: Vec<u8>) -> Job {
        let reply = self
            .client
            .post(format!("{}/api/v4/jobs", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("POST /api/v4/jobs");
        assert_eq!(reply.status(), StatusCode::CREATED, "registering a job");
        let json: serde_json::Value =
            serde_json::from_slice(&reply.bytes().await.expect("body")).expect("JSON");
        Job {
            id: json["id"].as_i64().expect("id"),
            token: json["token"].as_str().expect("token").to_owned(),
            log,
        }
    }

    /// One `PATCH …/trace` of `log[start..end]`: the status, the length it acknowledged, and
    /// the body of an answer other than 202.
    pub async fn patch(
        &self,
        job: &Job,
        start: usize,
        end: usize,
    ) -> (StatusCode, Option<u64>, String) {
        let reply = self
            .client
            .patch(format!("{}/api/v4/jobs/{}/trace", self.base, job.id))
            .header("JOB-TOKEN", &job.token)
            .header("Content-Range", format!("{start}-{}", end.max(1) - 1))
            .body(job.log[start..end].to_vec())
            .send()
            .await
            .expect("PATCH trace");
        let status = reply.status();
        let length = reply
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.strip_prefix("0-"))
            .and_then(|n| n.parse().ok());
        let body = if status == StatusCode::ACCEPTED {
            String::new()
        } else {
            String::from_utf8_lossy(&reply.bytes().await.unwrap_or_default()).into_owned()
        };
        (status, length, body)
    }

    /// Writes the whole log in the pieces `cuts` ends (ascending, the last = the log's length),
    /// pausing `pause(i)` before piece `i`; every PATCH must be accepted at its offset.
    pub async fn stream(&self, job: &Job, cuts: &[usize], pause: impl Fn(usize) -> Duration) {
        let mut start = 0;
        for (i, &end) in cuts.iter().enumerate() {
            let wait = pause(i);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let (status, length, body) = self.patch(job, start, end).await;
            assert_eq!(
                status,
                StatusCode::ACCEPTED,
                "job {} PATCH {start}-{end}: {body}",
                job.id
            );
            assert_eq!(
                length,
                Some(end as u64),
                "job {} acknowledged length",
                job.id
            );
            start = end;
        }
    }

    /// One final `PUT /api/v4/jobs/:id` (success, with the log's CRC32 and size): its status
    /// and the interval a 202 asks for.
    pub async fn put_final(&self, job: &Job) -> (StatusCode, Duration) {
        let body = serde_json::json!({
            "token": job.token,
            "state": "success",
            "exit_code": 0,
            "output": { "checksum": job.crc32_text(), "bytesize": job.log.len().to_string() },
        });
        let reply = self
            .client
            .put(format!("{}/api/v4/jobs/{}", self.base, job.id))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).expect("JSON"))
            .send()
            .await
            .expect("PUT job");
        let interval = reply
            .headers()
            .get("x-gitlab-trace-update-interval")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs);
        (reply.status(), interval)
    }

    /// Finishes the job like a runner: PUT, and again after the interval while the answer is
    /// 202, until 200 or `deadline` (then it panics). How many PUTs it took.
    pub async fn finish(&self, job: &Job, deadline: Instant) -> u32 {
        let started = Instant::now();
        let mut puts = 0;
        loop {
            let (status, interval) = self.put_final(job).await;
            puts += 1;
            match status {
                StatusCode::OK => return puts,
                StatusCode::ACCEPTED => {}
                other => panic!("job {}: final PUT answered {other}", job.id),
            }
            assert!(
                Instant::now() < deadline,
                "job {}: the final PUT still answers 202 after {puts} tries ({:?})",
                job.id,
                started.elapsed()
            );
            tokio::time::sleep(interval.min(MAX_PUT_INTERVAL)).await;
        }
    }

    /// `GET /api/v4/jobs/:id` (admin).
    pub async fn job(&self, id: i64) -> serde_json::Value {
        let reply = self
            .client
            .get(format!("{}/api/v4/jobs/{id}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("GET job");
        assert_eq!(reply.status(), StatusCode::OK, "GET job {id}");
        serde_json::from_slice(&reply.bytes().await.expect("body")).expect("JSON")
    }

    /// `GET /api/v4/jobs/:id/trace` (job token): the whole log.
    pub async fn trace(&self, job: &Job) -> Vec<u8> {
        let reply = self
            .client
            .get(format!("{}/api/v4/jobs/{}/trace", self.base, job.id))
            .header("JOB-TOKEN", &job.token)
            .send()
            .await
            .expect("GET trace");
        assert_eq!(
            reply.status(),
            StatusCode::OK,
            "GET trace of job {}",
            job.id
        );
        reply.bytes().await.expect("trace body").to_vec()
    }

    /// Asserts that the log reads back exactly as written (first difference reported).
    pub async fn assert_log_intact(&self, job: &Job, when: &str) {
        let read = self.trace(job).await;
        if read != job.log {
            let at = read
                .iter()
                .zip(&job.log)
                .position(|(a, b)| a != b)
                .unwrap_or(read.len().min(job.log.len()));
            panic!(
                "job {} {when}: read {} bytes, wrote {}; first difference at byte {at}",
                job.id,
                read.len(),
                job.log.len()
            );
        }
    }
}

/// A log of `size` bytes: numbered lines with ANSI colours, CR/LF, and bytes that are not
/// UTF-8 (lone continuation bytes, 0xff/0xfe, a truncated sequence, NUL).
pub fn make_log(rng: &mut Rng, job: usize, size: usize) -> Vec<u8> {
    const ODD: [&[u8]; 5] = [b"\xff\xfe", b"\x80\xbf", b"\xc3\x28", b"\xe2\x82", b"\x00"];
    let mut out = Vec::with_capacity(size + 128);
    let mut line = 0;
    while out.len() < size {
        out.extend_from_slice(format!("\x1b[32;1mjob {job} line {line}\x1b[0;m ").as_bytes());
        for _ in 0..rng.below(6) {
            out.extend_from_slice(ODD[rng.below(ODD.len() as u64) as usize]);
            out.extend_from_slice(b"step ");
        }
        let filler = rng.below(120) as usize;
        out.extend((0..filler).map(|i| b'a' + ((i + line) % 26) as u8));
        out.extend_from_slice(if rng.below(4) == 0 { b"\r\n" } else { b"\n" });
        line += 1;
    }
    out.truncate(size);
    out
}

/// `pieces` ascending cut points ending at `len` (each piece at least one byte).
pub fn cuts(rng: &mut Rng, len: usize, pieces: usize) -> Vec<usize> {
    let pieces = pieces.clamp(1, len.max(1));
    let mut cuts: Vec<usize> = (1..pieces)
        .map(|_| 1 + rng.below(len as u64 - 1) as usize)
        .collect();
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// CRC-32 (IEEE 802.3, reflected 0xEDB88320), as runners send it.
pub fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (n, entry) in table.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        table
    });
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// xorshift64*: reproducible from its seed, printed by each scenario
/// (`BUILDLOGS_TEST_SEED=<seed>` replays one).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_time(test: &str) -> Self {
        let seed = std::env::var("BUILDLOGS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: BUILDLOGS_TEST_SEED={seed}");
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}
