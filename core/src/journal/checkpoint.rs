//! Signed checkpoints: the number of events and the head hash, signed with the workstation's
//! Ed25519 journal key, so that a journal rewritten from some row on (and re-hashed), or
//! truncated, no longer matches what was signed.
//!
//! The journal key lives next to the journal in `<journal>.key` (for `journal.db`:
//! `journal.db.key`): 64 hex characters (the 32-byte Ed25519 seed) and a newline, mode 0600,
//! created on first use. A checkpoint signs [`Checkpoint::signed_bytes`]: the line
//! `custody checkpoint v1` followed by journal_id, count, head hash (hex) and time, each as a
//! 4-byte big-endian length and its UTF-8 bytes. It is stored twice: as a `checkpoint` event
//! (itself chained) and as a row of the `checkpoints` table; `verify` compares the two.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{db_err, Actor, EventKind, Journal, Writer};
use crate::error::{Error, Result};

/// `format` of an exported checkpoint.
pub const CHECKPOINT_FORMAT: &str = "custody-checkpoint-v1";

/// The workstation's journal key (Ed25519). Debug never shows the secret.
pub struct JournalKey {
    key: SigningKey,
    path: PathBuf,
}

impl std::fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalKey")
            .field("path", &self.path)
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl JournalKey {
    /// The key file of the journal at `journal`: `<journal>.key`.
    pub fn path_for(journal: &Path) -> PathBuf {
        let mut p = journal.as_os_str().to_owned();
        p.push(".key");
        PathBuf::from(p)
    }

    /// Loads the key at `path`; `None` when the file does not exist. A file readable by group
    /// or others is refused.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::Refused(format!(
                "journal key {} is readable by group or others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut seed[..]).map_err(|_| {
            Error::JournalCorrupt(format!(
                "journal key {} is not 64 hex characters",
                path.display()
            ))
        })?;
        Ok(Some(Self {
            key: SigningKey::from_bytes(&seed),
            path: path.into(),
        }))
    }

    /// Loads the key at `path`, creating it (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if let Some(key) = Self::load(path)? {
            return Ok(key);
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut seed[..])
            .map_err(|e| Error::io(path, std::io::Error::other(format!("no randomness: {e}"))))?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(&seed[..])));
        // Written in full under a private name, then linked into place: another process
        // creating the same journal never reads a key file that is still empty.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(
            ".new-{}-{}",
            std::process::id(),
            hex::encode(&seed[..4])
        ));
        let tmp = PathBuf::from(tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "journal key created");
                Ok(Self {
                    key: SigningKey::from_bytes(&seed),
                    path: path.into(),
                })
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::load(path)?.ok_or_else(|| Error::io(path, e))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The public key, hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// Where the key lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// The journal it is about.
    pub journal_id: String,
    /// The seq of the `checkpoint` event that records it (0 when unknown).
    #[serde(default)]
    pub seq: u64,
    /// Events covered: 1..=count.
    pub count: u64,
    /// Hash of event #count, hex (64 zeros when count is 0).
    pub head_hash: String,
    /// When it was made (UTC).
    pub at: String,
    /// The Ed25519 public key, hex.
    pub public_key: String,
    /// The signature over [`Checkpoint::signed_bytes`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = b"custody checkpoint v1\n".to_vec();
        for field in [
            self.journal_id.as_str(),
            &self.count.to_string(),
            &self.head_hash,
            &self.at,
        ] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }

    /// Checks the signature with the checkpoint's own public key.
    pub fn signature_valid(&self) -> bool {
        let key = hex::decode(&self.public_key)
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .and_then(|k| VerifyingKey::from_bytes(&k).ok());
        let sig = hex::decode(&self.signature)
            .ok()
            .and_then(|s| <[u8; 64]>::try_from(s).ok())
            .map(|s| ed25519_dalek::Signature::from_bytes(&s));
        match (key, sig) {
            (Some(k), Some(s)) => k.verify(&self.signed_bytes(), &s).is_ok(),
            _ => false,
        }
    }
}

/// The data of a `checkpoint` event (the checkpoint less the journal id and seq, which the
/// event row holds).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointData {
    count: u64,
    head_hash: String,
    at: String,
    public_key: String,
    signature: String,
}

impl Writer<'_> {
    /// Signs the chain as it stands in this transaction (every event appended so far) and
    /// appends the `checkpoint` event; also records it in the checkpoints table.
    pub fn checkpoint(&mut self, key: &JournalKey) -> Result<Checkpoint> {
        let mut cp = Checkpoint {
            format: CHECKPOINT_FORMAT.into(),
            journal_id: self.journal_id.to_owned(),
            seq: 0,
            count: self.head.seq,
            head_hash: hex::encode(self.head.hash),
            at: self.at.clone(),
            public_key: key.public_key_hex(),
            signature: String::new(),
        };
        cp.signature = hex::encode(key.key.sign(&cp.signed_bytes()).to_bytes());
        let data = CheckpointData {
            count: cp.count,
            head_hash: cp.head_hash.clone(),
            at: cp.at.clone(),
            public_key: cp.public_key.clone(),
            signature: cp.signature.clone(),
        };
        cp.seq = self.append(EventKind::Checkpoint, None, &data)?;
        self.tx
            .execute(
                "INSERT INTO checkpoints (seq, count, head_hash, at, public_key, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    cp.seq as i64,
                    cp.count as i64,
                    cp.head_hash,
                    cp.at,
                    cp.public_key,
                    cp.signature
                ],
            )
            .map_err(db_err)?;
        Ok(cp)
    }
}

/// Where the public key that checkpoints must be signed with came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustedKey {
    /// The journal key file next to the journal.
    KeyFile,
    /// The exported checkpoint given to verify.
    ExportedCheckpoint,
    /// Neither: the key of the journal's first checkpoint (trust on first use).
    FirstCheckpoint,
    /// No key and no checkpoint.
    None,
}

/// One checkpoint problem found by [`Journal::verify_checkpoints`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointProblem {
    /// The checkpoint's event seq (0 for an exported checkpoint).
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// What `journal verify` found about checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    /// Checkpoints checked (events and table rows, plus the exported one).
    pub checked: u64,
    /// The public key checkpoints must be signed with, hex.
    pub public_key: Option<String>,
    /// Where that key came from.
    pub trusted_key: TrustedKey,
    /// The newest checkpoint in the journal: (seq, count, at).
    pub latest: Option<Checkpoint>,
    /// Every problem found.
    pub problems: Vec<CheckpointProblem>,
}

impl CheckpointReport {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Journal {
    /// The journal key file of this journal.
    pub fn key_path(&self) -> PathBuf {
        JournalKey::path_for(&self.path)
    }

    /// Loads this journal's key, creating it on first use.
    pub fn journal_key(&self) -> Result<JournalKey> {
        JournalKey::load_or_create(&self.key_path())
    }

    /// Writes a signed checkpoint of the whole journal now (the daily checkpoint, and the one
    /// the wipe code writes after a destruction).
    pub fn checkpoint(&mut self, actor: &Actor, now: OffsetDateTime) -> Result<Checkpoint> {
        let key = self.journal_key()?;
        self.write(actor, now, |w| w.checkpoint(&key))
    }

    /// Writes a checkpoint when the newest one is older than `max_age` (or there is none, or
    /// events were appended since and it is older than `max_age`). Returns it when written.
    pub fn checkpoint_if_due(
        &mut self,
        actor: &Actor,
        now: OffsetDateTime,
        max_age: time::Duration,
    ) -> Result<Option<Checkpoint>> {
        let due = match self.latest_checkpoint()? {
            None => true,
            Some(cp) => {
                let at =
                    OffsetDateTime::parse(&cp.at, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| {
                        Error::JournalCorrupt(format!("checkpoint time {}: {e}", cp.at))
                    })?;
                now - at >= max_age
            }
        };
        if due {
            self.checkpoint(actor, now).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The newest checkpoint recorded in the checkpoints table.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        self.conn
            .query_row(
                "SELECT seq, count, head_hash, at, public_key, signature FROM checkpoints
                 ORDER BY seq DESC LIMIT 1",
                [],
                |r| {
                    Ok(Checkpoint {
                        format: CHECKPOINT_FORMAT.into(),
                        journal_id: self.journal_id.clone(),
                        seq: r.get::<_, i64>(0)? as u64,
                        count: r.get::<_, i64>(1)? as u64,
                        head_hash: r.get(2)?,
                        at: r.get(3)?,
                        public_key: r.get(4)?,
                        signature: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
    }

    /// Every checkpoint in the checkpoints table, oldest first.
    pub fn all_checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, count, head_hash, at, public_key, signature FROM checkpoints ORDER BY seq")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Checkpoint {
                    format: CHECKPOINT_FORMAT.into(),
                    journal_id: self.journal_id.clone(),
                    seq: r.get::<_, i64>(0)? as u64,
                    count: r.get::<_, i64>(1)? as u64,
                    head_hash: r.get(2)?,
                    at: r.get(3)?,
                    public_key: r.get(4)?,
                    signature: r.get(5)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }

    /// Checks every checkpoint: those recorded as events and those in the checkpoints table
    /// (they must agree), plus `exported` when given. Each must carry a valid signature by
    /// the trusted key (the journal key file; else the exported checkpoint's key; else the
    /// first checkpoint's), and the event it counts up to must exist with the hash it signed.
    pub fn verify_checkpoints(&self, exported: Option<&Checkpoint>) -> Result<CheckpointReport> {
        let mut problems = Vec::new();
        let mut bad = |seq: u64, reason: String| problems.push(CheckpointProblem { seq, reason });
        let events: Vec<(u64, String, String)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT seq, data, at FROM events WHERE kind = 'checkpoint' ORDER BY seq")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
                })
                .map_err(db_err)?;
            rows.collect::<std::result::Result<_, _>>()
                .map_err(db_err)?
        };
        let table = self.all_checkpoints()?;
        let total: u64 = self
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map_err(db_err)? as u64;
        let key_file = JournalKey::load(&self.key_path());
        let (trusted, trusted_key) = match (&key_file, exported) {
            (Ok(Some(k)), _) => (Some(k.public_key_hex()), TrustedKey::KeyFile),
            (_, Some(x)) => (Some(x.public_key.clone()), TrustedKey::ExportedCheckpoint),
            _ => {
                let first = table.first().map(|c| c.public_key.clone()).or_else(|| {
                    events.first().and_then(|(_, d, _)| {
                        serde_json::from_str::<CheckpointData>(d)
                            .ok()
                            .map(|d| d.public_key)
                    })
                });
                let source = if first.is_some() {
                    TrustedKey::FirstCheckpoint
                } else {
                    TrustedKey::None
                };
                (first, source)
            }
        };
        if let Err(e) = &key_file {
            bad(0, format!("journal key file unusable: {e}"));
        }
        // A journal gets its first checkpoint when it is created and its key with it: a key
        // without any checkpoint means checkpoints were removed, e.g. with the tail.
        if matches!(key_file, Ok(Some(_))) && events.is_empty() && table.is_empty() {
            bad(
                0,
                format!(
                    "the journal key {} exists but the journal holds no checkpoint (it holds {total} event(s)): checkpoints were removed, e.g. by truncating the journal. Restore it from a backup",
                    self.key_path().display()
                ),
            );
        }
        let mut checked = 0u64;
        let mut check = |cp: &Checkpoint,
                         what: &str,
                         bad: &mut dyn FnMut(u64, String)|
         -> Result<()> {
            checked += 1;
            if cp.journal_id != self.journal_id {
                bad(
                    cp.seq,
                    format!("{what} is for journal {}, not this one", cp.journal_id),
                );
                return Ok(());
            }
            if !cp.signature_valid() {
                bad(
                    cp.seq,
                    format!("{what}: the signature is invalid (the checkpoint was altered)"),
                );
            }
            if let Some(t) = &trusted {
                if &cp.public_key != t {
                    bad(cp.seq, format!(
                        "{what} is signed by another key ({}…), not this workstation's journal key ({}…)",
                        &cp.public_key.get(..16).unwrap_or(&cp.public_key),
                        t.get(..16).unwrap_or(t)
                    ));
                }
            }
            if cp.seq != 0 && cp.count >= cp.seq {
                bad(
                    cp.seq,
                    format!(
                        "{what} claims {} events but was recorded as event #{}",
                        cp.count, cp.seq
                    ),
                );
            }
            if cp.count == 0 {
                if cp.head_hash != hex::encode([0u8; 32]) {
                    bad(
                        cp.seq,
                        format!("{what} covers no events but names a head hash"),
                    );
                }
                return Ok(());
            }
            let hash: Option<Vec<u8>> = self
                .conn
                .query_row(
                    "SELECT hash FROM events WHERE seq = ?1",
                    [cp.count as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            match hash {
                None => bad(cp.seq, format!(
                    "{what} covers {} events but the journal holds {total}: events were removed (truncated)",
                    cp.count
                )),
                Some(h) if hex::encode(&h) != cp.head_hash => bad(cp.seq, format!(
                    "{what}: event #{} no longer has the hash that was signed (the journal up to it was rewritten)",
                    cp.count
                )),
                Some(_) => {}
            }
            Ok(())
        };
        for (seq, data, at) in &events {
            let Ok(d) = serde_json::from_str::<CheckpointData>(data) else {
                bad(
                    *seq,
                    format!("checkpoint event #{seq} does not hold a checkpoint"),
                );
                continue;
            };
            let cp = Checkpoint {
                format: CHECKPOINT_FORMAT.into(),
                journal_id: self.journal_id.clone(),
                seq: *seq,
                count: d.count,
                head_hash: d.head_hash,
                at: d.at,
                public_key: d.public_key,
                signature: d.signature,
            };
            if &cp.at != at {
                bad(*seq, format!("checkpoint event #{seq}: signed time {} differs from the event's time {at}", cp.at));
            }
            check(&cp, &format!("checkpoint event #{seq}"), &mut bad)?;
            match table.iter().find(|t| t.seq == *seq) {
                None => bad(
                    *seq,
                    format!("checkpoint event #{seq} is missing from the checkpoints table"),
                ),
                Some(t) if t != &cp => bad(
                    *seq,
                    format!(
                        "checkpoint event #{seq} differs from its row in the checkpoints table"
                    ),
                ),
                Some(_) => {}
            }
        }
        for t in &table {
            if events.iter().any(|(s, _, _)| *s == t.seq) {
                continue;
            }
            let why = if t.seq > total {
                format!("checkpoint #{} (covering {} events) is in the checkpoints table but event #{} is gone: the journal was truncated to {total} events", t.seq, t.count, t.seq)
            } else {
                format!(
                    "checkpoint #{} is in the checkpoints table but event #{} is not a checkpoint",
                    t.seq, t.seq
                )
            };
            bad(t.seq, why);
            check(t, &format!("checkpoint #{} (table)", t.seq), &mut bad)?;
        }
        if let Some(x) = exported {
            if x.format != CHECKPOINT_FORMAT {
                bad(
                    0,
                    format!(
                        "the exported checkpoint has format {:?}, expected {CHECKPOINT_FORMAT}",
                        x.format
                    ),
                );
            }
            let mut x = x.clone();
            x.seq = 0;
            check(&x, "the exported checkpoint", &mut bad)?;
        }
        let latest = table.last().cloned();
        Ok(CheckpointReport {
            checked,
            public_key: trusted,
            trusted_key,
            latest,
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_mode_0600_and_reused() {
        let dir = std::env::temp_dir().join(format!("custody-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = JournalKey::path_for(&dir.join("journal.db"));
        assert!(path.ends_with("journal.db.key"));
        let a = JournalKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        let b = JournalKey::load_or_create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.public_key_hex(), b.public_key_hex());
        assert!(!format!("{a:?}").contains(
            &std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_owned()
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = JournalKey::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("chmod 600"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
