//! What a log line says, as a reader sees it: the runner's per-line timestamp prefix, GitLab's
//! section markers, and the text left once escape sequences are dropped. Pure functions over
//! one line's bytes (its `\n` removed); the line index and the search use them.
//!
//! Formats (GitLab Runner):
//! - timestamp prefix (`FF_TIMESTAMPS`, runner 17.x+):
//!   `YYYY-MM-DDTHH:MM:SS[.fraction]Z <2 hex digits><O|E>[+] `, e.g. `2024-05-01T10:00:00.123456Z 00O `;
//! - `section_start:<unix ts>:<name>[collapsed=true]\r\x1b[0K<header>` and
//!   `section_end:<unix ts>:<name>\r\x1b[0K`, after the timestamp prefix if any, and after
//!   other escape sequences (the runner writes `\x1b[0K` first); several may share a line.

/// One section marker found on a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    Start {
        ts: i64,
        name: String,
        collapsed: bool,
        /// The header text after the marker, escapes dropped (lossy UTF-8).
        header: String,
    },
    End {
        ts: i64,
        name: String,
    },
}

/// The length of the runner's timestamp prefix at the start of `line` (its trailing space
/// included), or `None` when the line has none.
pub fn timestamp_prefix(line: &[u8]) -> Option<usize> {
    let digits = |range: std::ops::Range<usize>| {
        line.get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| line.get(i) == Some(&c);
    if !(digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19))
    {
        return None;
    }
    let mut i = 19;
    if at(i, b'.') {
        let fraction = line[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if fraction == 0 {
            return None;
        }
        i += 1 + fraction;
    }
    let hex = |i: usize| {
        line.get(i)
            .is_some_and(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !(at(i, b'Z') && at(i + 1, b' ') && hex(i + 2) && hex(i + 3)) {
        return None;
    }
    i += 4;
    if !(at(i, b'O') || at(i, b'E')) {
        return None;
    }
    i += 1;
    if at(i, b'+') {
        i += 1;
    }
    at(i, b' ').then_some(i + 1)
}

/// The RFC 3339 time of a timestamp prefix `timestamp_prefix` measured.
pub fn timestamp_text(line: &[u8], prefix: usize) -> &str {
    // The prefix is ASCII up to the `Z` (checked by `timestamp_prefix`).
    let end = line[..prefix]
        .iter()
        .position(|&b| b == b'Z')
        .map_or(0, |z| z + 1);
    std::str::from_utf8(&line[..end]).unwrap_or_default()
}

/// The length of the escape sequence at the start of `s` (which starts with ESC): CSI
/// (`ESC [ params final`), OSC (`ESC ] … BEL` or `ESC ] … ESC \`), or any other `ESC x`.
fn escape_len(s: &[u8]) -> usize {
    match s.get(1) {
        Some(b'[') => s[2..]
            .iter()
            .position(|b| (0x40..=0x7e).contains(b))
            .map_or(s.len(), |p| p + 3),
        Some(b']') => {
            let mut i = 2;
            while i < s.len() {
                match s[i] {
                    0x07 => return i + 1,
                    0x1b if s.get(i + 1) == Some(&b'\\') => return i + 2,
                    _ => i += 1,
                }
            }
            s.len()
        }
        Some(_) => 2,
        None => 1,
    }
}

/// `s` without the escape sequences at its start.
fn skip_escapes(mut s: &[u8]) -> &[u8] {
    while s.first() == Some(&0x1b) {
        s = &s[escape_len(s)..];
    }
    s
}

/// Appends `s` without escape sequences to `out`.
pub fn push_without_escapes(s: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < s.len() {
        match memchr::memchr(0x1b, &s[i..]) {
            None => {
                out.extend_from_slice(&s[i..]);
                return;
            }
            Some(p) => {
                out.extend_from_slice(&s[i..i + p]);
                i += p + escape_len(&s[i + p..]);
            }
        }
    }
}

const START: &[u8] = b"section_start:";
const END: &[u8] = b"section_end:";

/// `<unix ts>:<name>[options]` after `section_start:` / `section_end:`, up to the `\r` that
/// ends the marker: (ts, name, collapsed, the rest after the `\r` and its escapes).
fn marker_fields(s: &[u8]) -> Option<(i64, String, bool, &[u8])> {
    let colon = s.iter().position(|&b| b == b':')?;
    let ts = std::str::from_utf8(&s[..colon]).ok()?.parse().ok()?;
    let rest = &s[colon + 1..];
    let end = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
    let field = &rest[..end];
    let (name, options) = match field.iter().position(|&b| b == b'[') {
        Some(open) => (&field[..open], &field[open..]),
        None => (field, &field[..0]),
    };
    if name.is_empty() {
        return None;
    }
    let collapsed = memchr::memmem::find(options, b"collapsed=true").is_some();
    let after = rest.get(end + 1..).unwrap_or_default();
    Some((
        ts,
        String::from_utf8_lossy(name).into_owned(),
        collapsed,
        skip_escapes(after),
    ))
}

/// The section markers of a line (after its timestamp prefix, if any), in order. Cheap for a
/// line without any: one substring search.
pub fn markers(line: &[u8]) -> Vec<Marker> {
    // Built once: most lines of a large log hold no marker, and this is all they cost.
    static SECTION: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"section_"));
    let mut out = Vec::new();
    if SECTION.find(line).is_none() {
        return out;
    }
    let body = &line[timestamp_prefix(line).unwrap_or(0)..];
    let mut s = skip_escapes(body);
    loop {
        if let Some(fields) = s.strip_prefix(START) {
            let Some((ts, name, collapsed, rest)) = marker_fields(fields) else {
                break;
            };
            if skip_escapes(rest).starts_with(START) || skip_escapes(rest).starts_with(END) {
                out.push(Marker::Start {
                    ts,
                    name,
                    collapsed,
                    header: String::new(),
                });
                s = skip_escapes(rest);
                continue;
            }
            let mut header = Vec::new();
            push_without_escapes(rest, &mut header);
            let header = String::from_utf8_lossy(&header).trim_end().to_owned();
            out.push(Marker::Start {
                ts,
                name,
                collapsed,
                header,
            });
            break;
        } else if let Some(fields) = s.strip_prefix(END) {
            let Some((ts, name, _, rest)) = marker_fields(fields) else {
                break;
            };
            out.push(Marker::End { ts, name });
            s = rest;
        } else {
            break;
        }
    }
    out
}

/// The visible text of `line` into `out` (cleared first): no timestamp prefix, no section
/// markers, no escape sequences; a `\r` inside the line overwrites what came before it (a
/// progress bar shows its last state), a trailing one (CRLF) is dropped.
pub fn visible(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut s = &line[timestamp_prefix(line).unwrap_or(0)..];
    if let Some(stripped) = s.strip_suffix(b"\r") {
        s = stripped;
    }
    // Section markers end with `\r`: what follows the last `\r` is what is visible.
    if let Some(cr) = memchr::memrchr(b'\r', s) {
        s = &s[cr + 1..];
    }
    let start = skip_escapes(s);
    if start.starts_with(START) || start.starts_with(END) {
        // A marker with nothing after its `\r` (no header): nothing visible.
        return;
    }
    push_without_escapes(s, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_timestamp_prefix_is_recognised_and_nothing_else() {
        for (line, len) in [
            (&b"2024-05-01T10:00:00.123456Z 00O hello"[..], 32),
            (b"2024-05-01T10:00:00Z 01E+ x", 26),
            (b"2024-05-01T10:00:00Z 0aO ", 25),
        ] {
            assert_eq!(timestamp_prefix(line), Some(len), "{line:?}");
        }
        for line in [
            &b"2024-05-01 10:00:00Z 00O x"[..],
            b"2024-05-01T10:00:00.Z 00O x",
            b"2024-05-01T10:00:00Z 00X x",
            b"2024-05-01T10:00:00Z 0GO x",
            b"2024-05-01T10:00:00Z 00O",
            b"hello",
            b"",
        ] {
            assert_eq!(timestamp_prefix(line), None, "{line:?}");
        }
        let line = b"2024-05-01T10:00:00.5Z 00O x";
        assert_eq!(
            timestamp_text(line, timestamp_prefix(line).unwrap()),
            "2024-05-01T10:00:00.5Z"
        );
    }

    #[test]
    fn section_markers_are_read_after_a_timestamp_and_escapes() {
        let line =
            b"2024-05-01T10:00:00Z 00O \x1b[0Ksection_start:1700000000:build[collapsed=true]\r\x1b[0K\x1b[36;1mBuilding\x1b[0m";
        assert_eq!(
            markers(line),
            vec![Marker::Start {
                ts: 1_700_000_000,
                name: "build".into(),
                collapsed: true,
                header: "Building".into()
            }]
        );
        let line = b"\x1b[0Ksection_end:1700000010:build\r\x1b[0K\x1b[0Ksection_start:1700000011:test\r\x1b[0KTesting";
        assert_eq!(
            markers(line),
            vec![
                Marker::End {
                    ts: 1_700_000_010,
                    name: "build".into()
                },
                Marker::Start {
                    ts: 1_700_000_011,
                    name: "test".into(),
                    collapsed: false,
                    header: "Testing".into()
                }
            ]
        );
        assert!(markers(b"echo section_start:x").is_empty());
        assert!(markers(b"plain").is_empty());
    }

    #[test]
    fn visible_text_drops_prefix_markers_escapes_and_overwritten_text() {
        let mut out = Vec::new();
        visible(
            b"2024-05-01T10:00:00Z 00O \x1b[32mgreen\x1b[0m text\r",
            &mut out,
        );
        assert_eq!(out, b"green text");
        visible(
            b"\x1b[0Ksection_start:1:s\r\x1b[0K\x1b[1mHeader\x1b[0m",
            &mut out,
        );
        assert_eq!(out, b"Header");
        visible(b"section_end:2:s\r\x1b[0K", &mut out);
        assert_eq!(out, b"");
        visible(b"10%\r50%\r100%", &mut out);
        assert_eq!(out, b"100%");
        visible(b"a\x1b]8;;http://x\x07link\x1b]8;;\x07 b", &mut out);
        assert_eq!(out, b"alink b");
    }
}
