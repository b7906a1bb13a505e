//! Tokens: the admin token given to `kcap serve --token`, and named tokens made with
//! `kcap serve token add <name>`, stored as blake3 hashes (a token is 256 random bits, so a
//! fast hash is enough: there is nothing to brute-force, unlike a password).

use std::sync::atomic::{AtomicBool, Ordering};

use super::storage::{Principal, Storage, StorageError};

/// Prefix of every generated token, so a leaked one is recognisable (and redactable).
pub const TOKEN_PREFIX: &str = "kcap_";

/// A new random token (256 bits, hex).
pub fn generate() -> String {
    let bytes: Vec<u8> = (0..2).flat_map(|_| *uuid::Uuid::new_v4().as_bytes()).collect();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}{hex}")
}

/// What the database stores for a token.
pub fn hash(token: &str) -> [u8; 32] {
    *blake3::keyed_hash(blake3::hash(b"kcap serve token v1").as_bytes(), token.as_bytes()).as_bytes()
}

/// Checks token names: short, printable, no spaces (they are shown and used as owners).
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok && name != "admin" {
        Ok(())
    } else {
        Err(format!(
            "token name {name:?} must be 1-64 characters of letters, digits, '-', '_', '.', '@' (and not \"admin\")"
        ))
    }
}

/// Who a request's `Authorization` header names.
pub struct Gate {
    admin: Option<String>,
    /// Once a named token exists, authentication is required (a revoked token stays in the
    /// table, so revoking every token never turns authentication off).
    tokens_exist: AtomicBool,
}

/// The outcome of [`Gate::check`].
pub enum Verdict {
    Allowed(Principal),
    Denied,
}

impl Gate {
    /// A gate with the optional admin token.
    pub fn new(admin: Option<String>) -> Gate {
        Gate {
            admin,
            tokens_exist: AtomicBool::new(false),
        }
    }

    /// Whether clients must send a bearer token (for `/auth/config`).
    pub async fn required(&self, storage: &Storage) -> bool {
        self.admin.is_some() || self.any_tokens(storage).await.unwrap_or(true)
    }

    async fn any_tokens(&self, storage: &Storage) -> Result<bool, StorageError> {
        if self.tokens_exist.load(Ordering::Acquire) {
            return Ok(true);
        }
        let exist = storage.run(|b| b.has_tokens()).await?;
        if exist {
            self.tokens_exist.store(true, Ordering::Release);
        }
        Ok(exist)
    }

    /// Decides who sent a request from its `Authorization` header value.
    pub async fn check(&self, storage: &Storage, header: Option<&str>) -> Result<Verdict, StorageError> {
        let given = header.and_then(bearer);
        if let (Some(admin), Some(given)) = (&self.admin, given) {
            if constant_time_eq(admin.as_bytes(), given.as_bytes()) {
                return Ok(Verdict::Allowed(Principal::Admin));
            }
        }
        if self.admin.is_none() && !self.any_tokens(storage).await? {
            return Ok(Verdict::Allowed(Principal::Anonymous));
        }
        let Some(given) = given else {
            return Ok(Verdict::Denied);
        };
        let digest = hash(given);
        Ok(match storage.run(move |b| b.token_name(&digest)).await? {
            Some(name) => Verdict::Allowed(Principal::Token(name)),
            None => Verdict::Denied,
        })
    }
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1, RFC 6750 §2.1), so `bearer` and `BEARER` count; the token is trimmed.
pub fn bearer(header: &str) -> Option<&str> {
    let header = header.trim_start();
    let (scheme, rest) = header.split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert!(valid_name("laptop-1").is_ok());
        assert!(valid_name("admin").is_err() && valid_name("a b").is_err() && valid_name("").is_err());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for h in ["Bearer t1", "bearer t1", "BEARER  t1 ", "bEaReR\tt1"] {
            assert_eq!(bearer(h), Some("t1"), "{h:?}");
        }
        assert_eq!(bearer("Basic dTpw"), None);
        assert_eq!(bearer("Bearert1"), None);
        assert_eq!(bearer("t1"), None);
    }
}
