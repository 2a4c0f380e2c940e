//! The service's state record: a small JSON file next to the journal
//! (`journal.db` → `journal.watch.json`) that `custody status` reads without talking to the
//! service.
//!
//! Its modification time is the time of the service's last poll: every poll bumps it with
//! one `futimens` call. The content (pid, modules, carriers present, timing) is rewritten,
//! atomically (temporary file + rename), only when it changes and otherwise once a minute.
//! Writing the journal every poll instead would cost an SQLite transaction with `fsync`
//! every interval; this costs a system call.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// How often the content is rewritten when nothing changed (to refresh the timing figures).
const REFRESH: Duration = Duration::from_secs(60);

/// The state record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Process id of the service.
    pub pid: u32,
    /// When the service started (UTC).
    pub started_at: String,
    /// When it stopped cleanly (UTC); `None` while running, or after a crash or kill.
    pub stopped_at: Option<String>,
    /// The journal it writes.
    pub journal: String,
    /// Poll interval in milliseconds.
    pub interval_ms: u64,
    /// Time between content checks, in milliseconds (measured, see `custody watch`).
    pub check_period_ms: u64,
    /// The modules.
    pub modules: Vec<ModuleState>,
    /// The carriers present at the last poll.
    pub present: Vec<PresentCarrier>,
}

/// A carrier present now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresentCarrier {
    /// Carrier key.
    pub carrier: String,
    /// Token label.
    pub label: String,
    /// Module path.
    pub module: String,
    /// Slot id.
    pub slot: u64,
}

/// One module in the state record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleState {
    /// Module path.
    pub path: String,
    /// Loaded and initialised.
    pub loaded: bool,
    /// The last problem, if the last poll of it failed.
    pub error: Option<String>,
    /// The module is unavailable (failed, or an empty slot list after device errors): its
    /// carriers keep their state while it is re-initialised with backoff.
    #[serde(default)]
    pub unavailable: bool,
    /// Time between re-initialisations in milliseconds; `None` when not re-initialised.
    pub reinit_period_ms: Option<u64>,
    /// Average cost of one poll of this module (re-initialisation + slot list), µs.
    pub poll_cost_us: u64,
}

impl ServiceState {
    /// True when the parts that matter to `custody status` differ (not the timing figures).
    /// Called every poll: compares in place, allocates nothing.
    fn differs(&self, other: &Self) -> bool {
        let same_module = |a: &ModuleState, b: &ModuleState| {
            a.path == b.path
                && a.loaded == b.loaded
                && a.error == b.error
                && a.reinit_period_ms.is_some() == b.reinit_period_ms.is_some()
        };
        self.pid != other.pid
            || self.stopped_at != other.stopped_at
            || self.present != other.present
            || self.modules.len() != other.modules.len()
            || !self
                .modules
                .iter()
                .zip(&other.modules)
                .all(|(a, b)| same_module(a, b))
    }
}

/// The state file as the service keeps it.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    file: Option<File>,
    written: Option<(ServiceState, std::time::Instant)>,
}

impl StateFile {
    /// The state file of a journal: same directory, `<stem>.watch.json`.
    pub fn path_for(journal: &Path) -> PathBuf {
        journal.with_extension("watch.json")
    }

    /// A state file at `path`; nothing is written yet.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            written: None,
        }
    }

    /// Records a poll: rewrites the content when it changed (or a minute passed), else
    /// only bumps the modification time.
    pub fn poll(&mut self, state: &ServiceState) -> anyhow::Result<()> {
        let rewrite = match &self.written {
            Some((old, at)) => old.differs(state) || at.elapsed() >= REFRESH,
            None => true,
        };
        match (&self.file, rewrite) {
            (Some(file), false) => file
                .set_modified(SystemTime::now())
                .with_context(|| format!("updating {}", self.path.display())),
            _ => self.write(state),
        }
    }

    /// Writes the content atomically and keeps the file open for the next polls.
    pub fn write(&mut self, state: &ServiceState) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        let mut text = serde_json::to_vec_pretty(state)?;
        text.push(b'\n');
        f.write_all(&text)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), self.path.display()))?;
        self.file = Some(f);
        self.written = Some((state.clone(), std::time::Instant::now()));
        Ok(())
    }

    /// Reads a state file: the record and its modification time (the last poll).
    pub fn read(path: &Path) -> anyhow::Result<Option<(ServiceState, SystemTime)>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the service state {}", path.display()))
            }
        };
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading the service state {}", path.display()))?;
        let state = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a custody service state file; remove it, the service rewrites it",
                path.display()
            )
        })?;
        Ok(Some((state, modified)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(present: &[&str]) -> ServiceState {
        ServiceState {
            pid: 1,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            stopped_at: None,
            journal: "/j.db".into(),
            interval_ms: 2000,
            check_period_ms: 8000,
            modules: vec![ModuleState {
                path: "/m.so".into(),
                loaded: true,
                error: None,
                unavailable: false,
                reinit_period_ms: Some(2000),
                poll_cost_us: 150,
            }],
            present: present
                .iter()
                .map(|k| PresentCarrier {
                    carrier: (*k).into(),
                    label: "l".into(),
                    module: "/m.so".into(),
                    slot: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn polls_bump_the_time_and_changes_rewrite() {
        let dir = std::env::temp_dir().join(format!("custody-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = StateFile::path_for(&dir.join("journal.db"));
        assert_eq!(path, dir.join("journal.watch.json"));
        assert!(StateFile::read(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());

        let mut f = StateFile::new(path.clone());
        f.poll(&state(&["a"])).unwrap_or_else(|e| panic!("{e}"));
        let read = |p: &Path| {
            StateFile::read(p)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("no state"))
        };
        let (s1, t1) = read(&path);
        assert_eq!(s1.present.len(), 1);

        // Timing figures alone do not rewrite; the modification time moves.
        std::thread::sleep(Duration::from_millis(20));
        let mut same = state(&["a"]);
        same.check_period_ms = 9000;
        f.poll(&same).unwrap_or_else(|e| panic!("{e}"));
        let (s2, t2) = read(&path);
        assert_eq!(s2.check_period_ms, 8000);
        assert!(t2 > t1);

        // A carrier arriving rewrites.
        f.poll(&state(&["a", "b"]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(&path).0.present.len(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_foreign_file_is_an_error_that_says_what_to_do() {
        let dir = std::env::temp_dir().join(format!("custody-state-bad-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("journal.watch.json");
        std::fs::write(&path, "not json").unwrap_or_else(|e| panic!("{e}"));
        let err = StateFile::read(&path)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("remove it"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
