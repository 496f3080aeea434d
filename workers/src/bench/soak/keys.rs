//! Redis keys grouped by pattern: every key of the private Redis (SCAN, never KEYS), its
//! numbers and ids replaced by `*`, counted with how many have no short TTL. The soak takes
//! this before traffic (the baseline) and after the drain; per-build and per-job patterns
//! left over are leaks.

use std::collections::BTreeMap;

/// A TTL this long or shorter is "short": the dedup keys' TTL (1 hour,
/// `buildlogs::jobs::dedup`), the longest TTL the design documents as short-lived.
pub const SHORT_TTL_SECONDS: i64 = 3600;

/// Keys scanned per SCAN call and TTLs asked per pipeline.
const BATCH: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct Pattern {
    pub total: u64,
    /// Keys without a TTL, or with one longer than [`SHORT_TTL_SECONDS`].
    pub long_lived: u64,
    /// Of those, keys without any TTL.
    pub no_ttl: u64,
    /// The longest TTL seen (seconds).
    pub max_ttl: i64,
    /// The pattern replaced a build/job id or a number: one key per build or per job.
    pub per_id: bool,
    pub example: String,
}

pub async fn snapshot(redis_url: &str) -> anyhow::Result<BTreeMap<String, Pattern>> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut out: BTreeMap<String, Pattern> = BTreeMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(BATCH)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.ttl(k);
            }
            let ttls: Vec<i64> = pipe.query_async(&mut conn).await?;
            for (key, ttl) in keys.iter().zip(ttls) {
                let (pattern, per_id) = normalise(key);
                let entry = out.entry(pattern).or_default();
                entry.total += 1;
                // -1: no TTL; -2: gone since the SCAN.
                if ttl == -1 || ttl > SHORT_TTL_SECONDS {
                    entry.long_lived += 1;
                }
                if ttl == -1 {
                    entry.no_ttl += 1;
                }
                entry.max_ttl = entry.max_ttl.max(ttl);
                entry.per_id |= per_id;
                if entry.example.is_empty() {
                    entry.example = key.clone();
                }
            }
        }
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// `buildlogs:trace:{42}:chunk:3` → (`buildlogs:trace:{*}:chunk:*`, true). Whatever follows
/// `dedup:`, `active:` or `rerun:` is an id.
pub fn normalise(key: &str) -> (String, bool) {
    let mut parts = Vec::new();
    let mut per_id = false;
    let mut segments = key.split(':');
    while let Some(segment) = segments.next() {
        let id_braced = segment.len() > 2
            && segment.starts_with('{')
            && segment.ends_with('}')
            && segment[1..segment.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_digit());
        if id_braced {
            parts.push("{*}".to_string());
            per_id = true;
        } else if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
            || is_ulid(segment)
        {
            parts.push("*".to_string());
            per_id = true;
        } else {
            parts.push(segment.to_string());
            if matches!(segment, "dedup" | "active" | "rerun") && segments.clone().next().is_some()
            {
                parts.push("*".to_string());
                per_id = true;
                break;
            }
        }
    }
    (parts.join(":"), per_id)
}

fn is_ulid(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn ids_become_stars_and_names_stay() {
        assert_eq!(
            normalise("buildlogs:trace:{42}:chunk:3"),
            ("buildlogs:trace:{*}:chunk:*".into(), true)
        );
        assert_eq!(
            normalise("buildlogs:{flush_trace_chunk}:active:01HZX3:7"),
            ("buildlogs:{flush_trace_chunk}:active:*".into(), true)
        );
        assert_eq!(
            normalise("buildlogs:{archive_trace}:ready"),
            ("buildlogs:{archive_trace}:ready".into(), false)
        );
    }
}
