//! Issuing carriers to signers: the `issued` rows of the mandated form.
//!
//! Events written here (their `data` is JSON, documented on each type):
//! - `issued` ([`IssuedData`]): a carrier and the keys on it were handed to a signer; creates
//!   form row `row_no`.
//! - `issue_acknowledged`: a signed acknowledgement added later to an existing row.
//!
//! Row numbers ("№ п/п") are stored when a row is created and never reused (see `form`).

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::checkpoint::Checkpoint;
use super::form::{next_row_no, set_last_row_no};
use super::keyset::{generated_of, key_set_of, source_text, Generated, KeySet};
use super::query::{last_wipe, resolve_carrier};
use super::{db_err, timestamp, Actor, EventKind, Journal};
use crate::ack::{AckStatus, Acknowledgement, Statement};
use crate::error::{Error, Result};
use crate::inventory::CarrierSnapshot;

/// What `custody issue` asks for.
#[derive(Debug, Clone, Default)]
pub struct IssueRequest {
    /// The carrier: its serial, or its full key `manufacturer/model/serial`.
    pub carrier: String,
    /// The holder's full name; default: the holder named in the carrier's certificate.
    pub holder: Option<String>,
    /// The holder's position.
    pub position: Option<String>,
    /// The holder's tax number; default: the one in the certificate.
    pub tax_number: Option<String>,
    /// The holder record (see `custody holder import`) to link: its tax number or e-ID
    /// document number. Default: the record with the holder's tax number, when there is one.
    pub holder_record: Option<String>,
    /// Date of handover; default: today (UTC).
    pub date: Option<time::Date>,
    /// The certificates read off the carrier (DER), kept for `cert export` and for checking
    /// acknowledgements. Certificates not in the carrier's recorded key set are ignored.
    pub certificates: Vec<Vec<u8>>,
}

/// The person a carrier is issued to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Full name.
    pub name: String,
    /// `option` (given by the operator) or `certificate`.
    pub name_source: String,
    /// Position, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Tax number (RNOKPP / DRFO), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_number: Option<String>,
    /// `option` or `certificate`, when there is a tax number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_number_source: Option<String>,
    /// The holder record linked (`tax:…` or `doc:…`), when HR's list names this person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The holder's unit, from the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The carrier as recorded in an `issued` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCarrier {
    /// Carrier key.
    pub key: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial.
    pub serial: String,
    /// Label.
    pub label: String,
}

/// The data of an `issued` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedData {
    /// Form row number.
    pub row_no: u64,
    /// Date of handover, YYYY-MM-DD.
    pub issued_on: String,
    /// The holder.
    pub holder: Holder,
    /// The carrier.
    pub carrier: IssuedCarrier,
    /// Column 2: when the keys were generated, and where that came from.
    pub generated: Generated,
    /// What was handed over.
    pub key_set: KeySet,
    /// The holder's signed acknowledgement, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledgement: Option<Acknowledgement>,
    /// Warnings shown to the operator when recording.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// An issuance that already exists for the same carrier and holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExistingIssue {
    /// Its row number.
    pub row_no: u64,
    /// Its event.
    pub seq: u64,
    /// Its date.
    pub issued_on: String,
    /// Whether it carries an acknowledgement.
    pub acknowledged: bool,
}

/// A checked issuance, ready to be signed (acknowledgement) and recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuePlan {
    /// What the `issued` event will hold (without the acknowledgement).
    pub data: IssuedData,
    /// The statement the holder signs for an acknowledgement.
    pub statement: Statement,
    /// Set when this carrier is already issued to the same person: recording again adds
    /// nothing (except a missing acknowledgement).
    pub existing: Option<ExistingIssue>,
}

impl IssuePlan {
    /// The carrier's identity.
    pub fn carrier(&self) -> crate::id::CarrierId {
        crate::id::CarrierId {
            manufacturer: self.data.carrier.manufacturer.clone(),
            model: self.data.carrier.model.clone(),
            serial: self.data.carrier.serial.clone(),
            discriminator: self
                .data
                .carrier
                .key
                .split_once('#')
                .map(|(_, d)| d.to_owned()),
        }
    }
}

/// What recording an issuance did.
#[derive(Debug, Clone, Serialize)]
pub struct IssueRecord {
    /// Form row number.
    pub row_no: u64,
    /// The `issued` event (or the existing one).
    pub seq: u64,
    /// True when the carrier was already issued to this person and no row was added.
    pub already_issued: bool,
    /// The `issue_acknowledged` event, when an acknowledgement was added to an existing row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_seq: Option<u64>,
    /// What was recorded.
    pub data: IssuedData,
    /// The checkpoint written after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

impl Journal {
    /// Checks an issuance without writing: resolves the carrier, refuses (with
    /// [`Error::Refused`]) unknown, destroyed, empty carriers and carriers issued to someone
    /// else, fills the holder from the certificate, numbers the row and builds the
    /// statement an acknowledgement signs.
    pub fn plan_issue(&self, req: &IssueRequest, now: OffsetDateTime) -> Result<IssuePlan> {
        plan(&self.conn, &self.journal_id, req, now)
    }

    /// Records an issuance planned by [`Journal::plan_issue`] with the same request and
    /// `now` (it is planned again inside the transaction and must come out the same), with an
    /// optional acknowledgement made by [`crate::ack::verify`] over `plan.statement`; then
    /// writes a checkpoint.
    pub fn issue(
        &mut self,
        req: &IssueRequest,
        ack: Option<Acknowledgement>,
        actor: &Actor,
        now: OffsetDateTime,
        expected: &IssuePlan,
    ) -> Result<IssueRecord> {
        let key = self.journal_key()?;
        let journal_id = self.journal_id.clone();
        self.write(actor, now, |w| {
            let plan = plan(w.tx(), &journal_id, req, now)?;
            if &plan != expected {
                return Err(Error::Refused(
                    "the journal changed while the issuance was being prepared; run the command again".into(),
                ));
            }
            if let Some(ack) = &ack {
                if ack.message != plan.statement.message() {
                    return Err(Error::Refused(
                        "the acknowledgement was signed over a different statement; nothing was recorded".into(),
                    ));
                }
                if !plan
                    .data
                    .key_set
                    .certificates
                    .iter()
                    .any(|c| c.sha256 == ack.cert_sha256)
                {
                    return Err(Error::Refused(
                        "the acknowledgement was made with a key whose certificate is not in the key set handed over; nothing was recorded".into(),
                    ));
                }
            }
            let mut data = plan.data.clone();
            if let Some(existing) = &plan.existing {
                let Some(ack) = ack.filter(|_| !existing.acknowledged) else {
                    return Ok(IssueRecord {
                        row_no: existing.row_no,
                        seq: existing.seq,
                        already_issued: true,
                        acknowledged_seq: None,
                        data,
                        checkpoint: None,
                    });
                };
                let seq = w.append(
                    EventKind::IssueAcknowledged,
                    Some(&data.carrier.key),
                    &serde_json::json!({ "row_no": existing.row_no, "acknowledgement": ack }),
                )?;
                w.tx()
                    .execute(
                        "UPDATE form_rows SET ack_status = ?1, ack_seq = ?2 WHERE row_no = ?3",
                        params![status_text(ack.status), seq as i64, existing.row_no as i64],
                    )
                    .map_err(db_err)?;
                data.acknowledgement = Some(ack);
                let cp = w.checkpoint(&key)?;
                return Ok(IssueRecord {
                    row_no: existing.row_no,
                    seq: existing.seq,
                    already_issued: true,
                    acknowledged_seq: Some(seq),
                    data,
                    checkpoint: Some(cp),
                });
            }
            data.acknowledgement = ack;
            // Keep the certificates read off the carrier with the event and in the store.
            for der in &req.certificates {
                let sha = crate::cert::sha256_hex(der);
                if let Some(c) = data
                    .key_set
                    .certificates
                    .iter_mut()
                    .find(|c| c.sha256 == sha)
                {
                    c.der = Some(hex::encode(der));
                }
            }
            let seq = w.append(EventKind::Issued, Some(&data.carrier.key), &data)?;
            insert_issued_row(w.tx(), seq, &data)?;
            for c in &data.key_set.certificates {
                let Some(der) = c.der.as_deref().and_then(|d| hex::decode(d).ok()) else {
                    continue;
                };
                w.tx()
                    .execute(
                        "INSERT OR IGNORE INTO certificate_files (sha256, der, carrier, holder_name, seq)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![c.sha256, der, data.carrier.key, data.holder.name, seq as i64],
                    )
                    .map_err(db_err)?;
            }
            set_last_row_no(w.tx(), data.row_no)?;
            let cp = w.checkpoint(&key)?;
            Ok(IssueRecord {
                row_no: data.row_no,
                seq,
                already_issued: false,
                acknowledged_seq: None,
                data,
                checkpoint: Some(cp),
            })
        })
    }
}

pub(crate) fn status_text(s: AckStatus) -> &'static str {
    match s {
        AckStatus::Verified => "verified",
        AckStatus::NotVerified => "not_verified",
    }
}

/// Records the issuance of event `seq` in its form row: the row a scan opened for the key
/// set (origin `seen`, not issued yet) gets columns 4, the handed-over key set and column 2
/// as recomputed at issuance; without such a row (a key set seen before schema 4) the row is
/// created. Also used to rebuild a journal from its events (`replica`).
pub(crate) fn insert_issued_row(conn: &Connection, seq: u64, data: &IssuedData) -> Result<()> {
    let key_set =
        serde_json::to_string(&data.key_set).map_err(|e| Error::JournalCorrupt(e.to_string()))?;
    let changed = conn
        .execute(
            "INSERT INTO form_rows (row_no, origin, seq, carrier, generated_at, generated_source,
                 manufacturer, model, serial, issued_on, holder_name, holder_position,
                 holder_tax_number, key_set, ack_status, ack_seq, issued_seq, holder_id)
             VALUES (?1, 'issued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?2,
                 ?16)
             ON CONFLICT (row_no) DO UPDATE SET
                 generated_at = excluded.generated_at, generated_source = excluded.generated_source,
                 manufacturer = excluded.manufacturer, model = excluded.model,
                 serial = excluded.serial, issued_on = excluded.issued_on,
                 holder_name = excluded.holder_name, holder_position = excluded.holder_position,
                 holder_tax_number = excluded.holder_tax_number, key_set = excluded.key_set,
                 ack_status = excluded.ack_status, ack_seq = excluded.ack_seq,
                 issued_seq = excluded.issued_seq, holder_id = excluded.holder_id
             WHERE form_rows.origin = 'seen' AND form_rows.issued_seq IS NULL
                 AND form_rows.carrier = excluded.carrier",
            params![
                data.row_no as i64,
                seq as i64,
                data.carrier.key,
                data.generated.at,
                source_text(data.generated.source),
                data.carrier.manufacturer,
                data.carrier.model,
                data.carrier.serial,
                data.issued_on,
                data.holder.name,
                data.holder.position,
                data.holder.tax_number,
                key_set,
                data.acknowledgement.as_ref().map(|a| status_text(a.status)),
                data.acknowledgement.as_ref().map(|_| seq as i64),
                data.holder.record,
            ],
        )
        .map_err(db_err)?;
    if changed != 1 {
        return Err(Error::JournalCorrupt(format!(
            "issued #{seq}: form row {} is taken by another key set",
            data.row_no
        )));
    }
    Ok(())
}

/// Folds case and runs of spaces (and the several apostrophes of Ukrainian names), so that
/// "ІВАНЕНКО  Іван" and "Іваненко Іван" are the same person.
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split_whitespace()
            .map(|w| {
                w.chars()
                    .map(|c| match c {
                        '\u{2019}' | '\u{02bc}' | '`' | '\u{2018}' => '\'',
                        c => c,
                    })
                    .flat_map(char::to_lowercase)
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    norm(a) == norm(b)
}

fn plan(
    conn: &Connection,
    journal_id: &str,
    req: &IssueRequest,
    now: OffsetDateTime,
) -> Result<IssuePlan> {
    let carrier = resolve_carrier(conn, req.carrier.trim())?;
    let key = carrier.carrier.clone();
    // Destroyed: a completed wipe with no key added since.
    let wipe = last_wipe(conn, &key)?;
    if let Some((wseq, wat, responsible)) = &wipe {
        let key_after: Option<i64> = conn
            .query_row(
                "SELECT max(seq) FROM events WHERE carrier = ?1 AND kind = 'key_added' AND seq > ?2",
                params![key, *wseq as i64],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if key_after.is_none() {
            return Err(Error::Refused(format!(
                "carrier {} was destroyed (wipe completed {}{}, event #{wseq}); its keys no longer exist. Generate new keys on it and run `custody scan` before issuing it again",
                carrier.serial,
                wat,
                responsible
                    .as_deref()
                    .map(|r| format!(", responsible {r}"))
                    .unwrap_or_default()
            )));
        }
    }
    // The key set handed over is what the events record on the carrier (see `carrier`).
    let snapshot: CarrierSnapshot =
        super::carrier::recorded_snapshot(conn, &key)?.ok_or_else(|| {
            Error::Refused(format!(
                "no event enrolled carrier {} (the carriers table was changed outside custody); run `custody journal verify`",
                carrier.serial
            ))
        })?;
    let key_set = key_set_of(&snapshot);
    if key_set.keys.is_empty() && key_set.certificates.is_empty() {
        return Err(Error::Refused(format!(
            "carrier {} holds no keys or certificates (as last scanned); there is nothing to issue. Generate the keys on it and run `custody scan`",
            carrier.serial
        )));
    }
    let mut warnings = Vec::new();
    let holder = holder_of(conn, req, &snapshot, &mut warnings)?;
    let issued_on = req.date.unwrap_or_else(|| now.date());
    let issued_on = format!(
        "{:04}-{:02}-{:02}",
        issued_on.year(),
        u8::from(issued_on.month()),
        issued_on.day()
    );
    // The key set's row (numbered when a scan first saw it), and whether it is issued.
    let live = super::numbering::live_row(conn, &key, &key_set)?;
    type Active = (i64, i64, String, String, Option<String>, Option<String>);
    let active: Option<Active> = conn
        .query_row(
            "SELECT row_no, issued_seq, issued_on, holder_name, holder_tax_number, ack_status
             FROM form_rows WHERE row_no = ?1 AND issued_seq IS NOT NULL",
            params![live.map(|(n, _)| n as i64)],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .optional()
        .map_err(db_err)?;
    let mut existing = None;
    if let Some((row_no, seq, on, name, tax, ack)) = active {
        let same_tax = match (&tax, &holder.tax_number) {
            (Some(a), Some(b)) => a.trim() == b.trim(),
            _ => true,
        };
        if !(same_tax && same_name(&name, &holder.name)) {
            return Err(Error::Refused(format!(
                "carrier {} is already issued to {name} (row {row_no}, {on}); handing keys over to another person is forbidden. Destroy the keys (wipe) and issue a carrier with new keys instead",
                carrier.serial
            )));
        }
        existing = Some(ExistingIssue {
            row_no: row_no as u64,
            seq: seq as u64,
            issued_on: on,
            acknowledged: ack.is_some(),
        });
    }
    let (row_no, first_seen) = match (&existing, live) {
        (Some(e), _) => (e.row_no, carrier.first_seen.clone()),
        (None, Some((row_no, seq))) => (row_no, event_time(conn, seq)?),
        (None, None) => (next_row_no(conn)?, carrier.first_seen.clone()),
    };
    let generated = generated_of(&snapshot, &key_set, &first_seen);
    let mut keys: Vec<String> = key_set
        .keys
        .iter()
        .map(|k| {
            k.public_key_sha256
                .clone()
                .unwrap_or_else(|| format!("id:{}", k.id.hex()))
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut certificates: Vec<String> = key_set
        .certificates
        .iter()
        .map(|c| c.sha256.clone())
        .collect();
    certificates.sort();
    certificates.dedup();
    let statement = Statement {
        journal_id: journal_id.to_owned(),
        row_no,
        carrier: key.clone(),
        keys,
        certificates,
        holder: holder.name.clone(),
        position: holder.position.clone(),
        tax_number: holder.tax_number.clone(),
        date: issued_on.clone(),
        at: timestamp(now),
    };
    Ok(IssuePlan {
        data: IssuedData {
            row_no,
            issued_on,
            holder,
            carrier: IssuedCarrier {
                key,
                manufacturer: carrier.manufacturer,
                model: carrier.model,
                serial: carrier.serial,
                label: carrier.label,
            },
            generated,
            key_set,
            acknowledgement: None,
            warnings,
        },
        statement,
        existing,
    })
}

/// When event `seq` was recorded.
fn event_time(conn: &Connection, seq: u64) -> Result<String> {
    conn.query_row("SELECT at FROM events WHERE seq = ?1", [seq as i64], |r| {
        r.get(0)
    })
    .map_err(db_err)
}

fn holder_of(
    conn: &Connection,
    req: &IssueRequest,
    s: &CarrierSnapshot,
    warnings: &mut Vec<String>,
) -> Result<Holder> {
    let infos: Vec<&crate::cert::CertInfo> = s
        .certificates
        .iter()
        .filter_map(|c| c.info.as_ref())
        .collect();
    let cert_name = infos.iter().find_map(|i| i.holder_name.clone());
    let cert_tax = infos
        .iter()
        .find_map(|i| i.tax_number.as_ref().map(|t| t.value.clone()));
    let given = |o: &Option<String>| {
        o.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    // The holder record named, else the one with the tax number given or certified.
    let record = match given(&req.holder_record) {
        Some(key) => Some(super::holders::find(conn, &key)?.ok_or_else(|| {
            Error::Refused(format!(
                "no holder record {key:?}: give the tax number or e-ID document number of a person in HR's list (`custody holder list`; import it with `custody holder import FILE.csv`)"
            ))
        })?),
        None => match given(&req.tax_number).or_else(|| cert_tax.clone()) {
            Some(t) => super::holders::find(conn, &format!("tax:{t}"))?,
            None => None,
        },
    };
    let record_tax = record.as_ref().and_then(|(_, h)| h.tax_number.clone());
    let (name, name_source) = match (given(&req.holder), &record, &cert_name) {
        (Some(n), _, _) => (n, "option"),
        (None, Some((_, h)), _) => (h.full_name.clone(), "record"),
        (None, None, Some(n)) => (n.clone(), "certificate"),
        (None, None, None) => {
            return Err(Error::Refused(
                "no holder name: the carrier's certificate names none; give it with --holder \"Full Name\" or --holder-record TAX_NUMBER".into(),
            ))
        }
    };
    let (tax_number, tax_number_source) = match (given(&req.tax_number), &record_tax, &cert_tax) {
        (Some(t), _, _) => (Some(t), Some("option")),
        (None, Some(t), _) => (Some(t.clone()), Some("record")),
        (None, None, Some(t)) => (Some(t.clone()), Some("certificate")),
        (None, None, None) => (None, None),
    };
    if let (Some(t), Some(r)) = (&tax_number, &record_tax) {
        if t != r {
            return Err(Error::Refused(format!(
                "the holder record belongs to tax number {r}, not {t}; name the right person"
            )));
        }
    }
    if let (Some(t), Some(c)) = (&tax_number, &cert_tax) {
        if t != c {
            return Err(Error::Refused(format!(
                "the certificate on this carrier belongs to tax number {c}, not {t}; handing keys over to another person is forbidden"
            )));
        }
    }
    if let Some(c) = &cert_name {
        if name_source != "certificate" && !same_name(&name, c) {
            warnings.push(format!(
                "the holder name {name:?} differs from the name in the certificate {c:?}"
            ));
        }
    }
    if let Some((_, h)) = &record {
        if !same_name(&name, &h.full_name) {
            warnings.push(format!(
                "the holder name {name:?} differs from HR's record {:?}",
                h.full_name
            ));
        }
    }
    let from_record =
        |f: fn(&super::HolderRecord) -> Option<String>| record.as_ref().and_then(|(_, h)| f(h));
    Ok(Holder {
        name,
        name_source: name_source.into(),
        position: given(&req.position).or_else(|| from_record(|h| h.position.clone())),
        tax_number,
        tax_number_source: tax_number_source.map(Into::into),
        record: record.as_ref().map(|(id, _)| id.clone()),
        unit: from_record(|h| h.unit.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_without_case_spacing_or_apostrophe_variants() {
        assert!(same_name("Мар’яна  КОВАЛЬ", "мар'яна коваль"));
        assert!(!same_name("Іван Петренко", "Петро Іваненко"));
    }
}
