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

/// A timestamp to bind on the hot write path (journal rows, execution rows).
///
/// On SQLite a timestamp is text. diesel formats it with chrono's `%F %T%.f`, which interprets
/// the format string on every call: about 4 % of the journal writer's time under load. This
/// writes the same text directly (checked against chrono in the tests); PostgreSQL binds the
/// value as diesel does.
#[derive(Debug, Clone, Copy, diesel::expression::AsExpression)]
#[diesel(sql_type = diesel::sql_types::Timestamp)]
pub(crate) struct DbTime(pub(crate) NaiveDateTime);

impl DbTime {
    /// `t` truncated to microseconds, as [`to_db`].
    pub(crate) fn of(t: DateTime<Utc>) -> Self {
        Self(to_db(t))
    }
}

/// The text diesel's SQLite backend stores for `t`: chrono's `%F %T%.f`, with the digits
/// written directly (through `fmt` this was a few per cent of the journal writer's time).
pub(crate) fn sqlite_text(t: &NaiveDateTime) -> String {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t.format("%F %T%.f").to_string();
    }
    let nanos = t.nanosecond();
    // chrono's way: a leap second shows as second 60, its fraction after that.
    let second = t.second() + nanos / 1_000_000_000;
    let fraction = nanos % 1_000_000_000;
    let mut text = Vec::with_capacity(29);
    // `width` decimal digits of `value`, after `separator` if any.
    let mut put = |separator: Option<u8>, value: u32, width: u32| {
        text.extend(separator);
        for place in (0..width).rev() {
            // One decimal digit, as its ASCII byte.
            text.push(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    };
    put(None, year.unsigned_abs(), 4);
    put(Some(b'-'), t.month(), 2);
    put(Some(b'-'), t.day(), 2);
    put(Some(b' '), t.hour(), 2);
    put(Some(b':'), t.minute(), 2);
    put(Some(b':'), second, 2);
    if fraction == 0 {
        // No fraction.
    } else if fraction.is_multiple_of(1_000_000) {
        put(Some(b'.'), fraction / 1_000_000, 3);
    } else if fraction.is_multiple_of(1_000) {
        put(Some(b'.'), fraction / 1_000, 6);
    } else {
        put(Some(b'.'), fraction, 9);
    }
    // Only ASCII digits and separators were written.
    String::from_utf8(text).unwrap_or_default()
}

impl diesel::serialize::ToSql<diesel::sql_types::Timestamp, diesel::sqlite::Sqlite> for DbTime {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::sqlite::Sqlite>,
    ) -> diesel::serialize::Result {
        out.set_value(sqlite_text(&self.0));
        Ok(diesel::serialize::IsNull::No)
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Timestamp, diesel::pg::Pg> for DbTime {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        diesel::serialize::ToSql::<diesel::sql_types::Timestamp, diesel::pg::Pg>::to_sql(
            &self.0,
            &mut out.reborrow(),
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, NaiveDateTime};

    use super::sqlite_text;

    fn at(second: u32, nanos: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 29)
            .and_then(|d| d.and_hms_nano_opt(5, 7, second, nanos))
            .expect("valid")
    }

    #[test]
    fn sqlite_text_is_chronos_format() {
        let mut samples = vec![
            at(9, 0),
            at(9, 5_000_000),
            at(9, 120_000_000),
            at(9, 123_456_000),
            at(9, 1_000),
            at(9, 123_456_789),
            at(9, 7),
            at(59, 1_000_000_000), // leap second, no fraction
            at(59, 1_250_000_000), // leap second with a fraction
            chrono::Utc::now().naive_utc(),
            super::to_db(chrono::Utc::now()),
        ];
        for (y, m, d) in [
            (1, 1, 1),
            (999, 12, 31),
            (9999, 12, 31),
            (10_000, 1, 1),
            (-5, 3, 4),
        ] {
            if let Some(t) = NaiveDate::from_ymd_opt(y, m, d).and_then(|d| d.and_hms_opt(0, 0, 0)) {
                samples.push(t);
            }
        }
        for t in samples {
            assert_eq!(sqlite_text(&t), t.format("%F %T%.f").to_string(), "{t:?}");
        }
    }
}
