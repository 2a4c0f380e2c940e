//! What the worker tells after each poll: log lines and the state record.

use std::time::{Instant, SystemTime};

use crate::poll::{EventTiming, PollReport};
use crate::state::{ModuleState, ServiceState};
use crate::watch::Schedule;

pub(super) fn log_report(report: &PollReport) {
    // Carrier-level events at info, object-level ones (one per certificate or key) at debug.
    for e in &report.recorded {
        if let Some(module) = &e.module {
            tracing::info!(seq = e.seq, kind = %e.kind, %module, "recorded");
        } else if e.kind.is_carrier() {
            tracing::info!(seq = e.seq, kind = %e.kind, carrier = %e.carrier, "recorded");
        } else {
            tracing::debug!(seq = e.seq, kind = %e.kind, carrier = %e.carrier, "recorded");
        }
    }
    if let (Some(first), Some(last)) = (report.recorded.first(), report.recorded.last()) {
        tracing::info!(
            events = report.recorded.len(),
            first_seq = first.seq,
            last_seq = last.seq,
            "journal transaction committed"
        );
    }
}

/// Brings the state record up to date; cheap when nothing changed (no allocation).
pub(super) fn update_record(record: &mut ServiceState, report: &PollReport, schedule: &Schedule) {
    if let Some(present) = &report.present {
        record.present.clone_from(present);
    }
    record.check_period_ms = schedule.check_period().as_millis() as u64;
    record
        .modules
        .resize_with(report.modules.len(), || ModuleState {
            path: String::new(),
            loaded: false,
            error: None,
            unavailable: false,
            reinit_period_ms: None,
            poll_cost_us: 0,
        });
    for (i, (m, r)) in record.modules.iter_mut().zip(&report.modules).enumerate() {
        if m.path != r.path {
            m.path.clone_from(&r.path);
        }
        m.loaded = r.loaded;
        m.unavailable = r.unavailable;
        if m.error != r.error {
            m.error.clone_from(&r.error);
        }
        m.reinit_period_ms = schedule.reinit_period(i).map(|d| d.as_millis() as u64);
        m.poll_cost_us = schedule.poll_cost(i).as_micros() as u64;
    }
}

/// Logs where a slot event's time went (`slot event handled`, at debug level, read by
/// `slot-event-bench`), with the event's wall-clock time, once its rows are logged.
pub(super) fn log_timing(t: &EventTiming) {
    let now = Instant::now();
    let us = |a: Instant, b: Instant| b.saturating_duration_since(a).as_micros() as u64;
    let event_unix_us = SystemTime::now()
        .checked_sub(now.saturating_duration_since(t.event.at))
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_micros() as u64);
    let (prepare_us, write_us, commit_us, logged_us) = match t.commit {
        Some(c) => (
            us(t.read, c.began),
            us(c.began, c.committing),
            us(c.committing, c.committed),
            us(c.committed, now),
        ),
        None => (0, 0, 0, us(t.read, now)),
    };
    tracing::debug!(
        module = t.event.module,
        slot = t.event.slot,
        one_slot = t.one_slot,
        committed = t.commit.is_some(),
        event_unix_us,
        queued_us = us(t.event.at, t.taken),
        read_us = us(t.taken, t.read),
        prepare_us,
        write_us,
        commit_us,
        logged_us,
        "slot event handled"
    );
}
