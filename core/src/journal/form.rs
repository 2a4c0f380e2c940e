//! The journal in its mandated form: one [`FormRow`] per key set custody has seen (issued or
//! not, destroyed or not) and per row imported from a paper journal, with the five columns'
//! data. Rendering (CSV, HTML, JSON, languages) is the agent's job.
//!
//! Column 5 comes from the first `wipe_completed` event of the row's carrier after the row
//! was opened (and before the carrier's next row): its time and its data field
//! `responsible` (a string). A key set that left its carrier without a recorded destruction
//! (re-initialised by hand, replaced) is named by [`FormRow::vanished`].

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::keyset::{Generated, GeneratedSource, KeySet};
use super::query::responsible_of;
use super::{db_err, Journal};
use crate::ack::AckStatus;
use crate::error::{Error, Result};

/// Column 5, from a `wipe_completed` (or `remote_key_destroyed`) event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destruction {
    /// When the wipe completed (UTC).
    pub at: String,
    /// The person responsible, from the destruction order.
    pub responsible: Option<String>,
    /// The `wipe_completed` event (the verification evidence) or `remote_key_destroyed`.
    pub seq: u64,
    /// For a key in a provider's HSM: the provider's deletion and its evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<super::RemoteDestruction>,
}

/// A revocation step concerning a row's certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationNote {
    /// Certificate (SHA-256), empty for the whole carrier.
    pub cert_sha256: String,
    /// Requested on (YYYY-MM-DD).
    pub requested_on: Option<String>,
    /// Request reference.
    pub requested_ref: Option<String>,
    /// Confirmed on.
    pub confirmed_on: Option<String>,
    /// Confirmation reference.
    pub confirmed_ref: Option<String>,
}

/// The paper journal's text of an imported row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedText {
    /// Column 2.
    pub generated: String,
    /// Column 3.
    pub carrier: String,
    /// Column 4.
    pub received: String,
    /// Column 5.
    pub destroyed: String,
    /// Notes.
    #[serde(default)]
    pub note: String,
}

/// The acknowledgement of an issued row, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckSummary {
    /// Verified or not.
    pub status: AckStatus,
    /// Signature algorithm.
    pub algorithm: String,
    /// Why not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Certificate checked against.
    pub cert_sha256: String,
    /// The event holding it.
    pub seq: u64,
}

/// How a key set left its carrier without a recorded destruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vanished {
    /// The event that showed it: `carrier_reinitialised`, or the event that opened the
    /// carrier's next row.
    pub kind: crate::event::EventKind,
    /// That event.
    pub seq: u64,
    /// Its time (UTC).
    pub at: String,
    /// The carrier's next row, when a new key set replaced this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_row: Option<u64>,
}

/// One row of the mandated form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormRow {
    /// Column 1: "№ п/п", stable and never reused.
    pub row_no: u64,
    /// `seen` (numbered by a scan when the key set was first seen), `issued` (numbered at
    /// issuance: a key set seen before schema 4) or `imported` (paper journal).
    pub origin: String,
    /// The event that created the row.
    pub seq: u64,
    /// When the row was created (UTC): for `seen` rows, when custody first saw the key set.
    pub seen_at: String,
    /// The `issued` event, once the key set is issued.
    pub issued_seq: Option<u64>,
    /// Carrier key (issued rows).
    pub carrier: Option<String>,
    /// Column 2 (issued rows).
    pub generated: Option<Generated>,
    /// Column 3: manufacturer.
    pub manufacturer: Option<String>,
    /// Column 3: model.
    pub model: Option<String>,
    /// Column 3: serial.
    pub serial: Option<String>,
    /// Column 4: date of handover, YYYY-MM-DD.
    pub issued_on: Option<String>,
    /// Column 4: holder.
    pub holder_name: Option<String>,
    /// Column 4: position.
    pub holder_position: Option<String>,
    /// Column 4: tax number.
    pub holder_tax_number: Option<String>,
    /// Column 4: the digital acknowledgement, if any (else a hand signature is due).
    pub acknowledgement: Option<AckSummary>,
    /// Column 5.
    pub destruction: Option<Destruction>,
    /// The key set left its carrier without a recorded destruction.
    pub vanished: Option<Vanished>,
    /// Revocation steps for the row's certificates.
    pub revocations: Vec<RevocationNote>,
    /// The paper journal's text (imported rows).
    pub imported: Option<ImportedText>,
}

/// Which rows to export: by date of handover (column 4), inclusive; a key set not issued is
/// dated by the day custody first saw it (UTC). Imported rows whose column 4 names no date
/// are left out when a bound is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct FormFilter {
    /// First day.
    pub from: Option<time::Date>,
    /// Last day.
    pub to: Option<time::Date>,
}

impl FormFilter {
    fn keeps(&self, issued_on: Option<&str>) -> bool {
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        let Some(d) = issued_on.and_then(|d| {
            time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]")).ok()
        }) else {
            return false;
        };
        self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d <= t)
    }
}

type RawRow = (
    i64,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    [Option<String>; 7],
    String,
    Option<i64>,
    Option<String>,
    Option<i64>,
    String,
);

impl Journal {
    /// The rows of the mandated form, by number.
    pub fn form(&self, filter: &FormFilter) -> Result<Vec<FormRow>> {
        form(&self.conn, filter)
    }
}

fn form(conn: &Connection, filter: &FormFilter) -> Result<Vec<FormRow>> {
    let raw: Vec<RawRow> = {
        let mut stmt = conn
            .prepare(
                "SELECT row_no, origin, seq, carrier, generated_at, generated_source,
                        manufacturer, model, serial, issued_on, holder_name, holder_position,
                        holder_tax_number, key_set, ack_seq, imported, issued_seq,
                        (SELECT at FROM events WHERE events.seq = form_rows.seq)
                 FROM form_rows ORDER BY row_no",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    [
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                        r.get(11)?,
                        r.get(12)?,
                    ],
                    r.get(13)?,
                    r.get(14)?,
                    r.get(15)?,
                    r.get(16)?,
                    r.get(17)?,
                ))
            })
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(db_err)?
    };
    let mut out = Vec::new();
    for (
        row_no,
        origin,
        seq,
        carrier,
        gen_at,
        gen_source,
        cols,
        key_set,
        ack_seq,
        imported,
        issued_seq,
        seen_at,
    ) in raw
    {
        let [manufacturer, model, serial, issued_on, holder_name, holder_position, holder_tax_number] =
            cols;
        let dated = match (&issued_on, origin.as_str()) {
            (None, "seen") => seen_at.get(..10),
            (d, _) => d.as_deref(),
        };
        if !filter.keeps(dated) {
            continue;
        }
        let corrupt = |what: &str| Error::JournalCorrupt(format!("form row {row_no}: {what}"));
        let generated = match (gen_at, gen_source.as_deref()) {
            (Some(at), Some(s)) => Some(Generated {
                at,
                source: match s {
                    "key_attribute" => GeneratedSource::KeyAttribute,
                    "certificate" => GeneratedSource::Certificate,
                    "first_seen" => GeneratedSource::FirstSeen,
                    _ => return Err(corrupt("unknown generated_source")),
                },
            }),
            _ => None,
        };
        let acknowledgement = match ack_seq {
            Some(s) => ack_of(conn, s as u64)?,
            None => None,
        };
        let (destruction, revocations, vanished) = match &carrier {
            Some(c) => {
                let next: Option<(i64, i64)> = conn
                    .query_row(
                        "SELECT seq, row_no FROM form_rows WHERE carrier = ?1 AND seq > ?2
                         ORDER BY seq LIMIT 1",
                        params![c, seq],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(db_err)?;
                let (next, next_row) = next.unwrap_or((i64::MAX, 0));
                let key_set: KeySet = serde_json::from_str(&key_set)
                    .map_err(|e| corrupt(&format!("key set: {e}")))?;
                let destruction = destruction_of(conn, c, seq, next)?;
                let vanished = match &destruction {
                    Some(_) => None,
                    None => vanished_of(conn, c, seq, next, next_row as u64)?,
                };
                (
                    destruction,
                    revocations_of(conn, c, seq, next, &key_set)?,
                    vanished,
                )
            }
            None => (None, Vec::new(), None),
        };
        let imported = imported
            .map(|t| serde_json::from_str::<ImportedText>(&t))
            .transpose()
            .map_err(|e| corrupt(&format!("imported text: {e}")))?;
        out.push(FormRow {
            row_no: row_no as u64,
            origin,
            seq: seq as u64,
            seen_at,
            issued_seq: issued_seq.map(|s| s as u64),
            carrier,
            generated,
            manufacturer,
            model,
            serial,
            issued_on,
            holder_name,
            holder_position,
            holder_tax_number,
            acknowledgement,
            destruction,
            vanished,
            revocations,
            imported,
        });
    }
    Ok(out)
}

fn ack_of(conn: &Connection, seq: u64) -> Result<Option<AckSummary>> {
    let data: String = conn
        .query_row(
            "SELECT data FROM events WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    let v: serde_json::Value =
        serde_json::from_str(&data).map_err(|e| Error::JournalCorrupt(e.to_string()))?;
    let Some(a) = v.get("acknowledgement").filter(|a| !a.is_null()) else {
        return Ok(None);
    };
    let ack: crate::ack::Acknowledgement = serde_json::from_value(a.clone())
        .map_err(|e| Error::JournalCorrupt(format!("acknowledgement in event #{seq}: {e}")))?;
    Ok(Some(AckSummary {
        status: ack.status,
        algorithm: ack.algorithm,
        reason: ack.reason,
        cert_sha256: ack.cert_sha256,
        seq,
    }))
}

fn destruction_of(
    conn: &Connection,
    carrier: &str,
    after: i64,
    before: i64,
) -> Result<Option<Destruction>> {
    let row: Option<(i64, String, String)> = conn
        .query_row(
            "SELECT seq, at, data FROM events WHERE carrier = ?1
             AND kind IN ('wipe_completed', 'remote_key_destroyed')
             AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT 1",
            params![carrier, after, before],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(db_err)?;
    Ok(row.map(|(seq, at, data)| Destruction {
        at,
        responsible: responsible_of(&data),
        seq: seq as u64,
        remote: serde_json::from_str::<super::RemoteDestruction>(&data).ok(),
    }))
}

/// How a key set without a recorded destruction left its carrier: re-initialised, or
/// replaced by the key set of the carrier's next row (`next`, `next_row`).
fn vanished_of(
    conn: &Connection,
    carrier: &str,
    after: i64,
    next: i64,
    next_row: u64,
) -> Result<Option<Vanished>> {
    let reinit: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, at FROM events WHERE carrier = ?1 AND kind = 'carrier_reinitialised'
             AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT 1",
            params![carrier, after, next],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err)?;
    if let Some((seq, at)) = reinit {
        return Ok(Some(Vanished {
            kind: crate::event::EventKind::CarrierReinitialised,
            seq: seq as u64,
            at,
            next_row: (next_row > 0).then_some(next_row),
        }));
    }
    if next_row == 0 {
        return Ok(None);
    }
    let (kind, at): (crate::event::EventKind, String) = conn
        .query_row("SELECT kind, at FROM events WHERE seq = ?1", [next], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(db_err)?;
    Ok(Some(Vanished {
        kind,
        seq: next as u64,
        at,
        next_row: Some(next_row),
    }))
}

fn revocations_of(
    conn: &Connection,
    carrier: &str,
    after: i64,
    before: i64,
    key_set: &KeySet,
) -> Result<Vec<RevocationNote>> {
    let mut stmt = conn
        .prepare(
            "SELECT cert_sha256, requested_on, requested_ref, confirmed_on, confirmed_ref
             FROM revocations WHERE carrier = ?1
               AND ((requested_seq > ?2 AND requested_seq < ?3) OR (confirmed_seq > ?2 AND confirmed_seq < ?3))
             ORDER BY coalesce(requested_seq, confirmed_seq), cert_sha256",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![carrier, after, before], |r| {
            Ok(RevocationNote {
                cert_sha256: r.get(0)?,
                requested_on: r.get(1)?,
                requested_ref: r.get(2)?,
                confirmed_on: r.get(3)?,
                confirmed_ref: r.get(4)?,
            })
        })
        .map_err(db_err)?;
    let all: Vec<RevocationNote> = rows
        .collect::<std::result::Result<_, _>>()
        .map_err(db_err)?;
    Ok(all
        .into_iter()
        .filter(|n| {
            n.cert_sha256.is_empty()
                || key_set.certificates.is_empty()
                || key_set
                    .certificates
                    .iter()
                    .any(|c| c.sha256 == n.cert_sha256)
        })
        .collect())
}

/// The next row number: one more than any number ever given out or imported.
pub(crate) fn next_row_no(conn: &Connection) -> Result<u64> {
    let last: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'last_row_no'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    let last: u64 = last.and_then(|l| l.parse().ok()).unwrap_or(0);
    let max: i64 = conn
        .query_row("SELECT coalesce(max(row_no), 0) FROM form_rows", [], |r| {
            r.get(0)
        })
        .map_err(db_err)?;
    Ok(last.max(max.max(0) as u64) + 1)
}

/// Remembers `row_no` as given out, when it is the highest so far.
pub(crate) fn set_last_row_no(conn: &Connection, row_no: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('last_row_no', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value
         WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
        [row_no.to_string()],
    )
    .map_err(db_err)?;
    Ok(())
}
