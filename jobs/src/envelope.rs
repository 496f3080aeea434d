//! A job as stored by a broker: identity, attempt count, dedup settings and the JSON payload.
//!
//! The wire form is one string with a fixed header the Redis scripts can read with one
//! `string.match`, without decoding JSON:
//! `dedup_mode|id|attempt|max_attempts|dedup_key|enqueued_at_ms|queue|payload`.
//! The dedup mode comes first so the hot path reads one byte to know whether a job needs any
//! dedup work. Ids, dedup keys and queue names therefore may not contain `|`; the payload may.
//! Encoding is canonical: `decode` then `encode` gives back the same bytes.

use super::broker::BrokerError;
use super::dedup::DedupMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    /// Runs started so far: in the store, 0 while a job waits for its first run; in a
    /// [`Delivery`](super::broker::Delivery), the run being delivered (1 on the first).
    pub attempt: u32,
    pub max_attempts: u32,
    pub dedup_mode: DedupMode,
    /// Empty without dedup.
    pub dedup_key: String,
    pub enqueued_at_ms: i64,
    pub queue: String,
    pub payload: String,
}

impl Envelope {
    /// A fresh job with a new time-ordered id.
    pub fn new(queue: &str, payload: String, max_attempts: u32, enqueued_at_ms: i64) -> Self {
        Self {
            id: ulid::Ulid::new().to_string(),
            attempt: 0,
            max_attempts,
            dedup_mode: DedupMode::None,
            dedup_key: String::new(),
            enqueued_at_ms,
            queue: queue.to_owned(),
            payload,
        }
    }

    pub fn with_dedup(mut self, mode: DedupMode, key: String) -> Self {
        self.dedup_mode = mode;
        self.dedup_key = key;
        self
    }

    /// Checks the fields the header cannot carry.
    pub fn validate(&self) -> Result<(), BrokerError> {
        for (field, value) in [
            ("job id", &self.id),
            ("queue", &self.queue),
            ("dedup key", &self.dedup_key),
        ] {
            if value.contains('|') {
                return Err(BrokerError::Invalid {
                    field,
                    detail: format!("{value:?} contains '|'"),
                });
            }
        }
        if self.id.is_empty() || self.queue.is_empty() {
            return Err(BrokerError::Invalid {
                field: "job id/queue",
                detail: "must not be empty".into(),
            });
        }
        if self.max_attempts == 0 {
            return Err(BrokerError::Invalid {
                field: "max_attempts",
                detail: "must be at least 1".into(),
            });
        }
        if self.dedup_mode != DedupMode::None && self.dedup_key.is_empty() {
            return Err(BrokerError::Invalid {
                field: "dedup key",
                detail: "empty with a dedup strategy".into(),
            });
        }
        Ok(())
    }

    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.dedup_mode.code(),
            self.id,
            self.attempt,
            self.max_attempts,
            self.dedup_key,
            self.enqueued_at_ms,
            self.queue,
            self.payload
        )
    }

    pub fn decode(raw: &str) -> Result<Self, BrokerError> {
        let corrupt = |detail: &str| BrokerError::Corrupt {
            queue: String::new(),
            detail: format!("{detail}: {raw:.120}"),
        };
        let mut parts = raw.splitn(8, '|');
        let mut next = |name: &str| {
            parts
                .next()
                .ok_or_else(|| corrupt(&format!("missing {name}")))
        };
        let dedup_mode =
            DedupMode::from_code(next("dedup mode")?).ok_or_else(|| corrupt("bad dedup mode"))?;
        let id = next("id")?.to_owned();
        let attempt = next("attempt")?
            .parse()
            .map_err(|_| corrupt("bad attempt"))?;
        let max_attempts = next("max_attempts")?
            .parse()
            .map_err(|_| corrupt("bad max_attempts"))?;
        let dedup_key = next("dedup key")?.to_owned();
        let enqueued_at_ms = next("enqueued_at")?
            .parse()
            .map_err(|_| corrupt("bad enqueued_at"))?;
        let queue = next("queue")?.to_owned();
        let payload = next("payload")?.to_owned();
        Ok(Self {
            id,
            attempt,
            max_attempts,
            dedup_mode,
            dedup_key,
            enqueued_at_ms,
            queue,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_payload_containing_the_separator() {
        let env = Envelope::new("flush", r#"{"a":"x|y"}"#.into(), 5, 42)
            .with_dedup(DedupMode::UntilExecuted, "k1".into());
        assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    }

    #[test]
    fn rejects_separator_in_header_fields() {
        let env = Envelope::new("fl|ush", "{}".into(), 5, 0);
        assert!(matches!(
            env.validate(),
            Err(BrokerError::Invalid { field: "queue", .. })
        ));
    }
}
