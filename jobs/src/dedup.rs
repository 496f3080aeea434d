//! Deduplication strategies (Sidekiq's unique-jobs vocabulary).
//!
//! - `until_executing` (default): a duplicate is dropped while the first job waits; once it
//!   starts running, a new one may be enqueued.
//! - `until_executed`: a duplicate is dropped until the first job finishes (completes or dies).
//! - `none`: no dedup.
//!
//! With `until_executed`, `reschedule_once` makes a duplicate that arrives while the job runs
//! schedule exactly one more run after it finishes (how chunk flushes catch bytes appended
//! during a flush). Every held key also expires after its TTL, so a lost job cannot block its
//! key forever.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupStrategy {
    UntilExecuting,
    UntilExecuted,
    None,
}

/// The strategy as stored in the envelope header (one letter, read by the Redis scripts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupMode {
    None,
    UntilExecuting,
    UntilExecuted,
    UntilExecutedRescheduleOnce,
}

impl DedupMode {
    pub fn code(self) -> char {
        match self {
            DedupMode::None => 'n',
            DedupMode::UntilExecuting => 'e',
            DedupMode::UntilExecuted => 'd',
            DedupMode::UntilExecutedRescheduleOnce => 'r',
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "n" => DedupMode::None,
            "e" => DedupMode::UntilExecuting,
            "d" => DedupMode::UntilExecuted,
            "r" => DedupMode::UntilExecutedRescheduleOnce,
            _ => return None,
        })
    }

    /// Whether the key is released when the job starts (else when it finishes).
    pub fn releases_on_start(self) -> bool {
        self == DedupMode::UntilExecuting
    }
}

/// A job type's dedup settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dedup {
    pub strategy: DedupStrategy,
    /// Only with `UntilExecuted`.
    pub reschedule_once: bool,
    /// Upper bound on how long a key is held.
    pub ttl: Duration,
}

impl Default for Dedup {
    /// `until_executing` for one hour, like Sidekiq Enterprise's typical `unique_for`.
    fn default() -> Self {
        Self {
            strategy: DedupStrategy::UntilExecuting,
            reschedule_once: false,
            ttl: Duration::from_secs(3600),
        }
    }
}

impl Dedup {
    pub fn none() -> Self {
        Self {
            strategy: DedupStrategy::None,
            ..Self::default()
        }
    }

    pub fn until_executed(ttl: Duration) -> Self {
        Self {
            strategy: DedupStrategy::UntilExecuted,
            reschedule_once: false,
            ttl,
        }
    }

    pub fn reschedule_once(mut self) -> Self {
        self.reschedule_once = true;
        self
    }

    pub fn mode(&self) -> DedupMode {
        match (self.strategy, self.reschedule_once) {
            (DedupStrategy::None, _) => DedupMode::None,
            (DedupStrategy::UntilExecuting, _) => DedupMode::UntilExecuting,
            (DedupStrategy::UntilExecuted, false) => DedupMode::UntilExecuted,
            (DedupStrategy::UntilExecuted, true) => DedupMode::UntilExecutedRescheduleOnce,
        }
    }
}
