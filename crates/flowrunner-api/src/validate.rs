//! Input rules shared by the HTTP handlers and the account commands of the binary.

use crate::error::{Error, Result};

/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest account or flow name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest flow description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// Most tags on one flow.
pub const MAX_TAGS: usize = 50;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Largest secret value, in bytes (64 KiB).
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;

/// Trims and lowercases an email and checks its form (`local@domain`, at most 254 bytes).
pub fn email(field: &str, raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
        });
    if valid {
        Ok(email)
    } else {
        Err(Error::field(
            field,
            "must be an email address such as user@example.com",
        ))
    }
}

/// Trims a display name and checks it is not empty, not too long and has no control characters.
pub fn name(field: &str, raw: &str, max_chars: usize) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Error::field(field, "must not be empty"));
    }
    if name.chars().count() > max_chars {
        return Err(Error::field(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::field(field, "must not contain control characters"));
    }
    Ok(name.to_string())
}

/// Checks a new password's length (8 to 72 bytes; bcrypt ignores anything longer).
pub fn password(raw: &str) -> Result<()> {
    let max = flowrunner_auth::MAX_PASSWORD_BYTES;
    if raw.len() < MIN_PASSWORD_BYTES || raw.len() > max {
        return Err(Error::field(
            "password",
            format!("must be {MIN_PASSWORD_BYTES} to {max} bytes long"),
        ));
    }
    Ok(())
}

/// Trims tags, drops duplicates (first occurrence kept) and checks count and length.
pub fn tags(raw: Vec<String>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for tag in raw {
        let tag = tag.trim().to_string();
        if tag.is_empty()
            || tag.chars().count() > MAX_TAG_CHARS
            || tag.chars().any(char::is_control)
        {
            return Err(Error::field(
                "tags",
                format!("each tag must be 1 to {MAX_TAG_CHARS} printable characters"),
            ));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Error::field("tags", format!("at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

pub use flowrunner_domain::is_secret_key;

/// Checks a secret's key and value.
pub fn secret(key: &str, value: &str) -> Result<()> {
    if !is_secret_key(key) {
        return Err(Error::field(
            "key",
            format!("must match {}", flowrunner_domain::SECRET_KEY_PATTERN),
        ));
    }
    if value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(Error::field(
            "value",
            format!("must be at most {MAX_SECRET_VALUE_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            email("email", "  Bob@Example.COM ").expect("valid"),
            "bob@example.com"
        );
        for bad in ["", "bob", "@x", "bob@", "a b@c", "a@b@c", "a@.c"] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_passwords_tags() {
        assert_eq!(name("name", " Ann ", 10).expect("ok"), "Ann");
        assert!(name("name", "   ", 10).is_err());
        assert!(name("name", "abcdefghijk", 10).is_err());
        assert!(name("name", "a\u{0}b", 10).is_err());
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(password(&"x".repeat(73)).is_err());
        assert_eq!(
            tags(vec!["a".into(), " b ".into(), "a".into()]).expect("ok"),
            vec!["a", "b"]
        );
        assert!(tags(vec![String::new()]).is_err());
        assert!(tags((0..51).map(|i| i.to_string()).collect()).is_err());
    }

    #[test]
    fn secret_values() {
        assert!(secret("K", &"x".repeat(MAX_SECRET_VALUE_BYTES)).is_ok());
        assert!(secret("K", &"x".repeat(MAX_SECRET_VALUE_BYTES + 1)).is_err());
    }
}
