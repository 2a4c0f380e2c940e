//! Issuing carriers to signers, revocation with the qualified trust service provider, and
//! importing an office's paper journal: the rows of the mandated form.
//!
//! Events written here (their `data` is JSON, documented on each type):
//! - `issued` ([`IssuedData`]): a carrier and the keys on it were handed to a signer; creates
//!   form row `row_no`.
//! - `issue_acknowledged`: a signed acknowledgement added later to an existing row.
//! - `revocation_requested`, `revocation_confirmed` ([`RevocationData`]).
//! - `imported` ([`ImportRow`]): one row of a paper journal, with its own number.
//!
//! Row numbers ("№ п/п") are stored when a row is created and never reused: the next number
//! is one more than the highest ever given out (meta `last_row_no`) or imported.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::checkpoint::Checkpoint;
use super::form::{Generated, GeneratedSource, ImportedText};
use super::{db_err, query, timestamp, Actor, Journal};
use crate::ack::{AckStatus, Acknowledgement, Statement};
use crate::error::{Error, Result};
use crate::id::RawBytes;
use crate::inventory::{CarrierSnapshot, KeyClass};

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
}

/// A key handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Public or private.
    pub class: KeyClass,
    /// CKA_ID.
    pub id: RawBytes,
    /// Key type name.
    pub key_type_name: String,
    /// Public-key fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_sha256: Option<String>,
    /// CKA_START_DATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// CKA_LOCAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
}

/// A certificate handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertEntry {
    /// SHA-256 of the DER.
    pub sha256: String,
    /// CKA_ID.
    pub id: RawBytes,
    /// Subject, when parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Holder named in it, when parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_name: Option<String>,
    /// notBefore (UTC), when parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// notAfter (UTC), when parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// The DER, hex, when it was read off the carrier at issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub der: Option<String>,
}

/// The keys and certificates handed over with a carrier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// Key objects (private keys when they were read, and public keys).
    pub keys: Vec<KeyEntry>,
    /// Certificates.
    pub certificates: Vec<CertEntry>,
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
                    "issue_acknowledged",
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
            let seq = w.append("issued", Some(&data.carrier.key), &data)?;
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

pub(crate) fn insert_issued_row(conn: &Connection, seq: u64, data: &IssuedData) -> Result<()> {
    let key_set =
        serde_json::to_string(&data.key_set).map_err(|e| Error::JournalCorrupt(e.to_string()))?;
    let source = match data.generated.source {
        GeneratedSource::KeyAttribute => "key_attribute",
        GeneratedSource::Certificate => "certificate",
        GeneratedSource::FirstSeen => "first_seen",
    };
    conn.execute(
        "INSERT INTO form_rows (row_no, origin, seq, carrier, generated_at, generated_source,
             manufacturer, model, serial, issued_on, holder_name, holder_position,
             holder_tax_number, key_set, ack_status, ack_seq)
         VALUES (?1, 'issued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            data.row_no as i64,
            seq as i64,
            data.carrier.key,
            data.generated.at,
            source,
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
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

/// The next row number: one more than any number ever given out or imported.
fn next_row_no(conn: &Connection) -> Result<u64> {
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

/// Finds exactly one carrier by serial or key, or refuses.
pub(crate) fn resolve_carrier(conn: &Connection, carrier: &str) -> Result<query::CarrierRow> {
    if carrier.is_empty() {
        return Err(Error::Refused(
            "no carrier given; name it by its serial (`custody journal list` shows them)".into(),
        ));
    }
    let mut found = query::carriers(conn, Some(carrier))?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Refused(format!(
            "unknown carrier {carrier:?}: the journal has no carrier with that serial; plug it in and run `custody scan`, or check the serial with `custody journal list`"
        ))),
        n => Err(Error::Refused(format!(
            "{n} carriers in the journal have the serial {carrier:?}; name one by its full key ({})",
            found.iter().map(|c| c.carrier.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
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

/// The latest `wipe_completed` event of a carrier: (seq, at, responsible).
pub(crate) fn last_wipe(
    conn: &Connection,
    carrier: &str,
) -> Result<Option<(u64, String, Option<String>)>> {
    conn.query_row(
        "SELECT seq, at, data FROM events WHERE carrier = ?1 AND kind = 'wipe_completed'
         ORDER BY seq DESC LIMIT 1",
        [carrier],
        |r| {
            let data: String = r.get(2)?;
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, responsible_of(&data)))
        },
    )
    .optional()
    .map_err(db_err)
}

/// The `responsible` field of a wipe event's data.
pub(crate) fn responsible_of(data: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()?
        .get("responsible")?
        .as_str()
        .map(str::to_owned)
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
    let snapshot: String = conn
        .query_row(
            "SELECT snapshot FROM carrier_snapshots WHERE carrier = ?1",
            [&key],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    let snapshot: CarrierSnapshot = serde_json::from_str(&snapshot)
        .map_err(|e| Error::JournalCorrupt(format!("carrier {key}: {e}")))?;
    let key_set = key_set_of(&snapshot);
    if key_set.keys.is_empty() && key_set.certificates.is_empty() {
        return Err(Error::Refused(format!(
            "carrier {} holds no keys or certificates (as last scanned); there is nothing to issue. Generate the keys on it and run `custody scan`",
            carrier.serial
        )));
    }
    let mut warnings = Vec::new();
    let holder = holder_of(req, &snapshot, &mut warnings)?;
    let issued_on = req.date.unwrap_or_else(|| now.date());
    let issued_on = format!(
        "{:04}-{:02}-{:02}",
        issued_on.year(),
        u8::from(issued_on.month()),
        issued_on.day()
    );
    // Issued already (since the last destruction)?
    let wipe_seq = wipe.as_ref().map(|w| w.0).unwrap_or(0);
    type Active = (i64, i64, String, String, Option<String>, Option<String>);
    let active: Option<Active> = conn
        .query_row(
            "SELECT row_no, seq, issued_on, holder_name, holder_tax_number, ack_status
             FROM form_rows WHERE carrier = ?1 AND origin = 'issued' AND seq > ?2
             ORDER BY seq DESC LIMIT 1",
            params![key, wipe_seq as i64],
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
    let row_no = match &existing {
        Some(e) => e.row_no,
        None => next_row_no(conn)?,
    };
    let generated = generated_of(&snapshot, &key_set, &carrier.first_seen);
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

fn key_set_of(s: &CarrierSnapshot) -> KeySet {
    let keys = s
        .private_keys
        .iter()
        .flatten()
        .chain(&s.public_keys)
        .map(|k| KeyEntry {
            class: k.class,
            id: k.id.clone(),
            key_type_name: k.key_type_name.clone(),
            public_key_sha256: k.public_key_sha256.clone(),
            start_date: k.start_date.clone(),
            local: k.local,
        })
        .collect();
    let certificates = s
        .certificates
        .iter()
        .map(|c| {
            let info = c.info.as_ref();
            CertEntry {
                sha256: c.sha256.clone(),
                id: c.id.clone(),
                subject: info.map(|i| i.subject.clone()),
                holder_name: info.and_then(|i| i.holder_name.clone()),
                not_before: info.map(|i| timestamp(i.not_before)),
                not_after: info.map(|i| timestamp(i.not_after)),
                der: None,
            }
        })
        .collect();
    KeySet { keys, certificates }
}

fn holder_of(
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
    let (name, name_source) = match (given(&req.holder), &cert_name) {
        (Some(n), _) => (n, "option"),
        (None, Some(n)) => (n.clone(), "certificate"),
        (None, None) => {
            return Err(Error::Refused(
                "no holder name: the carrier's certificate names none; give it with --holder \"Full Name\"".into(),
            ))
        }
    };
    let (tax_number, tax_number_source) = match (given(&req.tax_number), &cert_tax) {
        (Some(t), _) => (Some(t), Some("option")),
        (None, Some(t)) => (Some(t.clone()), Some("certificate")),
        (None, None) => (None, None),
    };
    if let (Some(t), Some(c)) = (&tax_number, &cert_tax) {
        if t != c {
            return Err(Error::Refused(format!(
                "the certificate on this carrier belongs to tax number {c}, not {t}; handing keys over to another person is forbidden"
            )));
        }
    }
    if let Some(c) = &cert_name {
        if name_source == "option" && !same_name(&name, c) {
            warnings.push(format!(
                "the holder name {name:?} differs from the name in the certificate {c:?}"
            ));
        }
    }
    Ok(Holder {
        name,
        name_source: name_source.into(),
        position: given(&req.position),
        tax_number,
        tax_number_source: tax_number_source.map(Into::into),
    })
}

/// Column 2: CKA_START_DATE of the keys (private keys first), else the earliest notBefore
/// of the certificates, else when the carrier was first seen.
fn generated_of(s: &CarrierSnapshot, key_set: &KeySet, first_seen: &str) -> Generated {
    let private = s
        .private_keys
        .iter()
        .flatten()
        .filter_map(|k| k.start_date.clone())
        .min();
    let any = key_set
        .keys
        .iter()
        .filter_map(|k| k.start_date.clone())
        .min();
    if let Some(d) = private.or(any) {
        return Generated {
            at: d,
            source: GeneratedSource::KeyAttribute,
        };
    }
    if let Some(nb) = key_set
        .certificates
        .iter()
        .filter_map(|c| c.not_before.clone())
        .min()
    {
        return Generated {
            at: nb,
            source: GeneratedSource::Certificate,
        };
    }
    Generated {
        at: first_seen.to_owned(),
        source: GeneratedSource::FirstSeen,
    }
}

// ---------------------------------------------------------------------------------------
// Revocation

/// The step with the qualified trust service provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationStep {
    /// Revocation was requested from the provider.
    Requested,
    /// The provider confirmed the revocation.
    Confirmed,
}

impl RevocationStep {
    /// The event kind.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Requested => "revocation_requested",
            Self::Confirmed => "revocation_confirmed",
        }
    }
}

/// Records one revocation step of one certificate (`''` for the whole carrier) in the
/// revocations table; the first request and the first confirmation are kept.
pub(crate) fn record_revocation_row(
    conn: &Connection,
    step: RevocationStep,
    carrier: &str,
    sha: &str,
    data: &RevocationData,
    seq: u64,
) -> Result<()> {
    let sql = match step {
        RevocationStep::Requested => {
            "INSERT INTO revocations (carrier, cert_sha256, requested_on, requested_ref, requested_seq)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (carrier, cert_sha256) DO UPDATE SET requested_on = excluded.requested_on,
               requested_ref = excluded.requested_ref, requested_seq = excluded.requested_seq
             WHERE requested_seq IS NULL"
        }
        RevocationStep::Confirmed => {
            "INSERT INTO revocations (carrier, cert_sha256, confirmed_on, confirmed_ref, confirmed_seq)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (carrier, cert_sha256) DO UPDATE SET confirmed_on = excluded.confirmed_on,
               confirmed_ref = excluded.confirmed_ref, confirmed_seq = excluded.confirmed_seq
             WHERE confirmed_seq IS NULL"
        }
    };
    conn.execute(
        sql,
        params![carrier, sha, data.date, data.reference, seq as i64],
    )
    .map_err(db_err)?;
    Ok(())
}

/// What `custody revocation requested|confirmed` asks for.
#[derive(Debug, Clone, Default)]
pub struct RevocationRequest {
    /// Carrier serial or key.
    pub carrier: String,
    /// A certificate fingerprint (SHA-256 hex, at least 8 characters; colons allowed);
    /// default: every certificate of the carrier.
    pub cert: Option<String>,
    /// The reference: the request's or the provider's letter number, ticket, etc.
    pub reference: String,
    /// Date of the step; default: today (UTC).
    pub date: Option<time::Date>,
}

/// The data of a `revocation_requested` / `revocation_confirmed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationData {
    /// SHA-256 of the certificates concerned (empty: the carrier holds no known certificate).
    pub certificates: Vec<String>,
    /// The reference.
    pub reference: String,
    /// Date, YYYY-MM-DD.
    pub date: String,
}

/// What recording a revocation step did.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationRecord {
    /// The event.
    pub seq: u64,
    /// The step.
    pub step: RevocationStep,
    /// The carrier key.
    pub carrier: String,
    /// What was recorded.
    pub data: RevocationData,
}

fn date_text(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl Journal {
    /// Records a revocation step for a carrier's certificates. Refused: unknown carrier, a
    /// fingerprint that matches none (or several) of its certificates, a step already
    /// recorded for every certificate concerned.
    pub fn record_revocation(
        &mut self,
        step: RevocationStep,
        req: &RevocationRequest,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<RevocationRecord> {
        if req.reference.trim().is_empty() {
            return Err(Error::Refused(
                "the reference is empty; give the letter or ticket number with --ref".into(),
            ));
        }
        self.write(actor, now, |w| {
            let carrier = resolve_carrier(w.tx(), req.carrier.trim())?;
            let mut known: Vec<String> = {
                let mut stmt = w
                    .tx()
                    .prepare("SELECT sha256 FROM certificates WHERE carrier = ?1")
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map([&carrier.carrier], |r| r.get::<_, String>(0))
                    .map_err(db_err)?;
                rows.collect::<std::result::Result<_, _>>().map_err(db_err)?
            };
            let sets: Vec<String> = {
                let mut stmt = w
                    .tx()
                    .prepare("SELECT key_set FROM form_rows WHERE carrier = ?1")
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map([&carrier.carrier], |r| r.get::<_, String>(0))
                    .map_err(db_err)?;
                rows.collect::<std::result::Result<_, _>>().map_err(db_err)?
            };
            for s in sets {
                if let Ok(ks) = serde_json::from_str::<KeySet>(&s) {
                    known.extend(ks.certificates.into_iter().map(|c| c.sha256));
                }
            }
            known.sort();
            known.dedup();
            let certificates = match &req.cert {
                Some(fpr) => {
                    let want: String = fpr
                        .chars()
                        .filter(|c| !matches!(c, ':' | ' '))
                        .flat_map(char::to_lowercase)
                        .collect();
                    if want.len() < 8 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(Error::Refused(format!(
                            "{fpr:?} is not a certificate fingerprint: give at least 8 hex characters of its SHA-256"
                        )));
                    }
                    let hits: Vec<String> =
                        known.iter().filter(|k| k.starts_with(&want)).cloned().collect();
                    match hits.len() {
                        1 => hits,
                        0 => return Err(Error::Refused(format!(
                            "no certificate of carrier {} has the fingerprint {fpr}; `custody journal show {}` lists them",
                            carrier.serial, carrier.serial
                        ))),
                        _ => return Err(Error::Refused(format!(
                            "the fingerprint {fpr} matches several certificates; give more characters"
                        ))),
                    }
                }
                None => known.clone(),
            };
            let rows: Vec<String> = if certificates.is_empty() {
                vec![String::new()]
            } else {
                certificates.clone()
            };
            let date = date_text(req.date.unwrap_or_else(|| now.date()));
            let reference = req.reference.trim().to_owned();
            let mut fresh = 0;
            for sha in &rows {
                let state: Option<(Option<i64>, Option<i64>)> = w
                    .tx()
                    .query_row(
                        "SELECT requested_seq, confirmed_seq FROM revocations WHERE carrier = ?1 AND cert_sha256 = ?2",
                        params![carrier.carrier, sha],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(db_err)?;
                let done = matches!(
                    (step, state),
                    (RevocationStep::Requested, Some((Some(_), _)))
                        | (RevocationStep::Confirmed, Some((_, Some(_))))
                );
                if !done {
                    fresh += 1;
                }
            }
            if fresh == 0 {
                return Err(Error::Refused(format!(
                    "revocation {} is already recorded for {} of carrier {}; nothing recorded",
                    match step {
                        RevocationStep::Requested => "request",
                        RevocationStep::Confirmed => "confirmation",
                    },
                    if certificates.is_empty() { "the carrier".to_owned() } else { format!("{} certificate(s)", certificates.len()) },
                    carrier.serial
                )));
            }
            let data = RevocationData {
                certificates,
                reference,
                date,
            };
            let seq = w.append(step.kind(), Some(&carrier.carrier), &data)?;
            for sha in &rows {
                record_revocation_row(w.tx(), step, &carrier.carrier, sha, &data, seq)?;
            }
            Ok(RevocationRecord {
                seq,
                step,
                carrier: carrier.carrier,
                data,
            })
        })
    }
}

// ---------------------------------------------------------------------------------------
// Import

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
                let seq = w.append("imported", None, &data)?;
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

/// The form row of an imported paper-journal row, recorded by event `seq`.
pub(crate) fn insert_imported_row(
    conn: &Connection,
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

// ---------------------------------------------------------------------------------------
// Certificates kept for export

/// A certificate kept in the journal (read off a carrier when it was issued).
#[derive(Debug, Clone, Serialize)]
pub struct StoredCertificate {
    /// SHA-256 of the DER.
    pub sha256: String,
    /// The DER.
    #[serde(skip)]
    pub der: Vec<u8>,
    /// The carrier it was on.
    pub carrier: Option<String>,
    /// The holder it was issued to.
    pub issued_to: Option<String>,
    /// The holder named in the certificate, when parsed.
    pub holder_name: Option<String>,
}

impl Journal {
    /// Every certificate the journal keeps (DER), oldest first.
    pub fn stored_certificates(&self) -> Result<Vec<StoredCertificate>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT f.sha256, f.der, f.carrier, f.holder_name,
                        (SELECT c.holder_name FROM certificates c WHERE c.sha256 = f.sha256 LIMIT 1)
                 FROM certificate_files f ORDER BY f.seq",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredCertificate {
                    sha256: r.get(0)?,
                    der: r.get(1)?,
                    carrier: r.get(2)?,
                    issued_to: r.get(3)?,
                    holder_name: r.get(4)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }

    /// The holder named in a certificate the journal has seen on a carrier, when parsed.
    pub fn holder_of_certificate(&self, sha256: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT holder_name FROM certificates WHERE sha256 = ?1 AND holder_name IS NOT NULL LIMIT 1",
                [sha256],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::super::checkpoint::JournalKey;
    use super::*;

    #[test]
    fn names_compare_without_case_spacing_or_apostrophe_variants() {
        assert!(same_name("Мар’яна  КОВАЛЬ", "мар'яна коваль"));
        assert!(!same_name("Іван Петренко", "Петро Іваненко"));
    }

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

    #[test]
    fn a_schema_1_journal_is_upgraded_and_keeps_its_events() {
        let dir = std::env::temp_dir().join(format!("custody-v1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("v1.db");
        {
            let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
            conn.execute_batch(include_str!("sql/0001_initial.sql"))
                .unwrap_or_else(|e| panic!("{e}"));
            conn.execute_batch(&format!(
                "INSERT INTO meta VALUES ('journal_id', 'v1-journal');
                 PRAGMA application_id = {};
                 PRAGMA user_version = 1;",
                super::super::APPLICATION_ID
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(j.journal_id(), "v1-journal");
        let version: u32 = j
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap_or_default();
        assert_eq!(version, super::super::migrations::LATEST);
        let cp = j
            .checkpoint(&Actor::current(None), OffsetDateTime::UNIX_EPOCH)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((cp.count, cp.seq), (0, 1));
        assert!(j.verify_checkpoints(None).map(|r| r.ok()).unwrap_or(false));
        assert!(j.form(&Default::default()).unwrap_or_default().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn key_file_is_mode_0600_and_reused() {
        let dir = std::env::temp_dir().join(format!("custody-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = JournalKey::path_for(&dir.join("journal.db"));
        assert!(path.ends_with("journal.db.key"));
        let a = JournalKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        let b = JournalKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.public_key_hex(), b.public_key_hex());
        assert!(!format!("{a:?}").contains(
            &std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_owned()
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = JournalKey::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("chmod 600"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
