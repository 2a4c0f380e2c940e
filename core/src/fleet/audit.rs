//! The organisation's side: every journal's state and alarms (`fleet status`), the chains
//! and checkpoints re-verified (`fleet verify`), and the events behind the form.
//! Read-only: run as the auditor role (or admin, or the owner).

use serde::Serialize;
use time::OffsetDateTime;

use super::Fleet;
use crate::error::Result;
use crate::journal::{ChainEvent, Checkpoint, FormFilter, FormRow, Journal, CHECKPOINT_FORMAT};
use crate::order::Zone;

/// An alarm the server recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmRow {
    /// Alarm id.
    pub id: i64,
    /// The journal concerned.
    pub journal_id: String,
    /// Its agent, when the journal is registered.
    pub agent: Option<String>,
    /// The event concerned.
    pub seq: u64,
    /// `fork`, `rewritten`, `gap`, `behind` or `checkpoint`.
    pub kind: String,
    /// What the server saw.
    pub detail: String,
    /// The login role whose statement raised it.
    pub raised_by: String,
    /// When (UTC).
    pub raised_at: String,
}

/// One workstation journal as the organisation holds it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetJournal {
    /// The journal.
    pub journal_id: String,
    /// Its agent.
    pub agent: String,
    /// The host it registered from.
    pub host: String,
    /// Events held (the last seq).
    pub server_seq: u64,
    /// Checkpoints held.
    pub checkpoints: u64,
    /// When the agent last completed a sync (UTC), if ever.
    pub last_sync: Option<String>,
    /// Seconds since then.
    pub last_sync_age_s: Option<i64>,
    /// The local journal's last event at that sync.
    pub local_seq: Option<u64>,
    /// Events the local journal held that the organisation did not, at that sync.
    pub lag_events: Option<u64>,
    /// Alarms recorded for the journal.
    pub alarms: u64,
}

/// A destruction order received somewhere in the fleet and not carried out in time.
#[derive(Debug, Clone, Serialize)]
pub struct OverdueOrder {
    /// The journal that received it.
    pub journal_id: String,
    /// Its agent.
    pub agent: String,
    /// The order.
    pub order_id: String,
    /// The dismissed holder.
    pub holder: String,
    /// The target carrier's serial.
    pub serial: String,
    /// Dismissal date.
    pub dismissed: String,
    /// Due (UTC).
    pub due: String,
}

/// `custody fleet status`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// Enrolled agents.
    pub agents: Vec<String>,
    /// Agents enrolled that never synced.
    pub never_synced: Vec<String>,
    /// Every journal.
    pub journals: Vec<FleetJournal>,
    /// Every alarm, oldest first.
    pub alarms: Vec<AlarmRow>,
    /// Destruction orders past due across the fleet.
    pub overdue: Vec<OverdueOrder>,
}

/// One journal's result in `fleet verify`.
#[derive(Debug, Clone, Serialize)]
pub struct JournalCheck {
    /// The journal.
    pub journal_id: String,
    /// Its agent.
    pub agent: String,
    /// Events checked.
    pub events: u64,
    /// The first bad event and why.
    pub first_bad: Option<(u64, String)>,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Checkpoint problems: (seq, reason).
    pub checkpoint_problems: Vec<(u64, String)>,
}

/// `custody fleet verify`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetVerify {
    /// Every journal.
    pub journals: Vec<JournalCheck>,
    /// Events checked in all.
    pub events: u64,
    /// Checkpoints checked in all.
    pub checkpoints: u64,
    /// Wall time of the chain check, ms.
    pub chain_ms: u64,
    /// Wall time of the checkpoint check, ms.
    pub checkpoint_ms: u64,
    /// Events verified per second (chain check).
    pub events_per_second: u64,
}

impl FleetVerify {
    /// True when every chain and checkpoint verified.
    pub fn ok(&self) -> bool {
        self.journals
            .iter()
            .all(|j| j.first_bad.is_none() && j.checkpoint_problems.is_empty())
    }
}

/// One workstation journal's rows of the mandated form, as the organisation holds them.
#[derive(Debug, Clone, Serialize)]
pub struct JournalForm {
    /// The agent.
    pub agent: String,
    /// The host it registered from.
    pub host: String,
    /// The journal.
    pub journal_id: String,
    /// Its rows, numbered by the workstation.
    pub rows: Vec<FormRow>,
}

const UTC_TEXT: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'";

impl Fleet {
    /// Alarms, oldest first; of one journal when given.
    pub fn alarms(&mut self, journal_id: Option<&str>) -> Result<Vec<AlarmRow>> {
        let db = self.database.clone();
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT a.id, a.journal_id::text, j.agent, a.seq, a.kind, a.detail, a.raised_by::text,
                            to_char(a.raised_at AT TIME ZONE 'UTC', {UTC_TEXT})
                     FROM custody.alarms a LEFT JOIN custody.journals j USING (journal_id)
                     WHERE $1::text IS NULL OR a.journal_id = $1::text::uuid ORDER BY a.id"
                ),
                &[&journal_id],
            )
            .map_err(|e| super::map_err(&db, e))?;
        Ok(rows
            .iter()
            .map(|r| AlarmRow {
                id: r.get(0),
                journal_id: r.get(1),
                agent: r.get(2),
                seq: r.get::<_, i64>(3) as u64,
                kind: r.get(4),
                detail: r.get(5),
                raised_by: r.get(6),
                raised_at: r.get(7),
            })
            .collect())
    }

    /// Agents, journals, lag, alarms and overdue destructions across the fleet at `now`;
    /// deadlines in `zone` (see `order::due`).
    pub fn status(&mut self, zone: &Zone, now: OffsetDateTime) -> Result<FleetStatus> {
        self.check_schema()?;
        let db = self.database.clone();
        let err = |e| super::map_err(&db, e);
        let agents: Vec<String> = self
            .client
            .query("SELECT name FROM custody.agents ORDER BY name", &[])
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT j.journal_id::text, j.agent, j.host,
                        coalesce((SELECT max(seq) FROM custody.events e WHERE e.journal_id = j.journal_id), 0),
                        (SELECT count(*) FROM custody.checkpoints c WHERE c.journal_id = j.journal_id),
                        to_char(r.reported_at AT TIME ZONE 'UTC', {UTC_TEXT}),
                        extract(epoch FROM now() - r.reported_at)::bigint,
                        r.local_seq, r.server_seq,
                        (SELECT count(*) FROM custody.alarms a WHERE a.journal_id = j.journal_id)
                     FROM custody.journals j
                     LEFT JOIN LATERAL (SELECT * FROM custody.sync_reports s WHERE s.journal_id = j.journal_id
                                        ORDER BY s.id DESC LIMIT 1) r ON true
                     ORDER BY j.agent, j.registered_at"
                ),
                &[],
            )
            .map_err(err)?;
        let journals: Vec<FleetJournal> = rows
            .iter()
            .map(|r| {
                let local: Option<i64> = r.get(7);
                let server_at_report: Option<i64> = r.get(8);
                FleetJournal {
                    journal_id: r.get(0),
                    agent: r.get(1),
                    host: r.get(2),
                    server_seq: r.get::<_, i64>(3) as u64,
                    checkpoints: r.get::<_, i64>(4) as u64,
                    last_sync: r.get(5),
                    last_sync_age_s: r.get(6),
                    local_seq: local.map(|l| l as u64),
                    lag_events: local
                        .zip(server_at_report)
                        .map(|(l, s)| (l - s).max(0) as u64),
                    alarms: r.get::<_, i64>(9) as u64,
                }
            })
            .collect();
        let never_synced = agents
            .iter()
            .filter(|a| !journals.iter().any(|j| &j.agent == *a))
            .cloned()
            .collect();
        let open = self
            .client
            .query(
                "SELECT e.journal_id::text, j.agent, d ->> 'order_id', d -> 'order' ->> 'holder',
                        d -> 'order' -> 'target' ->> 'serial', d -> 'order' ->> 'dismissed'
                 FROM custody.events e JOIN custody.journals j USING (journal_id),
                      LATERAL (SELECT e.data::jsonb AS d) x
                 WHERE e.kind = 'order_received'
                   AND NOT EXISTS (SELECT 1 FROM custody.events w
                                   WHERE w.journal_id = e.journal_id AND w.kind = 'wipe_completed'
                                     AND w.data::jsonb ->> 'order_id' = d ->> 'order_id')
                 ORDER BY j.agent, e.seq",
                &[],
            )
            .map_err(err)?;
        let date = time::macros::format_description!("[year]-[month]-[day]");
        let mut overdue = Vec::new();
        for r in &open {
            let dismissed: Option<String> = r.get(5);
            let due = dismissed
                .as_deref()
                .and_then(|d| time::Date::parse(d.get(..10).unwrap_or(d), date).ok())
                .map(|d| crate::order::due(d, zone));
            // An order whose dismissal date cannot be read is treated as due: better a
            // question than a destruction forgotten.
            if due.is_none_or(|d| now >= d) {
                overdue.push(OverdueOrder {
                    journal_id: r.get(0),
                    agent: r.get(1),
                    order_id: r.get::<_, Option<String>>(2).unwrap_or_default(),
                    holder: r.get::<_, Option<String>>(3).unwrap_or_default(),
                    serial: r.get::<_, Option<String>>(4).unwrap_or_default(),
                    dismissed: dismissed.clone().unwrap_or_default(),
                    due: due.map(crate::journal::timestamp).unwrap_or_default(),
                });
            }
        }
        Ok(FleetStatus {
            agents,
            never_synced,
            journals,
            alarms: self.alarms(None)?,
            overdue,
        })
    }

    /// Re-verifies every journal's chain in the database (pgcrypto, the same canonical bytes
    /// as the workstation) and every checkpoint: it must sign the hash the organisation
    /// holds for its event, with a valid Ed25519 signature by the journal's first key.
    pub fn verify(&mut self) -> Result<FleetVerify> {
        self.check_schema()?;
        let db = self.database.clone();
        let err = |e| super::map_err(&db, e);
        let started = std::time::Instant::now();
        let rows = self
            .client
            .query(
                "SELECT j.journal_id::text, j.agent, coalesce(t.events, 0), t.first_bad, t.reason
                 FROM custody.journals j
                 LEFT JOIN (
                     SELECT journal_id, count(*) AS events,
                            min(seq) FILTER (WHERE reason IS NOT NULL) AS first_bad,
                            (array_agg(reason ORDER BY seq) FILTER (WHERE reason IS NOT NULL))[1] AS reason
                     FROM (SELECT journal_id, seq,
                                  CASE WHEN seq <> row_number() OVER w
                                         THEN 'events before it are missing'
                                       WHEN prev_hash <> coalesce(lag(hash) OVER w,
                                         '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
                                         THEN 'prev_hash does not match the previous event''s hash'
                                       WHEN hash <> custody.chain_hash(prev_hash, journal_id, seq, at, kind,
                                              carrier, os_user, operator, host, data)
                                         THEN 'contents do not match the stored hash (the row was altered)'
                                  END AS reason
                           FROM custody.events WINDOW w AS (PARTITION BY journal_id ORDER BY seq)) c
                     GROUP BY journal_id) t USING (journal_id)
                 ORDER BY j.agent, j.registered_at",
                &[],
            )
            .map_err(err)?;
        let chain_ms = started.elapsed().as_millis() as u64;
        let mut journals: Vec<JournalCheck> = rows
            .iter()
            .map(|r| {
                let first_bad: Option<i64> = r.get(3);
                let reason: Option<String> = r.get(4);
                JournalCheck {
                    journal_id: r.get(0),
                    agent: r.get(1),
                    events: r.get::<_, i64>(2) as u64,
                    first_bad: first_bad.map(|s| (s as u64, reason.unwrap_or_default())),
                    checkpoints: 0,
                    checkpoint_problems: Vec::new(),
                }
            })
            .collect();
        let cp_started = std::time::Instant::now();
        let cps = self
            .client
            .query(
                "SELECT c.journal_id::text, c.seq, c.count, c.head_hash, c.at, c.public_key, c.signature,
                        CASE WHEN c.count = 0 THEN repeat('0', 64) ELSE encode(e.hash, 'hex') END
                 FROM custody.checkpoints c
                 LEFT JOIN custody.events e ON e.journal_id = c.journal_id AND e.seq = c.count
                 ORDER BY c.journal_id, c.seq",
                &[],
            )
            .map_err(err)?;
        let mut first_key: Option<(String, String)> = None;
        for r in &cps {
            let cp = Checkpoint {
                format: CHECKPOINT_FORMAT.into(),
                journal_id: r.get(0),
                seq: r.get::<_, i64>(1) as u64,
                count: r.get::<_, i64>(2) as u64,
                head_hash: r.get(3),
                at: r.get(4),
                public_key: r.get(5),
                signature: r.get(6),
            };
            let held: Option<String> = r.get(7);
            let Some(check) = journals.iter_mut().find(|j| j.journal_id == cp.journal_id) else {
                continue;
            };
            check.checkpoints += 1;
            let key = match &first_key {
                Some((j, k)) if *j == cp.journal_id => k.clone(),
                _ => {
                    first_key = Some((cp.journal_id.clone(), cp.public_key.clone()));
                    cp.public_key.clone()
                }
            };
            let mut bad = |why: String| check.checkpoint_problems.push((cp.seq, why));
            if !cp.signature_valid() {
                bad("the signature does not verify".into());
            }
            if cp.public_key != key {
                bad(format!(
                    "signed with key {}, not the journal's key {key} of its first checkpoint",
                    cp.public_key
                ));
            }
            if held.as_deref() != Some(cp.head_hash.as_str()) {
                bad(format!(
                    "signs head {} of event #{}, but the organisation holds {}",
                    cp.head_hash,
                    cp.count,
                    held.as_deref().unwrap_or("no such event")
                ));
            }
        }
        let checkpoint_ms = cp_started.elapsed().as_millis() as u64;
        let events: u64 = journals.iter().map(|j| j.events).sum();
        let checkpoints: u64 = journals.iter().map(|j| j.checkpoints).sum();
        Ok(FleetVerify {
            events_per_second: (events as f64 / (chain_ms.max(1) as f64 / 1000.0)) as u64,
            journals,
            events,
            checkpoints,
            chain_ms,
            checkpoint_ms,
        })
    }

    /// The mandated form of every journal the organisation holds, by agent: each journal's
    /// events are rebuilt into an in-memory journal (chain checked) whose form is read with
    /// the workstation's own code.
    pub fn form(&mut self, filter: &FormFilter) -> Result<Vec<JournalForm>> {
        self.check_schema()?;
        let mut out = Vec::new();
        for (journal_id, agent, host) in self.journals()? {
            let events = self.journal_events(&journal_id)?;
            let replica = Journal::replica(&journal_id, &events)?;
            out.push(JournalForm {
                rows: replica.form(filter)?,
                agent,
                host,
                journal_id,
            });
        }
        Ok(out)
    }

    /// Every journal the organisation holds: (journal_id, agent, host).
    pub fn journals(&mut self) -> Result<Vec<(String, String, String)>> {
        let db = self.database.clone();
        let rows = self
            .client
            .query(
                "SELECT journal_id::text, agent, host FROM custody.journals ORDER BY agent, registered_at",
                &[],
            )
            .map_err(|e| super::map_err(&db, e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Every event of one journal, oldest first, as chained.
    pub fn journal_events(&mut self, journal_id: &str) -> Result<Vec<ChainEvent>> {
        let db = self.database.clone();
        let rows = self
            .client
            .query(
                "SELECT seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash
                 FROM custody.events WHERE journal_id = $1::text::uuid ORDER BY seq",
                &[&journal_id],
            )
            .map_err(|e| super::map_err(&db, e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let prev: &[u8] = r.get(8);
                let hash: &[u8] = r.get(9);
                ChainEvent {
                    seq: r.get::<_, i64>(0) as u64,
                    at: r.get(1),
                    kind: r.get(2),
                    carrier: r.get(3),
                    os_user: r.get(4),
                    operator: r.get(5),
                    host: r.get(6),
                    data: r.get(7),
                    prev_hash: prev.try_into().unwrap_or([0; 32]),
                    hash: hash.try_into().unwrap_or([0; 32]),
                }
            })
            .collect())
    }
}
