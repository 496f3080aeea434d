//! Signed grants: "whoever holds this may read job N until time T", as a read link's fragment
//! (`#grant=…`) and as the log page's session cookie.
//!
//! A grant is `base64url(job id (8 bytes, big-endian) ‖ expiry, unix seconds (8 bytes) ‖
//! HMAC-SHA256)`, 64 characters. The MAC covers a purpose label ([`Purpose`]), the id and the
//! expiry, so a link's grant is not a valid cookie value nor the other way round. Its key is
//! derived from the admin token ([`GrantKey::from_admin_token`]): every web replica agrees
//! without another setting, and changing the admin token revokes every grant.
//!
//! Guarantees: verification compares MACs in constant time (`hmac`'s `verify_slice`) and
//! checks the MAC before anything else it reads from the grant; a grant for another job, an
//! expired, tampered, truncated or malformed one is refused, and says which (for the log).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2_11::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a decoded grant: id, expiry, MAC.
const GRANT_BYTES: usize = 8 + 8 + 32;

/// What a grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The fragment of a read link, exchanged for a session.
    Link,
    /// The log page's session cookie.
    Session,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Link => b"buildlogs read link v1\0",
            Purpose::Session => b"buildlogs page session v1\0",
        }
    }
}

/// Why a grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("not a grant")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("for another job")]
    OtherJob,
    #[error("expired")]
    Expired,
}

/// The key grants are signed with.
#[derive(Clone)]
pub struct GrantKey([u8; 32]);

impl GrantKey {
    /// HMAC-SHA256(admin token, a fixed label): the token itself never signs anything.
    pub fn from_admin_token(admin_token: &str) -> Self {
        let mut mac = new_mac(admin_token.as_bytes());
        mac.update(b"buildlogs grant key v1");
        Self(mac.finalize().into_bytes().into())
    }

    /// A grant for reading `job_id` until `expires_at` (unix seconds).
    pub fn sign(&self, purpose: Purpose, job_id: i64, expires_at: i64) -> String {
        let mut bytes = Vec::with_capacity(GRANT_BYTES);
        bytes.extend_from_slice(&job_id.to_be_bytes());
        bytes.extend_from_slice(&expires_at.to_be_bytes());
        let tag = self.mac(purpose, &bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The grant's expiry (unix seconds) if it is a valid `purpose` grant for `job_id` at
    /// `now` (unix seconds).
    pub fn verify(
        &self,
        purpose: Purpose,
        grant: &str,
        job_id: i64,
        now: i64,
    ) -> Result<i64, GrantError> {
        if grant.len() > 2 * GRANT_BYTES {
            return Err(GrantError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(grant.trim())
            .map_err(|_| GrantError::Malformed)?;
        if bytes.len() != GRANT_BYTES {
            return Err(GrantError::Malformed);
        }
        let (signed, tag) = bytes.split_at(16);
        self.mac(purpose, signed)
            .verify_slice(tag)
            .map_err(|_| GrantError::BadSignature)?;
        let field = |range: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&signed[range]);
            i64::from_be_bytes(b)
        };
        if field(0..8) != job_id {
            return Err(GrantError::OtherJob);
        }
        let expires_at = field(8..16);
        if expires_at <= now {
            return Err(GrantError::Expired);
        }
        Ok(expires_at)
    }

    fn mac(&self, purpose: Purpose, signed: &[u8]) -> HmacSha256 {
        let mut mac = new_mac(&self.0);
        mac.update(purpose.label());
        mac.update(signed);
        mac
    }
}

/// HMAC takes a key of any length (a long one is hashed first), so this never fails.
fn new_mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_opens_its_job_for_its_purpose_until_it_expires() {
        let key = GrantKey::from_admin_token("admin");
        let grant = key.sign(Purpose::Link, 7, 1000);
        assert_eq!(grant.len(), 64);
        assert_eq!(key.verify(Purpose::Link, &grant, 7, 999), Ok(1000));
        assert_eq!(
            key.verify(Purpose::Link, &grant, 7, 1000),
            Err(GrantError::Expired)
        );
        assert_eq!(
            key.verify(Purpose::Link, &grant, 8, 999),
            Err(GrantError::OtherJob)
        );
        assert_eq!(
            key.verify(Purpose::Session, &grant, 7, 999),
            Err(GrantError::BadSignature)
        );
        let other = GrantKey::from_admin_token("admin2");
        assert_eq!(
            other.verify(Purpose::Link, &grant, 7, 999),
            Err(GrantError::BadSignature)
        );
        // Any changed character is refused.
        for i in 0..grant.len() {
            let mut tampered: Vec<u8> = grant.clone().into_bytes();
            tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert!(
                key.verify(Purpose::Link, &tampered, 7, 999).is_err(),
                "position {i}"
            );
        }
        for bad in ["", "x", "!!!!", &grant[..63], &format!("{grant}AA")] {
            assert!(key.verify(Purpose::Link, bad, 7, 999).is_err(), "{bad:?}");
        }
    }
}
