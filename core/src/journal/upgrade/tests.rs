//! A journal as custody wrote it at schema 3 (no `key_set_row` in scan events, no `seen`
//! rows, form_rows of schema 3) is opened: its key sets get their rows at the upgrade.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use time::macros::datetime;

use super::super::chain::{hash_event, NewEvent};
use super::super::migrations::MIGRATIONS;
use super::super::{ImportRow, APPLICATION_ID};
use super::*;
use crate::id::{CarrierId, RawBytes};
use crate::inventory::{
    CarrierSnapshot, CertObject, KeyClass, KeyObject, KeyPairing, Login, ModuleInfo, ModuleScan,
    TokenFlags,
};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("custody-upgrade-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn carrier(serial: &str, objects: &[(u8, &str)]) -> CarrierSnapshot {
    CarrierSnapshot {
        id: CarrierId {
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            serial: serial.into(),
            discriminator: None,
        },
        label: format!("token {serial}"),
        strings_lossy: false,
        serial_weak: false,
        flags: TokenFlags {
            token_initialized: true,
            ..TokenFlags::default()
        },
        hardware_version: "2.6".into(),
        firmware_version: "2.6".into(),
        module: "/m.so".into(),
        slot: 1,
        certificates: objects
            .iter()
            .map(|(id, fp)| CertObject {
                id: RawBytes::new(vec![*id]),
                label: RawBytes::default(),
                sha256: format!("c{fp}"),
                info: None,
                parse_error: Some("not a certificate".into()),
                key_pairing: KeyPairing::None,
            })
            .collect(),
        public_keys: objects
            .iter()
            .map(|(id, fp)| KeyObject {
                class: KeyClass::Public,
                id: RawBytes::new(vec![*id]),
                label: RawBytes::new(b"k".to_vec()),
                key_type: 3,
                key_type_name: "EC".into(),
                public_key_sha256: Some(format!("k{fp}")),
                local: Some(true),
                never_extractable: None,
                always_sensitive: None,
                start_date: None,
            })
            .collect(),
        private_keys: None,
        login: Login::NotAttempted,
    }
}

fn scan(carriers: Vec<CarrierSnapshot>) -> Vec<ModuleScan> {
    let n = carriers.len();
    vec![ModuleScan::read(
        ModuleInfo::unknown("/m.so"),
        carriers,
        Vec::new(),
        n,
        None,
    )]
}

fn columns(conn: &Connection, table: &str) -> Vec<String> {
    conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_else(|e| panic!("{table}: {e}"))
}

/// Writes `to` as custody wrote it at schema 3, from a journal `from` written now: the same
/// events without the rows scans carry since schema 4 (the chain hashed again over them), no
/// `seen` rows, every table in its schema-3 shape.
fn as_schema_3(from: &Path, to: &Path) {
    let mut conn = Connection::open(to).unwrap_or_else(|e| panic!("{e}"));
    let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
    for sql in &MIGRATIONS[..3] {
        tx.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
    }
    tx.commit().unwrap_or_else(|e| panic!("{e}"));
    conn.execute("ATTACH DATABASE ?1 AS src", [from.to_string_lossy()])
        .unwrap_or_else(|e| panic!("{e}"));
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM main.sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_else(|e| panic!("{e}"));
    for t in tables.iter().filter(|t| *t != "events") {
        let cols = columns(&conn, t).join(", ");
        let only = match t.as_str() {
            "form_rows" => " WHERE origin <> 'seen'",
            "meta" => " WHERE key = 'journal_id'",
            _ => "",
        };
        conn.execute_batch(&format!(
            "INSERT INTO main.{t} ({cols}) SELECT {cols} FROM src.{t}{only};"
        ))
        .unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    conn.execute_batch(
        "INSERT INTO main.meta (key, value)
             SELECT 'last_row_no', max(row_no) FROM main.form_rows HAVING count(*) > 0;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let journal_id: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'journal_id'", [], |r| {
            r.get(0)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    type Row = (
        i64,
        String,
        String,
        Option<String>,
        String,
        Option<String>,
        String,
        String,
    );
    let events: Vec<Row> = conn
        .prepare(
            "SELECT seq, at, kind, carrier, os_user, operator, host,
                    json_remove(data, '$.key_set_row')
             FROM src.events ORDER BY seq",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?
            .collect()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let mut prev = [0u8; 32];
    for (seq, at, kind, carrier, os_user, operator, host, data) in &events {
        let event = NewEvent {
            journal_id: &journal_id,
            at,
            kind,
            carrier: carrier.as_deref(),
            os_user,
            operator: operator.as_deref(),
            host,
            data,
        };
        let hash = hash_event(&prev, *seq as u64, &event);
        conn.execute(
            "INSERT INTO main.events (seq, at, kind, carrier, os_user, operator, host, data,
                 prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                seq,
                at,
                kind,
                carrier,
                os_user,
                operator,
                host,
                data,
                &prev[..],
                &hash[..]
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        prev = hash;
    }
    conn.execute_batch("DETACH DATABASE src;")
        .unwrap_or_else(|e| panic!("{e}"));
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap_or_else(|e| panic!("{e}"));
    conn.pragma_update(None, "user_version", 3)
        .unwrap_or_else(|e| panic!("{e}"));
}

fn rows(j: &Journal) -> Vec<(u64, String, Option<String>)> {
    j.form(&Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|r| (r.row_no, r.origin, r.serial))
        .collect()
}

#[test]
fn key_sets_seen_at_schema_3_get_their_rows_at_the_upgrade_in_the_order_seen() {
    let dir = temp("schema-3");
    let now = datetime!(2026-11-20 09:00 UTC);
    let actor = Actor::current(None);
    let written = dir.join("now.db");
    {
        let mut j = Journal::open(&written).unwrap_or_else(|e| panic!("{e}"));
        // Row 7 of the paper journal, then carriers: "b" with keys, the empty "e", then "a"
        // with keys: seen in that order.
        let paper = ImportRow {
            line: 1,
            row_no: 7,
            generated: "2020-01-01".into(),
            carrier: "Алмаз-1К 0007".into(),
            received: "2020-01-02 Коваль".into(),
            destroyed: String::new(),
            note: String::new(),
        };
        j.import(&[paper], "paper.csv", &actor, now)
            .unwrap_or_else(|e| panic!("{e}"));
        j.record_scan(&scan(vec![carrier("b", &[(1, "b1")])]), &actor, now)
            .unwrap_or_else(|e| panic!("{e}"));
        j.record_scan(
            &scan(vec![carrier("b", &[(1, "b1")]), carrier("e", &[])]),
            &actor,
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        j.record_scan(
            &scan(vec![
                carrier("b", &[(1, "b1")]),
                carrier("e", &[]),
                carrier("a", &[(1, "a1"), (2, "a2")]),
            ]),
            &actor,
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let old = dir.join("old.db");
    as_schema_3(&written, &old);
    std::fs::copy(JournalKey::path_for(&written), JournalKey::path_for(&old))
        .unwrap_or_else(|e| panic!("{e}"));
    {
        let conn = Connection::open(&old).unwrap_or_else(|e| panic!("{e}"));
        let seen: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE data LIKE '%key_set_row%'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen, 0, "schema 3 numbered no key set as it saw it");
    }

    let j = Journal::open(&old).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(j.schema_version(), MIGRATIONS.len() as u32);
    assert_eq!(
        rows(&j),
        [
            (7, "imported".into(), None),
            (8, "seen".into(), Some("b".into())),
            (9, "seen".into(), Some("a".into())),
        ],
        "every key set seen gets its row, in the order seen, after the highest number"
    );
    let report = j.verify().unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{report:?}");
    let state = j.verify_state().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        state.ok(),
        "the rows are re-derived from the events: {state:?}"
    );
    let events = j.event_count().unwrap_or_else(|e| panic!("{e}"));
    let notes = j
        .events()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|e| e.kind == EventKind::Note)
        .count();
    assert_eq!(notes, 2);
    let last = j.latest_checkpoint().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        last.map(|c| c.count),
        Some(events - 1),
        "a checkpoint follows"
    );
    drop(j);

    // Done once: opening again numbers nothing, a scan of the same carriers opens no row, and
    // a new key set continues the numbering.
    let mut j = Journal::open(&old).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(j.event_count().unwrap_or_default(), events);
    let all = vec![
        carrier("b", &[(1, "b1")]),
        carrier("e", &[]),
        carrier("a", &[(1, "a1"), (2, "a2")]),
    ];
    j.record_scan(&scan(all.clone()), &actor, now)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows(&j).len(), 3);
    let mut more = all;
    more[1] = carrier("e", &[(1, "e1")]);
    j.record_scan(&scan(more), &actor, now)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rows(&j).last().cloned(),
        Some((10, "seen".into(), Some("e".into())))
    );
    assert!(j.verify_state().map(|s| s.ok()).unwrap_or(false));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_new_journal_has_nothing_to_number_and_no_mark_left() {
    let dir = temp("fresh");
    let path = dir.join("j.db");
    let j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!pending(&j.conn).unwrap_or(true));
    assert_eq!(
        j.event_count().unwrap_or_default(),
        1,
        "the first checkpoint only"
    );
    let _ = std::fs::remove_dir_all(dir);
}
