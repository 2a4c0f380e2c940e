//! What a commit costs, and where the WAL is folded into the database file.
//!
//! With `journal_mode = WAL` and `synchronous = FULL`, a commit appends the transaction's
//! pages to the `-wal` file and `fsync`s it once: that `fsync` is what makes a row survive a
//! power cut, and it is never skipped. SQLite's automatic checkpoint (every 1000 WAL pages)
//! would run inside the commit that crosses the mark, copying the WAL into the database file
//! with two more `fsync`s (WAL and database) before that commit returns. A long-running writer
//! whose commits must be quick (the service recording slot events) calls
//! [`Journal::defer_wal_checkpoints`]: its commits then do only the WAL's own `fsync`, and it
//! folds the WAL itself with [`Journal::fold_wal_if_large`] at a moment of its choosing, which
//! also starts the WAL again from its beginning (the first commit into a restarted WAL
//! `fsync`s its header too: that commit is then the fold's, not the next event's).
//! Durability is the same either way: a committed transaction is in the synced WAL, and
//! readers and recovery read the WAL.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{db_err, Journal};
use crate::error::Result;

/// The WAL size (in pages) from which [`Journal::fold_wal_if_large`] folds it: SQLite's own
/// automatic checkpoint mark.
pub const FOLD_PAGES: i64 = 1000;

/// When the last write transaction began and committed (monotonic clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitTiming {
    /// `BEGIN IMMEDIATE` returned: the write lock is held.
    pub began: Instant,
    /// `COMMIT` was issued (everything written to the WAL but not synced).
    pub committing: Instant,
    /// `COMMIT` returned: the WAL is synced, the transaction is durable.
    pub committed: Instant,
}

impl CommitTiming {
    /// Time spent in `COMMIT`: the WAL's `fsync`, and a checkpoint when SQLite ran one.
    pub fn commit(&self) -> Duration {
        self.committed.saturating_duration_since(self.committing)
    }
}

/// Pages in the WAL after the last commit, as SQLite's WAL hook reports them (`-1`: unknown,
/// checkpoints are not deferred).
#[derive(Debug, Clone)]
pub(super) struct WalPages(Arc<AtomicI64>);

impl Default for WalPages {
    fn default() -> Self {
        Self(Arc::new(AtomicI64::new(-1)))
    }
}

impl Journal {
    /// The timing of the last write transaction that committed on this connection.
    pub fn last_commit(&self) -> Option<CommitTiming> {
        self.last_commit
    }

    /// Stops SQLite from folding the WAL into the database file inside a commit on this
    /// connection (see the module documentation); the caller calls
    /// [`Journal::fold_wal_if_large`] instead. Other connections (other custody commands)
    /// keep SQLite's automatic checkpoint.
    pub fn defer_wal_checkpoints(&mut self) -> Result<()> {
        let pages = self.wal_pages.0.clone();
        // Replaces SQLite's own hook (the automatic checkpoint): it only remembers the size.
        self.conn
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: i32| {
                pages.store(i64::from(n), Ordering::Relaxed);
                Ok(())
            }))
            .map_err(db_err)
    }

    /// Folds the WAL into the database file (`PRAGMA wal_checkpoint(PASSIVE)`: never waits for
    /// readers) when it holds at least [`FOLD_PAGES`] pages. Returns how long that took, or
    /// `None` when nothing was due. Only useful after [`Journal::defer_wal_checkpoints`].
    pub fn fold_wal_if_large(&mut self) -> Result<Option<Duration>> {
        if self.wal_pages.0.load(Ordering::Relaxed) < FOLD_PAGES {
            return Ok(None);
        }
        let start = Instant::now();
        let (busy, log, folded): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db_err)?;
        // Pages a reader still needs stay in the WAL; they are folded at a later call.
        let left = if busy != 0 { log - folded } else { 0 };
        self.wal_pages.0.store(left.max(0), Ordering::Relaxed);
        if busy == 0 && folded == log {
            self.restart_wal()?;
        }
        tracing::debug!(
            log,
            folded,
            took_us = start.elapsed().as_micros() as u64,
            "WAL folded into the journal"
        );
        Ok(Some(start.elapsed()))
    }

    /// Once the WAL is folded whole, the next write transaction starts it again from its
    /// beginning and `fsync`s its new header before its own pages: two `fsync`s in that
    /// commit. Done here with a write that changes nothing (the application id the file
    /// already has), so that the commit of the next slot event keeps its single `fsync`.
    fn restart_wal(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.pragma_update(None, "application_id", super::APPLICATION_ID)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Actor, EventKind};
    use time::OffsetDateTime;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("custody-wal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    /// The WAL header's checkpoint sequence number: one more each time the WAL starts again
    /// from its beginning.
    fn wal_restarts(db: &std::path::Path) -> u32 {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let bytes = std::fs::read(wal).unwrap_or_else(|e| panic!("{e}"));
        u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]])
    }

    fn note(j: &mut Journal, text: &str) {
        j.write(&Actor::current(None), OffsetDateTime::now_utc(), |w| {
            w.append(EventKind::Note, None, &serde_json::json!({ "text": text }))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn deferred_checkpoints_leave_commits_alone_until_folded() {
        let dir = temp("defer");
        let path = dir.join("journal.db");
        let mut j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        j.defer_wal_checkpoints().unwrap_or_else(|e| panic!("{e}"));
        let big = "x".repeat(3000);
        let mut commits = Vec::new();
        for _ in 0..1200 {
            note(&mut j, &big);
            commits.push(j.last_commit().unwrap_or_else(|| panic!("no timing")));
        }
        assert!(commits
            .iter()
            .all(|c| c.began <= c.committing && c.committing <= c.committed));
        // More than SQLite's mark, and no automatic checkpoint folded it.
        let pages = j.wal_pages.0.load(Ordering::Relaxed);
        assert!(pages >= FOLD_PAGES, "{pages} pages in the WAL");
        let db_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(
            db_size < 1_000_000,
            "the database file grew to {db_size} bytes: a checkpoint ran inside a commit"
        );
        let restarts = wal_restarts(&path);
        let folded = j.fold_wal_if_large().unwrap_or_else(|e| panic!("{e}"));
        assert!(folded.is_some());
        assert!(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > 3_000_000);
        // The WAL started again inside the fold (its header rewritten), not in the next
        // commit, which then appends and syncs only its own pages.
        assert_eq!(wal_restarts(&path), restarts + 1);
        note(&mut j, "after the fold");
        assert_eq!(wal_restarts(&path), restarts + 1);
        assert_eq!(
            j.fold_wal_if_large().unwrap_or_else(|e| panic!("{e}")),
            None
        );
        // Everything committed is there and the chain holds, from a fresh connection.
        drop(j);
        let j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(j.verify().unwrap_or_else(|e| panic!("{e}")).ok());
        assert_eq!(j.event_count().unwrap_or_else(|e| panic!("{e}")), 1202);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_connection_that_does_not_defer_keeps_sqlites_automatic_checkpoint() {
        let dir = temp("auto");
        let path = dir.join("journal.db");
        let mut j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let big = "x".repeat(3000);
        for _ in 0..1200 {
            note(&mut j, &big);
        }
        // Positive control for the test above: without deferral SQLite folded the WAL.
        assert!(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > 1_000_000);
        assert_eq!(
            j.fold_wal_if_large().unwrap_or_else(|e| panic!("{e}")),
            None
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
