//! `custody status [--overdue] [--running]`: the state of the service and the carriers
//! present now (from the journal and the service's state record, never by talking to the
//! process), and the destruction orders not yet carried out, with their deadlines.
//!
//! Deadline: an order is due at the end of the day after the dismissal date, in the
//! workstation's local time zone (`TZ`, else `/etc/localtime`): dismissed on 23 November, the
//! key must be destroyed before 25 November 00:00 local time. It is overdue from that moment
//! until a `wipe_completed` is recorded for it.

use std::time::{Duration, SystemTime};

use clap::Args;
use custody_core::journal::{timestamp, CarrierRow};
use custody_core::order::Zone;
use serde::Serialize;
use time::OffsetDateTime;

use super::Context;
use crate::deadline::{order_statuses, OrderStatus};
use crate::output::{clip, json, Table};
use crate::state::{ModuleState, ServiceState, StateFile};
use crate::Exit;

/// Arguments of `custody status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// List only orders past due, and exit 1 when there are any (for monitoring).
    #[arg(long)]
    pub overdue: bool,
    /// Exit 1 unless the service is running and polling (for monitoring).
    #[arg(long)]
    pub running: bool,
    /// List the certificates that expire within this window (e.g. 30d, 2w) or have expired,
    /// on every carrier the journal knows; exit 1 when there are any (for monitoring).
    #[arg(long, value_name = "WINDOW")]
    pub expiring: Option<String>,
    /// List the revocation requests the provider has not confirmed this many days (e.g.
    /// 7d) after the request; exit 1 when there are any (for monitoring).
    #[arg(long, value_name = "DAYS")]
    pub unconfirmed: Option<String>,
}

/// The JSON document `custody status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    /// Now (UTC).
    pub now: String,
    /// Journal file.
    pub journal: String,
    /// Journal id.
    pub journal_id: String,
    /// The service.
    pub service: ServiceStatus,
    /// The carriers present now (when the service runs), else as last recorded.
    pub carriers: Vec<PresentRow>,
    /// The time zone deadlines are computed in.
    pub time_zone: String,
    /// Orders listed: all not completed, or only the overdue ones with --overdue.
    pub orders: Vec<OrderStatus>,
    /// How many are overdue.
    pub overdue: usize,
    /// With --running: why the service does not run as it should (empty: it does).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_running: Vec<String>,
    /// With --expiring: certificates expiring within the window or expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiring: Option<Vec<super::expiry::Expiring>>,
    /// With --unconfirmed: revocation requests unconfirmed past the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<Vec<super::unconfirmed::Unconfirmed>>,
    /// The service's sync to the organisation's journal, when `[fleet]` is configured.
    pub fleet_sync: Option<FleetSyncStatus>,
}

/// The service's sync to the organisation's journal.
#[derive(Debug, Serialize)]
pub struct FleetSyncStatus {
    /// What the service recorded of its last attempts.
    #[serde(flatten)]
    pub state: crate::service::fleet::SyncState,
    /// Local events the organisation did not hold at the last success (all of them when
    /// it never succeeded).
    pub lag_events: u64,
}

/// The sync state record of `journal`, with the lag computed from its head now.
fn fleet_sync(journal: &custody_core::journal::Journal) -> anyhow::Result<Option<FleetSyncStatus>> {
    use crate::service::fleet::SyncState;
    let Some(state) = SyncState::read(&SyncState::path_for(journal.path()))? else {
        return Ok(None);
    };
    let (head, _) = journal.head()?;
    Ok(Some(FleetSyncStatus {
        lag_events: head.saturating_sub(state.server_seq.unwrap_or(0)),
        state,
    }))
}

fn print_fleet_sync(f: &FleetSyncStatus) {
    println!(
        "Sync to {}: last success {}; {} event(s) not synced yet{}",
        f.state.database,
        f.state.last_success.as_deref().unwrap_or("never"),
        f.lag_events,
        match &f.state.last_error {
            Some(e) => format!(
                "; the last attempt ({}) failed: {e}",
                f.state.last_attempt.as_deref().unwrap_or("?")
            ),
            None => String::new(),
        }
    );
}

/// The service as its state record shows it.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// `running`; `stale` (the process exists but has not polled for three intervals and a
    /// second);
    /// `stopped` (shut down cleanly); `died` (killed or crashed); `never` (no state record
    /// next to this journal).
    pub state: &'static str,
    /// Process id.
    pub pid: Option<u32>,
    /// When it started (UTC).
    pub started_at: Option<String>,
    /// When it stopped cleanly (UTC).
    pub stopped_at: Option<String>,
    /// Its last poll (UTC).
    pub last_poll: Option<String>,
    /// Milliseconds since the last poll.
    pub last_poll_age_ms: Option<u64>,
    /// Poll interval, ms.
    pub interval_ms: Option<u64>,
    /// Time between content checks, ms.
    pub check_period_ms: Option<u64>,
    /// Modules.
    pub modules: Vec<ModuleState>,
}

/// One carrier present.
#[derive(Debug, Serialize)]
pub struct PresentRow {
    /// Carrier key.
    pub carrier: String,
    /// Serial.
    pub serial: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Label.
    pub label: String,
    /// Module.
    pub module: String,
    /// Slot id at the last poll, when the service runs.
    pub slot: Option<u64>,
    /// When it was last seen (UTC): the last poll while the service runs.
    pub last_seen: String,
    /// Certificates on it.
    pub certificates: u64,
    /// Key objects on it.
    pub keys: u64,
    /// Holder names from its certificates.
    pub holders: Vec<String>,
}

/// Runs `custody status`. Exit 1 with `--overdue` when an order is past due, and with
/// `--running` when the service is not running; else 0.
pub fn run(ctx: &Context, args: &StatusArgs) -> anyhow::Result<Exit> {
    let journal = ctx.open_existing_journal()?;
    let state = StateFile::read(&StateFile::path_for(journal.path()))?;
    let service = service_status(state.as_ref(), SystemTime::now());
    let rows = journal.carriers()?;
    let running = service.state == "running";
    let carriers: Vec<PresentRow> = match (&state, running) {
        (Some((record, _)), true) => record
            .present
            .iter()
            .map(|p| {
                let row = rows.iter().find(|r| r.carrier == p.carrier);
                present_row(
                    row,
                    &p.carrier,
                    &p.label,
                    &p.module,
                    Some(p.slot),
                    service.last_poll.clone(),
                )
            })
            .collect(),
        _ => rows
            .iter()
            .filter(|r| r.present)
            .map(|r| present_row(Some(r), &r.carrier, &r.label, &r.module, None, None))
            .collect(),
    };
    let zone = Zone::from_tz(ctx.config.zone());
    let now = OffsetDateTime::now_utc();
    let window = args
        .expiring
        .as_deref()
        .map(super::expiry::parse_window)
        .transpose()?;
    let expiring = window
        .map(|days| super::expiry::expiring(&journal, now, days))
        .transpose()?;
    let unconfirmed_days = args
        .unconfirmed
        .as_deref()
        .map(|t| {
            super::expiry::parse_window(t).map_err(|_| {
                anyhow::anyhow!("--unconfirmed {t:?}: give days like 7d, or weeks like 2w")
            })
        })
        .transpose()?;
    let unconfirmed = unconfirmed_days
        .map(|days| super::unconfirmed::unconfirmed(&journal, now.date(), days))
        .transpose()?;
    let mut orders = order_statuses(&journal.orders()?, &zone, now);
    let overdue = orders.iter().filter(|o| o.overdue).count();
    if args.overdue {
        orders.retain(|o| o.overdue);
    }
    // --running: the service runs, and runs whole: every module loaded, the spool there.
    let mut not_running = Vec::new();
    if args.running {
        if !running {
            not_running.push(format!("the service is {}", service.state));
        }
        for m in service.modules.iter().filter(|m| !m.loaded) {
            not_running.push(format!(
                "module {} is not loaded: {}",
                m.path,
                m.error.as_deref().unwrap_or("no reason recorded")
            ));
        }
        if !ctx.config.spool.is_dir() {
            not_running.push(format!(
                "the order spool {} does not exist: orders dropped there would never run",
                ctx.config.spool.display()
            ));
        }
    }
    let failed = (args.overdue && overdue > 0)
        || !not_running.is_empty()
        || expiring.as_ref().is_some_and(|e| !e.is_empty())
        || unconfirmed.as_ref().is_some_and(|u| !u.is_empty());
    let fleet_sync = fleet_sync(&journal)?;
    if ctx.global.json {
        json(&StatusJson {
            now: timestamp(now),
            journal: journal.path().display().to_string(),
            journal_id: journal.journal_id().to_owned(),
            service,
            carriers,
            time_zone: zone.name(),
            orders,
            overdue,
            not_running: not_running.clone(),
            expiring,
            unconfirmed,
            fleet_sync,
        })?;
    } else {
        print_service(&service, &carriers, journal.path());
        if let Some(f) = &fleet_sync {
            print_fleet_sync(f);
        }
        println!();
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
        for why in &not_running {
            eprintln!("not running as it should: {why}");
        }
        if let (Some(list), Some(days)) = (&expiring, window) {
            println!();
            print_expiring(list, days, &ctx.config.zone());
        }
        if let (Some(list), Some(days)) = (&unconfirmed, unconfirmed_days) {
            println!();
            super::unconfirmed::print(list, days);
        }
        if overdue > 0 {
            eprintln!(
                "{overdue} destruction order(s) overdue (due = end of the day after dismissal, time zone {})",
                zone.name()
            );
        }
    }
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

fn print_expiring(list: &[super::expiry::Expiring], days: i64, zone: &jiff::tz::TimeZone) {
    if list.is_empty() {
        println!("No certificate expires within {days} day(s).");
        return;
    }
    let mut t = Table::new(&["SERIAL", "SUBJECT", "VALID UNTIL", "DAYS LEFT", ""]);
    for e in list {
        t.row(vec![
            e.serial.clone(),
            clip(&e.subject, 60),
            crate::local_time::show(&e.not_after, zone, crate::local_time::Style::Iso),
            e.days_left.to_string(),
            if e.expired { "EXPIRED" } else { "" }.into(),
        ]);
    }
    t.print();
    eprintln!(
        "{} certificate(s) expire within {days} day(s) or have expired",
        list.len()
    );
}

fn present_row(
    row: Option<&CarrierRow>,
    carrier: &str,
    label: &str,
    module: &str,
    slot: Option<u64>,
    seen: Option<String>,
) -> PresentRow {
    PresentRow {
        carrier: carrier.to_owned(),
        serial: row.map(|r| r.serial.clone()).unwrap_or_default(),
        manufacturer: row.map(|r| r.manufacturer.clone()).unwrap_or_default(),
        model: row.map(|r| r.model.clone()).unwrap_or_default(),
        label: label.to_owned(),
        module: module.to_owned(),
        slot,
        last_seen: seen
            .or_else(|| row.map(|r| r.last_seen.clone()))
            .unwrap_or_default(),
        certificates: row.map(|r| r.certificates).unwrap_or_default(),
        keys: row.map(|r| r.keys).unwrap_or_default(),
        holders: row.map(|r| r.holders.clone()).unwrap_or_default(),
    }
}

/// True when process `pid` exists and is a custody process; `None` when that cannot be
/// told (another PID namespace, /proc hidden).
fn process_alive(pid: u32) -> Option<bool> {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => Some(comm.trim_end() == "custody"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

fn service_status(state: Option<&(ServiceState, SystemTime)>, now: SystemTime) -> ServiceStatus {
    let Some((record, modified)) = state else {
        return ServiceStatus {
            state: "never",
            pid: None,
            started_at: None,
            stopped_at: None,
            last_poll: None,
            last_poll_age_ms: None,
            interval_ms: None,
            check_period_ms: None,
            modules: Vec::new(),
        };
    };
    let age = now.duration_since(*modified).unwrap_or_default();
    let interval = Duration::from_millis(record.interval_ms);
    let fresh = age <= interval * 3 + Duration::from_secs(1);
    let alive = process_alive(record.pid);
    let state = match (&record.stopped_at, alive, fresh) {
        (Some(_), _, _) => "stopped",
        (None, Some(false), _) => "died",
        (None, _, true) => "running",
        (None, _, false) => "stale",
    };
    ServiceStatus {
        state,
        pid: Some(record.pid),
        started_at: Some(record.started_at.clone()),
        stopped_at: record.stopped_at.clone(),
        last_poll: Some(timestamp(OffsetDateTime::from(*modified))),
        last_poll_age_ms: Some(age.as_millis() as u64),
        interval_ms: Some(record.interval_ms),
        check_period_ms: Some(record.check_period_ms),
        modules: record.modules.clone(),
    }
}

fn secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn print_service(service: &ServiceStatus, carriers: &[PresentRow], journal: &std::path::Path) {
    let since = |t: &Option<String>| t.clone().unwrap_or_default();
    match service.state {
        "never" => println!(
            "Service   has not run with this journal (no state record next to it); start it with `custody watch` or `systemctl start custody`"
        ),
        state => {
            let what = match state {
                "running" => "running",
                "stale" => "STALE: the process exists but has not polled for three intervals; check its log (journalctl -u custody)",
                "stopped" => "stopped",
                _ => "DIED: it stopped without shutting down (killed or crashed); check its log and restart it",
            };
            println!("Service   {what}");
            println!(
                "          pid {}, started {}{}",
                service.pid.unwrap_or_default(),
                since(&service.started_at),
                service
                    .stopped_at
                    .as_ref()
                    .map(|t| format!(", stopped {t}"))
                    .unwrap_or_default()
            );
            println!(
                "          last poll {} ({} ago); polls every {}, reads carriers' contents every {}",
                since(&service.last_poll),
                secs(service.last_poll_age_ms.unwrap_or_default()),
                secs(service.interval_ms.unwrap_or_default()),
                secs(service.check_period_ms.unwrap_or_default())
            );
            for m in &service.modules {
                let how = match (m.loaded, &m.error, m.reinit_period_ms) {
                    (false, e, _) => format!("NOT LOADED: {}", e.clone().unwrap_or_default()),
                    (true, Some(e), _) => format!("ERROR: {e}"),
                    (true, None, Some(p)) => format!(
                        "re-initialised every {}, {:.2} ms per poll",
                        secs(p),
                        m.poll_cost_us as f64 / 1000.0
                    ),
                    (true, None, None) => {
                        format!("{:.2} ms per poll", m.poll_cost_us as f64 / 1000.0)
                    }
                };
                println!("Module    {}: {how}", m.path);
            }
        }
    }
    println!("Journal   {}", journal.display());
    println!();
    if carriers.is_empty() {
        println!("No carrier present.");
        return;
    }
    if service.state == "running" {
        println!("{} carrier(s) present:", carriers.len());
    } else {
        println!(
            "{} carrier(s) present when the journal was last written:",
            carriers.len()
        );
    }
    let mut t = Table::new(&[
        "SERIAL",
        "MODEL",
        "LABEL",
        "SLOT",
        "CERTS",
        "KEYS",
        "HOLDER",
        "LAST SEEN",
    ]);
    for c in carriers {
        t.row(vec![
            c.serial.clone(),
            format!("{} {}", c.manufacturer, c.model),
            c.label.clone(),
            c.slot.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            c.certificates.to_string(),
            c.keys.to_string(),
            clip(&c.holders.join("; "), 40),
            c.last_seen.clone(),
        ]);
    }
    t.print();
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_core::journal::{OrderRow, OrderState};
    use std::time::Duration;
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

    fn record(stopped: bool, pid: u32) -> ServiceState {
        ServiceState {
            pid,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            stopped_at: stopped.then(|| "2026-01-01T01:00:00.000Z".into()),
            journal: "/j.db".into(),
            interval_ms: 2000,
            check_period_ms: 8000,
            modules: Vec::new(),
            present: Vec::new(),
        }
    }

    #[test]
    fn states_from_the_record() {
        let now = SystemTime::now();
        let me = std::process::id();
        let dead = u32::MAX - 1; // beyond pid_max: never a live process
        let at = |secs_ago: u64| now - Duration::from_secs(secs_ago);
        assert_eq!(service_status(None, now).state, "never");
        assert_eq!(
            service_status(Some(&(record(true, me), at(1))), now).state,
            "stopped"
        );
        assert_eq!(
            service_status(Some(&(record(false, dead), at(1))), now).state,
            "died"
        );
        // This test process is not named custody: it counts as not alive.
        assert_eq!(
            service_status(Some(&(record(false, me), at(1))), now).state,
            "died"
        );
    }
}
