//! Orders that must be refused. Each case: exit 1 with the reason code, no destructive
//! PKCS#11 call (counted by pkcs11-spy), the carriers re-read unchanged by pkcs11-tool, and the
//! refusal journaled as `order_rejected`.

use std::path::Path;

use serde_json::json;

use super::support::*;

/// Runs the wipe under the spy and checks everything a refusal must satisfy.
pub(crate) fn assert_refused(env: &Env, order: &Path, code: &str) {
    let before = env.token_listing();
    assert!(
        before.contains("ID:         01"),
        "the listing sees objects: {before}"
    );
    let rejected_before = if env.journal.exists() {
        env.events_of("order_rejected").len()
    } else {
        0
    };
    let so = env.path("so.pin");
    let (out, spy) = env.custody_spied(&[
        "--json",
        "wipe",
        "--order",
        order.to_str().unwrap_or(""),
        "--so-pin-file",
        so.to_str().unwrap_or(""),
    ]);
    assert_eq!(out.status.code(), Some(1), "{code}: {}", text(&out));
    let j = json_of(&out);
    assert_eq!(j["outcome"], "refused", "{code}: {j}");
    assert_eq!(j["refusal"]["code"], code, "{j}");
    assert!(
        spy.saw_initialize,
        "{code}: the module was loaded through the spy"
    );
    assert_eq!(spy.destructive(), 0, "{code}: destructive PKCS#11 call");
    assert_eq!(env.token_listing(), before, "{code}: token changed");
    let rejected = env.events_of("order_rejected");
    assert_eq!(
        rejected.len(),
        rejected_before + 1,
        "{code}: refusal journaled"
    );
    assert_eq!(
        rejected.last().map(|e| e.data["code"].clone()),
        Some(json!(code))
    );
    assert!(env.events_of("wipe_started").is_empty() || code == "already_executed");
    assert!(env.open_journal().verify().map(|r| r.ok()).unwrap_or(false));
}

#[test]
fn forged_signature() {
    let env = Env::new("forged");
    let order = env.order("ord-forged", json!({}));
    env.sign(&order, "hr");
    // Change the holder after signing.
    let text = std::fs::read_to_string(&order).unwrap_or_default();
    std::fs::write(&order, text.replace("Шевченко", "Франко")).unwrap_or_else(|e| panic!("{e}"));
    assert_refused(&env, &order, "signature_invalid");
}

#[test]
fn valid_signature_by_a_key_not_in_allowed_signers() {
    let env = Env::new("mallory");
    let order = env.order("ord-mallory", json!({}));
    env.sign(&order, "mallory");
    assert_refused(&env, &order, "unknown_signer");
}

#[test]
fn wrong_namespace() {
    let env = Env::new("namespace");
    let order = env.order("ord-ns", json!({}));
    env.sign_ns(&order, "hr", "git");
    assert_refused(&env, &order, "wrong_namespace");
}

#[test]
fn order_for_another_serial() {
    let env = Env::new("other-serial");
    let order = env.order(
        "ord-elsewhere",
        json!({ "target": { "serial": "0123456789abcdef" } }),
    );
    env.sign(&order, "hr");
    assert_refused(&env, &order, "target_absent");
    // Same serial, another model: refused too.
    let order = env.order(
        "ord-model",
        json!({ "target": { "serial": env.t.alice, "model": "Almaz-1K" } }),
    );
    env.sign(&order, "hr");
    assert_refused(&env, &order, "target_mismatch");
}

#[test]
fn right_serial_but_other_certificate() {
    let env = Env::new("other-cert");
    let order = env.order("ord-cert", json!({ "certificates": ["ab".repeat(32)] }));
    env.sign(&order, "hr");
    assert_refused(&env, &order, "certificate_mismatch");
}

#[test]
fn expired_and_not_yet_valid() {
    let env = Env::new("window");
    let order = env.order(
        "ord-expired",
        json!({ "issued_at": "2025-01-01T00:00:00Z", "not_after": "2025-01-03T00:00:00Z" }),
    );
    env.sign(&order, "hr");
    assert_refused(&env, &order, "expired");
    let order = env.order(
        "ord-future",
        json!({ "issued_at": "2099-01-01T00:00:00Z", "not_after": "2099-01-03T00:00:00Z" }),
    );
    env.sign(&order, "hr");
    assert_refused(&env, &order, "not_yet_valid");
}

#[test]
fn replay_of_an_executed_order_also_after_a_restart() {
    let env = Env::new("replay");
    let order = env.order("ord-replay", json!({}));
    env.sign(&order, "hr");
    let out = env.wipe(&order);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    env.reissue_alice();
    // Every custody run is a fresh process: the replay is caught from the journal alone.
    assert_refused(&env, &order, "already_executed");
    assert_refused(&env, &order, "already_executed");
    assert!(env.listing_of(&env.t.alice).contains("new holder"));
}

#[test]
fn same_order_id_with_other_content() {
    let env = Env::new("id-conflict");
    // The first order with this id is received (its carrier is absent, so it waits).
    let first = env.order(
        "ord-dup",
        json!({ "target": { "serial": "0123456789abcdef" } }),
    );
    env.sign(&first, "hr");
    assert_refused(&env, &first, "target_absent");
    // A second, differently-worded order reuses the id: refused whatever its signature.
    let second = env.path("second");
    std::fs::create_dir_all(&second).unwrap_or_else(|e| panic!("{e}"));
    let order = env.order("ord-dup", json!({}));
    let moved = second.join("ord-dup.json");
    std::fs::rename(&order, &moved).unwrap_or_else(|e| panic!("{e}"));
    env.sign(&moved, "it");
    assert_refused(&env, &moved, "id_conflict");
}

#[test]
fn malformed_truncated_and_oversized_json() {
    let env = Env::new("malformed");
    let bad = env.path("bad.json");
    std::fs::write(&bad, b"{\"id\": \"x\", this is not json").unwrap_or_else(|e| panic!("{e}"));
    env.sign(&bad, "hr");
    assert_refused(&env, &bad, "malformed");

    let order = env.order("ord-trunc", json!({}));
    let bytes = std::fs::read(&order).unwrap_or_default();
    std::fs::write(&order, &bytes[..bytes.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    env.sign(&order, "hr");
    assert_refused(&env, &order, "malformed");

    // Truncated after signing: the signature no longer matches, and the document is broken.
    let order = env.order("ord-trunc2", json!({}));
    env.sign(&order, "hr");
    let bytes = std::fs::read(&order).unwrap_or_default();
    std::fs::write(&order, &bytes[..bytes.len() - 10]).unwrap_or_else(|e| panic!("{e}"));
    assert_refused(&env, &order, "malformed");

    let big = env.path("big.json");
    let mut bytes = std::fs::read(env.order("ord-big", json!({}))).unwrap_or_default();
    bytes.resize(1024 * 1024 + 17, b' ');
    std::fs::write(&big, &bytes).unwrap_or_else(|e| panic!("{e}"));
    env.sign(&big, "hr");
    assert_refused(&env, &big, "oversized");
    let rejected = env.events_of("order_rejected");
    assert_eq!(
        rejected.last().map(|e| e.data["size"].clone()),
        Some(json!(1024 * 1024 + 17))
    );
}

#[test]
fn two_person_rule_with_the_same_signer_twice() {
    let env = Env::with_config("two-person", 2, true);
    let order = env.order("ord-two", json!({}));
    env.sign(&order, "hr");
    env.sign(&order, "hr");
    assert_refused(&env, &order, "not_enough_signers");
    // With a second person it goes through.
    env.sign(&order, "it");
    let out = env.wipe(&order);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
