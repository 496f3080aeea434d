//! Secrets out of connection URLs before they are shown: in logs, error messages and `Debug`.
//!
//! `DATABASE_URL`, `REDIS_URL`, `OBJECT_STORE_URL` and endpoint URLs may carry a password
//! (`postgres://user:secret@host/db`, `redis://:secret@host`) or a secret in the query
//! (`?password=…`, a presigned `?X-Amz-Signature=…`). [`url`] hides both and keeps what an
//! operator needs to tell one store from another: the scheme, host, port and path.
//!
//! Guarantee: no byte of the userinfo, query or fragment is ever in the result. Input that is
//! not a well-formed URL is handled the same way, erring towards hiding more: a password with
//! an unencoded `/`, `?` or `@` (a common slip) is hidden whole, at the cost of hiding the host
//! too when a path or query holds an `@`.

/// What stands in for a hidden part.
pub const REDACTED: &str = "<redacted>";

/// `raw` with its userinfo (`user:password@`) replaced by `<redacted>@` and its query and
/// fragment by `?<redacted>` / `#<redacted>`; unchanged when it has none of them.
pub fn url(raw: &str) -> String {
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, raw),
    };
    let mut out = String::with_capacity(raw.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    // The userinfo ends at the last `@`: a password may hold `@`, `/` or `?` unencoded.
    let rest = match rest.rfind('@') {
        Some(at) => {
            out.push_str(REDACTED);
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match rest.find(['?', '#']) {
        Some(at) => {
            out.push_str(&rest[..at]);
            out.push_str(&rest[at..at + 1]);
            out.push_str(REDACTED);
        }
        None => out.push_str(rest),
    }
    out
}

/// [`url`] of an optional setting, for `Debug` output.
pub fn optional_url(raw: &Option<String>) -> Option<String> {
    raw.as_deref().map(url)
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_and_queries_are_hidden_hosts_and_paths_kept() {
        for (raw, shown) in [
            (
                "postgres://app:hunter2@db.internal:5432/ci",
                "postgres://<redacted>@db.internal:5432/ci",
            ),
            (
                "redis://:hunter2@cache:6379/0",
                "redis://<redacted>@cache:6379/0",
            ),
            (
                "rediss://default:hunter2@cache",
                "rediss://<redacted>@cache",
            ),
            (
                "postgres://db/ci?user=app&password=hunter2",
                "postgres://db/ci?<redacted>",
            ),
            (
                "https://minio:9000/logs/x?X-Amz-Signature=hunter2",
                "https://minio:9000/logs/x?<redacted>",
            ),
            ("s3://bucket/p#hunter2", "s3://bucket/p#<redacted>"),
            (
                "s3://KEY:hunter2@bucket/logs",
                "s3://<redacted>@bucket/logs",
            ),
            // Unencoded `/`, `?`, `@` in a password: hidden whole.
            (
                "postgres://app:hun/ter2@db/ci",
                "postgres://<redacted>@db/ci",
            ),
            (
                "postgres://app:hun?ter2@db/ci",
                "postgres://<redacted>@db/ci",
            ),
            (
                "postgres://app:hu@nter2@db/ci",
                "postgres://<redacted>@db/ci",
            ),
            ("app:hunter2@db", "<redacted>@db"),
            (
                "sqlite:buildlogs.db?key=hunter2",
                "sqlite:buildlogs.db?<redacted>",
            ),
        ] {
            assert_eq!(url(raw), shown, "{raw}");
            assert!(!url(raw).contains("hunter2"), "{raw}");
        }
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for raw in [
            "redis://127.0.0.1:6379",
            "s3://bucket/some/prefix/",
            "file:///var/lib/buildlogs/objects",
            "sqlite://data/buildlogs.db",
            "not a url",
        ] {
            assert_eq!(url(raw), raw);
        }
    }
}
