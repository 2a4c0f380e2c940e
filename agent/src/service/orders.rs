//! The order spool and deadlines, as a [`Task`] of the service: one pass of
//! [`crate::spool::process_spool`] on the worker thread whenever it may find something to do,
//! and a warning in the log for every destruction order that becomes overdue.
//!
//! A pass reads the spool directory and the journal's orders, so it is not run every poll
//! when nothing can have changed; it runs on the first round, when the spool directory
//! changes (an order or signature dropped in, which changes its modification time; looked at
//! every [`LOOK`]), when the
//! carriers present change (an order may be waiting for its carrier), and at least every
//! [`REFRESH`] (an order waiting for its signature file, a deadline passing, a changed
//! `allowed_signers` file, which is then reloaded). Orders whose wipe failed are never retried
//! automatically (see [`crate::spool`]), so a wrong SO PIN cannot lock a carrier.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use custody_core::order::{AllowedSigners, Zone};
use custody_core::wipe::Env;
use time::OffsetDateTime;

use crate::deadline::order_statuses;
use crate::spool::{process_spool, Spool, SpoolAction};
use crate::state::PresentCarrier;
use crate::worker::{Task, TaskContext};

/// The longest time between two passes.
pub const REFRESH: Duration = Duration::from_secs(60);
/// How often the spool directory is looked at (a `stat`) for new orders.
pub const LOOK: Duration = Duration::from_secs(5);

/// The spool and deadline task.
#[derive(Debug)]
pub struct OrderTask {
    dir: PathBuf,
    signers_path: PathBuf,
    signers: Option<(AllowedSigners, Option<SystemTime>)>,
    required_signers: u32,
    last_pass: Option<Instant>,
    last_look: Option<Instant>,
    dir_modified: Option<SystemTime>,
    present: Vec<String>,
    overdue_warned: BTreeSet<String>,
}

impl OrderTask {
    /// The task for the spool `dir`, trusting the signers in `signers_path`.
    pub fn new(dir: PathBuf, signers_path: PathBuf, required_signers: u32) -> Self {
        Self {
            dir,
            signers_path,
            signers: None,
            required_signers,
            last_pass: None,
            last_look: None,
            dir_modified: None,
            present: Vec::new(),
            overdue_warned: BTreeSet::new(),
        }
    }

    /// True when a pass may find something new. Cheap when nothing changed: a comparison,
    /// and one `stat` of the spool directory every [`LOOK`]; no allocation.
    fn due(&mut self, present: &[PresentCarrier]) -> bool {
        let same_present = present.iter().map(|p| &p.carrier).eq(self.present.iter());
        let mut spool_changed = false;
        if self.last_look.is_none_or(|t| t.elapsed() >= LOOK) {
            self.last_look = Some(Instant::now());
            let modified = std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok();
            spool_changed = modified != self.dir_modified;
            self.dir_modified = modified;
        }
        // A changed allowed_signers file is noticed at the next refresh (it is reloaded then).
        let due =
            self.last_pass.is_none_or(|t| t.elapsed() >= REFRESH) || spool_changed || !same_present;
        if !same_present {
            self.present = present.iter().map(|p| p.carrier.clone()).collect();
        }
        due
    }

    /// The trusted signers, (re)loaded when the file changed.
    fn signers(&mut self) -> anyhow::Result<&AllowedSigners> {
        let modified = std::fs::metadata(&self.signers_path)
            .and_then(|m| m.modified())
            .ok();
        if self.signers.as_ref().is_none_or(|(_, m)| *m != modified) {
            let loaded = AllowedSigners::load(&self.signers_path, &Zone::system())?;
            if loaded.entries().is_empty() {
                anyhow::bail!(
                    "{} lists no usable signer; add lines `principal keytype key` (see ssh-keygen(1), ALLOWED SIGNERS)",
                    self.signers_path.display()
                );
            }
            self.signers = Some((loaded, modified));
        }
        self.signers
            .as_ref()
            .map(|(s, _)| s)
            .ok_or_else(|| anyhow::anyhow!("no trusted signers"))
    }

    /// Logs every open order that has become overdue, once per order.
    fn warn_overdue(&mut self, cx: &mut TaskContext<'_>) -> anyhow::Result<()> {
        let zone = Zone::system();
        let rows = cx.state.journal().orders()?;
        for o in order_statuses(&rows, &zone, OffsetDateTime::now_utc()) {
            if o.overdue && self.overdue_warned.insert(o.order_id.clone()) {
                tracing::warn!(
                    order = %o.order_id,
                    serial = %o.serial,
                    holder = %o.holder,
                    due = %o.due,
                    state = o.state.as_str(),
                    "destruction order overdue: the key was to be destroyed by the end of the day after the dismissal"
                );
            }
        }
        Ok(())
    }
}

impl Task for OrderTask {
    fn name(&self) -> &str {
        "order spool"
    }

    fn run(&mut self, cx: &mut TaskContext<'_>) -> anyhow::Result<()> {
        if !self.due(cx.present) {
            return Ok(());
        }
        self.last_pass = Some(Instant::now());
        self.warn_overdue(cx)?;
        let dir = self.dir.clone();
        let required_signers = self.required_signers;
        let allowed = self.signers()?;
        let spool = Spool {
            dir: &dir,
            allowed,
            required_signers,
        };
        let clock = OffsetDateTime::now_utc;
        let report = cx.state.with_modules(|journal, modules, pins, actor| {
            let env = Env {
                actor,
                clock: &clock,
                source: "spool",
                pins,
            };
            process_spool(&spool, journal, modules, &env)
        })?;
        let mut touched = !report.reconciled.is_empty();
        for e in &report.entries {
            let order = e.order_id.as_deref().unwrap_or("");
            let reason = e.reason.as_deref().unwrap_or("");
            match e.action {
                SpoolAction::Waiting => {
                    tracing::debug!(file = %e.file, order, reason, "order waiting");
                }
                SpoolAction::Completed => {
                    touched = true;
                    tracing::info!(file = %e.file, order, "order executed: carrier wiped and verified");
                }
                SpoolAction::Rejected => {
                    tracing::warn!(file = %e.file, order, reason, "order rejected");
                }
                SpoolAction::Failed => {
                    touched = true;
                    tracing::error!(file = %e.file, order, reason, "order failed; not retried (move it back into the spool to retry)");
                }
                SpoolAction::Error => {
                    tracing::error!(file = %e.file, order, reason, "order not processed; retried at the next pass");
                    self.last_pass = None;
                }
            }
        }
        if touched {
            cx.state.carriers_changed();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrier(key: &str) -> PresentCarrier {
        PresentCarrier {
            carrier: key.into(),
            label: String::new(),
            module: "/m.so".into(),
            slot: 1,
        }
    }

    #[test]
    fn a_pass_is_due_only_when_something_may_have_changed() {
        let dir = std::env::temp_dir().join(format!("custody-order-task-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mut task = OrderTask::new(dir.clone(), dir.join("allowed_signers"), 1);
        let present = [carrier("a")];
        assert!(task.due(&present), "the first round");
        task.last_pass = Some(Instant::now());
        assert!(!task.due(&present), "nothing changed");
        assert!(task.due(&[carrier("a"), carrier("b")]), "a carrier arrived");
        task.last_pass = Some(Instant::now());
        assert!(!task.due(&[carrier("a"), carrier("b")]));
        // An order dropped in changes the directory: seen at the next look.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.join("x.json"), "{}").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !task.due(&[carrier("a"), carrier("b")]),
            "not looked at yet"
        );
        task.last_look = Instant::now().checked_sub(LOOK);
        assert!(task.due(&[carrier("a"), carrier("b")]), "the spool changed");
        task.last_pass = Some(Instant::now());
        assert!(!task.due(&[carrier("a"), carrier("b")]));
        // And at least every REFRESH.
        task.last_pass = Instant::now().checked_sub(REFRESH);
        assert!(task.due(&[carrier("a"), carrier("b")]));
        let _ = std::fs::remove_dir_all(dir);
    }
}
