//! Who is calling: the one place the API compares operator tokens.
//!
//! Duties:
//! 1. Read `Authorization: Bearer …` ([`bearer`]) and tell which operator token it holds
//!    ([`access`]): the admin token (`BUILDLOGS_ADMIN_TOKEN`: everything) or the read-only
//!    token (`BUILDLOGS_READ_TOKEN`: reads any job, its log and stream, and the dashboard's
//!    views; never registers jobs or changes anything).
//! 2. Word the refusals the same everywhere: [`read_only`] is the 403 a read-only caller gets
//!    for a change.
//!
//! Guarantees: every comparison is constant-time in the token's bytes (`subtle`), and both
//! tokens are compared on every call, so timing tells neither a token's bytes nor which one
//! matched. A job token (`JOB-TOKEN`, `?token=`) is not handled here: it opens one job only,
//! and the trace service checks it against that job.

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// What the bearer of `Authorization` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// The admin token: everything.
    Admin,
    /// The read-only token: reads only.
    Read,
    /// No operator token (none, or a wrong one).
    None,
}

impl Access {
    /// Admin or read-only: may read any job and the dashboard's views.
    pub(super) fn reads_all(self) -> bool {
        matches!(self, Access::Admin | Access::Read)
    }
}

/// The `Authorization: Bearer …` token, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// `given == expected`, in time that depends on the lengths only. An empty token matches
/// nothing (`Authorization: Bearer ` must never pass for a token left empty).
fn same(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Which operator token the caller holds (compared in constant time).
pub(super) fn access(state: &AppState, headers: &HeaderMap) -> Access {
    match bearer(headers) {
        Some(given) => access_of(state, given),
        None => Access::None,
    }
}

/// Which operator token `given` is (compared in constant time): the log page's sign-in form
/// sends it in a JSON body instead of a header.
pub(super) fn access_of(state: &AppState, given: &str) -> Access {
    let admin = same(given, &state.admin_token);
    let read = state
        .read_token
        .as_deref()
        .is_some_and(|token| same(given, token));
    if admin {
        Access::Admin
    } else if read {
        Access::Read
    } else {
        Access::None
    }
}

/// The 403 a read-only caller gets for `what` (e.g. "register jobs").
pub(super) fn read_only(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "the read-only token (BUILDLOGS_READ_TOKEN) cannot {what}: that needs the admin token"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn only_the_whole_token_matches_and_an_empty_one_never_does() {
        assert!(same("s3cret", "s3cret"));
        for given in ["s3cre", "s3cretx", "S3cret", ""] {
            assert!(!same(given, "s3cret"), "{given:?}");
        }
        assert!(!same("", ""));
    }
}
