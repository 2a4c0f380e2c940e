//! The events exactly as they are chained (every hashed column's bytes, `prev_hash`,
//! `hash`), for whatever keeps a copy of the chain elsewhere: the organisation's journal
//! (`crate::fleet`) reads the local journal only through these functions.

use rusqlite::{params, OptionalExtension};

use super::{db_err, Journal};
use crate::error::{Error, Result};

/// One event as it is chained: the bytes hashed and both hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEvent {
    /// Sequence number.
    pub seq: u64,
    /// UTC time, as hashed.
    pub at: String,
    /// Event kind.
    pub kind: String,
    /// Carrier key, if any.
    pub carrier: Option<String>,
    /// OS user.
    pub os_user: String,
    /// Operator, if named.
    pub operator: Option<String>,
    /// Host.
    pub host: String,
    /// Event data: the JSON text exactly as hashed.
    pub data: String,
    /// Hash of the previous event (32 zero bytes for the first).
    pub prev_hash: [u8; 32],
    /// This event's hash.
    pub hash: [u8; 32],
}

fn hash32(seq: i64, what: &str, bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| Error::JournalCorrupt(format!("event #{seq}: {what} is not 32 bytes")))
}

impl Journal {
    /// The last event's seq and hash: `(0, [0; 32])` for an empty journal.
    pub fn head(&self) -> Result<(u64, [u8; 32])> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err)?;
        match row {
            Some((seq, hash)) => Ok((seq.max(0) as u64, hash32(seq, "hash", hash)?)),
            None => Ok((0, [0; 32])),
        }
    }

    /// The hash of event `seq`, if the journal holds it.
    pub fn event_hash(&self, seq: u64) -> Result<Option<[u8; 32]>> {
        let hash: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT hash FROM events WHERE seq = ?1",
                [seq as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        hash.map(|h| hash32(seq as i64, "hash", h)).transpose()
    }

    /// Up to `limit` events after `after`, oldest first, as they are chained.
    pub fn chain_events(&self, after: u64, limit: usize) -> Result<Vec<ChainEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash
                 FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![after as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    (
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ),
                    r.get::<_, Vec<u8>>(8)?,
                    r.get::<_, Vec<u8>>(9)?,
                ))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, (at, kind, carrier, os_user, operator, host, data), prev, hash) =
                row.map_err(db_err)?;
            out.push(ChainEvent {
                seq: seq.max(0) as u64,
                at,
                kind,
                carrier,
                os_user,
                operator,
                host,
                data,
                prev_hash: hash32(seq, "prev_hash", prev)?,
                hash: hash32(seq, "hash", hash)?,
            });
        }
        Ok(out)
    }
}
