//! What an upgrade does beyond its SQL: giving a form row to every key set custody saw
//! before schema 4 numbered key sets as it saw them.
//!
//! Schema 4 opens a row when a scan first shows a key set. A journal written by an older
//! custody holds key sets it saw but never issued, which had no row; migration 6 marks the
//! journal (meta `upgrade:number_key_sets`), and the first open for writing after it numbers
//! each of them, in the order custody saw them (the seq of the event that first showed the
//! key set, then the carrier key), after the highest number ever used, so no number is
//! reused. Each row is recorded in the hash chain as a `note` event of its carrier carrying
//! the row (`key_set_row`, as a scan's event would), so `journal verify` re-derives it; a
//! signed checkpoint follows. The marker goes in the same transaction: an interrupted upgrade
//! is done again by the next open, a finished one never.
//!
//! The same rule as a scan decides ([`super::numbering::opened_by`]): a carrier whose latest
//! row still describes what it holds, or that holds nothing, or only what a wipe left of its
//! last row's key set, gets no row. Key sets destroyed before the upgrade are not numbered
//! here: the carrier's events show what was wiped, not a key set as a scan saw it.

use rusqlite::{Connection, OptionalExtension};
use time::OffsetDateTime;

use super::numbering::{self, KeySetRow};
use super::{db_err, load_snapshot, Actor, EventKind, Journal, JournalKey};
use crate::error::{Error, Result};

/// The meta key migration 6 sets; removed once the key sets are numbered.
pub(crate) const MARKER: &str = "upgrade:number_key_sets";

/// What the `note` event that numbers a key set says.
const NOTE: &str =
    "key set seen before this journal numbered key sets as it saw them (schema 4): numbered at the upgrade";

fn pending(conn: &Connection) -> Result<bool> {
    conn.query_row("SELECT 1 FROM meta WHERE key = ?1", [MARKER], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
        .map_err(db_err)
}

/// The carriers with a snapshot, in the order custody saw what they hold now: the first
/// `key_added`/`cert_added` event after the carrier's last re-initialisation or wipe (else
/// its enrolment), then the carrier key. (carrier, that event's time).
fn carriers_in_order(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare(
            "WITH ended AS (
                 SELECT c.carrier,
                        (SELECT coalesce(max(seq), 0) FROM events e
                          WHERE e.carrier = c.carrier
                            AND e.kind IN ('carrier_reinitialised', 'wipe_completed',
                                           'remote_key_destroyed')) AS after,
                        c.enrolled_seq
                 FROM carriers c JOIN carrier_snapshots s ON s.carrier = c.carrier),
             seen AS (
                 SELECT carrier,
                        coalesce((SELECT min(seq) FROM events e
                                   WHERE e.carrier = ended.carrier
                                     AND e.kind IN ('key_added', 'cert_added')
                                     AND e.seq > ended.after), enrolled_seq) AS seq
                 FROM ended)
             SELECT seen.carrier, coalesce(e.at, '') FROM seen
             LEFT JOIN events e ON e.seq = seen.seq
             ORDER BY seen.seq, seen.carrier",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<(String, String)>>>()
        .map_err(db_err)?;
    Ok(rows)
}

impl Journal {
    /// Numbers the key sets seen before schema 4 when migration 6 asked for it (see the
    /// module); nothing otherwise. The rows opened, in order.
    pub(crate) fn number_key_sets_seen_before(&mut self) -> Result<Vec<KeySetRow>> {
        if !pending(&self.conn)? {
            return Ok(Vec::new());
        }
        let key_path = self.key_path();
        self.write(&Actor::current(None), OffsetDateTime::now_utc(), |w| {
            // Another process may have done it since the check above.
            if !pending(w.tx())? {
                return Ok(Vec::new());
            }
            let mut opened = Vec::new();
            for (carrier, seen_at) in carriers_in_order(w.tx())? {
                let snap = load_snapshot(w.tx(), &carrier)?;
                let Some(row) = numbering::opened_by(w.tx(), &carrier, &snap, &seen_at)? else {
                    continue;
                };
                let mut data = serde_json::json!({ "text": NOTE });
                let value =
                    serde_json::to_value(&row).map_err(|e| Error::JournalCorrupt(e.to_string()))?;
                if let Some(map) = data.as_object_mut() {
                    map.insert(numbering::FIELD.into(), value);
                }
                let seq = w.append(EventKind::Note, Some(&carrier), &data)?;
                numbering::insert_row(w.tx(), seq, &row)?;
                opened.push(row);
            }
            if !opened.is_empty() {
                w.checkpoint(&JournalKey::load_or_create(&key_path)?)?;
            }
            w.tx()
                .execute("DELETE FROM meta WHERE key = ?1", [MARKER])
                .map_err(db_err)?;
            Ok(opened)
        })
    }
}

#[cfg(test)]
mod tests;
