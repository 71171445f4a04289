//! Revoked token ids (JWT `jti`), kept until the token would have expired anyway.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::conn::on_backend;
use crate::error::Result;
use crate::schema::revoked_tokens;
use crate::store::{BlockingStore, Store};
use crate::time;

impl BlockingStore {
    /// Records that the token `jti` is revoked until `expires_at`. Idempotent.
    pub fn revoke_token(&self, jti: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn()?;
        let row = (
            revoked_tokens::jti.eq(jti),
            revoked_tokens::expires_at.eq(time::to_db(expires_at)),
        );
        on_backend!(&mut *conn, |c| diesel::insert_into(revoked_tokens::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c))?;
        Ok(())
    }

    /// Whether `jti` was revoked (and not yet pruned).
    pub fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        let n: i64 = revoked_tokens::table
            .filter(revoked_tokens::jti.eq(jti))
            .count()
            .get_result(&mut *self.conn()?)?;
        Ok(n > 0)
    }

    /// Forgets revocations whose token expired before `now`; returns how many were removed.
    pub fn prune_revoked_tokens(&self, now: DateTime<Utc>) -> Result<usize> {
        Ok(diesel::delete(
            revoked_tokens::table.filter(revoked_tokens::expires_at.lt(time::to_db(now))),
        )
        .execute(&mut *self.conn()?)?)
    }
}

impl Store {
    /// Records that the token `jti` is revoked until `expires_at`. Idempotent.
    pub async fn revoke_token(&self, jti: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let jti = jti.to_string();
        self.run(move |s| s.revoke_token(&jti, expires_at)).await
    }

    /// Whether `jti` was revoked (and not yet pruned).
    pub async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        let jti = jti.to_string();
        self.run(move |s| s.is_token_revoked(&jti)).await
    }

    /// Forgets revocations whose token expired before `now`; returns how many were removed.
    pub async fn prune_revoked_tokens(&self, now: DateTime<Utc>) -> Result<usize> {
        self.run(move |s| s.prune_revoked_tokens(now)).await
    }
}
