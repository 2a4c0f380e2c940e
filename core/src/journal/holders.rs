//! Holders as people: the records HR keeps of the persons carriers are issued to (full
//! name, position, unit, tax number, e-ID document number), imported from HR's lists, linked
//! to by issuance, and the certificates of the key sets they hold now.
//!
//! Event written here: `holder_recorded` ([`HolderRecorded`]), one per new or changed person;
//! the `holders` table is its current state, re-derived by `journal verify`. A holder is
//! identified by the tax number (RNOKPP), else by the e-ID document number (a person who
//! refused a tax number): [`HolderRecord::id`].

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::checkpoint::Checkpoint;
use super::keyset::KeySet;
use super::{db_err, Actor, EventKind, Journal};
use crate::error::{Error, Result};

/// One person, as HR lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// Full name (П.І.Б.).
    pub full_name: String,
    /// Position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Unit (department).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Tax number (RNOKPP), 10 digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_number: Option<String>,
    /// Number of the e-ID document (ID card or passport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eid_document: Option<String>,
}

impl HolderRecord {
    /// The holder's identity: `tax:NNNNNNNNNN`, else `doc:NUMBER`; `None` with neither.
    pub fn id(&self) -> Option<String> {
        self.tax_number
            .as_deref()
            .map(|t| format!("tax:{t}"))
            .or_else(|| self.eid_document.as_deref().map(|d| format!("doc:{d}")))
    }
}

/// The data of a `holder_recorded` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecorded {
    /// The holder's identity ([`HolderRecord::id`]).
    pub id: String,
    /// The record as now known.
    pub holder: HolderRecord,
    /// The file it came from.
    pub source: String,
    /// Its line there.
    pub line: u64,
}

/// One line of an HR list to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderLine {
    /// Line in the file (for error messages).
    pub line: u64,
    /// The person.
    pub holder: HolderRecord,
}

/// What an import of holders did.
#[derive(Debug, Clone, Serialize)]
pub struct HolderImport {
    /// Persons not known before.
    pub added: usize,
    /// Persons whose record changed.
    pub updated: usize,
    /// Persons already recorded exactly so.
    pub unchanged: usize,
    /// The events written (`holder_recorded`), in file order.
    pub seqs: Vec<u64>,
    /// The checkpoint written after them (none when nothing changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// A holder and the key sets issued to them.
#[derive(Debug, Clone, Serialize)]
pub struct HolderRow {
    /// Identity.
    pub id: String,
    /// The record.
    #[serde(flatten)]
    pub holder: HolderRecord,
    /// The last `holder_recorded` event.
    pub seq: u64,
    /// Form rows issued to this holder (linked at issuance).
    pub rows: Vec<u64>,
}

/// Checks one record: a name, and a tax number (10 digits) or an e-ID document number.
pub fn check(h: &HolderRecord) -> std::result::Result<(), String> {
    if !h.full_name.chars().any(char::is_alphabetic) {
        return Err("the full name is empty".into());
    }
    if let Some(t) = &h.tax_number {
        if t.len() != 10 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("the tax number (РНОКПП) {t:?} is not 10 digits"));
        }
    }
    if let Some(d) = &h.eid_document {
        if d.chars().count() > 32 || d.chars().any(char::is_control) {
            return Err(format!(
                "the document number {d:?} is not a document number"
            ));
        }
    }
    if h.id().is_none() {
        return Err("neither a tax number (РНОКПП) nor an e-ID document number".into());
    }
    Ok(())
}

fn record_of(conn: &Connection, id: &str) -> Result<Option<HolderRecord>> {
    conn.query_row(
        "SELECT full_name, position, unit, tax_number, eid_document FROM holders WHERE holder_id = ?1",
        [id],
        |r| {
            Ok(HolderRecord {
                full_name: r.get(0)?,
                position: r.get(1)?,
                unit: r.get(2)?,
                tax_number: r.get(3)?,
                eid_document: r.get(4)?,
            })
        },
    )
    .optional()
    .map_err(db_err)
}

/// Writes the state of a `holder_recorded` event. Also used to rebuild a journal from its
/// events.
pub(crate) fn store(conn: &Connection, seq: u64, d: &HolderRecorded) -> Result<()> {
    let h = &d.holder;
    conn.execute(
        "INSERT INTO holders (holder_id, full_name, position, unit, tax_number, eid_document,
             recorded_seq, updated_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (holder_id) DO UPDATE SET full_name = excluded.full_name,
             position = excluded.position, unit = excluded.unit,
             tax_number = excluded.tax_number, eid_document = excluded.eid_document,
             updated_seq = excluded.updated_seq",
        params![
            d.id,
            h.full_name,
            h.position,
            h.unit,
            h.tax_number,
            h.eid_document,
            seq as i64
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

/// The holder with this tax number or document number (as typed, or as `tax:…`/`doc:…`).
pub(crate) fn find(conn: &Connection, key: &str) -> Result<Option<(String, HolderRecord)>> {
    let key = key.trim();
    for id in [key.to_owned(), format!("tax:{key}"), format!("doc:{key}")] {
        if let Some(h) = record_of(conn, &id)? {
            return Ok(Some((id, h)));
        }
    }
    Ok(None)
}

/// A certificate of a key set a person holds now, for registry work.
#[derive(Debug, Clone, Serialize)]
pub struct HeldCertificate {
    /// The form row of the key set.
    pub row_no: u64,
    /// The holder as issued.
    pub holder_name: String,
    /// The holder record linked at issuance, if any.
    pub holder_id: Option<String>,
    /// Tax number as issued.
    pub tax_number: Option<String>,
    /// Carrier key.
    pub carrier: String,
    /// SHA-256 of the DER.
    pub sha256: String,
    /// notAfter (UTC), when parsed.
    pub not_after: Option<String>,
    /// The DER.
    #[serde(skip)]
    pub der: Vec<u8>,
}

impl Journal {
    /// Imports HR's list in one transaction: a `holder_recorded` event for every person not
    /// recorded yet or recorded otherwise; persons not in the list are left as they are.
    /// Refused as a whole, naming the line, when a record is incomplete or a person appears
    /// twice.
    pub fn import_holders(
        &mut self,
        lines: &[HolderLine],
        source: &str,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<HolderImport> {
        if lines.is_empty() {
            return Err(Error::Refused(format!("{source} lists no holders")));
        }
        let mut seen = std::collections::HashMap::new();
        for l in lines {
            check(&l.holder).map_err(|e| {
                Error::Refused(format!("{source}, line {}: {e}; nothing imported", l.line))
            })?;
            let id = l.holder.id().unwrap_or_default();
            if let Some(first) = seen.insert(id.clone(), l.line) {
                return Err(Error::Refused(format!(
                    "{source}, line {}: the same person ({id}) as line {first}; nothing imported",
                    l.line
                )));
            }
        }
        let key = self.journal_key()?;
        self.write(actor, now, |w| {
            let mut out = HolderImport {
                added: 0,
                updated: 0,
                unchanged: 0,
                seqs: Vec::new(),
                checkpoint: None,
            };
            for l in lines {
                let id = l.holder.id().unwrap_or_default();
                match record_of(w.tx(), &id)? {
                    Some(old) if old == l.holder => {
                        out.unchanged += 1;
                        continue;
                    }
                    Some(_) => out.updated += 1,
                    None => out.added += 1,
                }
                let data = HolderRecorded {
                    id,
                    holder: l.holder.clone(),
                    source: source.to_owned(),
                    line: l.line,
                };
                let seq = w.append(EventKind::HolderRecorded, None, &data)?;
                store(w.tx(), seq, &data)?;
                out.seqs.push(seq);
            }
            if !out.seqs.is_empty() {
                out.checkpoint = Some(w.checkpoint(&key)?);
            }
            Ok(out)
        })
    }

    /// Every holder, by name, with the form rows issued to them.
    pub fn holders(&self) -> Result<Vec<HolderRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT h.holder_id, h.full_name, h.position, h.unit, h.tax_number, h.eid_document,
                        h.updated_seq,
                        (SELECT group_concat(row_no) FROM
                            (SELECT row_no FROM form_rows f WHERE f.holder_id = h.holder_id ORDER BY row_no))
                 FROM holders h ORDER BY h.full_name, h.holder_id",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                let rows: Option<String> = r.get(7)?;
                Ok(HolderRow {
                    id: r.get(0)?,
                    holder: HolderRecord {
                        full_name: r.get(1)?,
                        position: r.get(2)?,
                        unit: r.get(3)?,
                        tax_number: r.get(4)?,
                        eid_document: r.get(5)?,
                    },
                    seq: r.get::<_, i64>(6)? as u64,
                    rows: rows
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|n| n.parse().ok())
                        .collect(),
                })
            })
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }

    /// The certificates of every key set a person holds now: issued, neither destroyed nor
    /// gone from its carrier, its certificate kept (read off the carrier at issuance) and its
    /// revocation not confirmed. By row number.
    pub fn held_certificates(&self) -> Result<Vec<HeldCertificate>> {
        let mut out = Vec::new();
        for row in self.form(&super::FormFilter::default())? {
            if row.issued_seq.is_none() || row.destruction.is_some() || row.vanished.is_some() {
                continue;
            }
            let Some(carrier) = row.carrier.clone() else {
                continue;
            };
            let (key_set, holder_id): (String, Option<String>) = self
                .conn
                .query_row(
                    "SELECT key_set, holder_id FROM form_rows WHERE row_no = ?1",
                    [row.row_no as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db_err)?;
            let key_set: KeySet = serde_json::from_str(&key_set)
                .map_err(|e| Error::JournalCorrupt(format!("form row {}: {e}", row.row_no)))?;
            for c in &key_set.certificates {
                let revoked = row.revocations.iter().any(|n| {
                    n.confirmed_on.is_some()
                        && (n.cert_sha256 == c.sha256 || n.cert_sha256.is_empty())
                });
                if revoked {
                    continue;
                }
                let der: Option<Vec<u8>> = self
                    .conn
                    .query_row(
                        "SELECT der FROM certificate_files WHERE sha256 = ?1",
                        [&c.sha256],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db_err)?;
                let Some(der) = der else { continue };
                out.push(HeldCertificate {
                    row_no: row.row_no,
                    holder_name: row.holder_name.clone().unwrap_or_default(),
                    holder_id: holder_id.clone(),
                    tax_number: row.holder_tax_number.clone(),
                    carrier: carrier.clone(),
                    sha256: c.sha256.clone(),
                    not_after: c.not_after.clone(),
                    der,
                });
            }
        }
        Ok(out)
    }
}
