//! The soak's readers: people and tools reading job logs while they are written, flushed and
//! archived — the whole log, or a byte range (HTTP `Range`), including the big log.
//!
//! Each read is checked against what the runner sent (regenerated from the build's seed,
//! [`super::content`]): every byte served must be the runner's, and a whole read must hold at
//! least the bytes the server had acknowledged before the read began. Bodies are compared
//! as they stream in, so a 100 MiB read costs no 100 MiB buffer here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::book::{Book, Build};
use super::content::{self, Rng};

/// Longest range a range read asks for.
const MAX_RANGE: u64 = 256 * 1024;
/// Of the reads, the share (%) that go to the biggest log.
const BIG_LOG_SHARE: u64 = 10;

pub async fn reader(
    seed: u64,
    webs: Arc<Vec<String>>,
    interval: Duration,
    client: reqwest::Client,
    book: Arc<Book>,
    stop: CancellationToken,
) {
    let mut rng = Rng::new(seed);
    let mut web = rng.below(webs.len() as u64) as usize;
    while !stop.is_cancelled() {
        let jitter = rng.range(50, 151) as f64 / 100.0;
        tokio::select! {
            () = tokio::time::sleep(interval.mul_f64(jitter)) => {}
            () = stop.cancelled() => return,
        }
        let big = rng.chance(BIG_LOG_SHARE);
        let pick = rng.next_u64();
        let build = if big {
            biggest(&book)
        } else {
            book.pick(pick, |b| b.acked() > 0)
        };
        let Some(build) = build else { continue };
        let base = &webs[web % webs.len()];
        let ok = if rng.chance(30) {
            range_read(&client, base, &build, &mut rng, &book).await
        } else {
            whole_read(&client, base, &build, &book).await
        };
        if !ok {
            book.counters.read_errors.fetch_add(1, Ordering::Relaxed);
            web += 1;
        } else if big {
            book.counters.big_reads.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn biggest(book: &Book) -> Option<Arc<Build>> {
    book.builds()
        .into_iter()
        .filter(|b| b.acked() > 0)
        .max_by_key(|b| b.planned)
}

/// A 503 with `Retry-After`: a store the read needs is down (the relay's outage, Redis
/// restarting), and the server says so and when to come back — the answer the soak expects
/// then. A 500, or a 503 without `Retry-After`, stays a finding.
pub fn unavailable(reply: &reqwest::Response) -> bool {
    reply.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
        && reply.headers().contains_key(reqwest::header::RETRY_AFTER)
}

/// GET the whole log and check it streaming; false on a transport error or 5xx.
async fn whole_read(client: &reqwest::Client, base: &str, build: &Build, book: &Book) -> bool {
    let at_least = build.acked();
    let reply = client
        .get(format!("{base}/api/v4/jobs/{}/trace", build.id))
        .header("JOB-TOKEN", &build.token)
        .send()
        .await;
    let Ok(mut reply) = reply else { return false };
    let status = reply.status().as_u16();
    if unavailable(&reply) {
        book.counters
            .reads_unavailable
            .fetch_add(1, Ordering::Relaxed);
        return false;
    }
    if status != 200 {
        let text = reply.text().await.unwrap_or_default();
        book.finding(format!(
            "build {}: GET trace answered {status} (expected 200): {}",
            build.id,
            text.chars().take(200).collect::<String>()
        ));
        return status < 500;
    }
    let mut at = 0u64;
    loop {
        match reply.chunk().await {
            Ok(Some(bytes)) => {
                if let Some(bad) = content::first_difference(build.seed, at, &bytes) {
                    book.counters.read_mismatch.fetch_add(1, Ordering::Relaxed);
                    book.finding(format!(
                        "build {}: GET trace served a wrong byte at {bad}",
                        build.id
                    ));
                    return true;
                }
                at += bytes.len() as u64;
            }
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    book.counters.reads_served.fetch_add(1, Ordering::Relaxed);
    book.counters.read_bytes.fetch_add(at, Ordering::Relaxed);
    if at < at_least || at > build.planned {
        book.counters.read_mismatch.fetch_add(1, Ordering::Relaxed);
        book.finding(format!(
            "build {}: GET trace served {at} bytes; the server had acknowledged {at_least} before the read (planned {})",
            build.id, build.planned
        ));
    }
    true
}

/// GET `Range: bytes=a-b` within what the server acknowledged; expects 206 and those bytes.
async fn range_read(
    client: &reqwest::Client,
    base: &str,
    build: &Build,
    rng: &mut Rng,
    book: &Book,
) -> bool {
    let acked = build.acked();
    let first = rng.below(acked);
    let last = (first + rng.range(1, MAX_RANGE)).min(acked) - 1;
    let last = last.max(first);
    let reply = client
        .get(format!("{base}/api/v4/jobs/{}/trace", build.id))
        .header("JOB-TOKEN", &build.token)
        .header("Range", format!("bytes={first}-{last}"))
        .send()
        .await;
    let Ok(reply) = reply else { return false };
    let status = reply.status().as_u16();
    if unavailable(&reply) {
        book.counters
            .reads_unavailable
            .fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let Ok(body) = reply.bytes().await else {
        return false;
    };
    if status != 206 {
        book.finding(format!(
            "build {}: GET trace Range bytes={first}-{last} answered {status} (expected 206): {}",
            build.id,
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
        return status < 500;
    }
    book.counters.reads_served.fetch_add(1, Ordering::Relaxed);
    book.counters.range_reads.fetch_add(1, Ordering::Relaxed);
    book.counters
        .read_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let want = last - first + 1;
    if body.len() as u64 != want || content::first_difference(build.seed, first, &body).is_some() {
        book.counters.read_mismatch.fetch_add(1, Ordering::Relaxed);
        book.finding(format!(
            "build {}: Range bytes={first}-{last} served {} bytes, not the runner's {want}",
            build.id,
            body.len()
        ));
    }
    true
}
