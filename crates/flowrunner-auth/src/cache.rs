//! An in-memory cache of the two reads every authentication makes (is the token revoked, what
//! are the account's role and token cut-off), so the hot path does not reach the database.
//!
//! Consistency: a change made through the cache ([`CachedSessions::revoke`],
//! [`SessionCache::invalidate_account`]) takes effect at once in this process, also against
//! reads that were in flight when it happened (see [`Ticket`]). A change made elsewhere (another
//! process on the same database, the CLI) is seen after at most the TTL, counted from the moment
//! the database read that filled the entry started. Memory is bounded: entries expire and each
//! table holds at most `max_entries` of them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flowrunner_domain::AccountId;

use crate::{AccountAuth, Result, SessionStore};

/// Default time a cached answer is trusted.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);
/// Default maximum number of entries in each of the cache's two tables (accounts, tokens).
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 10_000;

/// How long the cache trusts an answer and how many it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCacheConfig {
    /// How long an answer read from the store is reused; zero disables the cache.
    pub ttl: Duration,
    /// Most entries per table (accounts, tokens); zero disables the cache.
    pub max_entries: usize,
}

impl Default for SessionCacheConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_CACHE_TTL,
            max_entries: DEFAULT_CACHE_MAX_ENTRIES,
        }
    }
}

impl SessionCacheConfig {
    /// A configuration that caches nothing (every authentication reads the store).
    pub fn disabled() -> Self {
        Self {
            ttl: Duration::ZERO,
            max_entries: 0,
        }
    }

    /// Whether answers are cached at all.
    pub fn is_enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max_entries > 0
    }
}

/// How many entries the cache holds (expired ones included until they are evicted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheSize {
    /// Cached [`SessionStore::account_auth`] answers, including "no such account".
    pub accounts: usize,
    /// Cached [`SessionStore::is_revoked`] answers.
    pub tokens: usize,
}

/// A cached answer and when it stops being trusted.
#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    expires_at: Instant,
}

/// One table of the cache: answers per key, and a generation bumped by every invalidation.
#[derive(Debug)]
struct Table<K, V> {
    entries: HashMap<K, Entry<V>>,
    generation: u64,
}

impl<K: Hash + Eq, V: Clone> Table<K, V> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            generation: 0,
        }
    }

    fn get<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries
            .get(key)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.value.clone())
    }

    fn ticket(&self, now: Instant) -> Ticket {
        Ticket {
            generation: self.generation,
            read_at: now,
        }
    }

    /// Stores an answer read under `ticket`, unless an invalidation happened since the ticket
    /// was taken (the answer may predate it) or the TTL already ran out.
    fn fill(&mut self, ticket: Ticket, key: K, value: V, config: &SessionCacheConfig) {
        if ticket.generation != self.generation {
            return;
        }
        let Some(expires_at) = ticket.read_at.checked_add(config.ttl) else {
            return;
        };
        let now = Instant::now();
        if expires_at <= now {
            return;
        }
        if !self.entries.contains_key(&key) {
            self.make_room(config.max_entries, now);
        }
        self.entries.insert(key, Entry { value, expires_at });
    }

    /// Before an insertion: when full, drops the expired entries, and everything if that does
    /// not free at least half the table (so a flood of distinct keys costs amortised O(1) per
    /// insertion and memory stays below `max_entries`).
    fn make_room(&mut self, max_entries: usize, now: Instant) {
        if self.entries.len() < max_entries {
            return;
        }
        self.entries.retain(|_, entry| entry.expires_at > now);
        if self.entries.len() > max_entries / 2 {
            self.entries.clear();
        }
    }

    fn invalidate<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.generation = self.generation.wrapping_add(1);
        self.entries.remove(key);
    }

    fn clear(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.entries.clear();
    }
}

/// The answer of a cache lookup.
#[derive(Debug)]
enum Lookup<V> {
    /// A live entry.
    Hit(V),
    /// Nothing usable: read the store under this ticket.
    Miss(Ticket),
}

/// Taken before a store read: fills are refused when an invalidation happened in between, so a
/// read that started before a change cannot put the old answer back after the change's
/// invalidation. Also dates the read, from which the entry's TTL runs.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    generation: u64,
    read_at: Instant,
}

#[derive(Debug)]
struct Tables {
    accounts: Table<AccountId, Option<AccountAuth>>,
    tokens: Table<String, bool>,
}

/// The cache shared by every request of a process. Pure memory; use it through
/// [`SessionCache::sessions`] around the real [`SessionStore`].
#[derive(Debug)]
pub struct SessionCache {
    config: SessionCacheConfig,
    tables: Mutex<Tables>,
}

impl SessionCache {
    /// An empty cache.
    pub fn new(config: SessionCacheConfig) -> Self {
        Self {
            config,
            tables: Mutex::new(Tables {
                accounts: Table::new(),
                tokens: Table::new(),
            }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> SessionCacheConfig {
        self.config
    }

    /// `store` seen through this cache.
    pub fn sessions<S: SessionStore>(&self, store: S) -> CachedSessions<'_, S> {
        CachedSessions { cache: self, store }
    }

    /// Forgets what is cached about an account. Call it after every change to an account made
    /// in this process (creation, role or password change, deletion), once the change is
    /// committed.
    pub fn invalidate_account(&self, account: &AccountId) {
        self.lock().accounts.invalidate(account);
    }

    /// Forgets what is cached about a token id (after revoking it).
    pub fn invalidate_token(&self, jti: &str) {
        self.lock().tokens.invalidate(jti);
    }

    /// A guard that drops what the cache holds about `account` when it is dropped: hold it
    /// across a write that changes the account, so that the entry goes once the write returned
    /// (also with an error: it may have been committed) and also when the caller is cancelled
    /// while the write is in flight (the store's write may still complete).
    pub fn invalidate_account_on_drop<'a>(
        &'a self,
        account: &'a AccountId,
    ) -> InvalidateOnDrop<'a> {
        InvalidateOnDrop {
            cache: self,
            entry: Keyed::Account(account),
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut tables = self.lock();
        tables.accounts.clear();
        tables.tokens.clear();
    }

    /// How many entries are held.
    pub fn size(&self) -> CacheSize {
        let tables = self.lock();
        CacheSize {
            accounts: tables.accounts.entries.len(),
            tokens: tables.tokens.entries.len(),
        }
    }

    // The critical sections only touch hash maps and counters and leave them consistent even
    // if a panic unwinds through them, so a poisoned lock is safe to take over.
    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cached_account(&self, account: &AccountId) -> Lookup<Option<AccountAuth>> {
        let now = Instant::now();
        let tables = self.lock();
        match tables.accounts.get(account, now) {
            Some(hit) => Lookup::Hit(hit),
            None => Lookup::Miss(tables.accounts.ticket(now)),
        }
    }

    fn cached_revocation(&self, jti: &str) -> Lookup<bool> {
        let now = Instant::now();
        let tables = self.lock();
        match tables.tokens.get(jti, now) {
            Some(hit) => Lookup::Hit(hit),
            None => Lookup::Miss(tables.tokens.ticket(now)),
        }
    }
}

/// A [`SessionStore`] answering from a [`SessionCache`] and reading `S` on a miss. Revocations go
/// to `S` and then invalidate the token's entry.
#[derive(Debug, Clone, Copy)]
pub struct CachedSessions<'c, S> {
    cache: &'c SessionCache,
    store: S,
}

impl<S> CachedSessions<'_, S> {
    /// The store underneath.
    pub fn inner(&self) -> &S {
        &self.store
    }
}

impl<S: SessionStore> SessionStore for CachedSessions<'_, S> {
    async fn account_auth(&self, account: &AccountId) -> Result<Option<AccountAuth>> {
        if !self.cache.config.is_enabled() {
            return self.store.account_auth(account).await;
        }
        let ticket = match self.cache.cached_account(account) {
            Lookup::Hit(hit) => return Ok(hit),
            Lookup::Miss(ticket) => ticket,
        };
        let answer = self.store.account_auth(account).await?;
        self.cache.lock().accounts.fill(
            ticket,
            account.clone(),
            answer.clone(),
            &self.cache.config,
        );
        Ok(answer)
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool> {
        if !self.cache.config.is_enabled() {
            return self.store.is_revoked(jti).await;
        }
        let ticket = match self.cache.cached_revocation(jti) {
            Lookup::Hit(hit) => return Ok(hit),
            Lookup::Miss(ticket) => ticket,
        };
        let answer = self.store.is_revoked(jti).await?;
        self.cache
            .lock()
            .tokens
            .fill(ticket, jti.to_string(), answer, &self.cache.config);
        Ok(answer)
    }

    async fn revoke(&self, jti: &str, expires_at: DateTime<Utc>) -> Result<()> {
        // Invalidates once the write returns, also on failure (it may have been committed
        // before the error) and if this future is dropped mid-write (a cancelled request: the
        // store's write may still complete).
        let _invalidate = InvalidateOnDrop {
            cache: self.cache,
            entry: Keyed::Token(jti),
        };
        self.store.revoke(jti, expires_at).await
    }
}

/// Invalidates a cache entry when dropped (see [`SessionCache::invalidate_account_on_drop`]).
#[must_use = "the entry is invalidated when the guard is dropped"]
pub struct InvalidateOnDrop<'a> {
    cache: &'a SessionCache,
    entry: Keyed<'a>,
}

/// Which entry an [`InvalidateOnDrop`] drops.
enum Keyed<'a> {
    Account(&'a AccountId),
    Token(&'a str),
}

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        match self.entry {
            Keyed::Account(account) => self.cache.invalidate_account(account),
            Keyed::Token(jti) => self.cache.invalidate_token(jti),
        }
    }
}

#[cfg(test)]
mod tests {
    use flowrunner_domain::Role;

    use super::*;
    use crate::memory_store::MemoryStore;
    use crate::{Authenticator, Error, TokenService};

    /// A store whose reads always fail.
    struct FailingStore;

    impl SessionStore for FailingStore {
        async fn account_auth(&self, _account: &AccountId) -> Result<Option<AccountAuth>> {
            Err(Error::Store("down".into()))
        }
        async fn is_revoked(&self, _jti: &str) -> Result<bool> {
            Err(Error::Store("down".into()))
        }
        async fn revoke(&self, _jti: &str, _expires_at: DateTime<Utc>) -> Result<()> {
            Err(Error::Store("down".into()))
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn user() -> AccountAuth {
        AccountAuth {
            role: Role::User,
            tokens_valid_after: None,
        }
    }

    fn setup(config: SessionCacheConfig) -> (Authenticator, MemoryStore, SessionCache, AccountId) {
        let tokens = TokenService::new(crate::generate_secret().as_bytes(), HOUR).expect("tokens");
        let store = MemoryStore::default();
        let id = AccountId::generate();
        store.set_account(&id, Some(user()));
        (
            Authenticator::new(tokens),
            store,
            SessionCache::new(config),
            id,
        )
    }

    fn long_lived() -> SessionCacheConfig {
        SessionCacheConfig {
            ttl: HOUR,
            max_entries: 100,
        }
    }

    #[tokio::test]
    async fn repeated_authentications_are_served_from_the_cache() {
        let (auth, store, cache, id) = setup(long_lived());
        let token = auth.login(&id, Role::User).expect("login");
        for _ in 0..5 {
            let principal = auth
                .authenticate(&cache.sessions(&store), &token.token)
                .await
                .expect("valid");
            assert_eq!(principal.account_id, id);
        }
        assert_eq!(store.reads(), (1, 1), "one read of each kind, then hits");

        // A second token of the same account shares the account entry.
        let other = auth.login(&id, Role::User).expect("login");
        auth.authenticate(&cache.sessions(&store), &other.token)
            .await
            .expect("valid");
        assert_eq!(store.reads(), (1, 2));
        assert_eq!(
            cache.size(),
            CacheSize {
                accounts: 1,
                tokens: 2
            }
        );
    }

    #[tokio::test]
    async fn changes_behind_the_cache_are_seen_after_the_ttl_only() {
        let (auth, store, cache, id) = setup(long_lived());
        let token = auth.login(&id, Role::User).expect("login");
        auth.authenticate(&cache.sessions(&store), &token.token)
            .await
            .expect("valid");
        // Another process deletes the account: this one keeps its answer for the TTL.
        store.set_account(&id, None);
        auth.authenticate(&cache.sessions(&store), &token.token)
            .await
            .expect("still cached");
        assert_eq!(store.reads(), (1, 1));

        // The TTL runs out: entries are no longer served.
        let later = Instant::now() + HOUR;
        let tables = cache.lock();
        assert_eq!(tables.accounts.get(&id, later), None);
        assert_eq!(tables.tokens.get(token.claims.jti.as_str(), later), None);
    }

    #[tokio::test]
    async fn expired_entries_are_read_again() {
        let (auth, store, cache, id) = setup(long_lived());
        let token = auth.login(&id, Role::User).expect("login");
        let sessions = cache.sessions(&store);
        auth.authenticate(&sessions, &token.token)
            .await
            .expect("valid");
        store.set_account(&id, None);
        // Let the TTL run out without waiting: move every entry's expiry to the past.
        {
            let mut tables = cache.lock();
            let past = Instant::now();
            for entry in tables.accounts.entries.values_mut() {
                entry.expires_at = past;
            }
            for entry in tables.tokens.entries.values_mut() {
                entry.expires_at = past;
            }
        }
        assert!(matches!(
            auth.authenticate(&sessions, &token.token).await,
            Err(Error::TokenRevoked)
        ));
        assert_eq!(store.reads(), (2, 2));
    }

    #[tokio::test]
    async fn disabled_cache_always_reads_the_store() {
        for config in [
            SessionCacheConfig::disabled(),
            SessionCacheConfig {
                ttl: HOUR,
                max_entries: 0,
            },
            SessionCacheConfig {
                ttl: Duration::ZERO,
                max_entries: 100,
            },
        ] {
            let (auth, store, cache, id) = setup(config);
            let token = auth.login(&id, Role::User).expect("login");
            auth.authenticate(&cache.sessions(&store), &token.token)
                .await
                .expect("valid");
            store.set_account(&id, None);
            assert!(matches!(
                auth.authenticate(&cache.sessions(&store), &token.token)
                    .await,
                Err(Error::TokenRevoked)
            ));
            assert_eq!(store.reads(), (2, 2), "{config:?}");
            assert_eq!(cache.size(), CacheSize::default());
        }
    }

    #[tokio::test]
    async fn logout_and_refresh_take_effect_at_once() {
        let (auth, store, cache, id) = setup(long_lived());
        let sessions = cache.sessions(&store);
        let first = auth.login(&id, Role::User).expect("login");
        let caller = auth
            .authenticate(&sessions, &first.token)
            .await
            .expect("valid");
        // Cached as "not revoked"; the refresh revokes it through the cache.
        let second = auth.refresh(&sessions, &caller).await.expect("refresh");
        assert!(matches!(
            auth.authenticate(&sessions, &first.token).await,
            Err(Error::TokenRevoked)
        ));
        let caller = auth
            .authenticate(&sessions, &second.token)
            .await
            .expect("new token valid");
        auth.authenticate(&sessions, &second.token)
            .await
            .expect("cached");
        auth.logout(&sessions, &caller).await.expect("logout");
        assert!(matches!(
            auth.authenticate(&sessions, &second.token).await,
            Err(Error::TokenRevoked)
        ));
        // A revoked answer is cached too.
        let reads = store.reads();
        assert!(auth.authenticate(&sessions, &second.token).await.is_err());
        assert_eq!(store.reads(), reads);
    }

    #[tokio::test]
    async fn explicit_account_invalidation_takes_effect_at_once() {
        let (auth, store, cache, id) = setup(long_lived());
        let sessions = cache.sessions(&store);
        let token = auth.login(&id, Role::User).expect("login");
        auth.authenticate(&sessions, &token.token)
            .await
            .expect("valid");

        // Promotion.
        store.set_account(
            &id,
            Some(AccountAuth {
                role: Role::Admin,
                tokens_valid_after: None,
            }),
        );
        cache.invalidate_account(&id);
        let principal = auth
            .authenticate(&sessions, &token.token)
            .await
            .expect("valid");
        assert!(principal.is_admin());

        // Password change: the cut-off moves past the token.
        store.set_account(
            &id,
            Some(AccountAuth {
                role: Role::Admin,
                tokens_valid_after: Some(Utc::now() + chrono::Duration::seconds(1)),
            }),
        );
        cache.invalidate_account(&id);
        assert!(matches!(
            auth.authenticate(&sessions, &token.token).await,
            Err(Error::TokenRevoked)
        ));

        // Deletion, and the cached miss is answered without a read.
        store.set_account(&id, None);
        cache.invalidate_account(&id);
        let fresh = auth.login(&id, Role::User).expect("login");
        assert!(matches!(
            auth.authenticate(&sessions, &fresh.token).await,
            Err(Error::TokenRevoked)
        ));
        let reads = store.reads();
        assert!(auth.authenticate(&sessions, &fresh.token).await.is_err());
        assert_eq!(store.reads().0, reads.0, "the miss was cached");

        // Re-creation (only possible in tests: ids are random) after invalidation is seen.
        store.set_account(&id, Some(user()));
        cache.invalidate_account(&id);
        auth.authenticate(&sessions, &fresh.token)
            .await
            .expect("exists again");

        // Clearing forgets everything.
        store.set_account(&id, None);
        cache.clear();
        assert!(auth.authenticate(&sessions, &fresh.token).await.is_err());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache = SessionCache::new(long_lived());
        let id = AccountId::generate();
        let Lookup::Miss(ticket) = cache.cached_account(&id) else {
            panic!("empty cache");
        };
        // The read returns the old answer, but the change commits and invalidates first.
        cache.invalidate_account(&id);
        cache
            .lock()
            .accounts
            .fill(ticket, id.clone(), Some(user()), &cache.config);
        assert!(
            matches!(cache.cached_account(&id), Lookup::Miss(_)),
            "stale fill refused"
        );

        let Lookup::Miss(ticket) = cache.cached_revocation("jti") else {
            panic!("empty cache");
        };
        cache.invalidate_token("jti");
        cache
            .lock()
            .tokens
            .fill(ticket, "jti".into(), false, &cache.config);
        assert!(
            matches!(cache.cached_revocation("jti"), Lookup::Miss(_)),
            "stale fill refused"
        );

        // A fresh ticket fills normally.
        let Lookup::Miss(ticket) = cache.cached_revocation("jti") else {
            panic!("empty cache");
        };
        cache
            .lock()
            .tokens
            .fill(ticket, "jti".into(), true, &cache.config);
        assert!(matches!(cache.cached_revocation("jti"), Lookup::Hit(true)));
    }

    #[tokio::test]
    async fn the_entry_count_stays_under_the_cap() {
        let max_entries = 8;
        let (auth, store, cache, id) = setup(SessionCacheConfig {
            ttl: HOUR,
            max_entries,
        });
        let sessions = cache.sessions(&store);
        // A flood of distinct (valid) tokens.
        for n in 0..100 {
            let token = auth.login(&id, Role::User).expect("login");
            auth.authenticate(&sessions, &token.token)
                .await
                .expect("valid");
            let size = cache.size();
            assert!(size.tokens <= max_entries, "after {n}: {size:?}");
            assert_eq!(size.accounts, 1);
        }
        // Each token was read once: the cache never answered for a token it had not seen.
        assert_eq!(store.reads().1, 100);
    }

    #[test]
    fn a_full_table_drops_expired_entries_first() {
        let config = SessionCacheConfig {
            ttl: HOUR,
            max_entries: 4,
        };
        let mut table: Table<String, bool> = Table::new();
        let now = Instant::now();
        let past = now.checked_sub(HOUR).unwrap_or(now);
        for key in ["a", "b", "c"] {
            table.entries.insert(
                key.into(),
                Entry {
                    value: false,
                    expires_at: past,
                },
            );
        }
        table.fill(table.ticket(now), "live".into(), false, &config);
        assert_eq!(table.entries.len(), 4);
        // Full: the three expired entries go, the live one stays.
        table.fill(table.ticket(now), "new".into(), true, &config);
        let mut keys: Vec<&str> = table.entries.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["live", "new"]);
        // Replacing an existing key never evicts.
        table.fill(table.ticket(now), "new".into(), false, &config);
        assert_eq!(table.get("new", now), Some(false));
        assert_eq!(table.entries.len(), 2);
    }

    /// A store whose `revoke` records the revocation and then never returns (a request
    /// cancelled while its write is in flight).
    struct StuckRevoke<'a>(&'a MemoryStore);

    impl SessionStore for StuckRevoke<'_> {
        async fn account_auth(&self, account: &AccountId) -> Result<Option<AccountAuth>> {
            self.0.account_auth(account).await
        }
        async fn is_revoked(&self, jti: &str) -> Result<bool> {
            self.0.is_revoked(jti).await
        }
        async fn revoke(&self, jti: &str, expires_at: DateTime<Utc>) -> Result<()> {
            self.0.revoke(jti, expires_at).await?;
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_revocation_cancelled_mid_write_still_invalidates() {
        let (auth, store, cache, id) = setup(long_lived());
        let stuck = StuckRevoke(&store);
        let sessions = cache.sessions(&stuck);
        let token = auth.login(&id, Role::User).expect("login");
        let caller = auth
            .authenticate(&sessions, &token.token)
            .await
            .expect("valid");
        // Poll the logout once (it records the revocation and hangs), then drop it.
        let mut logout = Box::pin(auth.logout(&sessions, &caller));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(logout.as_mut().poll(&mut cx).is_pending());
        drop(logout);
        assert!(matches!(
            auth.authenticate(&sessions, &token.token).await,
            Err(Error::TokenRevoked)
        ));
    }

    #[tokio::test]
    async fn store_errors_are_passed_on_and_not_cached() {
        let cache = SessionCache::new(long_lived());
        let sessions = cache.sessions(FailingStore);
        let id = AccountId::generate();
        assert!(matches!(
            sessions.account_auth(&id).await,
            Err(Error::Store(_))
        ));
        assert!(matches!(
            sessions.is_revoked("jti").await,
            Err(Error::Store(_))
        ));
        assert!(matches!(
            sessions.revoke("jti", Utc::now()).await,
            Err(Error::Store(_))
        ));
        assert_eq!(cache.size(), CacheSize::default());
    }
}
