//! Importing an office's paper journal: each row becomes an `imported` event ([`ImportRow`])
//! and a form row that keeps its own number.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::checkpoint::Checkpoint;
use super::form::{set_last_row_no, ImportedText};
use super::{db_err, Actor, EventKind, Journal};
use crate::error::{Error, Result};

/// One row of a paper journal being imported; also the data of its `imported` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRow {
    /// Line in the source file (for error messages).
    pub line: u64,
    /// Its number in the paper journal ("№ п/п"), kept.
    pub row_no: u64,
    /// Column 2 as written.
    pub generated: String,
    /// Column 3 as written.
    pub carrier: String,
    /// Column 4 as written.
    pub received: String,
    /// Column 5 as written.
    pub destroyed: String,
    /// Notes (an optional sixth column).
    #[serde(default)]
    pub note: String,
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportRecord {
    /// Rows imported.
    pub rows: usize,
    /// Their numbers, in file order.
    pub row_numbers: Vec<u64>,
    /// First and last `imported` event.
    pub first_seq: u64,
    /// Last `imported` event.
    pub last_seq: u64,
    /// The checkpoint written after them.
    pub checkpoint: Checkpoint,
}

impl Journal {
    /// Imports paper-journal rows in one transaction: each becomes an `imported` event and a
    /// form row with its own number; numbers issued later continue after the highest. Refused
    /// as a whole, naming the line, when a number is zero, repeats, or is already in the
    /// journal, or when column 4 is empty.
    pub fn import(
        &mut self,
        rows: &[ImportRow],
        source: &str,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<ImportRecord> {
        if rows.is_empty() {
            return Err(Error::Refused(format!("{source} holds no rows to import")));
        }
        let mut seen = std::collections::HashMap::new();
        for r in rows {
            if r.row_no == 0 {
                return Err(Error::Refused(format!(
                    "{source}, line {}: the number must be 1 or more",
                    r.line
                )));
            }
            if let Some(first) = seen.insert(r.row_no, r.line) {
                return Err(Error::Refused(format!(
                    "{source}, line {}: number {} repeats line {first}; nothing imported",
                    r.line, r.row_no
                )));
            }
            if r.received.trim().is_empty() {
                return Err(Error::Refused(format!(
                    "{source}, line {}: column 4 (date, name and signature of the person who received the keys) is empty; nothing imported",
                    r.line
                )));
            }
        }
        let key = self.journal_key()?;
        self.write(actor, now, |w| {
            let mut first_seq = 0;
            let mut last_seq = 0;
            for r in rows {
                let taken: Option<String> = w
                    .tx()
                    .query_row(
                        "SELECT origin FROM form_rows WHERE row_no = ?1",
                        [r.row_no as i64],
                        |x| x.get(0),
                    )
                    .optional()
                    .map_err(db_err)?;
                if let Some(origin) = taken {
                    return Err(Error::Refused(format!(
                        "{source}, line {}: number {} is already in the journal ({origin}); nothing imported",
                        r.line, r.row_no
                    )));
                }
                let data = serde_json::json!({
                    "row_no": r.row_no,
                    "source": source,
                    "line": r.line,
                    "generated": r.generated,
                    "carrier": r.carrier,
                    "received": r.received,
                    "destroyed": r.destroyed,
                    "note": r.note,
                });
                let seq = w.append(EventKind::Imported, None, &data)?;
                if first_seq == 0 {
                    first_seq = seq;
                }
                last_seq = seq;
                let text = ImportedText {
                    generated: r.generated.clone(),
                    carrier: r.carrier.clone(),
                    received: r.received.clone(),
                    destroyed: r.destroyed.clone(),
                    note: r.note.clone(),
                };
                insert_imported_row(w.tx(), r.row_no, seq, &text)?;
            }
            let max = rows.iter().map(|r| r.row_no).max().unwrap_or(0);
            set_last_row_no(w.tx(), max)?;
            let checkpoint = w.checkpoint(&key)?;
            Ok(ImportRecord {
                rows: rows.len(),
                row_numbers: rows.iter().map(|r| r.row_no).collect(),
                first_seq,
                last_seq,
                checkpoint,
            })
        })
    }
}

/// The form row of an imported paper-journal row, recorded by event `seq`. Also used to
/// rebuild a journal from its events (`replica`).
pub(crate) fn insert_imported_row(
    conn: &rusqlite::Connection,
    row_no: u64,
    seq: u64,
    text: &ImportedText,
) -> Result<()> {
    let json = serde_json::to_string(text).map_err(|e| Error::JournalCorrupt(e.to_string()))?;
    conn.execute(
        "INSERT INTO form_rows (row_no, origin, seq, issued_on, key_set, imported)
         VALUES (?1, 'imported', ?2, ?3, '{}', ?4)",
        params![row_no as i64, seq as i64, first_date(&text.received), json],
    )
    .map_err(db_err)?;
    Ok(())
}

/// The first date in free text, as YYYY-MM-DD: `DD.MM.YYYY` (the Ukrainian way) or
/// `YYYY-MM-DD`.
pub(crate) fn first_date(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    for i in 0..b.len() {
        if i + 10 <= b.len() {
            let w = &b[i..i + 10];
            if digits(&w[0..2])
                && w[2] == b'.'
                && digits(&w[3..5])
                && w[5] == b'.'
                && digits(&w[6..10])
            {
                let s = std::str::from_utf8(w).ok()?;
                let candidate = format!("{}-{}-{}", &s[6..10], &s[3..5], &s[0..2]);
                if valid_date(&candidate) {
                    return Some(candidate);
                }
            }
            if digits(&w[0..4])
                && w[4] == b'-'
                && digits(&w[5..7])
                && w[7] == b'-'
                && digits(&w[8..10])
            {
                let s = std::str::from_utf8(w).ok()?;
                if valid_date(s) {
                    return Some(s.to_owned());
                }
            }
        }
    }
    None
}

fn valid_date(s: &str) -> bool {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_dates_in_free_text() {
        assert_eq!(
            first_date("12.03.2024, Петренко П.П., підпис").as_deref(),
            Some("2024-03-12")
        );
        assert_eq!(
            first_date("2023-01-31 Коваль").as_deref(),
            Some("2023-01-31")
        );
        assert_eq!(first_date("31.02.2024 wrong"), None);
        assert_eq!(first_date("без дати"), None);
    }
}
