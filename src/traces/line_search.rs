//! Searching a log's lines: a case-insensitive substring over each line's visible text
//! ([`log_text::visible`]: no timestamp prefix, section markers or escape sequences), fed the
//! log's bytes in order, in frames of any size, so a search holds one frame and one line at a
//! time, never the log.
//!
//! Guarantees: every line is looked at (the count is over the whole log); match line numbers
//! are 1-based and ascending; at most `limit` of those at or after `from` are kept, and
//! `truncated` says more came after them. A line longer than [`LINE_MAX`] is searched in its
//! first [`LINE_MAX`] bytes only (bounded memory whatever a job prints).

use super::log_text;

/// Bytes of one line searched at most.
pub const LINE_MAX: usize = 1024 * 1024;

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchResult {
    /// Matching lines in the whole log.
    pub total: u64,
    /// Matching line numbers at or after `from`, ascending, at most `limit`.
    pub matches: Vec<u64>,
    /// More matches came after the last one kept.
    pub truncated: bool,
}

/// One search, fed the log's bytes in order.
pub struct LineSearch {
    /// The query, lowercased (ASCII-only queries are matched on bytes, by `finder`).
    needle: String,
    finder: Option<memchr::memmem::Finder<'static>>,
    from: u64,
    limit: usize,
    /// The line being read (spanning frames), at most [`LINE_MAX`] bytes of it.
    carry: Vec<u8>,
    /// Lines done.
    line: u64,
    visible: Vec<u8>,
    result: SearchResult,
}

impl LineSearch {
    pub fn new(query: &str, from: u64, limit: usize) -> Self {
        let needle = query.to_lowercase();
        let finder = query
            .is_ascii()
            .then(|| memchr::memmem::Finder::new(needle.as_bytes()).into_owned());
        Self {
            needle,
            finder,
            from,
            limit,
            carry: Vec::new(),
            line: 0,
            visible: Vec::new(),
            result: SearchResult::default(),
        }
    }

    /// The next bytes of the log.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut pos = 0;
        for nl in memchr::memchr_iter(b'\n', bytes) {
            let line = &bytes[pos..nl];
            if self.carry.is_empty() {
                self.line_done(&line[..line.len().min(LINE_MAX)]);
            } else {
                self.keep(line);
                let carry = std::mem::take(&mut self.carry);
                self.line_done(&carry);
                self.carry = carry;
                self.carry.clear();
            }
            pos = nl + 1;
        }
        self.keep(&bytes[pos..]);
    }

    /// The log ended: its last line (without `\n`) is searched too.
    pub fn finish(mut self) -> SearchResult {
        if !self.carry.is_empty() {
            let carry = std::mem::take(&mut self.carry);
            self.line_done(&carry);
        }
        self.result
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = LINE_MAX.saturating_sub(self.carry.len());
        self.carry
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn line_done(&mut self, line: &[u8]) {
        self.line += 1;
        if !self.matches(line) {
            return;
        }
        self.result.total += 1;
        if self.line >= self.from {
            if self.result.matches.len() < self.limit {
                self.result.matches.push(self.line);
            } else {
                self.result.truncated = true;
            }
        }
    }

    fn matches(&mut self, line: &[u8]) -> bool {
        log_text::visible(line, &mut self.visible);
        if let Some(finder) = &self.finder {
            self.visible.make_ascii_lowercase();
            finder.find(&self.visible).is_some()
        } else {
            String::from_utf8_lossy(&self.visible)
                .to_lowercase()
                .contains(&self.needle)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(log: &[u8], frame: usize, q: &str, from: u64, limit: usize) -> SearchResult {
        let mut s = LineSearch::new(q, from, limit);
        for piece in log.chunks(frame) {
            s.feed(piece);
        }
        s.finish()
    }

    #[test]
    fn counts_every_line_keeps_a_window_and_ignores_case_and_escapes() {
        let log = b"Error one\nfine\n\x1b[31mERR\x1b[0mOR two\n2024-05-01T10:00:00Z 00O error three\nlast error";
        for frame in [1, 5, log.len()] {
            let all = search(log, frame, "error", 1, 10);
            assert_eq!(all.matches, vec![1, 3, 4, 5], "frame {frame}");
            assert_eq!((all.total, all.truncated), (4, false));
            let window = search(log, frame, "ERROR", 2, 2);
            assert_eq!(window.matches, vec![3, 4]);
            assert_eq!((window.total, window.truncated), (4, true));
        }
        assert_eq!(search(b"00O x\n", 3, "00o", 1, 10).total, 1);
        assert_eq!(
            search(b"2024-05-01T10:00:00Z 00O x\n", 3, "00O", 1, 10).total,
            0,
            "the timestamp prefix is not text"
        );
        assert_eq!(search("Ärger\n".as_bytes(), 2, "äR", 1, 10).total, 1);
        assert_eq!(search(b"a\xffb\n", 2, "b", 1, 10).total, 1);
    }
}
