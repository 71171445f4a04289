//! HS256 session tokens: issuing, signature and expiry verification.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use flowrunner_domain::{AccountId, Role};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The shortest accepted signing secret, in bytes (HS256 wants at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest accepted token lifetime.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// A new random signing secret: 32 random bytes, hex encoded (64 characters).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account id.
    pub sub: String,
    /// The account's role when the token was issued (informational: authorization uses the
    /// account's current role).
    pub role: Role,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Issue time, milliseconds since the epoch; compared with the account's `tokens_valid_after`.
    pub iat_ms: i64,
    /// Expiry time, seconds since the epoch.
    pub exp: i64,
    /// Unique token id, the key of revocations.
    pub jti: String,
}

impl Claims {
    /// The account the token was issued to.
    pub fn account_id(&self) -> Result<AccountId> {
        AccountId::parse(&self.sub).map_err(|_| Error::InvalidToken)
    }

    /// When the token was issued, with millisecond precision.
    pub fn issued_at(&self) -> Result<DateTime<Utc>> {
        Utc.timestamp_millis_opt(self.iat_ms)
            .single()
            .ok_or(Error::InvalidToken)
    }

    /// When the token expires.
    pub fn expires_at(&self) -> Result<DateTime<Utc>> {
        Utc.timestamp_opt(self.exp, 0)
            .single()
            .ok_or(Error::InvalidToken)
    }
}

/// A freshly signed token and its claims.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its claims.
    pub claims: Claims,
    /// When it expires (the `exp` claim).
    pub expires_at: DateTime<Utc>,
}

/// Signs and verifies HS256 session tokens with one secret and one lifetime.
#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: chrono::Duration,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// A service signing with `secret` (at least [`MIN_SECRET_BYTES`] bytes) and issuing tokens
    /// valid for `ttl` (at least one second, at most a year).
    pub fn new(secret: &[u8], ttl: Duration) -> Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::WeakSecret);
        }
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(Error::InvalidTtl(format!("{ttl:?}: expected 1s to 366d")));
        }
        let ttl = chrono::Duration::from_std(ttl).map_err(|e| Error::InvalidTtl(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).map_err(Error::Jwt)?,
            decoding: DecodingKey::from_secret(secret).map_err(Error::Jwt)?,
            validation,
            ttl,
        })
    }

    /// How long issued tokens stay valid.
    pub fn ttl(&self) -> Duration {
        self.ttl.to_std().unwrap_or_default()
    }

    /// Issues a token for an account, valid from now.
    pub fn issue(&self, account: &AccountId, role: Role) -> Result<IssuedToken> {
        self.issue_at(account, role, Utc::now())
    }

    /// Issues a token as if it were `now` (tests use a past time to make expired tokens).
    pub fn issue_at(
        &self,
        account: &AccountId,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken> {
        let expires_at = now + self.ttl;
        let claims = Claims {
            sub: account.as_str().to_string(),
            role,
            iat: now.timestamp(),
            iat_ms: now.timestamp_millis(),
            exp: expires_at.timestamp(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(Error::Jwt)?;
        let expires_at = claims.expires_at()?;
        Ok(IssuedToken {
            token,
            claims,
            expires_at,
        })
    }

    /// Checks a token's signature, algorithm and expiry and returns its claims.
    ///
    /// This does not consult revocations; [`crate::Authenticator`] does.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => Error::TokenExpired,
                _ => Error::InvalidToken,
            })?;
        let claims = data.claims;
        if claims.jti.is_empty() || claims.iat_ms < 0 {
            return Err(Error::InvalidToken);
        }
        // The library accepts a token during the second of its `exp`; we do not: a token is
        // valid strictly before `exp`, so once a revocation is pruned (after `exp`) the token
        // cannot come back to life.
        if Utc::now().timestamp() >= claims.exp {
            return Err(Error::TokenExpired);
        }
        claims.account_id()?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        TokenService::new(generate_secret().as_bytes(), Duration::from_secs(3600)).expect("service")
    }

    #[test]
    fn issue_and_verify_round_trip() {
        let tokens = service();
        let account = AccountId::generate();
        let issued = tokens.issue(&account, Role::User).expect("issue");
        let claims = tokens.verify(&issued.token).expect("verify");
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.account_id().expect("id"), account);
        assert_eq!(claims.role, Role::User);
        assert_eq!(claims.exp - claims.iat, 3600);
        assert_eq!(claims.iat_ms / 1000, claims.iat);
        assert_eq!(issued.expires_at.timestamp(), claims.exp);
        let other = tokens.issue(&account, Role::User).expect("issue");
        assert_ne!(other.claims.jti, issued.claims.jti, "jti is unique");
    }

    #[test]
    fn rejects_expired_tampered_and_foreign_tokens() {
        let tokens = service();
        let account = AccountId::generate();
        let old = tokens
            .issue_at(
                &account,
                Role::Admin,
                Utc::now() - chrono::Duration::hours(2),
            )
            .expect("issue");
        assert!(matches!(
            tokens.verify(&old.token),
            Err(Error::TokenExpired)
        ));

        let fresh = tokens.issue(&account, Role::User).expect("issue");
        let foreign = service();
        assert!(matches!(
            foreign.verify(&fresh.token),
            Err(Error::InvalidToken)
        ));

        let mut tampered = fresh.token.clone();
        tampered.push('x');
        assert!(matches!(tokens.verify(&tampered), Err(Error::InvalidToken)));
        for garbage in ["", "abc", "a.b.c", "Bearer x"] {
            assert!(
                matches!(tokens.verify(garbage), Err(Error::InvalidToken)),
                "{garbage}"
            );
        }

        // alg=none must not pass.
        let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = base64url(serde_json_claims(&fresh.claims).as_bytes());
        assert!(matches!(
            tokens.verify(&format!("{header}.{payload}.")),
            Err(Error::InvalidToken)
        ));
    }

    #[test]
    fn a_token_is_expired_from_the_second_of_its_exp() {
        let tokens = TokenService::new(generate_secret().as_bytes(), Duration::from_secs(1))
            .expect("service");
        let account = AccountId::generate();
        // Issued 1 s ago with a 1 s lifetime: `exp` is now (to the second).
        let issued = tokens
            .issue_at(
                &account,
                Role::User,
                Utc::now() - chrono::Duration::seconds(1),
            )
            .expect("issue");
        assert!(matches!(
            tokens.verify(&issued.token),
            Err(Error::TokenExpired)
        ));
    }

    #[test]
    fn rejects_weak_secrets_and_bad_ttls() {
        assert!(matches!(
            TokenService::new(b"short", Duration::from_secs(60)),
            Err(Error::WeakSecret)
        ));
        let secret = generate_secret();
        assert_eq!(secret.len(), 64);
        assert!(matches!(
            TokenService::new(secret.as_bytes(), Duration::ZERO),
            Err(Error::InvalidTtl(_))
        ));
        assert!(matches!(
            TokenService::new(secret.as_bytes(), Duration::from_secs(400 * 86_400)),
            Err(Error::InvalidTtl(_))
        ));
        let ok = TokenService::new(secret.as_bytes(), Duration::from_secs(90)).expect("ok");
        assert_eq!(ok.ttl(), Duration::from_secs(90));
    }

    fn serde_json_claims(claims: &Claims) -> String {
        format!(
            r#"{{"sub":"{}","role":"admin","iat":{},"iat_ms":{},"exp":{},"jti":"{}"}}"#,
            claims.sub, claims.iat, claims.iat_ms, claims.exp, claims.jti
        )
    }

    fn base64url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
