//! The journal file under attack or mishandled, with the real binary and the sqlite3 tool:
//! a copy without its -wal file, a planted trigger, a truncated tail, a deleted journal whose
//! key remains, and `journal backup`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{custody, run, temp_dir};

/// A journal with a few imported rows (created by the import, so it has its key and
/// checkpoints).
fn journal(name: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let csv = dir.join("paper.csv");
    std::fs::write(
        &csv,
        "1,2020-01-01,Алмаз-1К 0001,2020-01-02 Іваненко,\n2,2020-02-01,Алмаз-1К 0002,2020-02-02 Петренко,\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let journal = dir.join("journal.db");
    let (code, out, err) = run(custody()
        .arg("--journal")
        .arg(&journal)
        .args(["journal", "import", "--csv"])
        .arg(&csv));
    assert_eq!(code, 0, "{out}{err}");
    (dir, journal)
}

fn custody_on(journal: &Path, args: &[&str]) -> (i32, String, String) {
    run(custody().arg("--journal").arg(journal).args(args))
}

fn sqlite(journal: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(journal)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| panic!("sqlite3: {e}"));
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_copy_without_its_wal_is_exit_2_and_stays_untouched() {
    let (dir, journal) = journal("copy-without-wal");
    assert!(
        journal.with_extension("db-wal").exists(),
        "the journal's content is in its -wal file"
    );
    let copy = dir.join("copy.db");
    std::fs::copy(&journal, &copy).unwrap_or_else(|e| panic!("{e}"));
    let before = std::fs::read(&copy).unwrap_or_default();
    let (code, out, err) = custody_on(&copy, &["journal", "verify"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("not a complete custody journal") && err.contains("journal backup"),
        "{err}"
    );
    assert_eq!(std::fs::read(&copy).unwrap_or_default(), before);
    assert_eq!(sqlite(&copy, "SELECT count(*) FROM sqlite_master;"), "0");
}

#[test]
fn a_planted_trigger_is_refused_by_writes_and_named_by_verify() {
    let (dir, journal) = journal("planted-trigger");
    sqlite(
        &journal,
        "CREATE TRIGGER keep_failed AFTER UPDATE OF state ON orders \
         BEGIN UPDATE orders SET state = 'failed' WHERE order_id = NEW.order_id; END;",
    );
    let events = sqlite(&journal, "SELECT count(*) FROM events;");
    let csv = dir.join("more.csv");
    std::fs::write(&csv, "7,2021-01-01,Алмаз-1К 0007,2021-01-02 Коваль,\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = run(custody()
        .arg("--journal")
        .arg(&journal)
        .args(["journal", "import", "--csv"])
        .arg(&csv));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("trigger `keep_failed` on orders"), "{err}");
    assert_eq!(sqlite(&journal, "SELECT count(*) FROM events;"), events);
    for args in [
        &["journal", "checkpoint"][..],
        &["revocation", "requested", "--carrier", "x", "--ref", "1"],
    ] {
        let (code, out, err) = custody_on(&journal, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("keep_failed"), "{args:?}: {err}");
    }
    let (code, out, _) = custody_on(&journal, &["journal", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("schema DIFFERS") && out.contains("trigger `keep_failed` on orders"),
        "{out}"
    );
    let (code, out, _) = custody_on(&journal, &["--json", "journal", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"name\": \"keep_failed\""), "{out}");
}

#[test]
fn truncating_the_tail_with_its_checkpoints_fails_verify() {
    let (_dir, journal) = journal("truncated-tail");
    assert!(journal.with_extension("db.key").exists());
    sqlite(
        &journal,
        "DROP TRIGGER events_no_delete; DROP TRIGGER checkpoints_no_delete;
         DELETE FROM events; DELETE FROM checkpoints; DELETE FROM form_rows;
         DELETE FROM meta WHERE key = 'last_row_no';
         CREATE TRIGGER events_no_delete BEFORE DELETE ON events
         BEGIN SELECT RAISE(ABORT, 'journal events are append-only'); END;
         CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
         BEGIN SELECT RAISE(ABORT, 'journal checkpoints are append-only'); END;",
    );
    let (code, out, err) = custody_on(&journal, &["journal", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("journal key") && out.contains("holds no checkpoint"),
        "{out}"
    );
}

#[test]
fn a_deleted_journal_whose_key_remains_is_not_recreated() {
    let (dir, journal) = journal("deleted-journal");
    for f in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let csv = dir.join("paper.csv");
    let (code, out, err) = run(custody()
        .arg("--journal")
        .arg(&journal)
        .args(["journal", "import", "--csv"])
        .arg(&csv));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("is missing, but its key")
            && err.contains("Restore the journal from a backup"),
        "{err}"
    );
    assert!(!journal.exists());
}

#[test]
fn backup_makes_a_verified_copy_that_can_be_restored() {
    let (dir, journal) = journal("backup");
    let dest = dir.join("backup.db");
    let (code, out, err) = custody_on(
        &journal,
        &["journal", "backup", dest.to_str().unwrap_or("")],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("written and verified"), "{out}");
    // One self-contained file.
    assert!(!dir.join("backup.db-wal").exists());
    assert_eq!(
        sqlite(&dest, "SELECT count(*) FROM events;"),
        sqlite(&journal, "SELECT count(*) FROM events;")
    );
    // Never over an existing file.
    let (code, _, err) = custody_on(
        &journal,
        &["journal", "backup", dest.to_str().unwrap_or("")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never overwrites"), "{err}");
    // Restore: the journal is lost, its key remains; the backup is copied back.
    for f in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    std::fs::copy(&dest, &journal).unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = custody_on(&journal, &["journal", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verify against the journal key"), "{out}");
    let (code, out, err) = custody_on(&journal, &["journal", "checkpoint"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Journal files not in WAL mode yet (copies made with other tools) are switched to it on
/// the first open that writes. Two such files that once were modified and then refused (found
/// by the `journal_open` fuzz target; kept in its seed corpus): a damaged b-tree page, and a
/// journal whose meta lost its journal_id. Both are refused and left byte for byte as they
/// were; the undamaged file they came from opens.
#[test]
fn a_damaged_journal_not_in_wal_mode_is_refused_before_any_write() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/journal_open");
    let dir = temp_dir("damaged-not-wal");
    for (name, expect) in [
        ("regression-damaged-page.db", "is damaged"),
        ("regression-no-journal-id.db", "no journal_id"),
    ] {
        let bytes = std::fs::read(seeds.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&bytes[18..20], &[1, 1], "{name} is not in WAL mode");
        let journal = dir.join(name);
        std::fs::write(&journal, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let (code, out, err) = custody_on(&journal, &["journal", "list"]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert_eq!(
            std::fs::read(&journal).unwrap_or_default(),
            bytes,
            "{name} was modified"
        );
    }
    let journal = dir.join("journal.db");
    std::fs::copy(seeds.join("journal.db"), &journal).unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = custody_on(&journal, &["journal", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sqlite(&journal, "PRAGMA journal_mode;"), "wal");
}
