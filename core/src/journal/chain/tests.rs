//! The chain's hash is fixed byte for byte (journals written by any custody must verify), and
//! verify names each kind of damage at the right event.

use std::path::PathBuf;

use rusqlite::Connection;
use serde_json::json;
use time::OffsetDateTime;

use super::*;
use crate::journal::{Actor, EventKind, Journal};

const JOURNAL_ID: &str = "3f1c2b7e-1111-4222-8333-944455556666";

/// Hashes computed apart from custody (Python's hashlib over the documented layout: the
/// previous hash, then each field as a 4-byte big-endian length and its UTF-8 bytes).
const FIRST: &str = "9b669a227c1d6418506d73dc2e15e861dff3580db02c9d59588475723729a7fc";
const SECOND: &str = "99ba533e8c9aee7404de80e4e1ba82f4e616435dcfb4f7e77dcd84d357229be4";

fn event(carrier: Option<&'static str>, operator: Option<&'static str>) -> NewEvent<'static> {
    NewEvent {
        journal_id: JOURNAL_ID,
        at: "2026-11-23T05:00:00.000Z",
        kind: "key_added",
        carrier,
        os_user: "bench",
        operator,
        host: "workstation-01",
        data: r#"{"event":"key_added"}"#,
    }
}

#[test]
fn event_hash_is_the_documented_layout() {
    let first = hash_event(
        &[0; 32],
        1,
        &event(
            Some("SoftHSM project/SoftHSM v2/0123456789abcdef"),
            Some("Бенчмарк"),
        ),
    );
    assert_eq!(hex::encode(first), FIRST);
    // No carrier and no operator hash as empty fields.
    let second = hash_event(&first, 2, &event(None, None));
    assert_eq!(hex::encode(second), SECOND);
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("custody-chain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir.join("journal.db")
}

/// A journal of its first checkpoint and `n` key events, and its path.
fn journal(name: &str, n: u64) -> PathBuf {
    let path = temp(name);
    let mut j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let actor = Actor {
        os_user: "test".into(),
        operator: Some("Оператор".into()),
        host: "host".into(),
    };
    j.write(&actor, OffsetDateTime::now_utc(), |w| {
        for i in 0..n {
            let carrier = (i % 2 == 0).then_some("SoftHSM project/SoftHSM v2/0001");
            w.append(EventKind::KeyAdded, carrier, &json!({ "n": i }))?;
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    path
}

/// Changes the file as an attacker would: the append-only triggers dropped first.
fn tamper(path: &std::path::Path, sql: &str) {
    let conn = Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch(&format!(
        "DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete; {sql}"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
}

fn verify_file(path: &std::path::Path) -> (VerifyReport, Vec<(u64, u64)>) {
    let j = Journal::open_read_only(path).unwrap_or_else(|e| panic!("{e}"));
    let mut calls = Vec::new();
    let report = j
        .verify_with_progress(&mut |done, total| calls.push((done, total)))
        .unwrap_or_else(|e| panic!("{e}"));
    (report, calls)
}

#[test]
fn a_whole_chain_verifies_with_progress_up_to_its_last_event() {
    let path = journal("whole", 25_000);
    let (report, calls) = verify_file(&path);
    assert!(report.ok(), "{report:?}");
    // The first checkpoint and the key events.
    assert_eq!(report.events, 25_001);
    assert_eq!(calls, [(0, 25_001), (10_000, 25_001), (20_000, 25_001)]);
    let head: Vec<u8> = Connection::open(&path)
        .and_then(|c| {
            c.query_row("SELECT hash FROM events WHERE seq = 25001", [], |r| {
                r.get(0)
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.head_hash, hex::encode(head));
}

#[test]
fn verify_names_the_first_damaged_event() {
    let cases: [(&str, &str, u64, &str); 5] = [
        (
            "altered",
            "UPDATE events SET data = '{\"n\":9}' WHERE seq = 5",
            5,
            "contents do not match",
        ),
        (
            "operator",
            "UPDATE events SET operator = NULL WHERE seq = 7",
            7,
            "contents do not match",
        ),
        (
            "deleted",
            "DELETE FROM events WHERE seq = 4",
            4,
            "events 4..4 are missing",
        ),
        (
            "relinked",
            // The link to the previous event is checked before the row's own hash.
            "UPDATE events SET prev_hash = zeroblob(32) WHERE seq = 6",
            6,
            "prev_hash does not match",
        ),
        (
            "truncated hash",
            "UPDATE events SET hash = substr(hash, 1, 31) WHERE seq = 3",
            3,
            "contents do not match",
        ),
    ];
    for (name, sql, seq, reason) in cases {
        let path = journal(&name.replace(' ', "-"), 10);
        tamper(&path, sql);
        let (report, _) = verify_file(&path);
        let bad = report
            .first_bad
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: not found"));
        assert_eq!(bad.seq, seq, "{name}: {report:?}");
        assert!(bad.reason.contains(reason), "{name}: {report:?}");
        // Every event before it was checked, and the head is the last good one's.
        assert_eq!(report.events, seq - 1, "{name}");
        let good: Vec<u8> = Connection::open(&path)
            .and_then(|c| {
                c.query_row(
                    "SELECT hash FROM events WHERE seq = ?1",
                    [(seq - 1) as i64],
                    |r| r.get(0),
                )
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.head_hash, hex::encode(good), "{name}");
    }
}
