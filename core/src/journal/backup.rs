//! `journal backup`: a consistent copy made with SQLite's online backup API (pages still in
//! the -wal file included, also while another process writes), written under a temporary
//! name, verified, and only then given its name.

use std::path::{Path, PathBuf};

use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::{db_err, Journal};
use crate::error::{Error, Result};

/// What verifying a fresh backup found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// Events in the copy.
    pub events: u64,
    /// The copy's head hash (hex).
    pub head_hash: String,
    /// Checkpoints in the copy.
    pub checkpoints: u64,
    /// What does not verify in the copy (empty: all verified).
    pub problems: Vec<String>,
}

impl BackupReport {
    /// True when the copy verified.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn temp_name(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(format!(".partial-{}", std::process::id()));
    PathBuf::from(name)
}

impl Journal {
    /// Copies the journal to `dest` (a new file) and verifies the copy: hash chain, schema,
    /// state tables and the signatures of its checkpoints, and that it holds every event this
    /// connection sees. A failed copy leaves nothing at `dest`.
    pub fn backup(&self, dest: &Path) -> Result<BackupReport> {
        if dest.exists() {
            return Err(Error::Refused(format!(
                "{} exists; custody never overwrites a file with a backup. Give a new file name",
                dest.display()
            )));
        }
        let temp = temp_name(dest);
        let result = self.copy_to(&temp).and_then(|()| verify_copy(self, &temp));
        match result {
            Ok(report) => {
                std::fs::rename(&temp, dest).map_err(|e| Error::io(dest, e))?;
                Ok(report)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    fn copy_to(&self, temp: &Path) -> Result<()> {
        // 0600 before SQLite opens it, whatever the umask: a backup holds what the journal
        // holds (holders' names and tax numbers). The rename keeps the mode.
        crate::file::create_private_file(temp)?;
        let mut dst = Connection::open_with_flags(
            temp,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        {
            let backup = Backup::new(&self.conn, &mut dst).map_err(db_err)?;
            backup
                .run_to_completion(256, std::time::Duration::from_millis(5), None)
                .map_err(db_err)?;
        }
        // One self-contained file: no -wal beside it.
        dst.pragma_update(None, "journal_mode", "DELETE")
            .map_err(db_err)?;
        dst.close().map_err(|(_, e)| db_err(e))?;
        let file = std::fs::File::open(temp).map_err(|e| Error::io(temp, e))?;
        file.sync_all().map_err(|e| Error::io(temp, e))?;
        Ok(())
    }
}

fn verify_copy(source: &Journal, temp: &Path) -> Result<BackupReport> {
    let copy = Journal::open_read_only(temp)?;
    let chain = copy.verify()?;
    let mut report = BackupReport {
        events: chain.events,
        head_hash: chain.head_hash.clone(),
        ..BackupReport::default()
    };
    if let Some(bad) = &chain.first_bad {
        report
            .problems
            .push(format!("event #{}: {}", bad.seq, bad.reason));
    }
    if copy.journal_id() != source.journal_id() {
        report
            .problems
            .push("the copy has another journal id".into());
    }
    let source_events = source.event_count()?;
    if chain.events < source_events {
        report.problems.push(format!(
            "the copy holds {} event(s), the journal {source_events}",
            chain.events
        ));
    }
    for p in copy.schema_problems()? {
        report.problems.push(format!("schema: {p}"));
    }
    for p in copy.verify_state()?.problems {
        report.problems.push(format!("state: {p}"));
    }
    let checkpoints = copy.all_checkpoints()?;
    report.checkpoints = checkpoints.len() as u64;
    for cp in checkpoints.iter().filter(|c| !c.signature_valid()) {
        report
            .problems
            .push(format!("checkpoint #{}: the signature is invalid", cp.seq));
    }
    Ok(report)
}
