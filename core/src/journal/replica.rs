//! A journal rebuilt in memory from another copy of its events (the organisation's, see
//! `crate::fleet`): the events are loaded verbatim, the chain is checked, and the state the
//! mandated form reads (form rows of key sets seen, issued and imported, acknowledgements,
//! revocations) is derived from the events
//! with the journal's own row functions, so that the organisation's form is the same
//! [`FormRow`](super::FormRow)s the workstation prints.

use rusqlite::{params, Connection};
use serde::Deserialize;

use super::{
    chain, db_err, form, import, issue, migrations, numbering, revocation, ChainEvent, Journal,
};
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Acknowledged {
    row_no: u64,
    acknowledgement: crate::ack::Acknowledgement,
}

#[derive(Deserialize)]
struct Imported {
    row_no: u64,
    generated: String,
    carrier: String,
    received: String,
    destroyed: String,
    #[serde(default)]
    note: String,
}

impl Journal {
    /// An in-memory journal holding `events`, the events of journal `journal_id` from seq 1
    /// on. Refused when they do not form an unbroken chain.
    pub fn replica(journal_id: &str, events: &[ChainEvent]) -> Result<Self> {
        let mut conn = Connection::open_in_memory().map_err(db_err)?;
        migrations::migrate(&mut conn)?;
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'journal_id'",
            [journal_id],
        )
        .map_err(db_err)?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO events (seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(db_err)?;
            for e in events {
                insert
                    .execute(params![
                        e.seq as i64,
                        e.at,
                        e.kind,
                        e.carrier,
                        e.os_user,
                        e.operator,
                        e.host,
                        e.data,
                        &e.prev_hash[..],
                        &e.hash[..]
                    ])
                    .map_err(db_err)?;
                derive(&tx, e)?;
            }
        }
        tx.commit().map_err(db_err)?;
        let report = chain::verify(&conn, journal_id)?;
        if let Some(bad) = report.first_bad {
            return Err(Error::JournalCorrupt(format!(
                "the copy of journal {journal_id} is broken at event #{}: {}",
                bad.seq, bad.reason
            )));
        }
        Ok(Self {
            conn,
            path: ":memory:".into(),
            journal_id: journal_id.to_owned(),
            last_commit: None,
            wal_pages: super::wal::WalPages::default(),
        })
    }
}

/// The state one event adds to what the form reads.
fn derive(conn: &Connection, e: &ChainEvent) -> Result<()> {
    let corrupt =
        |what: &str| Error::JournalCorrupt(format!("event #{} ({}): {what}", e.seq, e.kind));
    use crate::event::EventKind;
    let kind = |k: EventKind| e.kind == k.as_str();
    if e.data.contains(numbering::FIELD) {
        let data: serde_json::Value =
            serde_json::from_str(&e.data).map_err(|x| corrupt(&x.to_string()))?;
        if let Some(row) = numbering::row_in(&data) {
            numbering::insert_row(conn, e.seq, &row.map_err(|x| corrupt(&x))?)?;
        }
    }
    match () {
        () if kind(EventKind::Issued) => {
            let data: issue::IssuedData =
                serde_json::from_str(&e.data).map_err(|x| corrupt(&x.to_string()))?;
            issue::insert_issued_row(conn, e.seq, &data)?;
            form::set_last_row_no(conn, data.row_no)?;
        }
        () if kind(EventKind::IssueAcknowledged) => {
            let data: Acknowledged =
                serde_json::from_str(&e.data).map_err(|x| corrupt(&x.to_string()))?;
            conn.execute(
                "UPDATE form_rows SET ack_status = ?1, ack_seq = ?2 WHERE row_no = ?3",
                params![
                    issue::status_text(data.acknowledgement.status),
                    e.seq as i64,
                    data.row_no as i64
                ],
            )
            .map_err(db_err)?;
        }
        () if kind(EventKind::RevocationRequested) || kind(EventKind::RevocationConfirmed) => {
            let data: revocation::RevocationData =
                serde_json::from_str(&e.data).map_err(|x| corrupt(&x.to_string()))?;
            let carrier = e.carrier.as_deref().ok_or_else(|| corrupt("no carrier"))?;
            let step = if kind(EventKind::RevocationRequested) {
                revocation::RevocationStep::Requested
            } else {
                revocation::RevocationStep::Confirmed
            };
            let rows = if data.certificates.is_empty() {
                vec![String::new()]
            } else {
                data.certificates.clone()
            };
            for sha in &rows {
                revocation::record_revocation_row(conn, step, carrier, sha, &data, e.seq)?;
            }
        }
        () if kind(EventKind::HolderRecorded) => {
            let data: super::HolderRecorded =
                serde_json::from_str(&e.data).map_err(|x| corrupt(&x.to_string()))?;
            super::holders::store(conn, e.seq, &data)?;
        }
        () if kind(EventKind::Imported) => {
            let data: Imported =
                serde_json::from_str(&e.data).map_err(|x| corrupt(&x.to_string()))?;
            let text = super::ImportedText {
                generated: data.generated,
                carrier: data.carrier,
                received: data.received,
                destroyed: data.destroyed,
                note: data.note,
            };
            import::insert_imported_row(conn, data.row_no, e.seq, &text)?;
            form::set_last_row_no(conn, data.row_no)?;
        }
        _ => {}
    }
    Ok(())
}
