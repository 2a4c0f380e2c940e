//! Every key set custody has seen has its row on the form: numbered by the scan that first
//! saw it, issued or not, destroyed with or without an issuance; numbers never change and
//! `journal verify` re-derives every row from the events.

use serde_json::{json, Value};

use super::support::*;

fn form(env: &Env) -> Value {
    let out = env.custody(&["journal", "export", "--format", "json", "--lang", "en"]);
    assert!(out.status.success(), "{}", text(&out));
    json_of(&out)
}

/// (row number, origin, serial, column 4, column 5) of every row.
fn rows(env: &Env) -> Vec<(u64, String, String, String, String)> {
    form(env)["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                    (
                        r["row_no"].as_u64().unwrap_or(0),
                        s(&r["data"]["origin"]),
                        s(&r["data"]["serial"]),
                        s(&r["columns"][3]),
                        s(&r["columns"][4]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn verified(env: &Env) {
    let out = env.custody(&["--json", "journal", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        json_of(&out)["state"]["problems"],
        json!([]),
        "{}",
        text(&out)
    );
}

#[test]
fn every_key_set_seen_gets_a_stable_row_issued_or_not_destroyed_or_not() -> TestResult {
    let env = Env::new("rows");
    assert!(env.custody(&["scan"]).status.success());
    // Both carriers hold keys: a row each, numbered by the scan, columns 4 and 5 empty.
    let first = rows(&env);
    assert_eq!(first.len(), 2, "{first:?}");
    for (_, origin, _, received, destroyed) in &first {
        assert_eq!(
            (origin.as_str(), received.as_str(), destroyed.as_str()),
            ("seen", "", "")
        );
    }
    let row_of = |rows: &[(u64, String, String, String, String)], serial: &str| {
        rows.iter()
            .find(|r| r.2 == serial)
            .map(|r| r.0)
            .unwrap_or_else(|| panic!("no row for {serial}: {rows:?}"))
    };
    let alice_row = row_of(&first, &env.t.alice);
    let other_row = row_of(&first, &env.t.other);
    // A scan that sees nothing new numbers nothing.
    assert!(env.custody(&["scan"]).status.success());
    assert_eq!(rows(&env), first);
    // Issuing the other carrier fills column 4 of its row: the number stays.
    let out = env.custody(&[
        "--json",
        "issue",
        "--carrier",
        &env.t.other,
        "--holder",
        "Коваль Марія",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json_of(&out)["row_no"].as_u64(), Some(other_row));
    let issued = rows(&env);
    let other = issued
        .iter()
        .find(|r| r.0 == other_row)
        .cloned()
        .unwrap_or_default();
    assert!(other.3.contains("Коваль Марія"), "{other:?}");
    assert_eq!(other.1, "seen", "the row was opened by the scan");
    // Alice's carrier is destroyed without ever being issued: column 5 of its row.
    let order = env.order("ord-rows", json!({}));
    env.sign(&order, "hr");
    let out = env.wipe(&order);
    assert!(out.status.success(), "{}", text(&out));
    assert!(env.custody(&["scan"]).status.success());
    let wiped = rows(&env);
    let alice = wiped
        .iter()
        .find(|r| r.0 == alice_row)
        .cloned()
        .unwrap_or_default();
    assert_eq!(alice.3, "", "never issued: {alice:?}");
    assert!(alice.4.contains("Коваленко Ольга Петрівна"), "{alice:?}");
    assert_eq!(wiped.len(), 2, "the wipe opens no row: {wiped:?}");
    // New keys on the same carrier are a new key set: a new, higher number; the old rows
    // keep theirs and their content.
    env.reissue_alice();
    assert!(env.custody(&["scan"]).status.success());
    let after = rows(&env);
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(&after[..2], &wiped[..], "earlier rows unchanged");
    let new_row = after[2].0;
    assert!(new_row > alice_row.max(other_row), "{after:?}");
    assert_eq!(
        (after[2].2.as_str(), after[2].3.as_str()),
        (env.t.alice.as_str(), "")
    );
    verified(&env);
    // The number is in the hash chain: the scan event that saw the keys carries it.
    let carrying: Vec<u64> = env
        .events()
        .iter()
        .filter_map(|e| e.data["key_set_row"]["row_no"].as_u64())
        .collect();
    assert_eq!(
        carrying,
        [alice_row.min(other_row), alice_row.max(other_row), new_row]
    );
    // A row changed in the state table is named by verify.
    env.sqlite(&format!(
        "UPDATE form_rows SET serial = 'forged' WHERE row_no = {new_row}"
    ));
    let out = env.custody(&["--json", "journal", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("form_rows"), "{}", text(&out));
    Ok(())
}
