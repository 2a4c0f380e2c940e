//! The hash chain over journal events.
//!
//! `hash = SHA-256(prev_hash || canonical)`, where `canonical` is every hashed column in a
//! fixed order, each as a 4-byte big-endian length followed by its UTF-8 bytes:
//! journal_id, seq (decimal), at, kind, carrier (empty when none), os_user, operator (empty
//! when none), host, data. The first event's `prev_hash` is 32 zero bytes. Because the
//! journal_id and seq are hashed, rows cannot be moved between journals or renumbered.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::db_err;
use crate::error::Result;

/// A new event, before it is numbered and hashed.
pub(crate) struct NewEvent<'a> {
    pub(crate) journal_id: &'a str,
    pub(crate) at: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) carrier: Option<&'a str>,
    pub(crate) os_user: &'a str,
    pub(crate) operator: Option<&'a str>,
    pub(crate) host: &'a str,
    pub(crate) data: &'a str,
}

/// The end of the chain: last seq and hash.
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: [u8; 32],
}

impl Head {
    pub(crate) fn load(conn: &Connection) -> Result<Self> {
        let row: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err)?;
        Ok(match row {
            Some((seq, hash)) => Self {
                seq: seq as u64,
                hash: hash.try_into().unwrap_or([0; 32]),
            },
            None => Self {
                seq: 0,
                hash: [0; 32],
            },
        })
    }

    /// Numbers, hashes and inserts `event`; returns its seq.
    pub(crate) fn append(&mut self, tx: &Transaction<'_>, event: &NewEvent<'_>) -> Result<u64> {
        let seq = self.seq + 1;
        let hash = hash_event(&self.hash, seq, event);
        tx.prepare_cached(
            "INSERT INTO events (seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(db_err)?
        .execute(params![
            seq as i64,
            event.at,
            event.kind,
            event.carrier,
            event.os_user,
            event.operator,
            event.host,
            event.data,
            &self.hash[..],
            &hash[..]
        ])
        .map_err(db_err)?;
        self.seq = seq;
        self.hash = hash;
        Ok(seq)
    }
}

pub(super) fn hash_event(prev: &[u8], seq: u64, e: &NewEvent<'_>) -> [u8; 32] {
    hash_fields(
        prev,
        [
            e.journal_id.as_bytes(),
            itoa::Buffer::new().format(seq).as_bytes(),
            e.at.as_bytes(),
            e.kind.as_bytes(),
            e.carrier.unwrap_or("").as_bytes(),
            e.os_user.as_bytes(),
            e.operator.unwrap_or("").as_bytes(),
            e.host.as_bytes(),
            e.data.as_bytes(),
        ],
    )
}

/// SHA-256 of `prev` and each field as a 4-byte big-endian length and its bytes.
fn hash_fields(prev: &[u8], fields: [&[u8]; 9]) -> [u8; 32] {
    hash_fields_in(&mut Vec::new(), prev, fields)
}

/// [`hash_fields`], laying the bytes out in `buf` first (reused from row to row by
/// `verify`): one SHA-256 call over one slice instead of nineteen small updates.
fn hash_fields_in(buf: &mut Vec<u8>, prev: &[u8], fields: [&[u8]; 9]) -> [u8; 32] {
    buf.clear();
    buf.extend_from_slice(prev);
    for field in fields {
        buf.extend_from_slice(&(field.len() as u32).to_be_bytes());
        buf.extend_from_slice(field);
    }
    Sha256::digest(buf.as_slice()).into()
}

/// The result of `journal verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// The hash of the last good event (hex).
    pub head_hash: String,
    /// The first problem found, if any.
    pub first_bad: Option<VerifyProblem>,
}

impl VerifyReport {
    /// True when the whole chain verified.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// The first bad row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// The seq of the bad row (or the seq expected where a row is missing).
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// How many events [`verify_with_progress`] checks between two calls of its `progress`.
const PROGRESS_EVERY: u64 = 10_000;

pub(crate) fn verify(conn: &Connection, journal_id: &str) -> Result<VerifyReport> {
    verify_with_progress(conn, journal_id, &mut |_, _| {})
}

/// [`verify`], telling `progress` (events checked, events in the journal) as it goes.
pub(crate) fn verify_with_progress(
    conn: &Connection,
    journal_id: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    // The events in a whole chain: the last seq, read from the end of the table's b-tree
    // (count(*) would read a whole index before the first event is checked). Only the
    // progress uses it.
    let total: Option<i64> = conn
        .query_row("SELECT max(seq) FROM events", [], |r| r.get(0))
        .map_err(db_err)?;
    let total = total.unwrap_or(0).max(0) as u64;
    progress(0, total);
    let mut stmt = conn
        .prepare(
            "SELECT seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash
             FROM events ORDER BY seq",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut prev = [0u8; 32];
    let mut expected = 1u64;
    let mut checked = 0u64;
    let bad = |seq: u64, reason: &str, checked: u64, prev: &[u8; 32]| VerifyReport {
        events: checked,
        head_hash: hex::encode(prev),
        first_bad: Some(VerifyProblem {
            seq,
            reason: reason.into(),
        }),
    };
    let journal_id = journal_id.as_bytes();
    let mut seq_text = itoa::Buffer::new();
    let mut canonical = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let seq: i64 = row.get(0).map_err(db_err)?;
        let seq_u = seq.max(0) as u64;
        if seq_u != expected {
            let reason = if seq_u > expected {
                format!("events {expected}..{} are missing", seq_u - 1)
            } else {
                "sequence number out of order".into()
            };
            return Ok(bad(expected.min(seq_u.max(1)), &reason, checked, &prev));
        }
        // Borrow the columns in place: no allocation per row.
        let bytes = |i: usize| -> Option<&[u8]> {
            match row.get_ref(i).ok()? {
                ValueRef::Text(t) => Some(t),
                ValueRef::Null => Some(&[]),
                _ => None,
            }
        };
        let blob = |i: usize| -> Option<&[u8]> {
            match row.get_ref(i).ok()? {
                ValueRef::Blob(b) => Some(b),
                _ => None,
            }
        };
        let (Some(at), Some(kind), Some(carrier), Some(os_user), Some(operator), Some(host)) =
            (bytes(1), bytes(2), bytes(3), bytes(4), bytes(5), bytes(6))
        else {
            return Ok(bad(seq_u, "a column has the wrong type", checked, &prev));
        };
        let (Some(data), Some(prev_hash), Some(hash)) = (bytes(7), blob(8), blob(9)) else {
            return Ok(bad(seq_u, "a column has the wrong type", checked, &prev));
        };
        if prev_hash != prev {
            return Ok(bad(
                seq_u,
                "prev_hash does not match the previous event's hash (a row before it was removed or replaced)",
                checked,
                &prev,
            ));
        }
        let computed = hash_fields_in(
            &mut canonical,
            &prev,
            [
                journal_id,
                seq_text.format(seq_u).as_bytes(),
                at,
                kind,
                carrier,
                os_user,
                operator,
                host,
                data,
            ],
        );
        if computed[..] != hash[..] {
            return Ok(bad(
                seq_u,
                "contents do not match the stored hash (the row was altered)",
                checked,
                &prev,
            ));
        }
        prev = computed;
        expected += 1;
        checked += 1;
        if checked.is_multiple_of(PROGRESS_EVERY) {
            progress(checked, total);
        }
    }
    Ok(VerifyReport {
        events: checked,
        head_hash: hex::encode(prev),
        first_bad: None,
    })
}

#[cfg(test)]
mod tests;
