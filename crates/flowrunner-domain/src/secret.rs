//! The naming rule of secret keys, shared by the API and the command line.

/// The rule as users read it in error messages.
pub const SECRET_KEY_PATTERN: &str = "^[A-Z_][A-Z0-9_]{0,127}$";

/// Whether `key` is a valid secret key: it matches [`SECRET_KEY_PATTERN`].
pub fn is_secret_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_uppercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for good in ["A", "_", "API_KEY", "K9", &format!("A{}", "B".repeat(127))] {
            assert!(is_secret_key(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "9A",
            "API-KEY",
            "ÄPI",
            &format!("A{}", "B".repeat(128)),
        ] {
            assert!(!is_secret_key(bad), "{bad}");
        }
    }
}
