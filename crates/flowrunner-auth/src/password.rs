//! bcrypt password hashing with a configurable cost and constant-ish timing for unknown accounts.

use crate::{Error, Result};

/// bcrypt only looks at the first 72 bytes of a password; longer ones are rejected instead of truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Hashes and verifies passwords with bcrypt at a fixed cost.
///
/// Every method is CPU-bound: on an async runtime call them from a blocking thread.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    cost: u32,
    /// A hash of a random password at the same cost, verified against when an account does not
    /// exist so that a login for an unknown email takes as long as one with a wrong password.
    dummy_hash: String,
}

impl PasswordHasher {
    /// The production default cost.
    pub const DEFAULT_COST: u32 = bcrypt::DEFAULT_COST;
    /// The smallest cost bcrypt accepts (fast; meant for tests).
    pub const MIN_COST: u32 = 4;
    /// The largest cost bcrypt accepts.
    pub const MAX_COST: u32 = 31;

    /// A hasher with the given cost (4..=31). Computes one hash, so it blocks for one hashing time.
    pub fn new(cost: u32) -> Result<Self> {
        if !(Self::MIN_COST..=Self::MAX_COST).contains(&cost) {
            return Err(Error::InvalidCost(cost));
        }
        let dummy_hash = bcrypt::hash(crate::token::generate_secret(), cost)?;
        Ok(Self { cost, dummy_hash })
    }

    /// The configured cost.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Hashes a password with a fresh salt.
    pub fn hash(&self, password: &str) -> Result<String> {
        check_length(password)?;
        Ok(bcrypt::hash(password, self.cost)?)
    }

    /// Whether `password` matches `hash`. A malformed stored hash is an error, not a mismatch.
    pub fn verify(&self, password: &str, hash: &str) -> Result<bool> {
        if password.len() > MAX_PASSWORD_BYTES {
            // Cannot match anything we stored; still spend the time.
            self.verify_dummy(password);
            return Ok(false);
        }
        Ok(bcrypt::verify(password, hash)?)
    }

    /// Spends the time of one verification and returns `false`; used when the account is unknown.
    pub fn verify_dummy(&self, password: &str) -> bool {
        let truncated = &password.as_bytes()[..password.len().min(MAX_PASSWORD_BYTES)];
        // The result is always false in practice (random secret); it is discarded on purpose.
        let _matched = bcrypt::verify(truncated, &self.dummy_hash);
        false
    }
}

fn check_length(password: &str) -> Result<()> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::PasswordTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let hasher = PasswordHasher::new(4).expect("hasher");
        let hash = hasher.hash("correct horse").expect("hash");
        assert!(hash.starts_with("$2b$04$"));
        assert!(hasher.verify("correct horse", &hash).expect("verify"));
        assert!(!hasher.verify("wrong horse", &hash).expect("verify"));
        assert!(!hasher.verify_dummy("correct horse"));
    }

    #[test]
    fn rejects_bad_cost_long_passwords_and_bad_hashes() {
        assert!(matches!(PasswordHasher::new(3), Err(Error::InvalidCost(3))));
        assert!(matches!(
            PasswordHasher::new(32),
            Err(Error::InvalidCost(32))
        ));
        let hasher = PasswordHasher::new(4).expect("hasher");
        assert_eq!(hasher.cost(), 4);
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(hasher.hash(&long), Err(Error::PasswordTooLong)));
        let hash = hasher
            .hash(&"x".repeat(MAX_PASSWORD_BYTES))
            .expect("72 bytes is fine");
        assert!(!hasher.verify(&long, &hash).expect("verify"));
        assert!(hasher.verify("pw", "not a bcrypt hash").is_err());
    }
}
