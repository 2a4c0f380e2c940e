//! Numbering key sets: every key set custody sees gets its row of the mandated form ("№ п/п")
//! when it is first seen, issued or not.
//!
//! A key set is what a carrier holds between two destructions: its keys and certificates.
//! When a scan step adds keys or certificates to a carrier, the step opens a new row unless
//! the carrier's latest row still describes what it holds:
//! - no row of this carrier yet: new row;
//! - a completed wipe of the carrier after its latest row, or nothing of the latest row's
//!   key set left on the carrier (re-initialised, deleted by hand, replaced): new row when
//!   the carrier holds an object that row does not list (a public key left over by a
//!   `destroy-keys` wipe opens nothing);
//! - otherwise (a certificate written next to its key, a private key read with a PIN) the
//!   latest row stays the key set's row.
//!
//! The row is recorded in the data of the step's last event under `key_set_row`
//! ([`KeySetRow`]), so the number is in the hash chain from the moment the keys were seen,
//! and `journal verify` re-derives the row from it. This module decides and writes the row;
//! it never appends an event of its own.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::form::next_row_no;
use super::issue::IssuedCarrier;
use super::keyset::{generated_of, key_set_of, source_text, Generated, KeySet};
use super::{db_err, Journal};
use crate::error::{Error, Result};
use crate::inventory::CarrierSnapshot;

/// The data key under which a scan event carries the row it opened.
pub(crate) const FIELD: &str = "key_set_row";

/// A form row opened by a scan: a key set custody had not seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySetRow {
    /// Its number, "№ п/п".
    pub row_no: u64,
    /// The carrier (column 3).
    pub carrier: IssuedCarrier,
    /// Column 2: when the keys were generated, and where that came from.
    pub generated: Generated,
    /// The keys and certificates as seen.
    pub key_set: KeySet,
}

/// The identities of a key set's objects: public-key fingerprints (else class and CKA_ID)
/// and certificate fingerprints.
fn objects(ks: &KeySet) -> BTreeSet<String> {
    ks.keys
        .iter()
        .map(|k| match &k.public_key_sha256 {
            Some(f) => format!("key:{f}"),
            None => format!("id:{:?}:{}", k.class, k.id.hex()),
        })
        .chain(ks.certificates.iter().map(|c| format!("cert:{}", c.sha256)))
        .collect()
}

/// The latest row of a carrier: (row_no, seq, key set).
fn latest_row(conn: &Connection, carrier: &str) -> Result<Option<(u64, u64, KeySet)>> {
    let row: Option<(i64, i64, String)> = conn
        .query_row(
            "SELECT row_no, seq, key_set FROM form_rows WHERE carrier = ?1
             ORDER BY seq DESC LIMIT 1",
            [carrier],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db_err)?;
    row.map(|(n, s, ks)| {
        let ks: KeySet = serde_json::from_str(&ks)
            .map_err(|e| Error::JournalCorrupt(format!("form row {n}: key set: {e}")))?;
        Ok((n as u64, s as u64, ks))
    })
    .transpose()
}

fn wiped_after(conn: &Connection, carrier: &str, seq: u64) -> Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM events WHERE carrier = ?1
         AND kind IN ('wipe_completed', 'remote_key_destroyed') AND seq > ?2)",
        params![carrier, seq as i64],
        |r| r.get(0),
    )
    .map_err(db_err)
}

/// The carrier's live row: its latest row when that still describes what the carrier holds
/// (`now`): not wiped since, and sharing an object with it. (row_no, seq).
pub(crate) fn live_row(
    conn: &Connection,
    carrier: &str,
    now: &KeySet,
) -> Result<Option<(u64, u64)>> {
    let Some((row_no, seq, ks)) = latest_row(conn, carrier)? else {
        return Ok(None);
    };
    if wiped_after(conn, carrier, seq)? || objects(&ks).is_disjoint(&objects(now)) {
        return Ok(None);
    }
    Ok(Some((row_no, seq)))
}

/// The row a scan step opens for carrier `key`, now holding `snap`, seen at `at`; `None`
/// when its key set already has a row (see the module's rules).
pub(crate) fn opened_by(
    conn: &Connection,
    key: &str,
    snap: &CarrierSnapshot,
    at: &str,
) -> Result<Option<KeySetRow>> {
    let key_set = key_set_of(snap);
    let now = objects(&key_set);
    if now.is_empty() {
        return Ok(None);
    }
    if let Some((_, seq, old)) = latest_row(conn, key)? {
        let old = objects(&old);
        let ended = wiped_after(conn, key, seq)? || old.is_disjoint(&now);
        if !ended || now.is_subset(&old) {
            return Ok(None);
        }
    }
    let generated = generated_of(snap, &key_set, at);
    Ok(Some(KeySetRow {
        row_no: next_row_no(conn)?,
        carrier: IssuedCarrier {
            key: key.to_owned(),
            manufacturer: snap.id.manufacturer.clone(),
            model: snap.id.model.clone(),
            serial: snap.id.serial.clone(),
            label: snap.label.clone(),
        },
        generated,
        key_set,
    }))
}

/// Writes the row opened by event `seq`. Also used to rebuild a journal from its events.
pub(crate) fn insert_row(conn: &Connection, seq: u64, row: &KeySetRow) -> Result<()> {
    let key_set =
        serde_json::to_string(&row.key_set).map_err(|e| Error::JournalCorrupt(e.to_string()))?;
    conn.execute(
        "INSERT INTO form_rows (row_no, origin, seq, carrier, generated_at, generated_source,
             manufacturer, model, serial, key_set)
         VALUES (?1, 'seen', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            row.row_no as i64,
            seq as i64,
            row.carrier.key,
            row.generated.at,
            source_text(row.generated.source),
            row.carrier.manufacturer,
            row.carrier.model,
            row.carrier.serial,
            key_set,
        ],
    )
    .map_err(db_err)?;
    super::form::set_last_row_no(conn, row.row_no)
}

/// The row an event's data carries, if any.
pub(crate) fn row_in(data: &serde_json::Value) -> Option<std::result::Result<KeySetRow, String>> {
    let v = data.get(FIELD)?;
    Some(serde_json::from_value(v.clone()).map_err(|e| e.to_string()))
}

impl Journal {
    /// The row number of the key set carrier `carrier` holds now (as last scanned), when it
    /// has one.
    pub fn live_row_of(&self, carrier: &str) -> Result<Option<u64>> {
        let Some(snap) = self.snapshot(carrier)? else {
            return Ok(None);
        };
        Ok(live_row(&self.conn, carrier, &key_set_of(&snap))?.map(|(n, _)| n))
    }
}
