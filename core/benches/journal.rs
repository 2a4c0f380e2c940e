//! Journal benchmark: custody's own event path against a raw rusqlite insert loop with the
//! same pragmas (in the same run, so the ratio holds on a noisy machine), and
//! `journal verify` speed on a journal of one million events: the hash chain next to its floor
//! (a bare rusqlite read of the same rows hashing the same bytes, in the same run; rates by
//! wall time and by the thread's CPU time), and apart from it the re-derivation of the state
//! tables from the events (on a journal of `--rows` imported form rows, the events that fill
//! most state tables).
//!
//! Run: `cargo bench -p custody-core --bench journal` (or bench/journal.sh).
//! Options after `--`: `--events N` (default 1000000), `--rows N` (default 100000), `--dir DIR`,
//! `--only append|chain|state` (one part), `--keep` (keep DIR, and reuse the journal of
//! `--events` events found there).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use custody_core::id::{CarrierId, RawBytes};
use custody_core::inventory::{
    CarrierSnapshot, CertObject, KeyClass, KeyObject, KeyPairing, Login, ModuleInfo, ModuleScan,
    TokenFlags,
};
use custody_core::journal::{Actor, EventKind, ImportRow, Journal};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs bench targets too, without `--bench`: nothing to
    // measure in a debug build.
    if !args.iter().any(|a| a == "--bench") {
        println!("journal benchmark: run it with `cargo bench -p custody-core --bench journal`");
        return;
    }
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let events: u64 = get("--events")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rows: u64 = get("--rows")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = get("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("custody-journal-bench"));
    let only = get("--only");
    let wanted = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let keep = args.iter().any(|a| a == "--keep");
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let actor = Actor {
        os_user: "bench".into(),
        operator: Some("Бенчмарк".into()),
        host: "workstation-01".into(),
    };
    // A typical event: a key_added record of a carrier.
    let data = json!({
        "event": "key_added",
        "key": {"class": "public", "id": "0001", "label": "6b65792d30303031", "key_type": 3,
                "key_type_name": "EC", "local": true,
                "public_key_sha256": "3b0f2c1b8fb1a6e3c2f8b1d6b5f8a9e0c7d6b5a4f3e2d1c0b9a8f7e6d5c4b3a2"}
    });
    let carrier = "SoftHSM project/SoftHSM v2/0123456789abcdef";

    if wanted("append") {
        append(&dir, &actor, &data, carrier);
    }
    if wanted("chain") {
        chain(&dir, events, &actor, &data, carrier);
    }
    if wanted("state") {
        state_rederivation(&dir, rows, &actor);
        carrier_rederivation(&dir, rows / 10, &actor);
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// custody's event path against a raw rusqlite insert loop, batched and one event per
/// transaction, best of three rounds each.
fn append(dir: &Path, actor: &Actor, data: &serde_json::Value, carrier: &str) {
    println!(
        "journal append, {} events per transaction and one event per transaction:",
        10_000
    );
    for (label, batch, total) in [("batched", 10_000u64, 100_000u64), ("one per tx", 1, 300)] {
        let mut best_ours = Duration::MAX;
        let mut best_raw = Duration::MAX;
        for round in 0..3 {
            // custody
            let path = dir.join(format!("ours-{label}-{round}.db"));
            let mut j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let start = Instant::now();
            let mut done = 0;
            while done < total {
                j.write(actor, OffsetDateTime::now_utc(), |w| {
                    for _ in 0..batch {
                        w.append(EventKind::KeyAdded, Some(carrier), data)?;
                    }
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{e}"));
                done += batch;
            }
            best_ours = best_ours.min(start.elapsed());
            drop(j);
            // raw rusqlite, same pragmas and table shape, no hashing, no JSON
            let path = dir.join(format!("raw-{label}-{round}.db"));
            let elapsed = raw_inserts(&path, batch, total, &data.to_string(), carrier);
            best_raw = best_raw.min(elapsed);
        }
        let ours = total as f64 / best_ours.as_secs_f64();
        let raw = total as f64 / best_raw.as_secs_f64();
        println!(
            "  {label:>10}: custody {ours:>10.0} events/s   raw rusqlite {raw:>10.0} rows/s   custody/raw {:.2}",
            ours / raw
        );
    }
}

/// `journal verify`'s chain check on a journal of `events` events, against its floor in the
/// same run: the cheapest loop that reads the same columns of the same rows from the same
/// file with rusqlite and SHA-256s the same bytes (no checks, no progress). Rounds
/// alternate between the two; the best of each is reported with their ratio.
fn chain(dir: &Path, events: u64, actor: &Actor, data: &serde_json::Value, carrier: &str) {
    let path = dir.join("big.db");
    let have = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT max(seq) FROM events", [], |r| r.get::<_, i64>(0)))
        .map_or(0, |n| n.max(0) as u64);
    let mut built = None;
    if have < events {
        let _ = std::fs::remove_file(&path);
        let mut j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        let mut done = 0;
        while done < events {
            let n = (events - done).min(100_000);
            j.write(actor, OffsetDateTime::now_utc(), |w| {
                for _ in 0..n {
                    w.append(EventKind::KeyAdded, Some(carrier), data)?;
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
            done += n;
        }
        built = Some(start.elapsed());
    }
    // As `custody journal verify` opens it.
    let j = Journal::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut best = Timing::MAX;
    let mut best_floor = Timing::MAX;
    let mut checked = 0;
    for _ in 0..3 {
        let start = Timing::now();
        let report = j.verify().unwrap_or_else(|e| panic!("{e}"));
        best = best.min(start.elapsed());
        // A new journal starts with its first checkpoint event.
        assert!(report.ok() && report.events >= events, "{report:?}");
        checked = report.events;
        let start = Timing::now();
        let (rows, head) = chain_floor(&path, j.journal_id());
        best_floor = best_floor.min(start.elapsed());
        // The floor hashed the same bytes: it ends on the same hash.
        assert_eq!((rows, hex::encode(head)), (report.events, report.head_hash));
    }
    let rate = |t: Duration| checked as f64 / t.as_secs_f64();
    let built = match built {
        Some(t) => format!("built in {:.1} s", t.as_secs_f64()),
        None => "the journal of an earlier run".into(),
    };
    println!(
        "journal verify: {checked} events in {:.3} s = {:.0} events/s, on the CPU {:.3} s = {:.0} events/s ({built})",
        best.wall.as_secs_f64(),
        rate(best.wall),
        best.cpu.as_secs_f64(),
        rate(best.cpu),
    );
    println!(
        "journal verify, floor (read the columns, SHA-256 the same bytes): {:.3} s = {:.0} events/s, on the CPU {:.3} s = {:.0} events/s",
        best_floor.wall.as_secs_f64(),
        rate(best_floor.wall),
        best_floor.cpu.as_secs_f64(),
        rate(best_floor.cpu),
    );
    println!(
        "journal verify/floor: {:.2} (wall), {:.2} (CPU)",
        best_floor.wall.as_secs_f64() / best.wall.as_secs_f64(),
        best_floor.cpu.as_secs_f64() / best.cpu.as_secs_f64(),
    );
}

/// Wall time and this thread's time on a CPU (from /proc/thread-self/schedstat, in ns: it
/// does not count the time the thread waited for a CPU, so it holds on a busy machine).
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// A start point of a [`Timing`].
struct Started {
    wall: Instant,
    cpu: Duration,
}

impl Timing {
    const MAX: Self = Self {
        wall: Duration::MAX,
        cpu: Duration::MAX,
    };

    fn now() -> Started {
        Started {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    fn min(self, other: Self) -> Self {
        Self {
            wall: self.wall.min(other.wall),
            cpu: self.cpu.min(other.cpu),
        }
    }
}

impl Started {
    fn elapsed(&self) -> Timing {
        Timing {
            wall: self.wall.elapsed(),
            cpu: thread_cpu().saturating_sub(self.cpu),
        }
    }
}

fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// The floor of the chain check: every event's columns borrowed from SQLite and hashed as
/// the chain hashes them (see `journal/chain.rs`: laid out in one reused buffer, one SHA-256
/// call), nothing compared, no progress. The connection has SQLite's defaults (a memory map
/// did not make this loop cheaper). Returns the rows read and the last hash.
fn chain_floor(path: &Path, journal_id: &str) -> (u64, [u8; 32]) {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut stmt = conn
        .prepare(
            "SELECT seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash
             FROM events ORDER BY seq",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rows = stmt.query([]).unwrap_or_else(|e| panic!("{e}"));
    let mut prev = [0u8; 32];
    let mut n = 0;
    let mut seq = itoa::Buffer::new();
    let mut canonical = Vec::new();
    while let Some(row) = rows.next().unwrap_or_else(|e| panic!("{e}")) {
        let bytes = |i: usize| match row.get_ref(i) {
            Ok(ValueRef::Text(t) | ValueRef::Blob(t)) => t,
            _ => &[],
        };
        let number = match row.get_ref(0) {
            Ok(ValueRef::Integer(i)) => i,
            _ => 0,
        };
        canonical.clear();
        canonical.extend_from_slice(&prev);
        let fields = [
            journal_id.as_bytes(),
            seq.format(number).as_bytes(),
            bytes(1),
            bytes(2),
            bytes(3),
            bytes(4),
            bytes(5),
            bytes(6),
            bytes(7),
        ];
        for field in fields {
            canonical.extend_from_slice(&(field.len() as u32).to_be_bytes());
            canonical.extend_from_slice(field);
        }
        std::hint::black_box((bytes(8), bytes(9)));
        prev = Sha256::digest(canonical.as_slice()).into();
        n += 1;
    }
    (n, prev)
}

/// The second part of `journal verify`: every state table re-derived from the events and
/// compared row by row, on a journal of `rows` imported form rows.
fn state_rederivation(dir: &Path, rows: u64, actor: &Actor) {
    let path = dir.join("form.db");
    let mut j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let paper: Vec<ImportRow> = (1..=rows)
        .map(|i| ImportRow {
            line: i + 1,
            row_no: i,
            generated: format!("{:02}.{:02}.2024 10:00", i % 28 + 1, i % 12 + 1),
            carrier: format!("Алмаз-1К, сер. № {i:08}"),
            received: format!(
                "{:02}.{:02}.2024, Петренко Петро Петрович {i}",
                i % 28 + 1,
                i % 12 + 1
            ),
            destroyed: String::new(),
            note: String::new(),
        })
        .collect();
    j.import(&paper, "paper.csv", actor, OffsetDateTime::now_utc())
        .unwrap_or_else(|e| panic!("{e}"));
    drop(j);
    let j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut best = Duration::MAX;
    let mut replayed = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let report = j.verify_state().unwrap_or_else(|e| panic!("{e}"));
        assert!(report.ok(), "{:?}", report.problems);
        replayed = report.events;
        best = best.min(start.elapsed());
    }
    println!(
        "journal verify, state re-derivation: {replayed} events ({rows} form rows) in {:.3} s = {:.0} events/s",
        best.as_secs_f64(),
        replayed as f64 / best.as_secs_f64(),
    );
}

/// A carrier with one certificate object and one public key, `extra` more public keys.
fn carrier(i: u64, extra: usize) -> CarrierSnapshot {
    let key = |n: usize| KeyObject {
        class: KeyClass::Public,
        id: RawBytes::new(vec![n as u8]),
        label: RawBytes::new(format!("key-{n}").into_bytes()),
        key_type: 3,
        key_type_name: "EC".into(),
        public_key_sha256: Some(format!("{i:032x}{n:032x}")),
        local: Some(true),
        never_extractable: None,
        always_sensitive: None,
        start_date: Some("2026-01-15".into()),
    };
    CarrierSnapshot {
        id: CarrierId {
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            serial: format!("{i:016x}"),
            discriminator: None,
        },
        label: format!("carrier {i}"),
        strings_lossy: false,
        serial_weak: false,
        flags: TokenFlags::default(),
        hardware_version: "2.6".into(),
        firmware_version: "2.6".into(),
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        slot: i,
        certificates: vec![CertObject {
            id: RawBytes::new(vec![0]),
            label: RawBytes::new(b"cert".to_vec()),
            sha256: format!("{i:064x}"),
            info: None,
            parse_error: Some("bench: not parsed".into()),
            key_pairing: KeyPairing::None,
        }],
        public_keys: (0..=extra).map(key).collect(),
        private_keys: None,
        login: Login::NotAttempted,
    }
}

/// The carrier part of the re-derivation: `carriers` carriers enrolled with a certificate
/// and a key (one scan), then each given a second key (a second scan): the events that fill
/// `carriers`, `carrier_snapshots`, `certificates`, `keys` and the seen rows of `form_rows`.
fn carrier_rederivation(dir: &Path, carriers: u64, actor: &Actor) {
    let path = dir.join("carriers.db");
    let mut j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let module = ModuleInfo::unknown("/usr/lib/softhsm/libsofthsm2.so");
    for extra in [0, 1] {
        let snaps: Vec<_> = (1..=carriers).map(|i| carrier(i, extra)).collect();
        let n = snaps.len();
        let scan = ModuleScan::read(module.clone(), snaps, Vec::new(), n, None);
        j.record_scan(&[scan], actor, OffsetDateTime::now_utc())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    drop(j);
    let j = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut best = Duration::MAX;
    let mut replayed = 0;
    let mut compared = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let report = j.verify_state().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            report.ok(),
            "{:?}",
            &report.problems[..report.problems.len().min(5)]
        );
        replayed = report.events;
        compared = report.rows;
        best = best.min(start.elapsed());
    }
    println!(
        "journal verify, state re-derivation: {replayed} events ({carriers} carriers, {compared} rows) in {:.3} s = {:.0} events/s",
        best.as_secs_f64(),
        replayed as f64 / best.as_secs_f64(),
    );
}

fn raw_inserts(path: &Path, batch: u64, total: u64, data: &str, carrier: &str) -> Duration {
    let mut conn = Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
    conn.pragma_update(None, "journal_mode", "WAL")
        .unwrap_or_else(|e| panic!("{e}"));
    conn.pragma_update(None, "synchronous", "FULL")
        .unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL,
            carrier TEXT, os_user TEXT NOT NULL, operator TEXT, host TEXT NOT NULL,
            data TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL) STRICT;
         CREATE INDEX events_by_carrier ON events (carrier, seq);
         CREATE INDEX events_by_kind ON events (kind, seq);",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let hash = [7u8; 32];
    let start = Instant::now();
    let mut seq = 0i64;
    while (seq as u64) < total {
        let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..batch {
                seq += 1;
                stmt.execute(params![
                    seq,
                    "2026-11-23T05:00:00.000Z",
                    EventKind::KeyAdded,
                    carrier,
                    "bench",
                    "Бенчмарк",
                    "workstation-01",
                    data,
                    &hash[..],
                    &hash[..]
                ])
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        tx.commit().unwrap_or_else(|e| panic!("{e}"));
    }
    start.elapsed()
}
