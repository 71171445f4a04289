//! Authenticating requests: token verification against revocations and account state.

use std::future::Future;

use chrono::{DateTime, Utc};
use flowrunner_domain::{AccountId, Role};

use crate::{Error, IssuedToken, Result, TokenService};

/// What sessions need to know about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountAuth {
    /// The account's current role (authorization uses this, not the role in the token).
    pub role: Role,
    /// Tokens issued before this instant are no longer valid (set when the password changes).
    pub tokens_valid_after: Option<DateTime<Utc>>,
}

/// The persistence that sessions rely on; the HTTP crate implements it over the store.
///
/// Errors are reported as [`Error::Store`].
pub trait SessionStore: Sync {
    /// The account's current role and token cut-off, or `None` when the account does not exist.
    fn account_auth(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Option<AccountAuth>>> + Send;
    /// Whether the token id was revoked.
    fn is_revoked(&self, jti: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Records a revocation, kept at least until the token would have expired. Idempotent.
    fn revoke(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
}

impl<S: SessionStore + ?Sized> SessionStore for &S {
    fn account_auth(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Option<AccountAuth>>> + Send {
        (**self).account_auth(account)
    }

    fn is_revoked(&self, jti: &str) -> impl Future<Output = Result<bool>> + Send {
        (**self).is_revoked(jti)
    }

    fn revoke(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).revoke(jti, expires_at)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account.
    pub account_id: AccountId,
    /// Its current role.
    pub role: Role,
    /// The id of the token used (for logout and refresh).
    pub token_id: String,
    /// When that token expires.
    pub token_expires_at: DateTime<Utc>,
}

impl Principal {
    /// Whether the caller is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Verifies bearer tokens and manages their lifecycle (refresh, logout).
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: TokenService,
}

impl Authenticator {
    /// An authenticator over a token service.
    pub fn new(tokens: TokenService) -> Self {
        Self { tokens }
    }

    /// The token service (to issue tokens at login).
    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Issues a token for an account that just proved its password.
    pub fn login(&self, account: &AccountId, role: Role) -> Result<IssuedToken> {
        self.tokens.issue(account, role)
    }

    /// Checks a bearer token: signature, expiry, revocation, that the account still exists and
    /// that the token was not issued before the account's `tokens_valid_after`.
    pub async fn authenticate<S: SessionStore>(&self, store: &S, token: &str) -> Result<Principal> {
        let claims = self.tokens.verify(token)?;
        let account_id = claims.account_id()?;
        if store.is_revoked(&claims.jti).await? {
            return Err(Error::TokenRevoked);
        }
        let Some(account) = store.account_auth(&account_id).await? else {
            return Err(Error::TokenRevoked);
        };
        if let Some(cutoff) = account.tokens_valid_after {
            // Millisecond comparison: a token issued in the same millisecond as the change stays valid,
            // so a login right after a password change always works.
            if claims.iat_ms < cutoff.timestamp_millis() {
                return Err(Error::TokenRevoked);
            }
        }
        Ok(Principal {
            account_id,
            role: account.role,
            token_id: claims.jti.clone(),
            token_expires_at: claims.expires_at()?,
        })
    }

    /// Issues a new token for the caller and revokes the one it used.
    pub async fn refresh<S: SessionStore>(
        &self,
        store: &S,
        caller: &Principal,
    ) -> Result<IssuedToken> {
        let issued = self.tokens.issue(&caller.account_id, caller.role)?;
        store
            .revoke(&caller.token_id, caller.token_expires_at)
            .await?;
        Ok(issued)
    }

    /// Revokes the token the caller used.
    pub async fn logout<S: SessionStore>(&self, store: &S, caller: &Principal) -> Result<()> {
        store
            .revoke(&caller.token_id, caller.token_expires_at)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::memory_store::MemoryStore;

    fn setup(role: Role) -> (Authenticator, MemoryStore, AccountId) {
        let tokens = TokenService::new(
            crate::generate_secret().as_bytes(),
            Duration::from_secs(600),
        )
        .expect("tokens");
        let store = MemoryStore::default();
        let id = AccountId::generate();
        store.set_account(
            &id,
            Some(AccountAuth {
                role,
                tokens_valid_after: None,
            }),
        );
        (Authenticator::new(tokens), store, id)
    }

    #[tokio::test]
    async fn authenticates_and_uses_the_current_role() {
        let (auth, store, id) = setup(Role::Admin);
        let token = auth.login(&id, Role::Admin).expect("login");
        let principal = auth
            .authenticate(&store, &token.token)
            .await
            .expect("valid");
        assert_eq!(principal.account_id, id);
        assert!(principal.is_admin());
        assert_eq!(principal.token_id, token.claims.jti);

        // Demoted after the token was issued: the current role wins.
        store.set_account(
            &id,
            Some(AccountAuth {
                role: Role::User,
                tokens_valid_after: None,
            }),
        );
        let principal = auth
            .authenticate(&store, &token.token)
            .await
            .expect("valid");
        assert_eq!(principal.role, Role::User);
    }

    #[tokio::test]
    async fn logout_refresh_deletion_and_password_change_invalidate() {
        let (auth, store, id) = setup(Role::User);
        let first = auth.login(&id, Role::User).expect("login");
        let caller = auth
            .authenticate(&store, &first.token)
            .await
            .expect("valid");
        let second = auth.refresh(&store, &caller).await.expect("refresh");
        assert!(matches!(
            auth.authenticate(&store, &first.token).await,
            Err(Error::TokenRevoked)
        ));
        let caller = auth
            .authenticate(&store, &second.token)
            .await
            .expect("new token valid");
        auth.logout(&store, &caller).await.expect("logout");
        assert!(matches!(
            auth.authenticate(&store, &second.token).await,
            Err(Error::TokenRevoked)
        ));

        // Password change: earlier tokens die, a token issued right after is fine.
        let before = auth.login(&id, Role::User).expect("login");
        let cutoff = Utc::now() + chrono::Duration::milliseconds(5);
        store.set_account(
            &id,
            Some(AccountAuth {
                role: Role::User,
                tokens_valid_after: Some(cutoff),
            }),
        );
        assert!(matches!(
            auth.authenticate(&store, &before.token).await,
            Err(Error::TokenRevoked)
        ));
        let after = auth
            .tokens()
            .issue_at(&id, Role::User, cutoff)
            .expect("issue");
        auth.authenticate(&store, &after.token)
            .await
            .expect("issued at the cutoff is valid");

        // Account deleted.
        store.clear_accounts();
        assert!(matches!(
            auth.authenticate(&store, &after.token).await,
            Err(Error::TokenRevoked)
        ));
    }
}
