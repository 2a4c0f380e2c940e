//! Read-only queries: carriers and events (`journal list`, `journal show`), a carrier by
//! serial, its last wipe, and the certificates kept for export.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::{db_err, EventKind, Journal};
use crate::error::{Error, Result};

/// One carrier as the journal knows it.
#[derive(Debug, Clone, Serialize)]
pub struct CarrierRow {
    /// Carrier key (manufacturer/model/serial[#discriminator]).
    pub carrier: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial.
    pub serial: String,
    /// Label when last seen.
    pub label: String,
    /// Module it was read through.
    pub module: String,
    /// Present at the last scan.
    pub present: bool,
    /// First seen (UTC).
    pub first_seen: String,
    /// Last seen (UTC).
    pub last_seen: String,
    /// Seq of the carrier_enrolled event.
    pub enrolled_seq: u64,
    /// Certificates on it.
    pub certificates: u64,
    /// Key objects on it (public and, when read, private).
    pub keys: u64,
    /// Holder names from its certificates.
    pub holders: Vec<String>,
}

/// One journal event.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// Sequence number.
    pub seq: u64,
    /// UTC time.
    pub at: String,
    /// Event kind.
    pub kind: EventKind,
    /// Carrier key, if any.
    pub carrier: Option<String>,
    /// OS user.
    pub os_user: String,
    /// Operator, if named.
    pub operator: Option<String>,
    /// Host.
    pub host: String,
    /// Event data.
    pub data: serde_json::Value,
    /// The row's hash (hex).
    pub hash: String,
}

pub(crate) fn carriers(conn: &Connection, serial: Option<&str>) -> Result<Vec<CarrierRow>> {
    let sql = "SELECT c.carrier, c.manufacturer, c.model, c.serial, c.label, c.module, c.present,
                  c.first_seen, c.last_seen, c.enrolled_seq,
                  (SELECT count(*) FROM certificates WHERE carrier = c.carrier),
                  (SELECT count(*) FROM keys WHERE carrier = c.carrier),
                  (SELECT group_concat(h, char(31)) FROM (SELECT DISTINCT holder_name AS h
                     FROM certificates WHERE carrier = c.carrier AND holder_name IS NOT NULL))
           FROM carriers c
           WHERE ?1 IS NULL OR c.serial = ?1 OR c.carrier = ?1
           ORDER BY c.enrolled_seq";
    let mut stmt = conn.prepare(sql).map_err(db_err)?;
    let rows = stmt
        .query_map([serial], |r| {
            let holders: Option<String> = r.get(12)?;
            Ok(CarrierRow {
                carrier: r.get(0)?,
                manufacturer: r.get(1)?,
                model: r.get(2)?,
                serial: r.get(3)?,
                label: r.get(4)?,
                module: r.get(5)?,
                present: r.get::<_, i64>(6)? != 0,
                first_seen: r.get(7)?,
                last_seen: r.get(8)?,
                enrolled_seq: r.get::<_, i64>(9)? as u64,
                certificates: r.get::<_, i64>(10)? as u64,
                keys: r.get::<_, i64>(11)? as u64,
                holders: holders
                    .map(|h| h.split('\u{1f}').map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
        })
        .map_err(db_err)?;
    rows.collect::<std::result::Result<_, _>>().map_err(db_err)
}

pub(crate) fn events(conn: &Connection, carrier: Option<&str>) -> Result<Vec<EventRow>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE ?1 IS NULL OR carrier = ?1 ORDER BY seq"
        ))
        .map_err(db_err)?;
    let rows = stmt.query_map([carrier], event_row).map_err(db_err)?;
    rows.collect::<std::result::Result<_, _>>().map_err(db_err)
}

/// The columns every event query selects, in the order [`event_row`] reads them.
pub(crate) const EVENT_COLUMNS: &str =
    "seq, at, kind, carrier, os_user, operator, host, data, hash";

/// One event from a row of [`EVENT_COLUMNS`].
pub(crate) fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    let data: String = r.get(7)?;
    Ok(EventRow {
        seq: r.get::<_, i64>(0)? as u64,
        at: r.get(1)?,
        kind: r.get(2)?,
        carrier: r.get(3)?,
        os_user: r.get(4)?,
        operator: r.get(5)?,
        host: r.get(6)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)),
        hash: hex::encode(r.get::<_, Vec<u8>>(8)?),
    })
}

/// Finds exactly one carrier by serial or key, or refuses.
pub(crate) fn resolve_carrier(conn: &Connection, carrier: &str) -> Result<CarrierRow> {
    if carrier.is_empty() {
        return Err(Error::Refused(
            "no carrier given; name it by its serial (`custody journal list` shows them)".into(),
        ));
    }
    let mut found = carriers(conn, Some(carrier))?;
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

/// The latest destruction of a carrier's keys (`wipe_completed`, `remote_key_destroyed`):
/// (seq, at, responsible).
pub(crate) fn last_wipe(
    conn: &Connection,
    carrier: &str,
) -> Result<Option<(u64, String, Option<String>)>> {
    conn.query_row(
        "SELECT seq, at, data FROM events WHERE carrier = ?1
         AND kind IN ('wipe_completed', 'remote_key_destroyed') ORDER BY seq DESC LIMIT 1",
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
