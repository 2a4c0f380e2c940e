//! `custody status [--overdue]`: destruction orders not yet carried out, and their deadlines.
//!
//! Deadline: an order is due at the end of the day after the dismissal date, in the
//! workstation's local time zone (`TZ`, else `/etc/localtime`): dismissed on 23 November, the
//! key must be destroyed before 25 November 00:00 local time. It is overdue from that moment
//! until a `wipe_completed` is recorded for it.

use clap::Args;
use custody_core::journal::{OrderRow, OrderState};
use custody_core::order::Zone;
use serde::Serialize;
use time::OffsetDateTime;

use super::Context;
use crate::output::{json, Table};
use crate::Exit;

/// Arguments of `custody status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// List only orders past due, and exit 1 when there are any (for monitoring).
    #[arg(long)]
    pub overdue: bool,
}

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

/// The JSON document `custody status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    /// Now (UTC).
    pub now: String,
    /// The time zone deadlines are computed in.
    pub time_zone: String,
    /// Orders listed: all not completed, or only the overdue ones with --overdue.
    pub orders: Vec<OrderStatus>,
    /// How many are overdue.
    pub overdue: usize,
}

/// `t` in `zone` as RFC 3339 with its offset.
pub fn show_time(zone: &Zone, t: OffsetDateTime) -> String {
    let local = zone.local(t);
    local
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| custody_core::journal::timestamp(t))
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
                due_utc: due
                    .map(custody_core::journal::timestamp)
                    .unwrap_or_default(),
                overdue: due.is_none_or(|d| now >= d),
                state: r.state,
                received_at: r.received_at.clone(),
            }
        })
        .collect()
}

/// Runs `custody status`.
pub fn run(ctx: &Context, args: &StatusArgs) -> anyhow::Result<Exit> {
    let journal = ctx.open_existing_journal()?;
    let zone = Zone::system();
    let now = OffsetDateTime::now_utc();
    let mut orders = order_statuses(&journal.orders()?, &zone, now);
    let overdue = orders.iter().filter(|o| o.overdue).count();
    if args.overdue {
        orders.retain(|o| o.overdue);
    }
    if ctx.global.json {
        json(&StatusJson {
            now: custody_core::journal::timestamp(now),
            time_zone: zone.name(),
            orders,
            overdue,
        })?;
    } else {
        if orders.is_empty() {
            println!(
                "{}",
                if args.overdue {
                    "No destruction order is overdue."
                } else {
                    "No destruction order is open."
                }
            );
        } else {
            let mut t = Table::new(&[
                "ORDER",
                "HOLDER",
                "SERIAL",
                "METHOD",
                "STATE",
                "DUE",
                "OVERDUE",
                "RESPONSIBLE",
            ]);
            for o in &orders {
                t.row(vec![
                    o.order_id.clone(),
                    o.holder.clone(),
                    o.serial.clone(),
                    o.method.clone(),
                    o.state.as_str().into(),
                    o.due.clone(),
                    if o.overdue { "OVERDUE" } else { "" }.into(),
                    o.responsible.clone(),
                ]);
            }
            t.print();
        }
        if overdue > 0 {
            eprintln!(
                "{overdue} destruction order(s) overdue (due = end of the day after dismissal, time zone {})",
                zone.name()
            );
        }
    }
    Ok(if args.overdue && overdue > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn row(id: &str, dismissed: &str, state: OrderState) -> OrderRow {
        OrderRow {
            order_id: id.into(),
            sha256: String::new(),
            serial: "s".into(),
            carrier: None,
            holder: "h".into(),
            dismissed: dismissed.into(),
            method: "reinit".into(),
            responsible: "r".into(),
            not_after: String::new(),
            state,
            received_at: String::new(),
            received_seq: 1,
            started_seq: None,
            outcome_seq: None,
            document: String::new(),
        }
    }

    #[test]
    fn overdue_from_the_end_of_the_day_after_dismissal_local_time() {
        let kyiv = Zone::named("EET-2EEST,M3.5.0/3,M10.5.0/4").unwrap_or_else(|e| panic!("{e}"));
        let rows = vec![
            row("a", "2026-11-23", OrderState::Received),
            row("b", "2026-11-23", OrderState::Completed),
            row("c", "2026-11-23", OrderState::Failed),
        ];
        // 24 Nov 23:59 Kyiv = 21:59 UTC: not yet.
        let s = order_statuses(&rows, &kyiv, datetime!(2026-11-24 21:59 UTC));
        assert_eq!(s.len(), 2, "completed orders are not listed");
        assert!(s.iter().all(|o| !o.overdue));
        assert_eq!(s[0].due, "2026-11-25T00:00:00+02:00");
        assert_eq!(s[0].due_utc, "2026-11-24T22:00:00.000Z");
        // 25 Nov 00:00 Kyiv: overdue.
        let s = order_statuses(&rows, &kyiv, datetime!(2026-11-24 22:00 UTC));
        assert!(s.iter().all(|o| o.overdue));
    }
}
