//! A [`SessionStore`] in memory for this crate's unit tests; it counts its reads.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use flowrunner_domain::AccountId;

use crate::{AccountAuth, Result, SessionStore};

#[derive(Default)]
pub(crate) struct MemoryStore {
    accounts: Mutex<HashMap<AccountId, AccountAuth>>,
    revoked: Mutex<HashSet<String>>,
    account_reads: AtomicUsize,
    revocation_reads: AtomicUsize,
}

impl MemoryStore {
    /// Sets (or, with `None`, deletes) an account.
    pub(crate) fn set_account(&self, id: &AccountId, auth: Option<AccountAuth>) {
        let mut accounts = self.accounts.lock().expect("lock");
        match auth {
            Some(auth) => accounts.insert(id.clone(), auth),
            None => accounts.remove(id),
        };
    }

    /// Deletes every account.
    pub(crate) fn clear_accounts(&self) {
        self.accounts.lock().expect("lock").clear();
    }

    /// Reads so far: (accounts, revocations).
    pub(crate) fn reads(&self) -> (usize, usize) {
        (
            self.account_reads.load(Ordering::SeqCst),
            self.revocation_reads.load(Ordering::SeqCst),
        )
    }
}

impl SessionStore for MemoryStore {
    async fn account_auth(&self, account: &AccountId) -> Result<Option<AccountAuth>> {
        self.account_reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.accounts.lock().expect("lock").get(account).cloned())
    }
    async fn is_revoked(&self, jti: &str) -> Result<bool> {
        self.revocation_reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.revoked.lock().expect("lock").contains(jti))
    }
    async fn revoke(&self, jti: &str, _expires_at: DateTime<Utc>) -> Result<()> {
        self.revoked.lock().expect("lock").insert(jti.to_string());
        Ok(())
    }
}
