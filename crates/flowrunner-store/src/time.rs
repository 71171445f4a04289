//! Timestamps: `DateTime<Utc>` in the API, naive UTC with microsecond precision in the database.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};

/// The current time, truncated to microseconds (the precision both backends store), so that a
/// value returned by the store equals the value read back later.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// For binding: UTC as naive date-time, truncated to microseconds.
pub(crate) fn to_db(t: DateTime<Utc>) -> NaiveDateTime {
    t.trunc_subsecs(6).naive_utc()
}

/// For reading: the stored naive date-time is UTC.
pub(crate) fn from_db(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}
