//! Job tokens: random, shown once, stored as SHA-256 digests, compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 32 random bytes, hex: 256 bits, not guessable.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

pub fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Whether `token` matches the stored digest, in constant time.
pub fn matches(token: &str, stored_digest: &str) -> bool {
    digest(token)
        .as_bytes()
        .ct_eq(stored_digest.as_bytes())
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_matches_only_its_own_digest() {
        let t = super::generate();
        assert_eq!(t.len(), 64);
        assert!(super::matches(&t, &super::digest(&t)));
        assert!(!super::matches(&super::generate(), &super::digest(&t)));
        assert!(!super::matches("", &super::digest(&t)));
    }
}
