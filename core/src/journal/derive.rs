//! The state tables, re-derived from the hash-chained events.
//!
//! The events are the source of truth; the state tables are a copy kept in step with them in
//! the same transaction. Anyone who can write the file can change a state table without
//! breaking the chain, so:
//! - decisions that protect something (is an order new, executed, started?) are taken from
//!   the events here ([`orders`]), never from the `orders` table; the carriers' objects are
//!   taken from the events by `journal::carrier`;
//! - `journal verify` replays every event ([`verify`]) and compares each table row by row,
//!   naming table, key and column of every difference: `orders`, `form_rows`, `revocations`,
//!   `certificate_files`, `holders`, meta `last_row_no` and `module_unavailable:*`, and the
//!   carrier tables `carriers`, `carrier_snapshots`, `certificates`, `keys` (`objects`).
//!   `events` is the chain itself, `checkpoints` is checked against its events by
//!   `checkpoint`, and meta `journal_id` is hashed into every event.
//!
//! Columns that are bookkeeping and not recorded by any event (`carriers.last_seen`,
//! `last_slot`; see `objects` for the snapshot's) are not compared; `orders.document` is
//! compared by its SHA-256, which the `order_received` event holds.

mod objects;
mod rows;

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{params, Connection};
use serde_json::Value as Json;

use self::rows::{compare, int, json_norm, opt_int, opt_txt, table_rows, txt, Rows};
pub use self::rows::{StateProblem, StateReport};
use super::carrier::Recorded;
use super::form::ImportedText;
use super::import::ImportRow;
use super::keyset::source_text;
use super::numbering::KeySetRow;
use super::orders::OrderState;
use super::{db_err, EventKind, IssuedData};
use crate::error::{Error, Result};
use crate::order::DestructionOrder;
use crate::rejection::RejectCode;

/// An order as its events describe it.
#[derive(Debug, Clone)]
pub(crate) struct DerivedOrder {
    pub(crate) sha256: String,
    pub(crate) order: DestructionOrder,
    pub(crate) carrier: Option<String>,
    pub(crate) state: OrderState,
    pub(crate) received_seq: u64,
    pub(crate) received_at: String,
    pub(crate) started_seq: Option<u64>,
    pub(crate) outcome_seq: Option<u64>,
}

/// True when a refusal of a verified order ends it (state `rejected`): the carrier is not the
/// one the order names. Other refusals (absent, PIN missing, replay) leave the state as it is.
pub fn rejection_ends_order(code: RejectCode) -> bool {
    matches!(
        code,
        RejectCode::TargetMismatch | RejectCode::CertificateMismatch
    )
}

const ORDER_KINDS: &str =
    "'order_received', 'order_rejected', 'wipe_started', 'wipe_completed', 'wipe_failed'";

/// Every order (or the one with `id`) as the events describe it, by id.
pub(crate) fn orders(
    conn: &Connection,
    id: Option<&str>,
) -> Result<BTreeMap<String, DerivedOrder>> {
    let sql = format!(
        "SELECT seq, at, kind, carrier, data FROM events
         WHERE kind IN ({ORDER_KINDS}) AND (?1 IS NULL OR json_extract(data, '$.order_id') = ?1)
         ORDER BY seq"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let mut rows = stmt.query(params![id]).map_err(db_err)?;
    let mut out = BTreeMap::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let event = Event {
            seq: r.get::<_, i64>(0).map_err(db_err)? as u64,
            at: r.get(1).map_err(db_err)?,
            kind: r.get(2).map_err(db_err)?,
            carrier: r.get(3).map_err(db_err)?,
            data: parse(&r.get::<_, String>(4).map_err(db_err)?)?,
        };
        apply_order(&mut out, &event)?;
    }
    Ok(out)
}

struct Event {
    seq: u64,
    at: String,
    kind: EventKind,
    carrier: Option<String>,
    data: Json,
}

fn parse(data: &str) -> Result<Json> {
    serde_json::from_str(data).map_err(|e| Error::JournalCorrupt(format!("event data: {e}")))
}

fn text(v: &Json) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn apply_order(orders: &mut BTreeMap<String, DerivedOrder>, e: &Event) -> Result<()> {
    let Some(id) = text(&e.data["order_id"]) else {
        return Ok(());
    };
    match e.kind {
        EventKind::OrderReceived => {
            if orders.contains_key(&id) {
                return Ok(());
            }
            let order: DestructionOrder = serde_json::from_value(e.data["order"].clone())
                .map_err(|x| Error::JournalCorrupt(format!("order_received #{}: {x}", e.seq)))?;
            orders.insert(
                id,
                DerivedOrder {
                    sha256: text(&e.data["sha256"]).unwrap_or_default(),
                    order,
                    carrier: None,
                    state: OrderState::Received,
                    received_seq: e.seq,
                    received_at: e.at.clone(),
                    started_seq: None,
                    outcome_seq: None,
                },
            );
        }
        EventKind::OrderRejected => {
            let code: Option<RejectCode> = serde_json::from_value(e.data["code"].clone()).ok();
            let Some(o) = orders.get_mut(&id) else {
                return Ok(());
            };
            if e.data["signature_verified"] == Json::Bool(true)
                && code.is_some_and(rejection_ends_order)
                && text(&e.data["sha256"]).as_deref() == Some(o.sha256.as_str())
            {
                o.state = OrderState::Rejected;
                o.outcome_seq = Some(e.seq);
                o.carrier = e.carrier.clone().or(o.carrier.take());
            }
        }
        EventKind::WipeStarted | EventKind::WipeCompleted | EventKind::WipeFailed => {
            let Some(o) = orders.get_mut(&id) else {
                return Err(Error::JournalCorrupt(format!(
                    "{} #{} names order {id}, which was never received",
                    e.kind, e.seq
                )));
            };
            o.carrier = e.carrier.clone().or(o.carrier.take());
            match e.kind {
                EventKind::WipeStarted => {
                    o.state = OrderState::Started;
                    o.started_seq = Some(e.seq);
                }
                EventKind::WipeCompleted => {
                    o.state = OrderState::Completed;
                    o.outcome_seq = Some(e.seq);
                }
                _ => {
                    o.state = OrderState::Failed;
                    o.outcome_seq = Some(e.seq);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[derive(Default)]
struct Derived {
    orders: BTreeMap<String, DerivedOrder>,
    form_rows: Rows,
    revocations: Rows,
    certificate_files: Rows,
    carriers: BTreeMap<String, Recorded>,
    holders: Rows,
    last_row_no: Option<u64>,
    /// meta `module_unavailable:PATH` -> the seq of its `module_unavailable`.
    unavailable: BTreeMap<String, u64>,
}

impl Derived {
    fn apply(&mut self, e: &Event) -> Result<()> {
        let corrupt = |x: &dyn std::fmt::Display| {
            Error::JournalCorrupt(format!("{} #{}: {x}", e.kind, e.seq))
        };
        if let Some(row) = super::numbering::row_in(&e.data) {
            self.key_set_row(e, row.map_err(|x| corrupt(&x))?);
        }
        match e.kind {
            EventKind::OrderReceived
            | EventKind::OrderRejected
            | EventKind::WipeStarted
            | EventKind::WipeCompleted
            | EventKind::WipeFailed => apply_order(&mut self.orders, e)?,
            EventKind::CarrierEnrolled
            | EventKind::CarrierSeen
            | EventKind::CarrierReinitialised
            | EventKind::CarrierChanged
            | EventKind::CarrierRemoved
            | EventKind::CertAdded
            | EventKind::CertRemoved
            | EventKind::KeyAdded
            | EventKind::KeyRemoved => super::carrier::apply(
                &mut self.carriers,
                e.seq,
                &e.at,
                e.kind,
                e.carrier.as_deref(),
                &e.data,
            )?,
            EventKind::ModuleUnavailable | EventKind::ModuleRecovered => {
                let module = text(&e.data["module"]).unwrap_or_default();
                if e.kind == EventKind::ModuleUnavailable {
                    self.unavailable.insert(module, e.seq);
                } else {
                    self.unavailable.remove(&module);
                }
            }
            EventKind::Issued => {
                let data: IssuedData =
                    serde_json::from_value(e.data.clone()).map_err(|x| corrupt(&x))?;
                let key_set = serde_json::to_value(&data.key_set).map_err(|x| corrupt(&x))?;
                let ack = data.acknowledgement.as_ref();
                let columns = [
                    ("carrier", txt(data.carrier.key.clone())),
                    ("generated_at", txt(data.generated.at.clone())),
                    ("generated_source", txt(source_text(data.generated.source))),
                    ("manufacturer", txt(data.carrier.manufacturer.clone())),
                    ("model", txt(data.carrier.model.clone())),
                    ("serial", txt(data.carrier.serial.clone())),
                    ("issued_on", txt(data.issued_on.clone())),
                    ("holder_name", txt(data.holder.name.clone())),
                    ("holder_position", opt_txt(data.holder.position.clone())),
                    ("holder_tax_number", opt_txt(data.holder.tax_number.clone())),
                    ("key_set", txt(key_set.to_string())),
                    (
                        "ack_status",
                        opt_txt(ack.map(|a| super::issue::status_text(a.status))),
                    ),
                    ("ack_seq", opt_int(ack.map(|_| e.seq))),
                    ("issued_seq", int(e.seq)),
                    ("holder_id", opt_txt(data.holder.record.clone())),
                ];
                let key = data.row_no.to_string();
                match self.form_rows.get_mut(&key) {
                    // The row a scan opened for this key set.
                    Some(row)
                        if row.get("origin") == Some(&txt("seen"))
                            && row.get("issued_seq") == Some(&Value::Null)
                            && row.get("carrier") == Some(&txt(data.carrier.key.clone())) =>
                    {
                        row.extend(columns);
                    }
                    Some(_) => {
                        return Err(corrupt(&format!(
                            "form row {} is taken by another key set",
                            data.row_no
                        )))
                    }
                    None => {
                        let mut row: BTreeMap<&'static str, Value> = columns.into_iter().collect();
                        row.insert("origin", txt("issued"));
                        row.insert("seq", int(e.seq));
                        row.insert("imported", Value::Null);
                        self.form_rows.insert(key, row);
                    }
                }
                for c in &data.key_set.certificates {
                    let Some(der) = c.der.as_deref().and_then(|d| hex::decode(d).ok()) else {
                        continue;
                    };
                    self.certificate_files
                        .entry(c.sha256.clone())
                        .or_insert_with(|| {
                            BTreeMap::from([
                                ("der", Value::Blob(der)),
                                ("carrier", txt(data.carrier.key.clone())),
                                ("holder_name", txt(data.holder.name.clone())),
                                ("seq", int(e.seq)),
                            ])
                        });
                }
                self.last_row_no = self.last_row_no.max(Some(data.row_no));
            }
            EventKind::IssueAcknowledged => {
                let row_no = e.data["row_no"].as_u64().unwrap_or(0);
                let status = text(&e.data["acknowledgement"]["status"]);
                if let Some(row) = self.form_rows.get_mut(&row_no.to_string()) {
                    row.insert("ack_status", opt_txt(status));
                    row.insert("ack_seq", int(e.seq));
                }
            }
            EventKind::Imported => {
                let r: ImportRow =
                    serde_json::from_value(e.data.clone()).map_err(|x| corrupt(&x))?;
                let imported = ImportedText {
                    generated: r.generated.clone(),
                    carrier: r.carrier.clone(),
                    received: r.received.clone(),
                    destroyed: r.destroyed.clone(),
                    note: r.note.clone(),
                };
                let imported = serde_json::to_value(&imported).map_err(|x| corrupt(&x))?;
                let mut row: BTreeMap<&'static str, Value> =
                    FORM_COLUMNS.iter().map(|c| (*c, Value::Null)).collect();
                row.insert("origin", txt("imported"));
                row.insert("seq", int(e.seq));
                row.insert("issued_on", opt_txt(super::import::first_date(&r.received)));
                row.insert("key_set", txt("{}"));
                row.insert("imported", txt(imported.to_string()));
                self.form_rows.insert(r.row_no.to_string(), row);
                self.last_row_no = self.last_row_no.max(Some(r.row_no));
            }
            EventKind::HolderRecorded => {
                let d: super::HolderRecorded =
                    serde_json::from_value(e.data.clone()).map_err(|x| corrupt(&x))?;
                let row = self
                    .holders
                    .entry(d.id.clone())
                    .or_insert_with(|| BTreeMap::from([("recorded_seq", int(e.seq))]));
                let h = d.holder;
                row.extend([
                    ("full_name", txt(h.full_name)),
                    ("position", opt_txt(h.position)),
                    ("unit", opt_txt(h.unit)),
                    ("tax_number", opt_txt(h.tax_number)),
                    ("eid_document", opt_txt(h.eid_document)),
                    ("updated_seq", int(e.seq)),
                ]);
            }
            EventKind::RevocationRequested | EventKind::RevocationConfirmed => {
                let Some(carrier) = &e.carrier else {
                    return Ok(());
                };
                let mut shas: Vec<String> = e.data["certificates"]
                    .as_array()
                    .map(|a| a.iter().filter_map(text).collect())
                    .unwrap_or_default();
                if shas.is_empty() {
                    shas.push(String::new());
                }
                let step = if e.kind == EventKind::RevocationRequested {
                    "requested"
                } else {
                    "confirmed"
                };
                for sha in shas {
                    let row = self
                        .revocations
                        .entry(format!("{carrier}/{sha}"))
                        .or_insert_with(|| {
                            REVOCATION_COLUMNS
                                .iter()
                                .map(|c| (*c, Value::Null))
                                .collect()
                        });
                    let seq_col = if step == "requested" {
                        "requested_seq"
                    } else {
                        "confirmed_seq"
                    };
                    if row.get(seq_col) == Some(&Value::Null) {
                        let (on, reference) = if step == "requested" {
                            ("requested_on", "requested_ref")
                        } else {
                            ("confirmed_on", "confirmed_ref")
                        };
                        row.insert(on, opt_txt(text(&e.data["date"])));
                        row.insert(reference, opt_txt(text(&e.data["reference"])));
                        row.insert(seq_col, int(e.seq));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A row a scan opened for a key set it had not seen (origin `seen`).
    fn key_set_row(&mut self, e: &Event, r: KeySetRow) {
        let key_set = serde_json::to_value(&r.key_set).unwrap_or_default();
        let mut row: BTreeMap<&'static str, Value> =
            FORM_COLUMNS.iter().map(|c| (*c, Value::Null)).collect();
        row.extend([
            ("origin", txt("seen")),
            ("seq", int(e.seq)),
            ("carrier", txt(r.carrier.key)),
            ("generated_at", txt(r.generated.at)),
            ("generated_source", txt(source_text(r.generated.source))),
            ("manufacturer", txt(r.carrier.manufacturer)),
            ("model", txt(r.carrier.model)),
            ("serial", txt(r.carrier.serial)),
            ("key_set", txt(key_set.to_string())),
        ]);
        self.form_rows.insert(r.row_no.to_string(), row);
        self.last_row_no = self.last_row_no.max(Some(r.row_no));
    }

    fn order_rows(&self) -> Rows {
        self.orders
            .iter()
            .map(|(id, o)| {
                (
                    id.clone(),
                    BTreeMap::from([
                        ("sha256", txt(o.sha256.clone())),
                        ("serial", txt(o.order.target.serial.clone())),
                        ("carrier", opt_txt(o.carrier.clone())),
                        ("holder", txt(o.order.holder.clone())),
                        ("dismissed", txt(o.order.dismissed.to_string())),
                        ("method", txt(o.order.method.as_str())),
                        ("responsible", txt(o.order.responsible.clone())),
                        ("not_after", txt(super::timestamp(o.order.not_after))),
                        ("state", txt(o.state.as_str())),
                        ("received_seq", int(o.received_seq)),
                        ("started_seq", opt_int(o.started_seq)),
                        ("outcome_seq", opt_int(o.outcome_seq)),
                        ("document (sha256)", txt(o.sha256.clone())),
                    ]),
                )
            })
            .collect()
    }
}

const FORM_COLUMNS: &[&str] = &[
    "origin",
    "seq",
    "carrier",
    "generated_at",
    "generated_source",
    "manufacturer",
    "model",
    "serial",
    "issued_on",
    "holder_name",
    "holder_position",
    "holder_tax_number",
    "key_set",
    "ack_status",
    "ack_seq",
    "imported",
    "issued_seq",
    "holder_id",
];

const REVOCATION_COLUMNS: &[&str] = &[
    "requested_on",
    "requested_ref",
    "requested_seq",
    "confirmed_on",
    "confirmed_ref",
    "confirmed_seq",
];

/// Replays every event and compares each state table with what the events say.
pub(crate) fn verify(conn: &Connection) -> Result<StateReport> {
    let mut derived = Derived::default();
    let mut report = StateReport::default();
    let mut stmt = conn
        .prepare(
            "SELECT seq, at, kind, carrier, data FROM events WHERE kind != 'checkpoint' ORDER BY seq",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    while let Some(r) = rows.next().map_err(db_err)? {
        let seq = r.get::<_, i64>(0).map_err(db_err)? as u64;
        let kind: std::result::Result<EventKind, _> = r.get(2);
        let Ok(kind) = kind else {
            report.problems.push(StateProblem {
                table: "events".into(),
                key: seq.to_string(),
                reason: "the event kind is not one custody writes".into(),
            });
            continue;
        };
        let event = Event {
            seq,
            at: r.get(1).map_err(db_err)?,
            kind,
            carrier: r.get(3).map_err(db_err)?,
            data: parse(&r.get::<_, String>(4).map_err(db_err)?)?,
        };
        report.events += 1;
        if let Err(e) = derived.apply(&event) {
            report.problems.push(StateProblem {
                table: "events".into(),
                key: seq.to_string(),
                reason: e.to_string(),
            });
        }
    }
    let mut found = table_rows(
        conn,
        "orders",
        "order_id",
        &[
            ("sha256", "sha256"),
            ("serial", "serial"),
            ("carrier", "carrier"),
            ("holder", "holder"),
            ("dismissed", "dismissed"),
            ("method", "method"),
            ("responsible", "responsible"),
            ("not_after", "not_after"),
            ("state", "state"),
            ("received_seq", "received_seq"),
            ("started_seq", "started_seq"),
            ("outcome_seq", "outcome_seq"),
            ("document (sha256)", "document"),
        ],
    )?;
    for row in found.values_mut() {
        if let Some(Value::Text(doc)) = row.get("document (sha256)") {
            let sha = crate::cert::sha256_hex(doc.as_bytes());
            row.insert("document (sha256)", txt(sha));
        }
    }
    compare("orders", &derived.order_rows(), &found, &mut report);

    let columns: Vec<(&'static str, &str)> = FORM_COLUMNS.iter().map(|c| (*c, *c)).collect();
    let mut found = table_rows(conn, "form_rows", "row_no", &columns)?;
    let mut expected = derived.form_rows.clone();
    for rows in [&mut found, &mut expected] {
        for row in rows.values_mut() {
            for col in ["key_set", "imported"] {
                if let Some(v) = row.get(col).map(json_norm) {
                    row.insert(col, v);
                }
            }
        }
    }
    compare("form_rows", &expected, &found, &mut report);

    let columns: Vec<(&'static str, &str)> = REVOCATION_COLUMNS.iter().map(|c| (*c, *c)).collect();
    let found = table_rows(
        conn,
        "revocations",
        "carrier || '/' || cert_sha256",
        &columns,
    )?;
    compare("revocations", &derived.revocations, &found, &mut report);

    let found = table_rows(
        conn,
        "certificate_files",
        "sha256",
        &[
            ("der", "der"),
            ("carrier", "carrier"),
            ("holder_name", "holder_name"),
            ("seq", "seq"),
        ],
    )?;
    compare(
        "certificate_files",
        &derived.certificate_files,
        &found,
        &mut report,
    );

    objects::verify(conn, &derived.carriers, &mut report)?;

    let found = table_rows(
        conn,
        "holders",
        "holder_id",
        &[
            ("full_name", "full_name"),
            ("position", "position"),
            ("unit", "unit"),
            ("tax_number", "tax_number"),
            ("eid_document", "eid_document"),
            ("recorded_seq", "recorded_seq"),
            ("updated_seq", "updated_seq"),
        ],
    )?;
    compare("holders", &derived.holders, &found, &mut report);

    // meta: `journal_id` is hashed into every event (a changed one breaks the chain at #1);
    // every other key is state derived from the events.
    let found = table_rows(conn, "meta", "key", &[("value", "value")])?;
    let found: Rows = found
        .into_iter()
        .filter(|(k, _)| k != "journal_id")
        .collect();
    let mut expected: Rows = derived
        .last_row_no
        .map(|n| {
            (
                "last_row_no".to_owned(),
                BTreeMap::from([("value", txt(n.to_string()))]),
            )
        })
        .into_iter()
        .collect();
    for (module, seq) in &derived.unavailable {
        expected.insert(
            format!("{}{module}", super::UNAVAILABLE),
            BTreeMap::from([("value", txt(seq.to_string()))]),
        );
    }
    compare("meta", &expected, &found, &mut report);
    Ok(report)
}
