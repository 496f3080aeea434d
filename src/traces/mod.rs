//! The build-log domain: a CI job's log ("trace") as 128 KiB chunks that live in a fast store
//! while the job runs, are flushed to object storage when full, and are archived as one object
//! when the job ends. It knows nothing of HTTP or Redis keys: stores sit behind traits.
//!
//! - [`chunk`]: chunk arithmetic (which chunk an offset falls in, splitting appends, CRC32
//!   combination the way GitLab validates a runner's checksum).
//! - [`live`]: the live chunk store seam (Redis in production, the SQL database embedded).
//! - [`model`]: the records (builds, chunk rows, pending states, trace metadata, artifacts).
//! - [`metadata`]: the metadata repository seam (PostgreSQL in production, SQLite embedded).
//! - [`objects`]: the object storage seam (a folder or S3), and the multipart writer over it.
//! - [`archive`]: a finished log into one object, checked, recorded, chunks deleted.
//! - [`chunk_source`]: reading a chunk from wherever it is (readers and the archiver).
//! - [`flush`]: moving a chunk from the live store to the object store, crash-safe.
//! - [`breaker`]: the object store's circuit breaker (database fallback, snoozed archives,
//!   release when storage is back); [`recovery`]: the stale-trace sweep, in bounded batches;
//!   [`expiry`]: deleting expired archives, in bounded runs under a lease; [`stuck`]: failing
//!   running builds that went silent and committing final states whose runner never came
//!   back, in bounded runs under a lease.
//! - [`read`]: a log read as a stream of chunk-sized frames, following it while it moves.
//! - [`log_view`]: a log read by lines for the log page (summary, pages of lines, search),
//!   over [`line_index`] (checkpoints, sections, timestamps; one scan, extended as the log
//!   grows), [`line_search`] and [`log_text`] (timestamp prefixes, section markers, visible text).
//! - [`service`]: what the API does with a log (append, read, register jobs); [`tokens`]: job
//!   tokens; [`jobs`]: the jobs the domain enqueues.

pub mod archive;
pub mod archived_lines;
pub mod breaker;
pub mod chunk;
pub mod chunk_source;
pub mod expiry;
pub mod flush;
pub mod jobs;
pub mod line_index;
pub mod line_search;
pub mod live;
pub mod log_text;
pub mod log_view;
pub mod metadata;
pub mod model;
pub mod objects;
pub mod read;
pub mod recovery;
pub mod service;
pub mod stores;
pub mod stuck;
pub mod tokens;
