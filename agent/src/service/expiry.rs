//! Certificate expiry warnings, as a [`Task`] of the service: one warning in the log per
//! certificate per threshold ([`WARN_THRESHOLDS`]: 30, 7 and 1 days left, expired), for
//! every carrier the journal knows (plugged in or not).
//!
//! What was warned is kept in a small state file beside the journal,
//! `<journal>.expiry-warnings.json` (mode 0600: certificate fingerprint -> the lowest
//! threshold warned), not in the journal: a warning is not something custody observed about
//! a carrier, and the legal record should not fill with log lines. So a restarted service
//! does not warn again; deleting the file makes it warn once more for every certificate past
//! a threshold; a file that cannot be written is logged, and then warnings may repeat after a
//! restart. The check runs on the first round and then every [`EVERY`], and logs "expiry
//! checked" at info.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::cli::expiry::{expiring, threshold, WARN_THRESHOLDS};
use crate::worker::{Task, TaskContext};

/// How often the certificates are looked at.
pub const EVERY: Duration = Duration::from_secs(600);

/// The expiry warning task.
#[derive(Debug)]
pub struct ExpiryTask {
    path: PathBuf,
    warned: Option<BTreeMap<String, i64>>,
    last: Option<Instant>,
}

impl ExpiryTask {
    /// The task for the journal at `journal`.
    pub fn new(journal: &std::path::Path) -> Self {
        let mut path = journal.as_os_str().to_owned();
        path.push(".expiry-warnings.json");
        Self {
            path: path.into(),
            warned: None,
            last: None,
        }
    }

    /// The state file: fingerprint -> lowest threshold warned.
    fn load(&self) -> BTreeMap<String, i64> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %self.path.display(), cause = %e, "expiry warning record unreadable: warnings may repeat once");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        }
    }
}

impl Task for ExpiryTask {
    fn name(&self) -> &str {
        "expiry"
    }

    fn run(&mut self, cx: &mut TaskContext<'_>) -> anyhow::Result<()> {
        if self.last.is_some_and(|l| l.elapsed() < EVERY) {
            return Ok(());
        }
        self.last = Some(Instant::now());
        let mut warned = match self.warned.take() {
            Some(w) => w,
            None => self.load(),
        };
        let soon = expiring(
            cx.state.journal(),
            OffsetDateTime::now_utc(),
            WARN_THRESHOLDS[0],
        )?;
        let mut changed = false;
        for c in &soon {
            let Some(t) = threshold(c.days_left) else {
                continue;
            };
            if warned.get(&c.sha256).is_some_and(|&w| w <= t) {
                continue;
            }
            if c.expired {
                tracing::warn!(
                    carrier = %c.carrier, serial = %c.serial, sha256 = %c.sha256,
                    subject = %c.subject, not_after = %c.not_after, days_left = c.days_left,
                    threshold_days = t,
                    "certificate has expired"
                );
            } else {
                tracing::warn!(
                    carrier = %c.carrier, serial = %c.serial, sha256 = %c.sha256,
                    subject = %c.subject, not_after = %c.not_after, days_left = c.days_left,
                    threshold_days = t,
                    "certificate expires within {t} day(s)"
                );
            }
            warned.insert(c.sha256.clone(), t);
            changed = true;
        }
        tracing::info!(
            expiring = soon.len(),
            warned = soon.len().min(warned.len()),
            "expiry checked"
        );
        if changed {
            let bytes = serde_json::to_vec_pretty(&warned)?;
            if let Err(e) = custody_core::file::write_private(&self.path, &bytes) {
                tracing::error!(path = %self.path.display(), cause = %e, "cannot record the expiry warnings given: they may repeat after a restart");
            }
        }
        self.warned = Some(warned);
        Ok(())
    }
}
