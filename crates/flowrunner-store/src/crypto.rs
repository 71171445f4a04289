//! Secret encryption: ChaCha20-Poly1305 with a random 96-bit nonce per value, and the owning
//! account id and secret key as associated data, so a ciphertext cannot be moved to another row.

use std::fmt;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

use crate::error::{Error, Result};

/// Length of a stored nonce in bytes.
pub(crate) const NONCE_LEN: usize = 12;

/// Parses a 32-byte secret key given as 64 hexadecimal characters or as base64 (standard or
/// URL-safe alphabet, padded or not) of 32 bytes. Surrounding whitespace is ignored.
pub fn parse_secret_key(text: &str) -> Result<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|e| Error::InvalidSecretKey(e.to_string()))?
    } else {
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or_else(|| {
                Error::InvalidSecretKey("expected 64 hex characters or base64 of 32 bytes".into())
            })?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| Error::InvalidSecretKey(format!("expected 32 bytes, got {}", bytes.len())))
}

/// A new random 32-byte secret key (from the operating system's generator).
pub fn generate_secret_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    key
}

/// Formats a key as the 64 hex characters [`parse_secret_key`] accepts.
pub fn format_secret_key(key: &[u8; 32]) -> String {
    hex::encode(key)
}

/// Encrypts and decrypts secret values under one key.
#[derive(Clone)]
pub(crate) struct SecretCipher {
    cipher: ChaCha20Poly1305,
}

impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretCipher(<redacted>)")
    }
}

/// Associated data binding a ciphertext to its row.
fn associated_data(account_id: &str, key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + account_id.len() + key.len());
    aad.extend_from_slice(b"flowrunner-secret-v1\0");
    aad.extend_from_slice(account_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key.as_bytes());
    aad
}

impl SecretCipher {
    pub(crate) fn new(key: &[u8; 32]) -> Result<Self> {
        let cipher = ChaCha20Poly1305::new_from_slice(key).map_err(|_| Error::Crypto)?;
        Ok(Self { cipher })
    }

    /// Returns `(nonce, ciphertext)`.
    pub(crate) fn encrypt(
        &self,
        account_id: &str,
        key: &str,
        value: &str,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let nonce = Nonce::generate();
        let aad = associated_data(account_id, key);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Crypto)?;
        Ok((nonce.to_vec(), ciphertext))
    }

    pub(crate) fn decrypt(
        &self,
        account_id: &str,
        key: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<String> {
        if nonce.len() != NONCE_LEN {
            return Err(Error::Crypto);
        }
        let nonce = Nonce::try_from(nonce).map_err(|_| Error::Crypto)?;
        let aad = associated_data(account_id, key);
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Crypto)?;
        String::from_utf8(plain).map_err(|_| Error::Crypto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_base64_keys() {
        let key = generate_secret_key();
        assert_eq!(parse_secret_key(&format_secret_key(&key)).ok(), Some(key));
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(parse_secret_key(&format!(" {b64}\n")).ok(), Some(key));
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        assert_eq!(parse_secret_key(&b64url).ok(), Some(key));
        assert!(matches!(
            parse_secret_key("abcd"),
            Err(Error::InvalidSecretKey(_))
        ));
        assert!(matches!(
            parse_secret_key(&"g".repeat(64)),
            Err(Error::InvalidSecretKey(_))
        ));
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(matches!(
            parse_secret_key(&short),
            Err(Error::InvalidSecretKey(_))
        ));
        assert_ne!(generate_secret_key(), generate_secret_key());
    }

    #[test]
    fn round_trips_and_binds_to_the_row() -> Result<()> {
        let cipher = SecretCipher::new(&generate_secret_key())?;
        let (nonce, ct) = cipher.encrypt("account-a", "API_KEY", "s3cret")?;
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_eq!(
            cipher.decrypt("account-a", "API_KEY", &nonce, &ct)?,
            "s3cret"
        );
        assert!(matches!(
            cipher.decrypt("account-b", "API_KEY", &nonce, &ct),
            Err(Error::Crypto)
        ));
        assert!(matches!(
            cipher.decrypt("account-a", "OTHER", &nonce, &ct),
            Err(Error::Crypto)
        ));
        assert!(matches!(
            cipher.decrypt("account-a", "API_KEY", &nonce[..4], &ct),
            Err(Error::Crypto)
        ));
        let other = SecretCipher::new(&generate_secret_key())?;
        assert!(matches!(
            other.decrypt("account-a", "API_KEY", &nonce, &ct),
            Err(Error::Crypto)
        ));
        Ok(())
    }
}
