//! The service's periodic sync to the organisation's journal (`[fleet]`): a thread of its
//! own that syncs every `[fleet] interval` through a second, read-only use of the journal
//! (SQLite WAL: the worker's writes are not blocked), so that a slow or unreachable database
//! never delays a poll. A failed sync is logged and retried at the next interval; the
//! backlog stays in the local journal. The outcome is kept in a small state record next to
//! the journal (`journal.db` → `journal.fleet.json`) that `custody status` reads.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use custody_core::fleet::SyncReport;
use custody_core::journal::{timestamp, Journal};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::FleetSettings;

/// The last sync attempts, as `custody status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The database (without password).
    pub database: String,
    /// The sync interval, seconds.
    pub interval_s: u64,
    /// When the last attempt ended (UTC).
    pub last_attempt: Option<String>,
    /// When the last successful sync ended (UTC).
    pub last_success: Option<String>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// The local journal's last event at the last success.
    pub local_seq: Option<u64>,
    /// The last event the organisation held then.
    pub server_seq: Option<u64>,
    /// Events sent by this service since it started.
    pub pushed: u64,
}

impl SyncState {
    /// The state record of the journal at `journal`: `journal.db` → `journal.fleet.json`.
    pub fn path_for(journal: &Path) -> PathBuf {
        journal.with_extension("fleet.json")
    }

    /// Reads the record; `None` when there is none.
    pub fn read(path: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("fleet.json.tmp");
        crate::config::write_private_file(&tmp, &serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// The running sync thread; [`Syncer::stop`] ends it.
#[derive(Debug)]
pub struct Syncer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Syncer {
    /// Starts syncing `journal` every `settings.interval`, the first time right away.
    pub fn start(settings: FleetSettings, journal: PathBuf) -> anyhow::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fleet-sync".into())
            .spawn(move || run(&settings, &journal, &stopped))?;
        Ok(Self { stop, thread })
    }

    /// Asks the thread to stop and waits up to `grace` for a sync in hand to finish (its
    /// transaction is rolled back by the server if the process ends first: nothing is lost).
    pub fn stop(self, grace: Duration) {
        let _ = self.stop.send(());
        let deadline = std::time::Instant::now() + grace;
        while !self.thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn run(settings: &FleetSettings, journal: &Path, stopped: &mpsc::Receiver<()>) {
    let path = SyncState::path_for(journal);
    let mut state = SyncState {
        database: settings
            .connect_to()
            .map(|d| d.to_string())
            .unwrap_or_else(|_| settings.database.clone()),
        interval_s: settings.interval.as_secs(),
        ..SyncState::default()
    };
    tracing::info!(database = %state.database, interval_s = state.interval_s, "syncing to the organisation's journal");
    loop {
        let outcome = sync_once(settings, journal);
        state.last_attempt = Some(timestamp(OffsetDateTime::now_utc()));
        match outcome {
            Ok(report) => {
                if report.pushed > 0 || state.last_error.is_some() {
                    tracing::info!(
                        pushed = report.pushed,
                        server_seq = report.server_seq,
                        local_seq = report.local_seq,
                        "synced to the organisation's journal"
                    );
                }
                state.last_success = state.last_attempt.clone();
                state.last_error = None;
                state.local_seq = Some(report.local_seq);
                state.server_seq = Some(report.server_seq);
                state.pushed += report.pushed;
            }
            Err(e) => {
                tracing::warn!(cause = %e, "sync to the organisation's journal failed; retrying at the next interval");
                state.last_error = Some(e);
            }
        }
        if let Err(e) = state.write(&path) {
            tracing::warn!(cause = %e, path = %path.display(), "cannot write the sync state record");
        }
        match stopped.recv_timeout(settings.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn sync_once(settings: &FleetSettings, journal: &Path) -> Result<SyncReport, String> {
    let journal = Journal::open(journal).map_err(|e| e.to_string())?;
    crate::cli::sync::sync_journal(settings, &journal, None, &mut |_, _| {})
        .map_err(|e| e.to_string())
}
