//! What a guarded write does to each record, decided from the version the secondary
//! already holds: the same rule as the upsert's own guard, so that the outcomes counted
//! are the writes made.

use std::collections::HashMap;

use sqlx::{ColumnIndex, Row};

use super::rows::{Decodes, raw_text};
use crate::store::WriteOutcome;

/// The `_version` of each key already in the table, or why it cannot be read.
pub type Existing = HashMap<(String, String), Result<i64, String>>;

/// The outcome of writing a row at `version` over `found` (None: no such row).
/// `replaces_same`: the row replaces one at its own version too (repair, where the
/// schema has `_version`).
pub fn outcome(found: Option<&Result<i64, String>>, version: i64, replaces_same: bool) -> WriteOutcome {
    match found {
        None => WriteOutcome::Inserted,
        Some(Err(why)) => unknown_version(why),
        Some(Ok(old)) if *old < version => WriteOutcome::Updated,
        Some(Ok(old)) if *old == version && replaces_same => WriteOutcome::Updated,
        Some(Ok(old)) if *old > version => WriteOutcome::SkippedNewer,
        Some(Ok(_)) => WriteOutcome::SkippedPresent,
    }
}

/// A row of the secondary whose version cannot be read might be newer: it is never
/// overwritten, and the record goes to the dead letter saying why.
pub fn unknown_version(why: &str) -> WriteOutcome {
    WriteOutcome::Failed(format!("the secondary already holds this record with {why}; left as it is"))
}

/// Column `i`, a stored `_version`, or why it cannot be read (NULL where NOT NULL was
/// dropped by hand, text in a SQLite file edited by hand): such a row is left as it is.
pub fn stored_version<R: Row>(row: &R, i: usize) -> Result<i64, String>
where
    usize: ColumnIndex<R>,
    i64: Decodes<R::Database>,
    Vec<u8>: Decodes<R::Database>,
{
    match row.try_get::<Option<i64>, _>(i) {
        Ok(Some(version)) => Ok(version),
        Ok(None) => Err("_version NULL".to_string()),
        Err(_) => Err(format!("_version {:?}, which is not an integer", raw_text(row, i))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_follows_temporals_guard() {
        assert_eq!(outcome(None, 3, false), WriteOutcome::Inserted);
        assert_eq!(outcome(Some(&Ok(2)), 3, false), WriteOutcome::Updated);
        assert_eq!(outcome(Some(&Ok(3)), 3, false), WriteOutcome::SkippedPresent);
        assert_eq!(outcome(Some(&Ok(3)), 3, true), WriteOutcome::Updated, "repair replaces its own version");
        assert_eq!(outcome(Some(&Ok(4)), 3, true), WriteOutcome::SkippedNewer);
        assert_eq!(
            outcome(Some(&Err("_version NULL".into())), 3, false),
            WriteOutcome::Failed("the secondary already holds this record with _version NULL; left as it is".into())
        );
    }
}
