//! Destruction orders in the journal: the `orders` state table and the queries behind replay
//! protection, reconciliation and `custody status`. Reads come from the events (see
//! `derive`); the table is kept in step for `journal verify` to compare.
//!
//! Events are appended by [`crate::wipe`] through [`Writer::append`]; the state updates here
//! run in the same transaction.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{db_err, query::EventRow, Journal, ScanRecord, Writer};
use crate::error::{Error, Result};
use crate::inventory::ModuleScan;
use crate::order::VerifiedOrder;

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Verified and recorded; not executed yet (waiting for its carrier, or refused for now).
    Received,
    /// `wipe_started` recorded, no outcome yet: a crash or a running wipe. Reconciled at the
    /// next start.
    Started,
    /// Wiped and verified.
    Completed,
    /// The last wipe failed or could not be verified; the order may be run again.
    Failed,
    /// Refused after verification (the carrier does not match the order).
    Rejected,
}

impl OrderState {
    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Started => "started",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }
}

/// One order as the journal knows it.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRow {
    /// The order's id.
    pub order_id: String,
    /// SHA-256 of the signed document.
    pub sha256: String,
    /// Target serial.
    pub serial: String,
    /// Carrier key, once matched.
    pub carrier: Option<String>,
    /// Holder.
    pub holder: String,
    /// Dismissal date `YYYY-MM-DD`.
    pub dismissed: String,
    /// `reinit` or `destroy-keys`.
    pub method: String,
    /// Responsible person.
    pub responsible: String,
    /// Expiry (UTC).
    pub not_after: String,
    /// State.
    pub state: OrderState,
    /// When it was received (UTC).
    pub received_at: String,
    /// The order_received event.
    pub received_seq: u64,
    /// The last wipe_started event.
    pub started_seq: Option<u64>,
    /// The last outcome event.
    pub outcome_seq: Option<u64>,
    /// The signed document.
    #[serde(skip)]
    pub document: String,
}

/// The orders (or the one with `id`) as their events describe them; the signed document
/// comes from the `orders` table (`journal verify` checks it against the event's SHA-256).
fn load_orders(conn: &Connection, id: Option<&str>) -> Result<Vec<OrderRow>> {
    let derived = super::derive::orders(conn, id)?;
    let mut stmt = conn
        .prepare_cached("SELECT document FROM orders WHERE order_id = ?1")
        .map_err(db_err)?;
    let mut out = Vec::with_capacity(derived.len());
    for (order_id, o) in derived {
        let document: Option<String> = stmt
            .query_row([&order_id], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        out.push(OrderRow {
            order_id,
            sha256: o.sha256,
            serial: o.order.target.serial.clone(),
            carrier: o.carrier,
            holder: o.order.holder.clone(),
            dismissed: o.order.dismissed.to_string(),
            method: o.order.method.as_str().to_owned(),
            responsible: o.order.responsible.clone(),
            not_after: super::timestamp(o.order.not_after),
            state: o.state,
            received_at: o.received_at,
            received_seq: o.received_seq,
            started_seq: o.started_seq,
            outcome_seq: o.outcome_seq,
            document: document.unwrap_or_default(),
        });
    }
    out.sort_by_key(|o| o.received_seq);
    Ok(out)
}

fn load_event(conn: &Connection, seq: u64) -> Result<Option<EventRow>> {
    conn.query_row(
        &format!(
            "SELECT {} FROM events WHERE seq = ?1",
            super::query::EVENT_COLUMNS
        ),
        [seq as i64],
        super::query::event_row,
    )
    .optional()
    .map_err(db_err)
}

impl Journal {
    /// The order with this id, if the journal has received it.
    pub fn order(&self, id: &str) -> Result<Option<OrderRow>> {
        Ok(load_orders(&self.conn, Some(id))?.pop())
    }

    /// Every order received, oldest first.
    pub fn orders(&self) -> Result<Vec<OrderRow>> {
        load_orders(&self.conn, None)
    }

    /// Orders with a `wipe_started` and no outcome.
    pub fn orders_started(&self) -> Result<Vec<OrderRow>> {
        Ok(self
            .orders()?
            .into_iter()
            .filter(|o| o.state == OrderState::Started)
            .collect())
    }

    /// One event by its seq.
    pub fn event(&self, seq: u64) -> Result<Option<EventRow>> {
        load_event(&self.conn, seq)
    }

    /// How long a write waits for another process's lock before failing (default 10 s).
    pub fn set_busy_timeout(&self, timeout: std::time::Duration) -> Result<()> {
        self.conn.busy_timeout(timeout).map_err(db_err)
    }
}

impl Writer<'_> {
    /// The order with this id, read inside this transaction.
    pub fn order(&self, id: &str) -> Result<Option<OrderRow>> {
        Ok(load_orders(&self.tx, Some(id))?.pop())
    }

    /// Records a verified order as received by the event `seq`.
    pub fn insert_order(&self, order: &VerifiedOrder, seq: u64) -> Result<()> {
        let o = order.order();
        self.tx
            .execute(
                "INSERT INTO orders (order_id, sha256, serial, holder, dismissed, method, responsible,
                     not_after, state, received_seq, document)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'received', ?9, ?10)",
                params![
                    o.id,
                    order.sha256(),
                    o.target.serial,
                    o.holder,
                    o.dismissed.to_string(),
                    o.method.as_str(),
                    o.responsible,
                    super::timestamp(o.not_after),
                    seq as i64,
                    order.text()
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Moves an order to `state` by the event `seq`: a `wipe_started` sets `started_seq`,
    /// anything else `outcome_seq`. `carrier`, when given, records the matched carrier.
    pub fn set_order_state(
        &self,
        id: &str,
        state: OrderState,
        seq: u64,
        carrier: Option<&str>,
    ) -> Result<()> {
        let sql = if state == OrderState::Started {
            "UPDATE orders SET state = ?2, started_seq = ?3, carrier = coalesce(?4, carrier) WHERE order_id = ?1"
        } else {
            "UPDATE orders SET state = ?2, outcome_seq = ?3, carrier = coalesce(?4, carrier) WHERE order_id = ?1"
        };
        let n = self
            .tx
            .execute(sql, params![id, state.as_str(), seq as i64, carrier])
            .map_err(db_err)?;
        if n != 1 {
            return Err(Error::JournalCorrupt(format!(
                "order {id} is not in the journal"
            )));
        }
        Ok(())
    }

    /// Records a scan inside this transaction (see [`Journal::record_scan`]).
    pub fn record_scan(&mut self, scans: &[ModuleScan]) -> Result<ScanRecord> {
        super::record_scan_in(self, scans)
    }

    /// One event by its seq, read inside this transaction.
    pub fn event(&self, seq: u64) -> Result<Option<EventRow>> {
        load_event(&self.tx, seq)
    }
}
