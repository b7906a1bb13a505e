//! Tokens: the admin token given to `kcap serve --token`, and named tokens made with
//! `kcap serve token add <name>`, stored as blake3 hashes (a token is 256 random bits, so a
//! fast hash is enough: there is nothing to brute-force, unlike a password).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::storage::{Principal, Storage, StorageError};

/// How long a named token's lookup is shared by the web UI's checks that present it (see
/// [`Gate::check_shared`]). Each open live page re-checks its token every second: without
/// sharing, 1,000 open pages cost 1,000 queries a second. A revocation therefore counts within
/// this long on web pages and live streams; protocol requests still ask every time.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(1);
/// Distinct tokens whose lookups are kept at most (stale ones are dropped first; past this,
/// lookups go to the store unshared, so random tokens cannot grow the cache).
const TOKEN_CACHE_MAX: usize = 4096;

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
    /// Recent named-token lookups by hash, each behind its own lock so that concurrent checks
    /// of one token wait for a single query.
    lookups: Mutex<Lookups>,
}

/// The token cache. It holds tokens that were found (and lookups in flight) only: a token that
/// names nothing is dropped as soon as its lookup ends, so random tokens cannot crowd real ones
/// out, and the full-cache sweep runs at most once per [`TOKEN_RECHECK`], not on every miss.
#[derive(Default)]
struct Lookups {
    by_hash: HashMap<[u8; 32], Arc<Lookup>>,
    /// When the cache may next be swept for stale entries while full.
    next_sweep: Option<Instant>,
}

/// One token's last lookup: when it was made and the name it found (`None`: no such token).
type Lookup = tokio::sync::Mutex<Option<(Instant, Option<String>)>>;

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
            lookups: Mutex::new(Lookups::default()),
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

    /// Decides who sent a request from its `Authorization` header value, asking the store
    /// about a named token every time (a revocation counts from the next request on).
    pub async fn check(&self, storage: &Storage, header: Option<&str>) -> Result<Verdict, StorageError> {
        self.check_with(storage, header, false).await
    }

    /// Like [`Gate::check`], sharing each named token's lookup for [`TOKEN_RECHECK`] (a
    /// revocation counts within that long): for the web UI, whose open live pages each
    /// re-check their token every second.
    pub async fn check_shared(
        &self,
        storage: &Storage,
        header: Option<&str>,
    ) -> Result<Verdict, StorageError> {
        self.check_with(storage, header, true).await
    }

    async fn check_with(
        &self,
        storage: &Storage,
        header: Option<&str>,
        shared: bool,
    ) -> Result<Verdict, StorageError> {
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
        let name = if shared {
            self.token_name(storage, digest).await?
        } else {
            storage.run(move |b| b.token_name(&digest)).await?
        };
        Ok(match name {
            Some(name) => Verdict::Allowed(Principal::Token(name)),
            None => Verdict::Denied,
        })
    }

    /// The name of the unrevoked token with this hash, asked of the store at most once per
    /// [`TOKEN_RECHECK`] per token however many requests present it meanwhile.
    async fn token_name(&self, storage: &Storage, digest: [u8; 32]) -> Result<Option<String>, StorageError> {
        let Some(slot) = self.slot(digest) else {
            return storage.run(move |b| b.token_name(&digest)).await;
        };
        let mut last = slot.lock().await;
        if let Some((at, name)) = &*last {
            if at.elapsed() < TOKEN_RECHECK {
                return Ok(name.clone());
            }
        }
        // A failed lookup is not kept: the next check asks again.
        let name = storage.run(move |b| b.token_name(&digest)).await;
        let name = match name {
            Ok(name) => name,
            Err(e) => {
                self.forget(digest, &slot);
                return Err(e);
            }
        };
        // Checks waiting on this slot share the answer either way; only a found token stays.
        *last = Some((Instant::now(), name.clone()));
        if name.is_none() {
            self.forget(digest, &slot);
        }
        Ok(name)
    }

    /// Drops `digest`'s cache entry if it is still `slot` (a newer one is left alone).
    fn forget(&self, digest: [u8; 32], slot: &Arc<Lookup>) {
        let mut lookups = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        if lookups.by_hash.get(&digest).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            lookups.by_hash.remove(&digest);
        }
    }

    /// The shared lookup of `digest`, `None` when the cache is full of fresh or busy entries.
    fn slot(&self, digest: [u8; 32]) -> Option<Arc<Lookup>> {
        let mut lookups = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        let lookups = &mut *lookups;
        if let Some(slot) = lookups.by_hash.get(&digest) {
            return Some(slot.clone());
        }
        if lookups.by_hash.len() >= TOKEN_CACHE_MAX {
            let now = Instant::now();
            if lookups.next_sweep.is_some_and(|at| now < at) {
                return None;
            }
            lookups.next_sweep = Some(now + TOKEN_RECHECK);
            // Keep entries in use (locked) or still fresh; drop the rest.
            lookups.by_hash.retain(|_, slot| {
                slot.try_lock().map_or(true, |l| {
                    l.as_ref().is_some_and(|(at, _)| at.elapsed() < TOKEN_RECHECK)
                })
            });
            if lookups.by_hash.len() >= TOKEN_CACHE_MAX {
                return None;
            }
        }
        Some(lookups.by_hash.entry(digest).or_default().clone())
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

    /// SQLite that counts its token lookups.
    struct Counting(
        crate::server::storage::sqlite::Sqlite,
        Arc<std::sync::atomic::AtomicUsize>,
    );

    impl crate::server::storage::Backend for Counting {
        fn ingest(
            &self,
            b: &crate::server::storage::Batch,
        ) -> Result<crate::protocol::IngestReply, StorageError> {
            self.0.ingest(b)
        }
        fn last_line(&self, s: crate::ids::SessionId) -> Result<i64, StorageError> {
            self.0.last_line(s)
        }
        fn record_lifecycle(
            &self,
            s: crate::ids::SessionId,
            k: crate::server::storage::LifecycleKind,
            e: &crate::server::storage::Lifecycle,
            w: &Principal,
        ) -> Result<(), StorageError> {
            self.0.record_lifecycle(s, k, e, w)
        }
        fn summary(
            &self,
            s: crate::ids::SessionId,
        ) -> Result<Option<crate::server::storage::SessionSummary>, StorageError> {
            self.0.summary(s)
        }
        fn summaries(
            &self,
            l: Option<u64>,
        ) -> Result<Vec<crate::server::storage::SessionSummary>, StorageError> {
            self.0.summaries(l)
        }
        fn lines(
            &self,
            s: crate::ids::SessionId,
        ) -> Result<crate::server::storage::SessionLines, StorageError> {
            self.0.lines(s)
        }
        fn session_ids(&self) -> Result<Vec<crate::ids::SessionId>, StorageError> {
            self.0.session_ids()
        }
        fn add_token(&self, n: &str, h: &[u8; 32], now: crate::machine::Millis) -> Result<(), StorageError> {
            self.0.add_token(n, h, now)
        }
        fn token_name(&self, h: &[u8; 32]) -> Result<Option<String>, StorageError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.token_name(h)
        }
        fn tokens(&self) -> Result<Vec<crate::server::storage::TokenInfo>, StorageError> {
            self.0.tokens()
        }
        fn revoke_token(&self, n: &str, now: crate::machine::Millis) -> Result<bool, StorageError> {
            self.0.revoke_token(n, now)
        }
        fn has_tokens(&self) -> Result<bool, StorageError> {
            self.0.has_tokens()
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_of_one_token_share_one_lookup_per_interval_and_see_a_revocation() {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let storage = Storage::new(Counting(
            crate::server::storage::sqlite::Sqlite::temporary().unwrap(),
            asked.clone(),
        ));
        let token = generate();
        let digest = hash(&token);
        storage
            .run(move |b| b.add_token("alice", &digest, 1))
            .await
            .unwrap();
        let gate = Arc::new(Gate::new(None));
        let header = format!("Bearer {token}");
        // 500 open pages re-checking at once: one query between them.
        let checks = (0..500).map(|_| {
            let (gate, storage, header) = (gate.clone(), storage.clone(), header.clone());
            tokio::spawn(async move { gate.check_shared(&storage, Some(&header)).await })
        });
        for verdict in futures_util::future::join_all(checks).await {
            assert!(matches!(
                verdict.unwrap().unwrap(),
                Verdict::Allowed(Principal::Token(ref n)) if n == "alice"
            ));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one store lookup for 500 checks");
        // A wrong token is never admitted from the cache of a right one, and wrong tokens
        // are not kept: they cannot crowd the right one out.
        for _ in 0..10 {
            let wrong = format!("Bearer {}", generate());
            assert!(matches!(
                gate.check_shared(&storage, Some(&wrong)).await.unwrap(),
                Verdict::Denied
            ));
        }
        let cached = gate.lookups.lock().unwrap().by_hash.len();
        assert_eq!(cached, 1, "only the found token is cached");
        // Revoked: denied once the interval has passed.
        storage.run(|b| b.revoke_token("alice", 2)).await.unwrap();
        let before = asked.load(Ordering::SeqCst);
        tokio::time::sleep(TOKEN_RECHECK + Duration::from_millis(50)).await;
        assert!(matches!(
            gate.check_shared(&storage, Some(&header)).await.unwrap(),
            Verdict::Denied
        ));
        assert!(matches!(
            gate.check_shared(&storage, Some(&header)).await.unwrap(),
            Verdict::Denied
        ));
        // A token that names nothing is not cached: each later check asks again.
        assert_eq!(asked.load(Ordering::SeqCst), before + 2);
        // Protocol requests ask every time: a revocation counts from the next one on.
        let unshared = asked.load(Ordering::SeqCst);
        assert!(matches!(
            gate.check(&storage, Some(&header)).await.unwrap(),
            Verdict::Denied
        ));
        assert_eq!(asked.load(Ordering::SeqCst), unshared + 1);
    }

    #[test]
    fn the_cache_stays_bounded_under_random_tokens() {
        let gate = Gate::new(None);
        let now = Instant::now();
        for i in 0..TOKEN_CACHE_MAX as u32 {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_le_bytes());
            let slot = gate.slot(d).unwrap();
            *slot.try_lock().unwrap() = Some((now, None));
        }
        // Full of fresh entries: a new token is looked up unshared, not added.
        assert!(gate.slot([0xff; 32]).is_none());
        assert_eq!(gate.lookups.lock().unwrap().by_hash.len(), TOKEN_CACHE_MAX);
    }
}
