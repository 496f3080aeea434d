//! Redis in tests: the server's URL, a key prefix per test, and what a test left under it.
//! Shared by the job system's tests and the library's (`tests/support`, by `#[path]`).
#![allow(dead_code)]

/// What a test that cannot reach Redis says.
pub const START_REDIS: &str = "Redis at BUILDLOGS_TEST_REDIS_URL (default redis://127.0.0.1:6379): \
     start redis-server, or run bash .ci/run, which does";

pub fn redis_url() -> String {
    std::env::var("BUILDLOGS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix no other test uses.
pub fn unique_prefix(test: &str) -> String {
    format!("blt:{test}:{}", ulid::Ulid::new())
}

/// Every key under `prefix:` (the prefix cut off), with `ttl` or `no ttl`, sorted.
pub async fn redis_keys_with_ttl(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        let name = key.strip_prefix(prefix).unwrap_or(&key).to_owned();
        out.push(match ttl {
            -1 => format!("{name} no ttl"),
            ms => format!("{name} ttl {ms}"),
        });
    }
    out.sort();
    out
}

/// Deletes this test's keys (SCAN + DEL on its own prefix only).
pub fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = match redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
    {
        Ok(k) => k,
        Err(_) => return,
    };
    for chunk in keys.chunks(500) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}
