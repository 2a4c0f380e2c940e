//! The custody journal: the only code in custody that uses `rusqlite`.
//!
//! One SQLite file (WAL, synchronous=FULL) holds an append-only chain of events and the
//! current state derived from them, updated in the same transaction. Every event row
//! stores `prev_hash` and `hash = SHA-256(prev_hash || canonical bytes)` (see
//! `chain`); [`Journal::verify`] recomputes the chain and names the first bad row.
//! Schema versions are kept in `PRAGMA user_version` (`migrations`); the file is marked
//! as a custody journal by `PRAGMA application_id`.

mod backup;
mod carrier;
mod chain;
mod checkpoint;
mod derive;
mod feed;
mod form;
mod holders;
mod import;
mod issue;
mod keyset;
mod migrations;
mod numbering;
mod orders;
mod presence;
mod query;
mod remote;
mod replica;
mod revocation;
mod schema;
mod upgrade;
mod wal;

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::inventory::{
    compare, CarrierSnapshot, Change, Comparison, Known, KnownCarrier, ModuleChange, ModuleScan,
    Observed, Step,
};

pub use crate::event::EventKind;
pub use crate::utc::timestamp;
pub use backup::BackupReport;
pub use chain::{VerifyProblem, VerifyReport};
pub use checkpoint::{
    Checkpoint, CheckpointProblem, CheckpointReport, JournalKey, TrustedKey, CHECKPOINT_FORMAT,
};
pub use derive::{rejection_ends_order, StateProblem, StateReport};
pub use feed::ChainEvent;
pub use form::{
    AckSummary, Destruction, FormFilter, FormRow, ImportedText, RevocationNote, Vanished,
};
pub use holders::{
    check as check_holder, HeldCertificate, HolderImport, HolderLine, HolderRecord, HolderRecorded,
    HolderRow,
};
pub use import::{ImportRecord, ImportRow};
pub use issue::{
    ExistingIssue, Holder, IssuePlan, IssueRecord, IssueRequest, IssuedCarrier, IssuedData,
};
pub use keyset::{CertEntry, Generated, GeneratedSource, KeyEntry, KeySet};
pub use numbering::KeySetRow;
pub use orders::{OrderRow, OrderState};
pub use query::{CarrierRow, EventRow, StoredCertificate};
pub use remote::{
    is_remote_module, Evidence, RemoteDestroyed, RemoteDestruction, REMOTE_MODEL, REMOTE_MODULE,
};
pub use revocation::{
    RevocationData, RevocationRecord, RevocationRequest, RevocationState, RevocationStep,
};
pub use schema::SchemaProblem;
pub use wal::{CommitTiming, FOLD_PAGES};

/// `PRAGMA application_id` of a custody journal ("CUST").
pub const APPLICATION_ID: i32 = 0x4355_5354;

/// Who does something: recorded with every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// The operating-system user running custody.
    pub os_user: String,
    /// The operator's name, when given.
    pub operator: Option<String>,
    /// The host name.
    pub host: String,
}

impl Actor {
    /// The current OS user and host, with an optional operator name.
    pub fn current(operator: Option<String>) -> Self {
        let os_user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| uid_from_proc().unwrap_or_else(|| "unknown".into()));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Self {
            os_user,
            operator,
            host,
        }
    }
}

/// The user name of this process's uid from /etc/passwd, else `uid N`.
fn uid_from_proc() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let uid = line.split_whitespace().nth(1)?.to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_owned())
    });
    Some(name.unwrap_or_else(|| format!("uid {uid}")))
}

/// An open custody journal.
pub struct Journal {
    conn: Connection,
    path: PathBuf,
    journal_id: String,
    /// The last write transaction's timing (see `wal`).
    last_commit: Option<CommitTiming>,
    /// WAL pages after the last commit, when checkpoints are deferred (see `wal`).
    wal_pages: wal::WalPages,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("journal_id", &self.journal_id)
            .finish_non_exhaustive()
    }
}

/// What recording one scan did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanRecord {
    /// Events appended, in order.
    pub events: Vec<RecordedEvent>,
    /// Carriers seen in this scan.
    pub carriers_seen: usize,
    /// Carriers whose state did not change (only `last_seen` was updated).
    pub carriers_unchanged: usize,
}

/// One event appended by a scan.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedEvent {
    /// Sequence number.
    pub seq: u64,
    /// Event kind.
    pub kind: EventKind,
    /// Carrier key (empty for a module event).
    pub carrier: String,
    /// Module path, for a module event (`module_unavailable`, `module_recovered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// SQLite's wait for another writer: up to 10 s in 10 ms steps, and not at all once the
/// service was asked to stop ([`crate::stop`]).
fn wait_for_writer(attempts: i32) -> bool {
    if crate::stop::requested() || attempts >= 1000 {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_millis(10));
    true
}

/// Puts the journal in WAL mode. SQLite answers SQLITE_BUSY at once, without asking the busy
/// handler, while another connection holds the file during that switch (two custody processes
/// creating one journal): waited for here as [`wait_for_writer`] would.
fn set_wal(conn: &Connection) -> Result<()> {
    let mut attempts = 0;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && wait_for_writer(attempts) =>
            {
                attempts += 1;
            }
            other => return other.map_err(db_err),
        }
    }
}

/// [`crate::file::tighten`], logged: a journal file left readable by others (by an older
/// custody, or a umask) is made private.
fn tighten(path: &Path) {
    match crate::file::tighten(path) {
        Ok(Some(old)) => tracing::warn!(
            path = %path.display(),
            old_mode = format!("{old:o}"),
            "journal file was readable by others; mode set to 0600"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), cause = %e, "cannot make the journal file private")
        }
    }
}

pub(crate) fn db_err(e: rusqlite::Error) -> Error {
    Error::Journal(Box::new(e))
}

impl rusqlite::types::FromSql for EventKind {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

impl rusqlite::types::ToSql for EventKind {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl Journal {
    /// Opens the journal at `path` for writing, creating it (mode 0600) when missing; its
    /// directory must exist. A new journal starts with a signed checkpoint. Refused and left
    /// untouched: a file that is not a custody journal, one written by a newer custody, one
    /// whose schema is not exactly custody's ([`Error::ForeignSchema`]), and a missing journal
    /// whose key file still exists ([`Error::JournalMissing`]). Group and other permissions on
    /// the journal, its WAL and shared-memory file are taken away.
    pub fn open(path: &Path) -> Result<Self> {
        let existing = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(Error::NotAJournal(path.into())),
            // Until SQLite checkpoints its WAL, a journal's content may all be in the -wal
            // file while the database file is still empty.
            Ok(m) => m.len() > 0 || wal_of(path).metadata().is_ok_and(|w| w.len() > 0),
            Err(_) => false,
        };
        let key = JournalKey::path_for(path);
        if !existing && key.exists() {
            return Err(Error::JournalMissing {
                path: path.into(),
                key,
            });
        }
        if !existing {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.is_dir() {
                return Err(Error::Refused(format!(
                    "the directory {} of journal {} does not exist, and custody does not create it: a mistyped path must not start a new, empty journal. Check the path; for a new journal create the directory first (`install -d -m 0700 {}`)",
                    dir.display(),
                    path.display(),
                    dir.display()
                )));
            }
            // 0600 before SQLite opens it: its WAL and shared-memory files take the mode of
            // the database file.
            crate::file::create_private_file(path)?;
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        // Before the first read: another custody may be creating or migrating this journal.
        conn.busy_handler(Some(wait_for_writer)).map_err(db_err)?;
        schema::harden(&conn)?;
        if existing {
            // Checked on this connection before anything is written (the pragmas below are
            // the first writes): one open instead of two, and SQLite rolls back a hot
            // journal left by a killed process here, as its own recovery.
            check_ours(&conn, path)?;
            check_before_wal(&conn, path)?;
            tighten(path);
        }
        // Nothing is written before the schema is known to be custody's own.
        let version = read_version(&mut conn, path).map_err(|e| damaged(path, e))?;
        set_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            tighten(Path::new(&side));
        }
        // The last connection would checkpoint the WAL into the database and delete it on
        // close, with two more fsyncs on every run; SQLite's automatic checkpoints (every
        // 1000 pages) keep the WAL small instead.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(db_err)?;
        // A new journal is made in one transaction with its first signed checkpoint. Its key is
        // made before, but after the switch to WAL wrote the file's first page: a first run
        // stopped in between leaves an empty database beside the key, which the next run takes
        // up as a new journal.
        if version == 0 {
            let key = JournalKey::load_or_create(&key)?;
            if let Some(journal_id) = create(&mut conn, &key)? {
                return Ok(Self {
                    conn,
                    path: path.into(),
                    journal_id,
                    last_commit: None,
                    wal_pages: wal::WalPages::default(),
                });
            }
        }
        migrations::migrate(&mut conn)?;
        if version != migrations::LATEST {
            schema::require_own(&conn, migrations::LATEST, path)?;
        }
        let journal_id = journal_id_of(&conn)?;
        let mut journal = Self {
            conn,
            path: path.into(),
            journal_id,
            last_commit: None,
            wal_pages: wal::WalPages::default(),
        };
        // Key sets an older custody saw without numbering them get their rows now.
        journal.number_key_sets_seen_before()?;
        // Checkpoints from the first row: a journal without events gets one now, so that a
        // journal whose key exists always holds a checkpoint.
        // Decided inside the write transaction, so two processes creating the journal at
        // once write one.
        if !journal.has_events()? {
            let key = journal.journal_key()?;
            journal.write(&Actor::current(None), OffsetDateTime::now_utc(), |w| {
                if w.head.seq == 0 {
                    w.checkpoint(&key)?;
                }
                Ok(())
            })?;
        }
        Ok(journal)
    }

    /// Opens an existing journal read-only: nothing is created, migrated or written. Refused
    /// with [`Error::JournalIncomplete`] when the file holds no custody schema (e.g. a copy
    /// taken without its -wal file). A schema that differs from custody's is not refused
    /// here: [`Journal::schema_problems`] names it.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(Error::NotAJournal(path.into())),
            Ok(_) => {}
            Err(e) => return Err(Error::io(path, e)),
        }
        let incomplete = || Error::JournalIncomplete(path.into());
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|_| incomplete())?;
        schema::harden(&conn)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        let app_id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|_| incomplete())?;
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|_| incomplete())?;
        if app_id != APPLICATION_ID {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|_| incomplete())?;
            return Err(if app_id == 0 && tables == 0 {
                incomplete()
            } else {
                Error::NotAJournal(path.into())
            });
        }
        if version > migrations::LATEST {
            return Err(Error::SchemaTooNew {
                found: version,
                supported: migrations::LATEST,
            });
        }
        if version < migrations::LATEST {
            return Err(Error::Refused(format!(
                "journal {} has schema version {version}, older than this custody's ({}); upgrade it with a write command (e.g. `custody journal checkpoint`), then verify again",
                path.display(),
                migrations::LATEST
            )));
        }
        let journal_id = journal_id_of(&conn).map_err(|_| incomplete())?;
        Ok(Self {
            conn,
            path: path.into(),
            journal_id,
            last_commit: None,
            wal_pages: wal::WalPages::default(),
        })
    }

    /// Every schema object that is not exactly as custody creates it (see `schema`).
    pub fn schema_problems(&self) -> Result<Vec<SchemaProblem>> {
        schema::check(&self.conn, migrations::LATEST)
    }

    /// The schema version (`PRAGMA user_version`) of the file.
    pub fn schema_version(&self) -> u32 {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap_or(0)
    }

    /// True when the journal holds an event.
    pub(crate) fn has_events(&self) -> Result<bool> {
        // One index probe, where count(*) reads every page of the events table.
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM events)", [], |r| r.get(0))
            .map_err(db_err)
    }

    /// How many events the journal holds.
    pub fn event_count(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(db_err)
    }

    /// The journal's random, permanent id (UUID).
    pub fn journal_id(&self) -> &str {
        &self.journal_id
    }

    /// The file this journal lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one scan in one transaction: what `inventory::compare` decides changed
    /// (carriers seen, changed, enrolled; removals only where a complete read of a healthy
    /// module confirms them; module events), and `last_seen` bookkeeping. A re-scan of an
    /// unchanged state appends no event.
    pub fn record_scan(
        &mut self,
        scans: &[ModuleScan],
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<ScanRecord> {
        let compared = self.compare_scan(scans)?;
        self.record_compared(scans, compared, actor, now)
    }

    /// Compares `scans` with the journal (reads only): what [`Journal::removes_content`]
    /// answers, kept with the comparison so that [`Journal::record_compared`] records the same
    /// read without comparing it again.
    pub fn compare_scan(&self, scans: &[ModuleScan]) -> Result<ScanComparison> {
        let known = load_known(&self.conn)?;
        let conn = &self.conn;
        let observed = Observed::new(scans, &known)?;
        let comparison = compare(&observed, &known, &mut |k| load_snapshot(conn, k))?;
        // One module's comparison is the whole read's; several are compared one by one, as
        // each would be read again on its own.
        let removes = if scans.len() == 1 {
            vec![comparison.removes_content()]
        } else {
            removes_per_module(conn, scans, &known)?
        };
        Ok(ScanComparison {
            known,
            comparison,
            removes,
        })
    }

    /// Records `scans` as [`Journal::compare_scan`] compared them (see
    /// [`Journal::record_scan`]); `compared` must come from these very scans. Should the
    /// journal have changed since, the read is compared again inside the transaction.
    pub fn record_compared(
        &mut self,
        scans: &[ModuleScan],
        compared: ScanComparison,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<ScanRecord> {
        let ScanComparison {
            known, comparison, ..
        } = compared;
        if comparison.is_bookkeeping_only() {
            // Nothing but last_seen will change: such a commit need not wait for the disk
            // (WAL keeps the file consistent; at worst a power cut loses a last_seen). Should
            // the state change in between, the transaction is abandoned and redone durably.
            self.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(db_err)?;
            let light = self.write(actor, now, |w| {
                if load_known(w.tx())? != known {
                    w.abandon();
                    return Ok(None);
                }
                apply(w, &comparison, &[]).map(Some)
            });
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(db_err)?;
            if let Some(record) = light? {
                return Ok(record);
            }
        }
        self.write(actor, now, |w| {
            if load_known(w.tx())? == known {
                apply(w, &comparison, &[])
            } else {
                record_scan_in(w, scans)
            }
        })
    }

    /// For each of `scans`, whether recording it would take certificates or keys from a
    /// carrier ([`Comparison::removes_content`]); reads only. A caller that gets `true` reads
    /// that module again from scratch and records the confirmed read
    /// ([`ModuleScan::confirmed_by`]).
    pub fn removes_content(&self, scans: &[ModuleScan]) -> Result<Vec<bool>> {
        let known = load_known(&self.conn)?;
        removes_per_module(&self.conn, scans, &known)
    }

    /// Runs `f` in one immediate transaction with a [`Writer`] that appends events and
    /// updates state; commits when `f` returns `Ok`, rolls back (appending nothing) otherwise.
    pub fn write<T>(
        &mut self,
        actor: &Actor,
        now: OffsetDateTime,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T>,
    ) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let began = std::time::Instant::now();
        let head = chain::Head::load(&tx)?;
        let first_seq = head.seq;
        let mut writer = Writer {
            tx,
            head,
            journal_id: &self.journal_id,
            actor,
            at: timestamp(now),
            first_seq,
            abandoned: false,
        };
        let value = f(&mut writer)?;
        if writer.abandoned {
            writer.tx.rollback().map_err(db_err)?;
        } else {
            let committing = std::time::Instant::now();
            writer.tx.commit().map_err(db_err)?;
            self.last_commit = Some(CommitTiming {
                began,
                committing,
                committed: std::time::Instant::now(),
            });
        }
        Ok(value)
    }

    /// Recomputes the hash chain over every event and names the first bad row.
    pub fn verify(&self) -> Result<VerifyReport> {
        chain::verify(&self.conn, &self.journal_id)
    }

    /// [`Journal::verify`], telling `progress` (events checked, events in the journal) every
    /// 10,000 events, for a progress bar.
    pub fn verify_with_progress(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        chain::verify_with_progress(&self.conn, &self.journal_id, progress)
    }

    /// Replays every event and compares the state tables with what the events say; every
    /// difference is named by table, key and column.
    pub fn verify_state(&self) -> Result<StateReport> {
        derive::verify(&self.conn)
    }

    /// All carriers in the journal, present or not.
    pub fn carriers(&self) -> Result<Vec<CarrierRow>> {
        query::carriers(&self.conn, None)
    }

    /// Carriers whose serial (or full carrier key) is `serial`.
    pub fn carriers_by_serial(&self, serial: &str) -> Result<Vec<CarrierRow>> {
        query::carriers(&self.conn, Some(serial))
    }

    /// Every event of one carrier, oldest first.
    pub fn carrier_events(&self, carrier: &str) -> Result<Vec<EventRow>> {
        query::events(&self.conn, Some(carrier))
    }

    /// Every event, oldest first.
    pub fn events(&self) -> Result<Vec<EventRow>> {
        query::events(&self.conn, None)
    }

    /// The snapshot of a carrier as the journal records it: certificates, keys, label, flags
    /// and identity from the hash-chained events, the rest (slot, versions, object labels)
    /// from the last scan's stored row. `None` for a carrier never enrolled.
    pub fn snapshot(&self, carrier: &str) -> Result<Option<CarrierSnapshot>> {
        carrier::recorded_snapshot(&self.conn, carrier)
    }
}

/// A read compared with the journal and not yet recorded ([`Journal::compare_scan`]).
#[derive(Debug)]
pub struct ScanComparison {
    known: Known,
    comparison: Comparison,
    removes: Vec<bool>,
}

impl ScanComparison {
    /// For each module of the read, whether recording it would take certificates or keys from
    /// a carrier (see [`Journal::removes_content`]).
    pub fn removes_content(&self) -> &[bool] {
        &self.removes
    }
}

/// [`Journal::removes_content`] against `known`: each module compared on its own.
fn removes_per_module(conn: &Connection, scans: &[ModuleScan], known: &Known) -> Result<Vec<bool>> {
    scans
        .iter()
        .map(|scan| {
            let observed = Observed::new(std::slice::from_ref(scan), known)?;
            let comparison = compare(&observed, known, &mut |k| load_snapshot(conn, k))?;
            Ok(comparison.removes_content())
        })
        .collect()
}

/// Compares and records `scans` inside the writer's transaction.
fn record_scan_in(w: &mut Writer<'_>, scans: &[ModuleScan]) -> Result<ScanRecord> {
    record_scan_with(w, scans, &[])
}

/// [`record_scan_in`], keeping the DER of `certificates` in the form rows it opens (keys
/// recorded by hand, see `remote`).
fn record_scan_with(
    w: &mut Writer<'_>,
    scans: &[ModuleScan],
    certificates: &[Vec<u8>],
) -> Result<ScanRecord> {
    let known = load_known(w.tx())?;
    let observed = Observed::new(scans, &known)?;
    let tx = w.tx();
    let comparison = compare(&observed, &known, &mut |k| load_snapshot(tx, k))?;
    apply(w, &comparison, certificates)
}

/// Prefix of the `meta` keys that hold the modules recorded as unavailable (value: the seq of
/// their `module_unavailable`).
pub(crate) const UNAVAILABLE: &str = "module_unavailable:";

/// Stores the steps of a comparison: events in order, and the state tables beside them.
fn apply(
    w: &mut Writer<'_>,
    comparison: &Comparison,
    certificates: &[Vec<u8>],
) -> Result<ScanRecord> {
    let at = w.at().to_owned();
    let mut record = ScanRecord {
        carriers_seen: comparison.carriers_seen,
        carriers_unchanged: comparison.carriers_unchanged,
        ..ScanRecord::default()
    };
    let append = |w: &mut Writer<'_>, key: &str, change: &Change, record: &mut ScanRecord| {
        let seq = w.append(change.kind(), Some(key), change)?;
        record.events.push(RecordedEvent {
            seq,
            kind: change.kind(),
            carrier: key.to_owned(),
            module: None,
        });
        Ok::<u64, Error>(seq)
    };
    for step in &comparison.steps {
        match step {
            Step::Module(m) => {
                let seq = w.append(m.kind(), None, m)?;
                record.events.push(RecordedEvent {
                    seq,
                    kind: m.kind(),
                    carrier: String::new(),
                    module: Some(m.module().to_owned()),
                });
                let key = format!("{UNAVAILABLE}{}", m.module());
                match m {
                    ModuleChange::ModuleUnavailable { .. } => w
                        .tx()
                        .execute(
                            "INSERT INTO meta (key, value) VALUES (?1, ?2)
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            params![key, seq.to_string()],
                        )
                        .map_err(db_err)?,
                    ModuleChange::ModuleRecovered { .. } => w
                        .tx()
                        .execute("DELETE FROM meta WHERE key = ?1", [key])
                        .map_err(db_err)?,
                };
            }
            Step::Unchanged { key, slot } => {
                w.tx()
                    .prepare_cached(
                        "UPDATE carriers SET last_seen = ?1, last_slot = ?2 WHERE carrier = ?3",
                    )
                    .and_then(|mut st| st.execute(params![at, *slot as i64, key]))
                    .map_err(db_err)?;
            }
            Step::Updated {
                key,
                changes,
                stored,
                enrolled,
            } => {
                // A key set custody had not seen gets its form row now; the step's last
                // event carries it (see `numbering`).
                let opens = changes
                    .iter()
                    .any(|c| matches!(c, Change::KeyAdded { .. } | Change::CertAdded { .. }));
                let mut row = if opens {
                    numbering::opened_by(w.tx(), key, stored, &at)?
                } else {
                    None
                };
                for c in row.iter_mut().flat_map(|r| &mut r.key_set.certificates) {
                    if let Some(der) = certificates
                        .iter()
                        .find(|d| crate::cert::sha256_hex(d) == c.sha256)
                    {
                        c.der = Some(hex::encode(der));
                    }
                }
                let mut first = 0;
                let mut last = 0;
                for (i, change) in changes.iter().enumerate() {
                    let seq = match &row {
                        Some(row) if i + 1 == changes.len() => {
                            let mut data = serde_json::to_value(change)
                                .map_err(|e| Error::JournalCorrupt(e.to_string()))?;
                            let value = serde_json::to_value(row)
                                .map_err(|e| Error::JournalCorrupt(e.to_string()))?;
                            if let Some(map) = data.as_object_mut() {
                                map.insert(numbering::FIELD.into(), value);
                            }
                            let seq = w.append(change.kind(), Some(key), &data)?;
                            record.events.push(RecordedEvent {
                                seq,
                                kind: change.kind(),
                                carrier: key.clone(),
                                module: None,
                            });
                            seq
                        }
                        _ => append(w, key, change, &mut record)?,
                    };
                    if first == 0 {
                        first = seq;
                    }
                    last = seq;
                }
                if let Some(row) = &row {
                    numbering::insert_row(w.tx(), last, row)?;
                }
                let enrolled_seq = enrolled.then_some(first);
                store_carrier(w.tx(), key, stored, &at, enrolled_seq, changes, first)?;
            }
            Step::Removed { key, change } => {
                append(w, key, change, &mut record)?;
                w.tx()
                    .execute(
                        "UPDATE carriers SET present = 0 WHERE carrier = ?1",
                        params![key],
                    )
                    .map_err(db_err)?;
            }
        }
    }
    Ok(record)
}

/// Makes a new journal in one immediate transaction: the latest schema
/// ([`migrations::create`]) and the first signed checkpoint, so that the journal has a
/// checkpoint from its first row. Returns its journal id; `None` when another custody made the
/// journal first (nothing written).
fn create(conn: &mut Connection, key: &JournalKey) -> Result<Option<String>> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let Some(journal_id) = migrations::create(&tx)? else {
        return Ok(None);
    };
    let head = chain::Head::load(&tx)?;
    let actor = Actor::current(None);
    {
        let mut writer = Writer {
            tx,
            head,
            journal_id: &journal_id,
            actor: &actor,
            at: timestamp(OffsetDateTime::now_utc()),
            first_seq: 0,
            abandoned: false,
        };
        writer.checkpoint(key)?;
        writer.tx.commit().map_err(db_err)?;
    }
    Ok(Some(journal_id))
}

/// The -wal file of a journal.
fn wal_of(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn journal_id_of(conn: &Connection) -> Result<String> {
    conn.query_row("SELECT value FROM meta WHERE key = 'journal_id'", [], |r| {
        r.get(0)
    })
    .optional()
    .map_err(db_err)?
    .ok_or_else(|| Error::JournalCorrupt("no journal_id in meta".into()))
}

/// Refuses files that are not custody journals or are too new, without writing to them.
fn check_ours(conn: &Connection, path: &Path) -> Result<()> {
    let not_ours = || Error::NotAJournal(path.into());
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|_| not_ours())?;
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|_| not_ours())?;
    if app_id != APPLICATION_ID {
        // An empty database (a first run killed before its schema was committed) is a new
        // journal, not a foreign file.
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|_| not_ours())?;
        if app_id == 0 && version == 0 && tables == 0 {
            return Ok(());
        }
        return Err(not_ours());
    }
    if version > migrations::LATEST {
        return Err(Error::SchemaTooNew {
            found: version,
            supported: migrations::LATEST,
        });
    }
    Ok(())
}

/// The schema version, read with the schema in one transaction: another custody creating this
/// journal at the same moment must not be seen half-way (version 0 read before its commit,
/// its tables after). Refused unless the schema is custody's own.
fn read_version(conn: &mut Connection, path: &Path) -> Result<u32> {
    let snapshot = conn.transaction().map_err(db_err)?;
    let version = snapshot
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
    schema::require_own(&snapshot, version, path)?;
    if version > 0 {
        // What every later step needs, read before the first write (the switch to WAL of a
        // file that is not in WAL mode yet), so that a journal without it is refused as it is.
        journal_id_of(&snapshot)?;
    }
    snapshot.commit().map_err(db_err)?;
    Ok(version)
}

/// `e`, or [`Error::JournalDamaged`] when SQLite found the file damaged (for errors before
/// the first write only: the message says nothing was written).
fn damaged(path: &Path, e: Error) -> Error {
    if let Error::Journal(inner) = &e {
        if let Some(sqlite) = inner.downcast_ref::<rusqlite::Error>() {
            if sqlite.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt) {
                return Error::JournalDamaged {
                    path: path.into(),
                    reason: sqlite.to_string(),
                };
            }
        }
    }
    e
}

/// A journal file that is not in WAL mode yet (a copy made by other tools, or one restored
/// from one) is switched to it on open: the first write to the file. Before that, SQLite's
/// quick_check must find it whole, so that a damaged file is refused as it is. Files custody
/// wrote are in WAL mode already: for them this is one pragma read.
fn check_before_wal(conn: &Connection, path: &Path) -> Result<()> {
    let damaged = |reason: String| Error::JournalDamaged {
        path: path.into(),
        reason,
    };
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(|e| damaged(e.to_string()))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let first: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| damaged(e.to_string()))?;
    if first != "ok" {
        return Err(damaged(first));
    }
    Ok(())
}

/// Appends events inside one transaction (see [`Journal::write`]).
pub struct Writer<'a> {
    tx: Transaction<'a>,
    head: chain::Head,
    journal_id: &'a str,
    actor: &'a Actor,
    at: String,
    first_seq: u64,
    abandoned: bool,
}

impl Writer<'_> {
    /// Appends one event; `data` is stored as JSON and hashed. Returns its seq.
    pub fn append(
        &mut self,
        kind: EventKind,
        carrier: Option<&str>,
        data: &impl Serialize,
    ) -> Result<u64> {
        let data = serde_json::to_string(data).map_err(|e| Error::JournalCorrupt(e.to_string()))?;
        let event = chain::NewEvent {
            journal_id: self.journal_id,
            at: &self.at,
            kind: kind.as_str(),
            carrier,
            os_user: &self.actor.os_user,
            operator: self.actor.operator.as_deref(),
            host: &self.actor.host,
            data: &data,
        };
        self.head.append(&self.tx, &event)
    }

    /// The transaction, for state-table updates next to the events.
    pub(crate) fn tx(&self) -> &Transaction<'_> {
        &self.tx
    }

    /// Rolls the whole transaction back instead of committing it when the closure returns.
    pub fn abandon(&mut self) {
        self.abandoned = true;
    }

    /// Events appended so far in this transaction.
    pub fn appended(&self) -> u64 {
        self.head.seq - self.first_seq
    }

    /// The time every event of this transaction carries.
    pub fn at(&self) -> &str {
        &self.at
    }
}

/// What the journal knows before a read: its carriers and the modules it holds unavailable.
fn load_known(conn: &Connection) -> Result<Known> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT c.carrier, c.manufacturer, c.model, c.serial, c.label, c.module, c.present,
                    c.last_slot, s.sha256
             FROM carriers c JOIN carrier_snapshots s ON s.carrier = c.carrier",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(KnownCarrier {
                key: r.get(0)?,
                manufacturer: r.get(1)?,
                model: r.get(2)?,
                serial: r.get(3)?,
                label: r.get(4)?,
                module: r.get(5)?,
                present: r.get::<_, i64>(6)? != 0,
                last_slot: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
                digest: r.get(8)?,
            })
        })
        .map_err(db_err)?;
    let mut known = Known::default();
    for row in rows {
        let c = row.map_err(db_err)?;
        known.carriers.insert(c.key.clone(), c);
    }
    let mut stmt = conn
        .prepare_cached("SELECT substr(key, ?1) FROM meta WHERE key LIKE ?2")
        .map_err(db_err)?;
    let rows = stmt
        .query_map(
            params![UNAVAILABLE.len() as i64 + 1, format!("{UNAVAILABLE}%")],
            |r| r.get::<_, String>(0),
        )
        .map_err(db_err)?;
    for row in rows {
        known.unavailable.insert(row.map_err(db_err)?);
    }
    Ok(known)
}

/// The previous state of a carrier for a scan's comparison: what its events record (see
/// `carrier`), not what the `carrier_snapshots` table says, so that a changed table cannot make
/// a scan record objects as removed or added that the events do not show.
fn load_snapshot(conn: &Connection, key: &str) -> Result<CarrierSnapshot> {
    carrier::recorded_snapshot(conn, key)?.ok_or_else(|| {
        Error::JournalCorrupt(format!(
            "carrier {key} is in the carriers table but no event enrolled it; run `custody journal verify`"
        ))
    })
}

fn store_carrier(
    tx: &Transaction<'_>,
    key: &str,
    snap: &CarrierSnapshot,
    at: &str,
    enrolled_seq: Option<u64>,
    changes: &[Change],
    head_seq: u64,
) -> Result<()> {
    let json = serde_json::to_string(snap).map_err(|e| Error::JournalCorrupt(e.to_string()))?;
    let digest = snap.digest()?;
    match enrolled_seq {
        Some(seq) => {
            tx.execute(
                "INSERT INTO carriers (carrier, manufacturer, model, serial, label, module, present,
                     first_seen, last_seen, last_slot, enrolled_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7, ?8, ?9)",
                params![
                    key,
                    snap.id.manufacturer,
                    snap.id.model,
                    snap.id.serial,
                    snap.label,
                    snap.module,
                    at,
                    snap.slot as i64,
                    seq as i64
                ],
            )
            .map_err(db_err)?;
        }
        None => {
            tx.execute(
                "UPDATE carriers SET label = ?2, module = ?3, present = 1, last_seen = ?4,
                     last_slot = ?5 WHERE carrier = ?1",
                params![key, snap.label, snap.module, at, snap.slot as i64],
            )
            .map_err(db_err)?;
        }
    }
    tx.execute(
        "INSERT INTO carrier_snapshots (carrier, sha256, snapshot) VALUES (?1, ?2, ?3)
         ON CONFLICT (carrier) DO UPDATE SET sha256 = excluded.sha256, snapshot = excluded.snapshot",
        params![key, digest, json],
    )
    .map_err(db_err)?;
    if changes.iter().any(|c| {
        matches!(
            c,
            Change::CertAdded { .. }
                | Change::CertRemoved { .. }
                | Change::KeyAdded { .. }
                | Change::KeyRemoved { .. }
        )
    }) || enrolled_seq.is_some()
    {
        rebuild_objects(tx, key, snap, head_seq)?;
    }
    Ok(())
}

/// Rewrites the current-state certificate and key rows of one carrier.
fn rebuild_objects(
    tx: &Transaction<'_>,
    key: &str,
    snap: &CarrierSnapshot,
    seq: u64,
) -> Result<()> {
    tx.execute("DELETE FROM certificates WHERE carrier = ?1", [key])
        .map_err(db_err)?;
    tx.execute("DELETE FROM keys WHERE carrier = ?1", [key])
        .map_err(db_err)?;
    let mut cert_stmt = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO certificates (carrier, sha256, cka_id, label, subject, holder_name,
                 tax_number, org_code, not_before, not_after, added_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(db_err)?;
    for c in &snap.certificates {
        let info = c.info.as_ref();
        cert_stmt
            .execute(params![
                key,
                c.sha256,
                c.id.as_bytes(),
                c.label.as_bytes(),
                info.map(|i| i.subject.clone()),
                info.and_then(|i| i.holder_name.clone()),
                info.and_then(|i| i.tax_number.as_ref().map(|t| t.value.clone())),
                info.and_then(|i| i.org_code.as_ref().map(|t| t.value.clone())),
                info.map(|i| timestamp(i.not_before)),
                info.map(|i| timestamp(i.not_after)),
                seq as i64
            ])
            .map_err(db_err)?;
    }
    let mut key_stmt = tx
        .prepare_cached(
            "INSERT INTO keys (carrier, class, cka_id, key_type, public_key_sha256, local,
                 never_extractable, always_sensitive, start_date, added_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(db_err)?;
    for k in snap
        .public_keys
        .iter()
        .chain(snap.private_keys.iter().flatten())
    {
        let class = match k.class {
            crate::inventory::KeyClass::Public => "public",
            crate::inventory::KeyClass::Private => "private",
        };
        key_stmt
            .execute(params![
                key,
                class,
                k.id.as_bytes(),
                k.key_type as i64,
                k.public_key_sha256,
                k.local,
                k.never_extractable,
                k.always_sensitive,
                k.start_date,
                seq as i64
            ])
            .map_err(db_err)?;
    }
    Ok(())
}
