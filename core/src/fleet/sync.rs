//! Sync: pushing a workstation journal into the organisation's journal.
//!
//! Each batch is one transaction under a per-journal advisory lock: read the head the server
//! holds, push the local events after it, commit. A sync interrupted anywhere loses nothing
//! and duplicates nothing: the uncommitted batch is rolled back, the next sync starts from
//! the server's head again, and (journal_id, seq) is the key. Before pushing, the local head
//! is compared with the server's: a local journal that ends before what the organisation
//! holds, or holds another event at the server's head, is refused (and the server records
//! the alarm from the sync report).

use serde::Serialize;

use super::Fleet;
use crate::error::{Error, Result};
use crate::journal::{Checkpoint, Journal, CHECKPOINT_FORMAT};

/// How to sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Events per batch (one transaction each).
    pub batch: usize,
    /// This workstation's host name, recorded when the journal is registered.
    pub host: String,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            batch: 1000,
            host: crate::journal::Actor::current(None).host,
        }
    }
}

/// A checkpoint the organisation's database holds for a journal: the witness that the
/// journal held these events, which a rolled-back workstation cannot take back. Only read
/// back from the server by this module: nothing else can make one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncedCheckpoint {
    checkpoint: Checkpoint,
    received_at: String,
}

impl SyncedCheckpoint {
    /// The checkpoint, as the server holds it.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// When the server received it (UTC).
    pub fn received_at(&self) -> &str {
        &self.received_at
    }
}

/// What one sync did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The journal synced.
    pub journal_id: String,
    /// Events pushed now.
    pub pushed: u64,
    /// Batches (transactions) used.
    pub batches: u64,
    /// The local journal's last event when the sync ended.
    pub local_seq: u64,
    /// The last event the organisation holds now.
    pub server_seq: u64,
    /// The newest checkpoint the organisation holds for this journal.
    pub checkpoint: Option<SyncedCheckpoint>,
}

/// The local journal against the organisation's record of it (`journal verify
/// --against-fleet`); read-only on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct FleetComparison {
    /// The journal compared.
    pub journal_id: String,
    /// False when the organisation has never received this journal.
    pub registered: bool,
    /// The local journal's last event.
    pub local_seq: u64,
    /// The last event the organisation holds.
    pub server_seq: u64,
    /// The first seq at which the two differ, if any.
    pub first_difference: Option<u64>,
    /// The newest checkpoint the organisation holds.
    pub checkpoint: Option<SyncedCheckpoint>,
    /// Alarms the organisation recorded for this journal.
    pub alarms: Vec<super::AlarmRow>,
}

impl FleetComparison {
    /// True when the local journal is behind the organisation's record.
    pub fn behind(&self) -> bool {
        self.local_seq < self.server_seq
    }

    /// True when the local journal holds every event the organisation holds, unchanged.
    pub fn ok(&self) -> bool {
        !self.behind() && self.first_difference.is_none()
    }
}

const INSERT_EVENTS: &str = "INSERT INTO custody.events
        (journal_id, seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash)
    SELECT $1::text::uuid, e.* FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[])
        AS e (seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash)
    ORDER BY e.seq
    RETURNING seq";

/// The key of the per-journal advisory lock.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

impl Fleet {
    /// Pushes every local event the organisation does not hold yet, in batches; see the
    /// module documentation. Refused with [`Error::FleetBehind`] or [`Error::FleetDiverged`]
    /// when the local journal does not continue the organisation's record.
    pub fn sync(&mut self, journal: &Journal, opts: &SyncOptions) -> Result<SyncReport> {
        self.sync_with_progress(journal, opts, &mut |_, _| {})
    }

    /// [`Fleet::sync`], telling `progress` (events pushed, events to push) after each batch,
    /// for a progress bar.
    pub fn sync_with_progress(
        &mut self,
        journal: &Journal,
        opts: &SyncOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<SyncReport> {
        let journal_id = checked_id(journal)?;
        let db = self.database.clone();
        let err = |e| super::map_err(&db, e);
        self.client
            .execute(
                "SELECT custody.register_journal($1::text::uuid, $2)",
                &[&journal_id, &opts.host],
            )
            .map_err(err)?;
        let (server_seq, server_hash) = self.server_head(&journal_id)?;
        let (local_seq, local_hash) = journal.head()?;
        if local_seq < server_seq {
            self.report(&journal_id, local_seq, &local_hash)?;
            return Err(Error::FleetBehind {
                local_seq,
                server_seq,
            });
        }
        if server_seq > 0 && journal.event_hash(server_seq)? != Some(server_hash) {
            if local_seq == server_seq {
                self.report(&journal_id, local_seq, &local_hash)?;
            } else {
                // Pushing the next event makes the server see the fork and record it.
                let _ = self.push_batch(&journal_id, journal, 1);
            }
            return Err(Error::FleetDiverged { seq: server_seq });
        }
        let mut pushed = 0;
        let mut batches = 0;
        let to_push = local_seq - server_seq;
        progress(0, to_push);
        loop {
            match self.push_batch(&journal_id, journal, opts.batch.max(1))? {
                Pushed::Nothing => break,
                Pushed::All(n) => {
                    pushed += n;
                    batches += 1;
                    progress(pushed, to_push.max(pushed));
                }
                Pushed::Refused { seq, accepted } => {
                    pushed += accepted;
                    let detail = self.alarm_at(&journal_id, seq)?;
                    return Err(Error::FleetRefused(format!(
                        "event #{seq} of journal {journal_id} was refused: {}; {pushed} event(s) were synced before it",
                        detail.unwrap_or_else(|| "no reason recorded".into())
                    )));
                }
            }
        }
        let (local_seq, local_hash) = journal.head()?;
        self.report(&journal_id, local_seq, &local_hash)?;
        let (server_seq, _) = self.server_head(&journal_id)?;
        Ok(SyncReport {
            journal_id,
            pushed,
            batches,
            local_seq,
            server_seq,
            checkpoint: self.synced_checkpoint(journal.journal_id())?,
        })
    }

    /// Compares the local journal with the organisation's record of it, event by event
    /// (hashes), without writing anything.
    pub fn compare(&mut self, journal: &Journal) -> Result<FleetComparison> {
        let journal_id = checked_id(journal)?;
        let db = self.database.clone();
        let err = |e| super::map_err(&db, e);
        let registered = self
            .client
            .query_opt(
                "SELECT 1 FROM custody.journals WHERE journal_id = $1::text::uuid",
                &[&journal_id],
            )
            .map_err(err)?
            .is_some();
        let (server_seq, _) = self.server_head(&journal_id)?;
        let (local_seq, _) = journal.head()?;
        let mut first_difference = None;
        let mut after = 0u64;
        const CHUNK: i64 = 10_000;
        'outer: while after < server_seq.min(local_seq) {
            let rows = self
                .client
                .query(
                    "SELECT seq, hash FROM custody.events WHERE journal_id = $1::text::uuid
                     AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&journal_id, &(after as i64), &CHUNK],
                )
                .map_err(err)?;
            if rows.is_empty() {
                break;
            }
            let local = journal.chain_events(after, CHUNK as usize)?;
            for (i, row) in rows.iter().enumerate() {
                let seq = row.get::<_, i64>(0) as u64;
                let hash: &[u8] = row.get(1);
                if seq > local_seq {
                    break 'outer;
                }
                match local.get(i) {
                    Some(e) if e.seq == seq && e.hash[..] == *hash => {}
                    _ => {
                        first_difference = Some(seq);
                        break 'outer;
                    }
                }
                after = seq;
            }
        }
        Ok(FleetComparison {
            alarms: self.alarms(Some(&journal_id))?,
            checkpoint: self.synced_checkpoint(&journal_id)?,
            journal_id,
            registered,
            local_seq,
            server_seq,
            first_difference,
        })
    }

    /// The newest checkpoint the organisation holds for `journal_id`.
    pub fn synced_checkpoint(&mut self, journal_id: &str) -> Result<Option<SyncedCheckpoint>> {
        let db = self.database.clone();
        let row = self
            .client
            .query_opt(
                "SELECT seq, count, head_hash, at, public_key, signature,
                        to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
                 FROM custody.checkpoints WHERE journal_id = $1::text::uuid
                 ORDER BY seq DESC LIMIT 1",
                &[&journal_id],
            )
            .map_err(|e| super::map_err(&db, e))?;
        Ok(row.map(|r| SyncedCheckpoint {
            checkpoint: Checkpoint {
                format: CHECKPOINT_FORMAT.into(),
                journal_id: journal_id.to_owned(),
                seq: r.get::<_, i64>(0) as u64,
                count: r.get::<_, i64>(1) as u64,
                head_hash: r.get(2),
                at: r.get(3),
                public_key: r.get(4),
                signature: r.get(5),
            },
            received_at: r.get(6),
        }))
    }

    fn server_head(&mut self, journal_id: &str) -> Result<(u64, [u8; 32])> {
        let db = self.database.clone();
        let row = self
            .client
            .query_opt(
                "SELECT seq, hash FROM custody.events WHERE journal_id = $1::text::uuid
                 ORDER BY seq DESC LIMIT 1",
                &[&journal_id],
            )
            .map_err(|e| super::map_err(&db, e))?;
        Ok(match row {
            Some(r) => {
                let hash: &[u8] = r.get(1);
                (
                    r.get::<_, i64>(0) as u64,
                    hash.try_into().unwrap_or([0; 32]),
                )
            }
            None => (0, [0; 32]),
        })
    }

    fn push_batch(&mut self, journal_id: &str, journal: &Journal, batch: usize) -> Result<Pushed> {
        let db = self.database.clone();
        let err = |e| super::map_err(&db, e);
        let mut tx = self.client.transaction().map_err(err)?;
        tx.execute(LOCK, &[&journal_id]).map_err(err)?;
        let head: Option<i64> = tx
            .query_one(
                "SELECT max(seq) FROM custody.events WHERE journal_id = $1::text::uuid",
                &[&journal_id],
            )
            .map_err(err)?
            .get(0);
        let events = journal.chain_events(head.unwrap_or(0).max(0) as u64, batch)?;
        if events.is_empty() {
            tx.commit().map_err(err)?;
            return Ok(Pushed::Nothing);
        }
        let seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
        let ats: Vec<&str> = events.iter().map(|e| e.at.as_str()).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let carriers: Vec<Option<&str>> = events.iter().map(|e| e.carrier.as_deref()).collect();
        let users: Vec<&str> = events.iter().map(|e| e.os_user.as_str()).collect();
        let operators: Vec<Option<&str>> = events.iter().map(|e| e.operator.as_deref()).collect();
        let hosts: Vec<&str> = events.iter().map(|e| e.host.as_str()).collect();
        let datas: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        let prevs: Vec<&[u8]> = events.iter().map(|e| &e.prev_hash[..]).collect();
        let hashes: Vec<&[u8]> = events.iter().map(|e| &e.hash[..]).collect();
        if let Some(e) = events.iter().find(|e| {
            [&e.at, &e.kind, &e.os_user, &e.host, &e.data]
                .iter()
                .any(|f| f.contains('\0'))
                || e.carrier.as_deref().is_some_and(|c| c.contains('\0'))
                || e.operator.as_deref().is_some_and(|c| c.contains('\0'))
        }) {
            return Err(Error::Refused(format!(
                "event #{} holds a NUL character, which PostgreSQL text cannot store; it cannot be synced",
                e.seq
            )));
        }
        let rows = tx
            .query(
                INSERT_EVENTS,
                &[
                    &journal_id,
                    &seqs,
                    &ats,
                    &kinds,
                    &carriers,
                    &users,
                    &operators,
                    &hosts,
                    &datas,
                    &prevs,
                    &hashes,
                ],
            )
            .map_err(err)?;
        // Commit in every case: a refused row is skipped by the server, which records its
        // alarm in this same transaction; the rows before it are good.
        tx.commit().map_err(err)?;
        let accepted = rows.len() as u64;
        if rows.len() == events.len() {
            return Ok(Pushed::All(accepted));
        }
        let returned: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        let seq = seqs
            .iter()
            .copied()
            .find(|s| !returned.contains(s))
            .unwrap_or(seqs[0]) as u64;
        Ok(Pushed::Refused { seq, accepted })
    }

    fn report(&mut self, journal_id: &str, local_seq: u64, local_hash: &[u8; 32]) -> Result<()> {
        let db = self.database.clone();
        self.client
            .execute(
                "INSERT INTO custody.sync_reports (journal_id, local_seq, local_hash)
                 VALUES ($1::text::uuid, $2, $3)",
                &[&journal_id, &(local_seq as i64), &&local_hash[..]],
            )
            .map_err(|e| super::map_err(&db, e))?;
        Ok(())
    }

    fn alarm_at(&mut self, journal_id: &str, seq: u64) -> Result<Option<String>> {
        let db = self.database.clone();
        let row = self
            .client
            .query_opt(
                "SELECT detail FROM custody.alarms WHERE journal_id = $1::text::uuid AND seq = $2
                 ORDER BY id DESC LIMIT 1",
                &[&journal_id, &(seq as i64)],
            )
            .map_err(|e| super::map_err(&db, e))?;
        Ok(row.map(|r| r.get(0)))
    }
}

enum Pushed {
    Nothing,
    All(u64),
    Refused { seq: u64, accepted: u64 },
}

/// The journal's id, which must be a UUID in its canonical form (the server stores it as
/// `uuid` and hashes its text form).
fn checked_id(journal: &Journal) -> Result<String> {
    let id = journal.journal_id();
    match uuid::Uuid::parse_str(id) {
        Ok(u) if u.hyphenated().to_string() == id => Ok(id.to_owned()),
        _ => Err(Error::Refused(format!(
            "journal id {id:?} is not a UUID in canonical form; this journal cannot be synced"
        ))),
    }
}
