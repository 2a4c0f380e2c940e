//! `custody journal verify` against tampering, done as an attacker would with the sqlite3
//! command-line tool (dropping the append-only triggers first): the mutation matrix.

use sha2::{Digest, Sha256};

use super::common::*;

const DROP_TRIGGERS: &str = "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;";

fn world(name: &str) -> World {
    let w = World::new(name);
    let mut j = golden_journal(&w.journal);
    j.checkpoint(&actor(), time::macros::datetime!(2026-03-13 00:00 UTC))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(j);
    let (code, out, err) = run(w.custody().args(["journal", "verify"]));
    assert_eq!(code, 0, "the untouched journal verifies: {out}{err}");
    w
}

fn verify(w: &World, extra: &[&str]) -> (i32, String) {
    let (code, out, err) = run(w.custody().args(["journal", "verify"]).args(extra));
    (code, format!("{out}{err}"))
}

fn total(w: &World) -> u64 {
    w.sqlite("SELECT count(*) FROM events;")
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn a_modified_field_is_detected() {
    let w = world("tamper-field");
    w.sqlite(&format!("{DROP_TRIGGERS} UPDATE events SET data = replace(data, 'Петренко Петро', 'Сидоренко Петро') WHERE kind = 'issued';"));
    let (code, out) = verify(&w, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BROKEN at event") && out.contains("altered"),
        "{out}"
    );
}

#[test]
fn a_deleted_row_is_detected() {
    let w = world("tamper-delete");
    w.sqlite(&format!(
        "{DROP_TRIGGERS} DELETE FROM events WHERE seq = 5;"
    ));
    let (code, out) = verify(&w, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BROKEN at event #5") && out.contains("missing"),
        "{out}"
    );
}

#[test]
fn two_swapped_rows_are_detected() {
    let w = world("tamper-swap");
    w.sqlite(&format!(
        "{DROP_TRIGGERS} UPDATE events SET seq = -1 WHERE seq = 6; UPDATE events SET seq = 6 WHERE seq = 7; UPDATE events SET seq = 7 WHERE seq = -1;"
    ));
    let (code, out) = verify(&w, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at event #6"), "{out}");
}

#[test]
fn truncation_after_a_checkpoint_is_detected() {
    let w = world("tamper-truncate");
    let exported = w.dir.join("checkpoint.json");
    ok(w.custody()
        .args(["journal", "checkpoint", "--export", "--out"])
        .arg(&exported));
    // The last events go, the chain of what is left is intact.
    let n = total(&w);
    w.sqlite(&format!(
        "{DROP_TRIGGERS} DELETE FROM events WHERE seq > {};",
        n - 4
    ));
    let (code, out) = verify(&w, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("hash chain verifies") && out.contains("truncated"),
        "{out}"
    );
    // The attacker also empties the checkpoints table: the exported checkpoint still knows.
    w.sqlite("DROP TRIGGER checkpoints_no_delete; DELETE FROM checkpoints;");
    w.sqlite(&format!(
        "DELETE FROM events WHERE kind = 'checkpoint' OR seq > {};",
        n - 12
    ));
    let (code, out) = verify(&w, &["--checkpoint", exported.to_str().unwrap_or_default()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("exported checkpoint") && out.contains("truncated"),
        "{out}"
    );
}

/// Rewrites the data of event `seq` and re-hashes every event from it to the end, as an
/// attacker who knows the chain's recipe would.
fn rewrite_and_rehash(w: &World, seq: u64, from: &str, to: &str) {
    w.sqlite(&format!("{DROP_TRIGGERS} UPDATE events SET data = replace(data, '{from}', '{to}') WHERE seq = {seq};"));
    let id = w
        .sqlite("SELECT value FROM meta WHERE key = 'journal_id';")
        .trim()
        .to_owned();
    let rows = w.sqlite_json(
        "SELECT seq, at, kind, coalesce(carrier, '') AS carrier, os_user, coalesce(operator, '') AS operator, host, data FROM events ORDER BY seq;",
    );
    let rows = rows.as_array().cloned().unwrap_or_default();
    let mut prev = [0u8; 32];
    let mut sql = String::from("BEGIN;");
    for r in rows {
        let s = r["seq"].as_u64().unwrap_or(0);
        let mut h = Sha256::new();
        h.update(prev);
        let seq_text = s.to_string();
        for f in [
            id.as_str(),
            &seq_text,
            str_of(&r["at"]),
            str_of(&r["kind"]),
            str_of(&r["carrier"]),
            str_of(&r["os_user"]),
            str_of(&r["operator"]),
            str_of(&r["host"]),
            str_of(&r["data"]),
        ] {
            h.update((f.len() as u32).to_be_bytes());
            h.update(f.as_bytes());
        }
        let hash: [u8; 32] = h.finalize().into();
        if s >= seq {
            sql.push_str(&format!(
                "UPDATE events SET prev_hash = X'{}', hash = X'{}' WHERE seq = {s};",
                hex(&prev),
                hex(&hash)
            ));
        }
        prev = hash;
    }
    sql.push_str("COMMIT;");
    w.sqlite(&sql);
}

fn str_of(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_rewritten_and_rehashed_tail_is_detected() {
    let w = world("tamper-rehash");
    let seq: u64 = w
        .sqlite("SELECT min(seq) FROM events WHERE kind = 'issued';")
        .trim()
        .parse()
        .unwrap_or(0);
    rewrite_and_rehash(&w, seq, "Петренко Петро", "Сидоренко Петро");
    let (code, out) = verify(&w, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("hash chain verifies"),
        "the re-hashed chain itself is consistent: {out}"
    );
    assert!(out.contains("rewritten"), "{out}");
}

#[test]
fn a_checkpoint_from_another_key_is_detected() {
    let w = world("tamper-other-key");
    let key = w.journal.with_file_name("journal.db.key");
    let saved = w.dir.join("saved.key");
    std::fs::rename(&key, &saved).unwrap_or_else(|e| panic!("{e}"));
    // A new key appears on first use; the attacker signs a checkpoint with it.
    ok(w.custody().args(["journal", "checkpoint"]));
    std::fs::rename(&saved, &key).unwrap_or_else(|e| panic!("{e}"));
    let (code, out) = verify(&w, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signed by another key"), "{out}");
}

#[test]
fn checkpoint_export_daily_and_the_key_file() {
    let w = world("checkpoint-cli");
    use std::os::unix::fs::PermissionsExt;
    let key = w.journal.with_file_name("journal.db.key");
    let mode = std::fs::metadata(&key)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600);
    let exported = json(&ok(w.custody().args(["journal", "checkpoint", "--export"])));
    assert_eq!(exported["format"], "custody-checkpoint-v1");
    assert_eq!(
        exported["count"].as_u64().map(|c| c + 1),
        exported["seq"].as_u64()
    );
    assert_eq!(exported["public_key"].as_str().map(str::len), Some(64));
    // A daily timer: nothing written when the latest checkpoint is recent.
    let v = json(&ok(w.custody().args(["--json", "journal", "checkpoint"])));
    assert_eq!(v["written"], true);
    let v = json(&ok(w.custody().args([
        "--json",
        "journal",
        "checkpoint",
        "--if-older-than",
        "24h",
    ])));
    assert_eq!(v["written"], false);
    // Verified against the exported checkpoint (which still matches).
    let file = w.dir.join("cp.json");
    std::fs::write(&file, exported.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let (code, out) = verify(&w, &["--checkpoint", file.to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{out}");
    // An exported checkpoint with a changed count no longer verifies.
    let mut forged = exported.clone();
    forged["count"] = serde_json::json!(exported["count"].as_u64().unwrap_or(0) - 1);
    std::fs::write(&file, forged.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let (code, out) = verify(&w, &["--checkpoint", file.to_str().unwrap_or_default()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature is invalid"), "{out}");
    // A readable key file is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = run(w.custody().args(["journal", "checkpoint"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}
