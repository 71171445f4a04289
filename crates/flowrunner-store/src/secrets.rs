//! Per-account secrets, encrypted at rest (see the `crypto` module); values are only decrypted
//! for runs.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use flowrunner_domain::AccountId;

use crate::conn::{on_backend, write_transaction};
use crate::error::{Error, Result};
use crate::models::SecretMeta;
use crate::schema::{accounts, secrets};
use crate::store::{BlockingStore, Store};
use crate::time;

impl BlockingStore {
    /// Stores a secret (insert or replace). Returns its metadata and whether it was created
    /// (`true`) or updated (`false`). [`Error::NotFound`] if the account does not exist,
    /// [`Error::NoSecretKey`] without a configured key.
    pub fn put_secret(
        &self,
        account: &AccountId,
        key: &str,
        value: &str,
    ) -> Result<(SecretMeta, bool)> {
        let (nonce, ciphertext) = self.cipher()?.encrypt(account.as_str(), key, value)?;
        let now = time::to_db(time::now());
        let mut conn = self.conn()?;
        write_transaction(&mut conn, |conn| {
            let exists: i64 = accounts::table
                .find(account.as_str())
                .count()
                .get_result(conn)?;
            if exists == 0 {
                return Err(Error::NotFound);
            }
            let row = (
                secrets::account_id.eq(account.as_str()),
                secrets::key.eq(key),
                secrets::nonce.eq(&nonce),
                secrets::ciphertext.eq(&ciphertext),
                secrets::created_at.eq(now),
                secrets::updated_at.eq(now),
            );
            let inserted = on_backend!(&mut *conn, |c| diesel::insert_into(secrets::table)
                .values(row)
                .on_conflict_do_nothing()
                .execute(c))?;
            let created = inserted > 0;
            if !created {
                diesel::update(secrets::table.find((account.as_str(), key)))
                    .set((
                        secrets::nonce.eq(&nonce),
                        secrets::ciphertext.eq(&ciphertext),
                        secrets::updated_at.eq(now),
                    ))
                    .execute(conn)?;
            }
            let (created_at, updated_at) = secrets::table
                .find((account.as_str(), key))
                .select((secrets::created_at, secrets::updated_at))
                .first::<(NaiveDateTime, NaiveDateTime)>(conn)?;
            let meta = SecretMeta {
                key: key.to_string(),
                created_at: time::from_db(created_at),
                updated_at: time::from_db(updated_at),
            };
            Ok((meta, created))
        })
    }

    /// The account's secrets (names and dates, no values), ordered by name.
    pub fn list_secrets(&self, account: &AccountId) -> Result<Vec<SecretMeta>> {
        let rows = secrets::table
            .filter(secrets::account_id.eq(account.as_str()))
            .select((secrets::key, secrets::created_at, secrets::updated_at))
            .order(secrets::key.asc())
            .load::<(String, NaiveDateTime, NaiveDateTime)>(&mut *self.conn()?)?;
        Ok(rows
            .into_iter()
            .map(|(key, created_at, updated_at)| SecretMeta {
                key,
                created_at: time::from_db(created_at),
                updated_at: time::from_db(updated_at),
            })
            .collect())
    }

    /// Deletes a secret; `false` if there was none.
    pub fn delete_secret(&self, account: &AccountId, key: &str) -> Result<bool> {
        let n = diesel::delete(secrets::table.find((account.as_str(), key)))
            .execute(&mut *self.conn()?)?;
        Ok(n > 0)
    }

    /// One decrypted secret value.
    pub fn secret_value(&self, account: &AccountId, key: &str) -> Result<Option<String>> {
        let cipher = self.cipher()?;
        let row = secrets::table
            .find((account.as_str(), key))
            .select((secrets::nonce, secrets::ciphertext))
            .first::<(Vec<u8>, Vec<u8>)>(&mut *self.conn()?)
            .optional()?;
        row.map(|(nonce, ct)| cipher.decrypt(account.as_str(), key, &nonce, &ct))
            .transpose()
    }

    /// Every secret of the account, decrypted (for runs). [`Error::Crypto`] if any value fails
    /// to decrypt (wrong key or tampered row).
    pub fn secret_values(&self, account: &AccountId) -> Result<HashMap<String, String>> {
        let cipher = self.cipher()?;
        let rows = secrets::table
            .filter(secrets::account_id.eq(account.as_str()))
            .select((secrets::key, secrets::nonce, secrets::ciphertext))
            .load::<(String, Vec<u8>, Vec<u8>)>(&mut *self.conn()?)?;
        rows.into_iter()
            .map(|(key, nonce, ct)| {
                let value = cipher.decrypt(account.as_str(), &key, &nonce, &ct)?;
                Ok((key, value))
            })
            .collect()
    }
}

impl Store {
    /// Stores a secret (insert or replace); returns its metadata and whether it was created.
    pub async fn put_secret(
        &self,
        account: &AccountId,
        key: &str,
        value: &str,
    ) -> Result<(SecretMeta, bool)> {
        let (account, key, value) = (account.clone(), key.to_string(), value.to_string());
        self.run(move |s| s.put_secret(&account, &key, &value))
            .await
    }

    /// The account's secrets (names and dates, no values), ordered by name.
    pub async fn list_secrets(&self, account: &AccountId) -> Result<Vec<SecretMeta>> {
        let account = account.clone();
        self.run(move |s| s.list_secrets(&account)).await
    }

    /// Deletes a secret; `false` if there was none.
    pub async fn delete_secret(&self, account: &AccountId, key: &str) -> Result<bool> {
        let (account, key) = (account.clone(), key.to_string());
        self.run(move |s| s.delete_secret(&account, &key)).await
    }

    /// One decrypted secret value.
    pub async fn secret_value(&self, account: &AccountId, key: &str) -> Result<Option<String>> {
        let (account, key) = (account.clone(), key.to_string());
        self.run(move |s| s.secret_value(&account, &key)).await
    }

    /// Every secret of the account, decrypted (for runs).
    pub async fn secret_values(&self, account: &AccountId) -> Result<HashMap<String, String>> {
        let account = account.clone();
        self.run(move |s| s.secret_values(&account)).await
    }
}
