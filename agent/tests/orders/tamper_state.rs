//! Attacks on the carrier tables of a real journal (built by the real binary against
//! SoftHSM2, changed with the sqlite3 tool): `journal verify` names table and key and exits 1,
//! and the decisions those tables fed (a scan's comparison, the certificates an order names,
//! whether a carrier is a provider's key) take what the events record.

use super::support::*;

fn verify(env: &Env) -> (Option<i32>, String) {
    let out = env.custody(&["journal", "verify"]);
    (out.status.code(), text(&out))
}

/// A journal with alice and other scanned (user PIN configured: private keys read too),
/// verified clean first: the positive control of every attack below.
fn scanned(name: &str) -> (Env, String) {
    let env = Env::new(name);
    let out = env.custody(&["scan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(0), "an untouched journal verifies: {out}");
    assert!(out.contains("state tables agree"), "{out}");
    let key = format!("SoftHSM project/SoftHSM v2/{}", env.t.alice);
    (env, key)
}

fn assert_names(out: &str, table_and_key: &str, what: &str) {
    assert!(
        out.lines()
            .any(|l| l.contains(table_and_key) && l.contains(what)),
        "verify names {table_and_key} ({what}): {out}"
    );
}

#[test]
fn a_certificate_taken_from_a_stored_snapshot_is_named_and_a_scan_records_nothing() {
    let (env, key) = scanned("tamper-snapshot-delete");
    let events = env.sqlite_count("SELECT count(*) FROM events;");
    // The stored snapshot loses alice's certificate, and its digest no longer matches the
    // token, so the next scan compares the carrier object by object.
    env.sqlite(&format!(
        "UPDATE carrier_snapshots SET snapshot = json_remove(snapshot, '$.certificates[0]'), \
         sha256 = 'forged' WHERE carrier = '{key}';"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    let cert = format!("carrier_snapshots/{key} certificate {}/", env.t.cert_sha256);
    assert_names(&out, &cert, "missing");
    assert_names(&out, &format!("carrier_snapshots/{key}:"), "digest");
    // The certificate never left the token: the events say it is there, so the scan records
    // no cert_added (an event that did not happen).
    let out = env.custody(&["scan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        env.sqlite_count("SELECT count(*) FROM events;"),
        events,
        "the scan found nothing to record"
    );
}

#[test]
fn a_certificate_planted_in_a_stored_snapshot_is_named_and_no_removal_is_recorded() {
    let (env, key) = scanned("tamper-snapshot-insert");
    let forged = "ff".repeat(32);
    env.sqlite(&format!(
        "UPDATE carrier_snapshots SET snapshot = json_insert(snapshot, '$.certificates[#]', \
           json_set(json_extract(snapshot, '$.certificates[0]'), '$.sha256', '{forged}')), \
         sha256 = 'forged' WHERE carrier = '{key}';"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(
        &out,
        &format!("carrier_snapshots/{key} certificate {forged}/"),
        "not recorded by any event",
    );
    // A scan compares with what the events record: the planted certificate was never on the
    // carrier, so no `cert_removed` (with its "confirmed absence") is written for it.
    let out = env.custody(&["scan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(env.events_of("cert_removed").is_empty());
    // The order a signer prepares names the certificate the events record, not the planted one.
    let out = env.custody(&[
        "order",
        "create",
        "--carrier",
        &env.t.alice,
        "--holder",
        "Шевченко Тарас Григорович",
        "--dismissed",
        "2026-11-23",
        "--method",
        "reinit",
        "--responsible",
        "Коваленко Ольга Петрівна",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let order = text(&out);
    assert!(order.contains(&env.t.cert_sha256), "{order}");
    assert!(!order.contains(&forged), "{order}");
}

#[test]
fn a_changed_label_or_flag_in_a_stored_snapshot_is_named() {
    let (env, key) = scanned("tamper-snapshot-label");
    env.sqlite(&format!(
        "UPDATE carrier_snapshots SET snapshot = json_set(snapshot, '$.label', 'renamed', \
           '$.flags.user_pin_locked', json('true')) WHERE carrier = '{key}';"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(&out, &format!("carrier_snapshots/{key}:"), "label");
    assert_names(&out, &format!("carrier_snapshots/{key}:"), "flags");
    assert_names(&out, &format!("carrier_snapshots/{key}:"), "digest");
}

#[test]
fn a_deleted_snapshot_row_is_named() {
    let (env, key) = scanned("tamper-snapshot-row");
    env.sqlite(&format!(
        "DELETE FROM carrier_snapshots WHERE carrier = '{key}';"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(&out, &format!("carrier_snapshots/{key}:"), "missing");
}

#[test]
fn certificate_rows_changed_deleted_or_planted_are_named() {
    let (env, key) = scanned("tamper-certificates");
    let sha = &env.t.cert_sha256;
    env.sqlite(&format!(
        "UPDATE certificates SET holder_name = 'Mallory' WHERE carrier = '{key}';"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(&out, &format!("certificates/{key}/{sha}/"), "holder_name");

    let (env, key) = scanned("tamper-certificates-delete");
    env.sqlite(&format!(
        "DELETE FROM certificates WHERE carrier = '{key}';"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(&out, &format!("certificates/{key}/{sha}/"), "missing");

    let (env, key) = scanned("tamper-certificates-insert");
    env.sqlite(&format!(
        "INSERT INTO certificates (carrier, sha256, cka_id, label, added_seq) \
         VALUES ('{key}', '{}', x'07', x'', 1);",
        "ee".repeat(32)
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(
        &out,
        &format!("certificates/{key}/{}/07", "ee".repeat(32)),
        "not recorded by any event",
    );
}

#[test]
fn key_rows_changed_deleted_or_planted_are_named() {
    let (env, key) = scanned("tamper-keys");
    env.sqlite(&format!(
        "UPDATE keys SET never_extractable = 0 WHERE carrier = '{key}' AND class = 'private';"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(&out, &format!("keys/{key}/private/"), "never_extractable");

    let (env, key) = scanned("tamper-keys-delete");
    env.sqlite(&format!(
        "DELETE FROM keys WHERE carrier = '{key}' AND class = 'private';"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(&out, &format!("keys/{key}/private/"), "missing");

    // The same key row twice: a table without a primary key still counts its rows.
    let (env, key) = scanned("tamper-keys-insert");
    env.sqlite(&format!(
        "INSERT INTO keys SELECT * FROM keys WHERE carrier = '{key}' LIMIT 1;"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(&out, &format!("keys/{key}/"), "not recorded by any event");
}

#[test]
fn a_carrier_made_a_providers_key_is_named_and_cannot_be_destroyed_by_hand() {
    let (env, key) = scanned("tamper-carrier-remote");
    env.sqlite(&format!(
        "UPDATE carriers SET module = 'remote:forged', label = 'renamed' WHERE carrier = '{key}';"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(&out, &format!("carriers/{key}:"), "provider's HSM");
    assert_names(&out, &format!("carriers/{key}:"), "label");
    assert_names(&out, &format!("carriers/{key}:"), "module");
    // Recording a provider's deletion would put column 5 on a physical carrier without a
    // wipe: whether it is a provider's key is what its enrolment event recorded.
    let evidence = env.path("letter.txt");
    std::fs::write(&evidence, "deleted").unwrap_or_else(|e| panic!("{e}"));
    let out = env.custody(&[
        "carrier",
        "destroy-remote",
        "--carrier",
        &env.t.alice,
        "--evidence",
        &evidence.display().to_string(),
        "--responsible",
        "Коваленко Ольга",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not a key in a provider's HSM"),
        "{}",
        text(&out)
    );
    assert!(env.events_of("remote_key_destroyed").is_empty());
}

#[test]
fn a_planted_unavailable_module_is_named() {
    let (env, _) = scanned("tamper-meta");
    env.sqlite(&format!(
        "INSERT INTO meta VALUES ('module_unavailable:{MODULE}', '1');"
    ));
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert_names(
        &out,
        &format!("meta/module_unavailable:{MODULE}:"),
        "not recorded by any event",
    );
}
