//! A log read by lines, for the log page: its summary (lines, bytes, sections, timestamps), a
//! page of lines from any line or from the end, and a search over every line.
//!
//! Duties:
//! 1. Keep a [`LineIndex`] per build (the [`LogView::capacity`] most recently used, per
//!    process): for an archived log, the one stored with the archive (one small read); else
//!    built by one streaming scan of the log through [`TraceRead`], and extended by scanning
//!    only the bytes past its end when a live log has grown; a log whose length went down
//!    (its archive expired) is indexed again.
//! 2. A page of lines: one ranged read from the checkpoint nearest before its first line,
//!    stopping once the page is full.
//! 3. A search: one streaming scan of the whole log ([`LineSearch`]).
//!
//! Guarantees: memory per request is one frame (128 KiB) plus the lines it returns (a search:
//! plus one line; a search or index scan of an archive: one 4 MiB read); per cached build, the index (8 bytes per 1,000 lines plus sections). One
//! scan at a time per build: a second request for a build being indexed waits for that scan
//! instead of repeating it. Bytes are read wherever they are (live, flushed, archived, or
//! moving between them), as every other read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::line_index::{LineIndex, Section};
use super::line_search::{LineSearch, SearchResult};
use super::service::{TraceError, TraceService};

/// Builds whose index a web process keeps by default.
pub const DEFAULT_CAPACITY: usize = 64;

/// What the page shows before any line.
#[derive(Debug, Clone)]
pub struct LogSummary {
    pub lines: u64,
    pub bytes: u64,
    pub sections: Vec<Section>,
    /// The first runner timestamp (RFC 3339): the log carries per-line timestamps.
    pub first_timestamp: Option<String>,
}

/// Which lines a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `count` lines from line `from` (1-based).
    From { from: u64, count: u64 },
    /// The last `count` lines.
    Tail { count: u64 },
}

/// A page of lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinesPage {
    /// The line number of `lines[0]` (where the page would start when it is empty).
    pub first: u64,
    /// Each line decoded as lossy UTF-8, its `\n` removed (escapes and `\r` kept).
    pub lines: Vec<String>,
    pub total_lines: u64,
    pub total_bytes: u64,
    /// The byte offset right after the last byte returned.
    pub end_offset: u64,
    /// The last line returned ended with `\n` (a live log's last line may not have yet).
    pub last_complete: bool,
    /// Lines longer than [`MAX_LINE_BYTES`], cut there: (line number, bytes not returned).
    pub cut: Vec<(u64, u64)>,
}

/// Bytes of one line a page returns at most (the page draws far fewer; the raw view has every
/// byte): a log that is one 100 MiB line costs a request this much, not 100 MiB.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Appends `bytes` of the line being read: kept up to [`MAX_LINE_BYTES`], all counted.
fn keep(line: &mut Vec<u8>, line_len: &mut usize, bytes: &[u8]) {
    let room = MAX_LINE_BYTES.saturating_sub(line.len());
    line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    *line_len += bytes.len();
}

impl LinesPage {
    /// Adds a line (at most its first [`MAX_LINE_BYTES`], `len` bytes in all).
    fn push(&mut self, kept: &[u8], len: usize) {
        if len > kept.len() {
            let number = self.first + self.lines.len() as u64;
            self.cut.push((number, (len - kept.len()) as u64));
        }
        self.lines.push(String::from_utf8_lossy(kept).into_owned());
    }
}

type Shared = Arc<tokio::sync::Mutex<LineIndex>>;

/// The per-process cache of line indexes, and the reads that use them.
pub struct LogView {
    capacity: usize,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<i64, (Shared, u64)>,
    tick: u64,
}

impl Default for LogView {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl LogView {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Builds whose index is kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Builds indexed now (at most [`Self::capacity`]).
    pub fn cached(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.entries.len())
    }

    /// The build's index entry, made the most recently used (the least recently used one is
    /// dropped when the cache is full).
    fn entry(&self, build_id: i64) -> Shared {
        let mut cache = match self.cache.lock() {
            Ok(cache) => cache,
            // A panic elsewhere while holding it left nothing half-done worth keeping.
            Err(poisoned) => {
                let mut cache = poisoned.into_inner();
                *cache = Cache::default();
                cache
            }
        };
        cache.tick += 1;
        let tick = cache.tick;
        if let Some((shared, used)) = cache.entries.get_mut(&build_id) {
            *used = tick;
            return shared.clone();
        }
        if cache.entries.len() >= self.capacity
            && let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| *id)
        {
            cache.entries.remove(&oldest);
        }
        let shared = Shared::default();
        cache.entries.insert(build_id, (shared.clone(), tick));
        shared
    }

    /// Runs `look` on the build's index, brought up to the log's current length first.
    /// `finished`: the build was seen finished before this call, so its length is final.
    async fn with_index<T>(
        &self,
        traces: &TraceService,
        build_id: i64,
        finished: bool,
        look: impl FnOnce(&LineIndex) -> T,
    ) -> Result<T, TraceError> {
        let shared = self.entry(build_id);
        let mut index = shared.lock().await;
        let read = traces.open_read(build_id).await?;
        let len = read.len();
        if len < index.scanned() {
            *index = LineIndex::new();
        }
        if index.scanned() == 0
            && len > 0
            && let Some(artifact) = read.archive()
            && let Some(stored) = traces.archived_line_index(artifact).await
            && stored.scanned() == len
        {
            tracing::debug!(build_id, "line index read from the archive's");
            *index = stored;
        }
        if len > index.scanned() {
            let scanned = index.scanned();
            tracing::debug!(build_id, from = scanned, to = len, "indexing log lines");
            let mut frames = read.scan(scanned, len);
            while let Some(frame) = frames.next_frame().await? {
                index.feed(&frame);
            }
        }
        if finished {
            index.finish();
        }
        Ok(look(&index))
    }

    pub async fn summary(
        &self,
        traces: &TraceService,
        build_id: i64,
        finished: bool,
    ) -> Result<LogSummary, TraceError> {
        self.with_index(traces, build_id, finished, |index| LogSummary {
            lines: index.lines(),
            bytes: index.scanned(),
            sections: index.sections().to_vec(),
            first_timestamp: index.first_timestamp().map(str::to_owned),
        })
        .await
    }

    pub async fn lines(
        &self,
        traces: &TraceService,
        build_id: i64,
        finished: bool,
        window: Window,
    ) -> Result<LinesPage, TraceError> {
        let (first, count, total, len, (offset, skip)) = self
            .with_index(traces, build_id, finished, |index| {
                let total = index.lines();
                let (first, count) = match window {
                    Window::From { from, count } => (from.max(1), count),
                    Window::Tail { count } => (total.saturating_sub(count) + 1, count),
                };
                (first, count, total, index.scanned(), index.locate(first))
            })
            .await?;
        let mut page = LinesPage {
            first,
            lines: Vec::new(),
            total_lines: total,
            total_bytes: len,
            end_offset: len,
            last_complete: true,
            cut: Vec::new(),
        };
        if first > total || count == 0 {
            return Ok(page);
        }
        let mut frames = traces.open_read(build_id).await?.frames(offset, len);
        // `line` keeps the first MAX_LINE_BYTES of the current line, `line_len` counts all.
        let (mut pos, mut skip, mut line, mut line_len) = (offset, skip, Vec::new(), 0usize);
        while let Some(frame) = frames.next_frame().await? {
            let mut start = 0;
            for nl in memchr::memchr_iter(b'\n', &frame) {
                if skip > 0 {
                    skip -= 1;
                } else {
                    keep(&mut line, &mut line_len, &frame[start..nl]);
                    page.push(&line, line_len);
                    line.clear();
                    line_len = 0;
                    if page.lines.len() as u64 == count {
                        page.end_offset = pos + nl as u64 + 1;
                        return Ok(page);
                    }
                }
                start = nl + 1;
            }
            if skip == 0 {
                keep(&mut line, &mut line_len, &frame[start..]);
            }
            pos += frame.len() as u64;
        }
        if skip == 0 && line_len > 0 {
            page.push(&line, line_len);
            page.last_complete = false;
        }
        page.end_offset = pos;
        Ok(page)
    }

    /// Lines whose visible text holds `query` (case-insensitive), over the whole log as it is
    /// now: their count, and at most `limit` of those at or after line `from`.
    pub async fn search(
        &self,
        traces: &TraceService,
        build_id: i64,
        query: &str,
        from: u64,
        limit: usize,
    ) -> Result<SearchResult, TraceError> {
        let read = traces.open_read(build_id).await?;
        let len = read.len();
        let mut frames = read.scan(0, len);
        let mut search = LineSearch::new(query, from, limit);
        while let Some(frame) = frames.next_frame().await? {
            search.feed(&frame);
        }
        Ok(search.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::LogView;

    #[test]
    fn the_cache_keeps_the_most_recently_used_builds() {
        let view = LogView::new(2);
        let one = view.entry(1);
        view.entry(2);
        assert!(
            Arc::ptr_eq(&one, &view.entry(1)),
            "a hit returns the same index"
        );
        view.entry(3);
        assert_eq!(view.cached(), 2);
        assert!(Arc::ptr_eq(&one, &view.entry(1)), "1 was used last: kept");
        let cache = view.cache.lock().unwrap();
        assert!(
            !cache.entries.contains_key(&2),
            "2 was the least recently used"
        );
    }
}
