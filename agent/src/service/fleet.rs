//! The service's periodic sync to the organisation's journal (`[fleet]`): a thread of its
//! own that syncs every `[fleet] interval` through a second, read-only use of the journal
//! (SQLite WAL: the worker's writes are not blocked), so that a slow or unreachable database
//! never delays a poll. A failed sync is logged and retried at the next interval; the
//! backlog stays in the local journal. The outcome is kept in a small state record next to
//! the journal (`journal.db` → `journal.fleet.json`) that `custody status` reads.
//!
//! A sync with nothing to send still costs a connection to the database (authentication,
//! TLS) and a few statements: far more CPU than the service's polls in between. So when the
//! journal's files (the database and its WAL: size and modification time) are unchanged since
//! the start of the last sync that succeeded, nothing new can be there and the sync is left
//! out; one is still made at least every [`FULL_SYNC`], to report the journal's head to the
//! organisation and to notice a database restored from an older backup.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use custody_core::fleet::SyncReport;
use custody_core::journal::{timestamp, Journal};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::FleetSettings;

/// A sync is made at least this often even when the journal did not change.
pub const FULL_SYNC: Duration = Duration::from_secs(3600);

/// What the journal's files look like (size and modification time of the database and its
/// WAL): when it is the same as at the start of a successful sync, there is nothing to send.
type FilesState = [Option<(u64, SystemTime)>; 2];

fn files_state(journal: &Path) -> FilesState {
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    };
    let mut wal = journal.as_os_str().to_owned();
    wal.push("-wal");
    [stat(journal), stat(Path::new(&wal))]
}

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
        let deadline = Instant::now() + grace;
        while !self.thread.is_finished() && Instant::now() < deadline {
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
    // The journal's files at the start of the last successful sync, and when that was.
    let mut synced: Option<(FilesState, Instant)> = None;
    loop {
        let files = files_state(journal);
        if let Some((before, at)) = &synced {
            if *before == files && at.elapsed() < FULL_SYNC {
                tracing::debug!("the journal is unchanged since the last sync: nothing to send");
                match stopped.recv_timeout(settings.interval) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        }
        let started = Instant::now();
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
                synced = Some((files, started));
                state.local_seq = Some(report.local_seq);
                state.server_seq = Some(report.server_seq);
                state.pushed += report.pushed;
            }
            Err(e) => {
                tracing::warn!(cause = %e, "sync to the organisation's journal failed; retrying at the next interval");
                state.last_error = Some(e);
                synced = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_the_journal_again_leaves_its_files_as_they_were_and_a_write_changes_them() {
        let dir = std::env::temp_dir().join(format!("custody-fleet-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("journal.db");
        // The service's own connection stays open, as the worker's does.
        let mut worker = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let before = files_state(&path);
        assert!(before[0].is_some(), "the database is there");
        // What a sync does to the journal: open it, read, close.
        for _ in 0..3 {
            let j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
            j.head().unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            files_state(&path),
            before,
            "a sync's own use of the journal"
        );
        std::thread::sleep(Duration::from_millis(20));
        let actor = custody_core::journal::Actor::current(None);
        worker
            .write(&actor, OffsetDateTime::now_utc(), |w| {
                w.append(
                    custody_core::event::EventKind::Note,
                    None,
                    &serde_json::json!({ "text": "a note" }),
                )
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(files_state(&path), before, "a write shows");
        drop(worker);
        let _ = std::fs::remove_dir_all(dir);
    }
}
