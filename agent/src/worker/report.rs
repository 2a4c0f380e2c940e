//! What the worker tells after each poll: log lines and the state record.

use crate::poll::PollReport;
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
