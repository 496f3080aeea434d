//! A log's line index: what a page of lines needs to start reading at the right byte, found by
//! one streaming scan, kept per build and extended as a live log grows.
//!
//! Duties:
//! 1. [`LineIndex::feed`]: scan bytes in order (any frame sizes) and record the byte offset of
//!    every [`CHECKPOINT_EVERY`]th line start, the line count, GitLab's sections (nested, with
//!    their start and end lines and times; open ones have no end yet) and whether the runner's
//!    per-line timestamps occur (and the first one).
//! 2. [`LineIndex::locate`]: the indexed byte offset nearest before a line, so a page of lines
//!    is one ranged read from there.
//!
//! Lines are split on `\n` alone (a CRLF line keeps its `\r`); line numbers are 1-based; a last
//! line without its `\n` yet counts as a line. Markers are parsed from a line's first
//! [`HEAD_BYTES`] bytes (a marker never sits deeper), so a line of any length costs that much
//! memory at most. Memory per build: 8 bytes per [`CHECKPOINT_EVERY`] lines plus the sections.
//! The last line's markers count once it ends (or, for a finished log, at [`LineIndex::finish`]).

use super::log_text::{self, Marker};

/// A checkpoint every this many lines: a page read skips at most this many lines.
pub const CHECKPOINT_EVERY: u64 = 1000;

/// Bytes of a line kept to parse its markers and timestamp.
pub const HEAD_BYTES: usize = 4096;

/// A GitLab section (`section_start` … `section_end`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Section {
    pub name: String,
    /// The header text after the start marker, escapes dropped.
    pub header: String,
    /// The line holding `section_start`.
    pub start_line: u64,
    /// The line holding `section_end`; `None` while open.
    pub end_line: Option<u64>,
    /// Unix seconds of the markers.
    pub start_ts: i64,
    pub end_ts: Option<i64>,
    /// The marker asked for it folded (`[collapsed=true]`).
    pub collapsed: bool,
    /// Sections it sits in (0: top level).
    pub depth: u32,
}

/// Stored next to an archive (`archived_lines.rs`) in this serde form.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LineIndex {
    /// Bytes scanned.
    scanned: u64,
    /// `\n`s seen: complete lines.
    complete: u64,
    /// Byte offset where the line after the last `\n` starts.
    line_start: u64,
    /// `checkpoints[k]`: the byte offset of line `k * CHECKPOINT_EVERY + 1`.
    checkpoints: Vec<u64>,
    sections: Vec<Section>,
    /// Indexes into `sections` of the open ones, outermost first.
    open: Vec<usize>,
    /// The first timestamp prefix seen (RFC 3339), if any.
    first_timestamp: Option<String>,
    /// The first bytes of the line being scanned (it has no `\n` yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    head: Vec<u8>,
    /// The last line's markers were read (a finished log).
    finished: bool,
}

impl Default for LineIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl LineIndex {
    pub fn new() -> Self {
        Self {
            scanned: 0,
            complete: 0,
            line_start: 0,
            checkpoints: vec![0],
            sections: Vec::new(),
            open: Vec::new(),
            first_timestamp: None,
            head: Vec::new(),
            finished: false,
        }
    }

    /// Bytes scanned so far: the next [`Self::feed`] starts here.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Lines so far: the complete ones, plus a last one without its `\n` yet.
    pub fn lines(&self) -> u64 {
        self.complete + u64::from(self.scanned > self.line_start)
    }

    /// Whether the last line has no `\n` yet.
    pub fn last_line_open(&self) -> bool {
        self.scanned > self.line_start
    }

    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The log carries the runner's per-line timestamps.
    pub fn timestamps(&self) -> bool {
        self.first_timestamp.is_some()
    }

    /// The first runner timestamp (RFC 3339), if any.
    pub fn first_timestamp(&self) -> Option<&str> {
        self.first_timestamp.as_deref()
    }

    /// Line `line` (1-based) is reached by reading from the returned byte offset and skipping
    /// the returned number of lines.
    pub fn locate(&self, line: u64) -> (u64, u64) {
        let before = line.saturating_sub(1);
        let k = ((before / CHECKPOINT_EVERY) as usize).min(self.checkpoints.len() - 1);
        (self.checkpoints[k], before - k as u64 * CHECKPOINT_EVERY)
    }

    /// Scans the next bytes of the log (those from [`Self::scanned`] on).
    pub fn feed(&mut self, bytes: &[u8]) {
        let base = self.scanned;
        let mut pos = 0;
        for nl in memchr::memchr_iter(b'\n', bytes) {
            let line = &bytes[pos..nl];
            if self.head.is_empty() {
                self.line_done(&line[..line.len().min(HEAD_BYTES)]);
            } else {
                self.keep_head(line);
                let head = std::mem::take(&mut self.head);
                self.line_done(&head);
                self.head = head;
                self.head.clear();
            }
            self.complete += 1;
            self.line_start = base + nl as u64 + 1;
            if self.complete.is_multiple_of(CHECKPOINT_EVERY) {
                self.checkpoints.push(self.line_start);
            }
            pos = nl + 1;
        }
        self.keep_head(&bytes[pos..]);
        self.scanned += bytes.len() as u64;
    }

    /// The log is final: the last line, if it has no `\n`, counts its markers too.
    pub fn finish(&mut self) {
        if !self.finished && self.last_line_open() {
            let head = std::mem::take(&mut self.head);
            self.line_done(&head);
        }
        self.finished = true;
    }

    fn keep_head(&mut self, bytes: &[u8]) {
        let room = HEAD_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Line `self.complete + 1`'s timestamp and markers, from its first bytes.
    fn line_done(&mut self, head: &[u8]) {
        let number = self.complete + 1;
        if self.first_timestamp.is_none()
            && let Some(prefix) = log_text::timestamp_prefix(head)
        {
            self.first_timestamp = Some(log_text::timestamp_text(head, prefix).to_owned());
        }
        for marker in log_text::markers(head) {
            match marker {
                Marker::Start {
                    ts,
                    name,
                    collapsed,
                    header,
                } => {
                    self.open.push(self.sections.len());
                    self.sections.push(Section {
                        name,
                        header,
                        start_line: number,
                        end_line: None,
                        start_ts: ts,
                        end_ts: None,
                        collapsed,
                        depth: (self.open.len() - 1) as u32,
                    });
                }
                Marker::End { ts, name } => {
                    // The innermost open section of that name; those inside it end with it.
                    // An end matching no open section is ignored.
                    let Some(at) = self
                        .open
                        .iter()
                        .rposition(|&i| self.sections[i].name == name)
                    else {
                        continue;
                    };
                    for i in self.open.drain(at..) {
                        self.sections[i].end_line = Some(number);
                        self.sections[i].end_ts = Some(ts);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(log: &[u8], frame: usize) -> LineIndex {
        let mut index = LineIndex::new();
        for piece in log.chunks(frame.max(1)) {
            index.feed(piece);
        }
        index
    }

    #[test]
    fn lines_checkpoints_and_the_open_last_line_whatever_the_frames() {
        let mut log = Vec::new();
        for i in 1..=2500 {
            log.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        log.extend_from_slice(b"partial");
        for frame in [1, 7, 4096, log.len()] {
            let index = index_of(&log, frame);
            assert_eq!(index.lines(), 2501, "frame {frame}");
            assert!(index.last_line_open());
            let (offset, skip) = index.locate(1001);
            assert_eq!(
                (skip, &log[offset as usize..][..10]),
                (0, &b"line 1001\n"[..])
            );
            let (offset, skip) = index.locate(2345);
            assert_eq!(skip, 344);
            assert!(log[offset as usize..].starts_with(b"line 2001\n"));
            assert_eq!(index.locate(1), (0, 0));
        }
        assert_eq!(index_of(b"", 1).lines(), 0);
        assert_eq!(index_of(b"a\n", 1).lines(), 1);
        assert_eq!(index_of(b"\n\n", 1).lines(), 2);
    }

    #[test]
    fn sections_nest_collapse_and_stay_open_until_their_end() {
        let log = b"start\n\x1b[0Ksection_start:100:outer[collapsed=true]\r\x1b[0KOuter\nx\n\
section_start:101:inner\r\x1b[0K\x1b[1mInner\x1b[0m\ny\nsection_end:105:inner\r\x1b[0K\n\
section_end:110:outer\r\x1b[0K\nsection_start:120:open\r\x1b[0KStill going\nz";
        for frame in [1, 3, log.len()] {
            let mut index = index_of(log, frame);
            let s = index.sections().to_vec();
            assert_eq!(s.len(), 3);
            assert_eq!(
                (
                    s[0].name.as_str(),
                    s[0].header.as_str(),
                    s[0].start_line,
                    s[0].end_line
                ),
                ("outer", "Outer", 2, Some(7))
            );
            assert!(s[0].collapsed);
            assert_eq!(
                (s[0].start_ts, s[0].end_ts, s[0].depth),
                (100, Some(110), 0)
            );
            assert_eq!(
                (
                    s[1].name.as_str(),
                    s[1].header.as_str(),
                    s[1].start_line,
                    s[1].end_line
                ),
                ("inner", "Inner", 4, Some(6))
            );
            assert_eq!((s[1].depth, s[1].collapsed), (1, false));
            assert_eq!(
                (s[2].name.as_str(), s[2].end_line, s[2].depth),
                ("open", None, 0)
            );
            assert!(!index.timestamps());
            index.finish();
            assert_eq!(index.lines(), 9);
        }
    }

    #[test]
    fn timestamps_are_detected_and_the_first_kept() {
        let log = b"2024-05-01T10:00:00.5Z 00O a\n2024-05-01T10:00:01Z 01E b\n";
        let index = index_of(log, 5);
        assert!(index.timestamps());
        assert_eq!(index.first_timestamp(), Some("2024-05-01T10:00:00.5Z"));
    }

    #[test]
    fn a_finished_log_counts_the_markers_of_its_last_line_once() {
        let mut index = index_of(b"a\nsection_start:1:s\r\x1b[0KS", 4);
        assert!(index.sections().is_empty());
        index.finish();
        index.finish();
        assert_eq!(index.sections().len(), 1);
        assert_eq!(index.sections()[0].start_line, 2);
    }
}
