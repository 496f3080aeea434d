//! The soak's look at the end state, as an operator would look: the job JSON and the whole log
//! of every build through the API (admin token), and the private Redis' queues and dead set
//! (SCAN, never KEYS). Read-only.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ADMIN;
use super::book::Build;
use super::report::Seen;

pub async fn job_json(client: &reqwest::Client, web: &str, id: i64) -> Option<serde_json::Value> {
    let reply = client
        .get(format!("{web}/api/v4/jobs/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?;
    if !reply.status().is_success() {
        return None;
    }
    serde_json::from_slice(&reply.bytes().await.ok()?).ok()
}

pub fn is_final(job: &serde_json::Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("success" | "failed" | "canceled")
    ) && job["trace"]["state"].as_str() == Some("archived")
}

/// The job JSON, and for an archived log the length and CRC32 of the whole log served back.
pub async fn seen_of(client: &reqwest::Client, web: &str, b: &Build) -> Option<Seen> {
    let job = job_json(client, web, b.id).await?;
    let served = if is_final(&job) {
        served(client, web, b).await
    } else {
        None
    };
    Some(Seen {
        status: job["status"].as_str().unwrap_or("?").to_string(),
        trace_state: job["trace"]["state"].as_str().unwrap_or("?").to_string(),
        size: job["trace"]["size"].as_u64().unwrap_or(0),
        crc32: job["trace"]["crc32"].as_str().map(str::to_string),
        partial: job["trace"]["partial"].as_bool().unwrap_or(false),
        served,
    })
}

async fn served(client: &reqwest::Client, web: &str, b: &Build) -> Option<(u64, u32)> {
    let mut reply = client
        .get(format!("{web}/api/v4/jobs/{}/trace", b.id))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?;
    if reply.status().as_u16() != 200 {
        return None;
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut len = 0u64;
    while let Some(chunk) = reply.chunk().await.ok()? {
        hasher.update(&chunk);
        len += chunk.len() as u64;
    }
    Some((len, hasher.finalize()))
}

/// Keys matching `pattern` in the private Redis (SCAN, never KEYS).
async fn scan(
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        out.extend(keys);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// The queue name inside a queue key's hash tag.
fn queue_of(key: &str) -> String {
    key.split_once('{')
        .and_then(|(_, r)| r.split_once('}'))
        .map_or(key.to_string(), |(q, _)| q.to_string())
}

/// Per queue, the fewest (ready, scheduled, running) seen over a few looks half a second
/// apart: a cron job passing through is not a backlog.
pub async fn queue_lengths(redis_url: &str) -> anyhow::Result<Vec<(String, u64, u64, u64)>> {
    const LOOKS: usize = 10;
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut least: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for _ in 0..LOOKS {
        let mut now: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for key in scan(&mut conn, "*}:ready").await? {
            let n: u64 = redis::cmd("LLEN").arg(&key).query_async(&mut conn).await?;
            now.entry(queue_of(&key)).or_default().0 = n;
        }
        for key in scan(&mut conn, "*}:scheduled").await? {
            let n: u64 = redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await?;
            now.entry(queue_of(&key)).or_default().1 = n;
        }
        for key in scan(&mut conn, "*}:running").await? {
            let n: u64 = redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await?;
            now.entry(queue_of(&key)).or_default().2 = n;
        }
        for (q, l) in &mut least {
            let n = now.get(q).copied().unwrap_or_default();
            *l = (l.0.min(n.0), l.1.min(n.1), l.2.min(n.2));
        }
        for (q, n) in now {
            least.entry(q).or_insert(n);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(least
        .into_iter()
        .map(|(q, (a, b, c))| (q, a, b, c))
        .collect())
}

/// (queue, error) of every dead job.
pub async fn dead_jobs(redis_url: &str) -> anyhow::Result<Vec<(String, String)>> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut out = Vec::new();
    for key in scan(&mut conn, "*}:dead:error").await? {
        let errors: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        for (id, error) in errors {
            out.push((queue_of(&key), format!("{id}: {error}")));
        }
    }
    Ok(out)
}
