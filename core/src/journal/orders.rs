//! Destruction orders in the journal: the `orders` state table and the queries behind replay
//! protection, reconciliation and `custody status`.
//!
//! Events are appended by [`crate::wipe`] through [`Writer::append`]; the state updates here
//! run in the same transaction.

use rusqlite::{params, Connection, OptionalExtension, Row};
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

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "received" => Self::Received,
            "started" => Self::Started,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "rejected" => Self::Rejected,
            other => {
                return Err(Error::JournalCorrupt(format!(
                    "unknown order state {other:?}"
                )))
            }
        })
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

const ORDER_COLUMNS: &str = "o.order_id, o.sha256, o.serial, o.carrier, o.holder, o.dismissed, o.method,
     o.responsible, o.not_after, o.state, e.at, o.received_seq, o.started_seq, o.outcome_seq, o.document";

fn order_row(r: &Row<'_>) -> rusqlite::Result<(OrderRow, String)> {
    let state: String = r.get(9)?;
    Ok((
        OrderRow {
            order_id: r.get(0)?,
            sha256: r.get(1)?,
            serial: r.get(2)?,
            carrier: r.get(3)?,
            holder: r.get(4)?,
            dismissed: r.get(5)?,
            method: r.get(6)?,
            responsible: r.get(7)?,
            not_after: r.get(8)?,
            state: OrderState::Received,
            received_at: r.get(10)?,
            received_seq: r.get::<_, i64>(11)? as u64,
            started_seq: r.get::<_, Option<i64>>(12)?.map(|s| s as u64),
            outcome_seq: r.get::<_, Option<i64>>(13)?.map(|s| s as u64),
            document: r.get(14)?,
        },
        state,
    ))
}

fn load_orders(conn: &Connection, id: Option<&str>) -> Result<Vec<OrderRow>> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders o JOIN events e ON e.seq = o.received_seq
         WHERE ?1 IS NULL OR o.order_id = ?1 ORDER BY o.received_seq"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map([id], order_row)
        .map_err(db_err)?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(db_err)?;
    rows.into_iter()
        .map(|(mut row, state)| {
            row.state = OrderState::parse(&state)?;
            Ok(row)
        })
        .collect()
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
