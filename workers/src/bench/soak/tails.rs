//! The soak's live tails: `GET …/trace/stream` (Server-Sent Events) on running jobs, which
//! disconnect after a few events and resume with `Last-Event-ID`, as a browser's
//! `EventSource` does after a network blip or a web process restart.
//!
//! Every `append` event is checked against the runner's bytes at the offset the tail has
//! reached, and its `id` against that offset plus the bytes; `end` must come at exactly the
//! bytes received. A tail ends at `end`, or when told to stop (the drain is over).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio_util::sync::CancellationToken;

use super::book::{Book, Build};
use super::content::{self, Rng};

/// Longest wait for the next bytes of a stream before it is treated as dropped (the server
/// sends a keep-alive every 15 s).
const IDLE: Duration = Duration::from_secs(40);
/// Pause before resuming a stream the server closed without `end`.
const SERVER_CLOSED_RETRY: Duration = Duration::from_secs(1);
/// Connections one tail opens at most (each resume is one).
const MAX_CONNECTIONS: u32 = 2000;

/// Starts tails on running jobs until `stop_new`; each runs until its `end` or `stop_all`.
pub async fn tailer(
    seed: u64,
    webs: Arc<Vec<String>>,
    client: reqwest::Client,
    book: Arc<Book>,
    stop_new: CancellationToken,
    stop_all: CancellationToken,
) {
    let mut rng = Rng::new(seed);
    while !stop_new.is_cancelled() {
        let pick = rng.next_u64();
        let Some(build) = book.pick(pick, |b| {
            !b.runner_done.load(Ordering::Acquire) && b.acked() > 0
        }) else {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop_new.cancelled() => return,
            }
            continue;
        };
        book.counters.tails.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            () = tail(&mut rng, &webs, &client, &build, &book) => {}
            () = stop_all.cancelled() => return,
        }
    }
}

enum Event {
    Append { id: u64, data: Vec<u8> },
    End { id: u64 },
}

async fn tail(
    rng: &mut Rng,
    webs: &[String],
    client: &reqwest::Client,
    build: &Build,
    book: &Book,
) {
    let c = &book.counters;
    let mut at = 0u64;
    let mut web = rng.below(webs.len() as u64) as usize;
    for connection in 0..MAX_CONNECTIONS {
        if connection > 0 {
            c.tail_resumes.fetch_add(1, Ordering::Relaxed);
        }
        let base = &webs[web % webs.len()];
        let mut request = client
            .get(format!("{base}/api/v4/jobs/{}/trace/stream", build.id))
            .header("JOB-TOKEN", &build.token);
        if at > 0 {
            request = request.header("Last-Event-ID", at.to_string());
        }
        let mut reply = match request.send().await {
            Ok(r) if r.status().as_u16() == 200 => r,
            Ok(r) if super::readers::unavailable(&r) => {
                c.tails_unavailable.fetch_add(1, Ordering::Relaxed);
                web += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Ok(r) => {
                c.tail_errors.fetch_add(1, Ordering::Relaxed);
                book.finding(format!(
                    "build {}: trace stream from {at} answered {}",
                    build.id,
                    r.status()
                ));
                if r.status().is_client_error() {
                    return;
                }
                web += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                c.tail_errors.fetch_add(1, Ordering::Relaxed);
                web += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Leave after a few events, as a reader's connection drops.
        let mut leave_after = rng.range(2, 9);
        let mut left = false;
        let mut buf: Vec<u8> = Vec::new();
        'connection: loop {
            let chunk = match tokio::time::timeout(IDLE, reply.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                _ => break 'connection,
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = find(&buf, b"\n\n") {
                let raw: Vec<u8> = buf.drain(..end + 2).collect();
                match parse(&raw) {
                    Ok(Some(Event::Append { id, data })) => {
                        let bad = content::first_difference(build.seed, at, &data);
                        if bad.is_some() || id != at + data.len() as u64 {
                            c.tail_mismatch.fetch_add(1, Ordering::Relaxed);
                            book.finding(format!(
                                "build {}: stream event at {at} with {} bytes has id {id}, first wrong byte {bad:?}",
                                build.id,
                                data.len()
                            ));
                            return;
                        }
                        at = id;
                        leave_after = leave_after.saturating_sub(1);
                        if leave_after == 0 {
                            left = true;
                            break 'connection;
                        }
                    }
                    Ok(Some(Event::End { id })) => {
                        c.tails_ended.fetch_add(1, Ordering::Relaxed);
                        if id != at {
                            c.tail_mismatch.fetch_add(1, Ordering::Relaxed);
                            book.finding(format!(
                                "build {}: stream ended at {id} after {at} bytes were sent",
                                build.id
                            ));
                        }
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        c.tail_mismatch.fetch_add(1, Ordering::Relaxed);
                        book.finding(format!("build {}: unreadable stream event: {e}", build.id));
                        return;
                    }
                }
            }
        }
        if !left {
            // The server closed the stream without `end` (a store error, a shutdown): wait
            // before resuming, as an EventSource does (its default retry is 3 s).
            tokio::time::sleep(SERVER_CLOSED_RETRY).await;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One SSE event block: `append`/`end` with their `id` (comments and other events: `None`).
fn parse(raw: &[u8]) -> Result<Option<Event>, String> {
    let text = std::str::from_utf8(raw).map_err(|e| e.to_string())?;
    let (mut event, mut id, mut data) = (None, None, String::new());
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|e| format!("id {v:?}: {e}"))?,
            );
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim());
        }
    }
    match (event.as_deref(), id) {
        (Some("append"), Some(id)) => {
            let data = BASE64.decode(data.as_bytes()).map_err(|e| e.to_string())?;
            Ok(Some(Event::Append { id, data }))
        }
        (Some("end"), Some(id)) => Ok(Some(Event::End { id })),
        (Some(other), _) if other == "append" || other == "end" => {
            Err(format!("{other} event without an id"))
        }
        _ => Ok(None),
    }
}
