//! Bearer tokens: who a token is (the operator, or a domain's), how tokens
//! are kept (only their SHA-256) and compared (in constant time). Nothing
//! here knows where tokens are stored; `tenants` keeps them, `api` and
//! `ingest` check against them.

use sha2::{Digest, Sha256};

/// Who a bearer token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Operator,
    Domain(String),
}

impl Role {
    pub fn may(&self, domain: &str) -> bool {
        match self {
            Role::Operator => true,
            Role::Domain(d) => d == domain,
        }
    }
}

/// A token as it is kept: the hex SHA-256 of its text.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equal bytes, in time that depends on the length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_comparison() {
        assert!(Role::Operator.may("a.example"));
        assert!(Role::Domain("a.example".into()).may("a.example"));
        assert!(!Role::Domain("a.example".into()).may("b.example"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"abcd"));
        assert_eq!(hash_token("x").len(), 64);
    }
}
