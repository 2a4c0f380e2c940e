//! When destruction orders are due: an order is due at the end of the day after the dismissal
//! date, in the workstation's local time zone, and overdue from then until its
//! `wipe_completed` is recorded. Shared by `custody status` and the service's order task.

use custody_core::journal::{timestamp, OrderRow, OrderState};
use custody_core::order::Zone;
use serde::Serialize;
use time::OffsetDateTime;

/// One order in `custody status --json`.
#[derive(Debug, Serialize)]
pub struct OrderStatus {
    /// Order id.
    pub order_id: String,
    /// Holder.
    pub holder: String,
    /// Target serial.
    pub serial: String,
    /// Carrier key, once matched.
    pub carrier: Option<String>,
    /// Method.
    pub method: String,
    /// Responsible person.
    pub responsible: String,
    /// Dismissal date.
    pub dismissed: String,
    /// Due (local time, RFC 3339 with offset).
    pub due: String,
    /// Due (UTC).
    pub due_utc: String,
    /// True when past due and not completed.
    pub overdue: bool,
    /// State in the journal.
    pub state: OrderState,
    /// Received (UTC).
    pub received_at: String,
}

/// `t` in `zone` as RFC 3339 with its offset.
pub fn show_time(zone: &Zone, t: OffsetDateTime) -> String {
    let local = zone.local(t);
    local
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| timestamp(t))
}

/// The status of every order at `now`.
pub fn order_statuses(rows: &[OrderRow], zone: &Zone, now: OffsetDateTime) -> Vec<OrderStatus> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    rows.iter()
        .filter(|r| r.state != OrderState::Completed)
        .map(|r| {
            let due = time::Date::parse(&r.dismissed, fmt)
                .ok()
                .map(|d| custody_core::order::due(d, zone));
            OrderStatus {
                order_id: r.order_id.clone(),
                holder: r.holder.clone(),
                serial: r.serial.clone(),
                carrier: r.carrier.clone(),
                method: r.method.clone(),
                responsible: r.responsible.clone(),
                dismissed: r.dismissed.clone(),
                due: due.map(|d| show_time(zone, d)).unwrap_or_default(),
                due_utc: due.map(timestamp).unwrap_or_default(),
                overdue: due.is_none_or(|d| now >= d),
                state: r.state,
                received_at: r.received_at.clone(),
            }
        })
        .collect()
}
