//! The floor of a slot event's latency, measured in the same run as the service: what any
//! program that records a slot event durably must wait for, without custody's code.
//!
//! - [`CommitProbe`]: one durable single-row SQLite commit, with the journal's pragmas
//!   (`journal_mode = WAL`, `synchronous = FULL`; the WAL never folded inside a commit, as
//!   the service's connection does), in a file next to the journal. Its `COMMIT` appends the
//!   row's page to the WAL and `fsync`s it once, the least a row that survives a power cut
//!   costs on that disk at that moment.
//! - [`FloorEvent`]: one line of `custody-floor --events` (a minimal cryptoki loop:
//!   `C_WaitForSlotEvent`, `C_GetSlotInfo` of the slot it names, the token's read when one is
//!   present, then one [`CommitProbe`] commit), with the wall-clock time of each step.
//!
//! rusqlite is used here directly, as cryptoki is in `custody-floor`: a floor must not run
//! custody's own code.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// A SQLite file with the journal's pragmas, for timing one durable single-row commit.
#[derive(Debug)]
pub struct CommitProbe {
    conn: rusqlite::Connection,
    n: i64,
}

impl CommitProbe {
    /// Opens (creating) `name` in `dir`: WAL, `synchronous = FULL`, no automatic checkpoint.
    pub fn open(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let path = dir.join(name);
        let conn = rusqlite::Connection::open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "journal_mode is {mode}");
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The service folds its WAL between polls, never inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS row (n INTEGER PRIMARY KEY, at TEXT NOT NULL, body BLOB NOT NULL)",
        )?;
        Ok(Self { conn, n: 0 })
    }

    /// One transaction that inserts one row (about the size of an event row) and commits;
    /// returns how long it took.
    pub fn commit_one(&mut self) -> anyhow::Result<Duration> {
        self.n += 1;
        let body = [0x5au8; 300];
        let start = Instant::now();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO row (at, body) VALUES (?1, ?2)",
            rusqlite::params![format!("{:?}", SystemTime::now()), &body[..]],
        )?;
        tx.commit()?;
        Ok(start.elapsed())
    }
}

/// Microseconds since the Unix epoch, now.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The instant of `unix_us`.
pub fn at_unix_us(us: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(us)
}

/// One slot event as `custody-floor --events` handled it (one JSON line on its stdout).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FloorEvent {
    /// The slot `C_WaitForSlotEvent` named.
    pub slot: u64,
    /// `C_GetSlotInfo` showed a token.
    pub present: bool,
    /// `C_WaitForSlotEvent` returned.
    pub event_us: u64,
    /// `C_GetSlotInfo` returned.
    pub known_us: u64,
    /// The token's read finished (= `known_us` without a token).
    pub read_us: u64,
    /// The commit returned.
    pub committed_us: u64,
}

/// Reads `custody-floor --events` lines from a file as it grows.
#[derive(Debug)]
pub struct FloorLog {
    reader: BufReader<std::fs::File>,
    pending: String,
}

impl FloorLog {
    /// Starts reading `path` (which must exist) from its beginning.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            reader: BufReader::new(std::fs::File::open(path)?),
            pending: String::new(),
        })
    }

    /// Waits for the next event whose slot showed a token (`present`) or none.
    pub fn wait(&mut self, present: bool, timeout: Duration) -> anyhow::Result<FloorEvent> {
        let until = Instant::now() + timeout;
        loop {
            let mut chunk = String::new();
            if self.reader.read_line(&mut chunk)? == 0 || !chunk.ends_with('\n') {
                // Half a line: keep it for the next read.
                self.pending.push_str(&chunk);
                if Instant::now() > until {
                    bail!("custody-floor reported no event with present = {present} within {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let line = std::mem::take(&mut self.pending) + &chunk;
            let event: FloorEvent = serde_json::from_str(line.trim())
                .with_context(|| format!("custody-floor line {line:?}"))?;
            if event.present == present {
                return Ok(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_probe_commits_durably_in_wal_mode() {
        let dir = std::env::temp_dir().join(format!("custody-commit-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mut probe = CommitProbe::open(&dir, "probe.db").unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..3 {
            probe.commit_one().unwrap_or_else(|e| panic!("{e}"));
        }
        // The rows are in the WAL (no checkpoint folded them) and another connection sees them.
        assert!(std::fs::metadata(dir.join("probe.db-wal")).is_ok_and(|m| m.len() > 0));
        let other =
            rusqlite::Connection::open(dir.join("probe.db")).unwrap_or_else(|e| panic!("{e}"));
        let n: i64 = other
            .query_row("SELECT count(*) FROM row", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 3);
        let sync: i64 = probe
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sync, 2, "synchronous = FULL");
        drop((probe, other));
        let _ = std::fs::remove_dir_all(dir);
    }
}
