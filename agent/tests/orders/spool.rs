//! The order spool (`custody order spool` runs one pass of the service's spool processing)
//! and deadlines (`custody status --overdue`).

use std::path::PathBuf;

use serde_json::json;

use super::support::*;

/// Moves the token directory of `serial` out of SoftHSM's token directory ("unplug").
fn unplug(env: &Env, serial: &str) -> (PathBuf, PathBuf) {
    let tokens = env.path("tokens");
    for entry in std::fs::read_dir(&tokens).unwrap_or_else(|e| panic!("{e}")) {
        let dir = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let object = std::fs::read(dir.join("token.object")).unwrap_or_default();
        if object.windows(serial.len()).any(|w| w == serial.as_bytes()) {
            let away = env.path("unplugged");
            std::fs::rename(&dir, &away).unwrap_or_else(|e| panic!("{e}"));
            return (away, dir);
        }
    }
    panic!("no token directory for {serial}");
}

fn spool_pass(env: &Env) -> serde_json::Value {
    let out = env.custody(&["--json", "order", "spool"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    json_of(&out)
}

fn entry<'a>(report: &'a serde_json::Value, file: &str) -> &'a serde_json::Value {
    report["entries"]
        .as_array()
        .and_then(|e| e.iter().find(|x| x["file"] == file))
        .unwrap_or_else(|| panic!("no entry for {file}: {report}"))
}

#[test]
fn spool_rejects_bad_orders_and_executes_when_the_carrier_is_present() {
    let env = Env::new("spool");
    env.configure_so_pin();
    let spool = env.path("spool");
    std::fs::create_dir_all(&spool).unwrap_or_else(|e| panic!("{e}"));
    let (away, home) = unplug(&env, &env.t.other);

    // A forged order, an order for the absent carrier, an order still waiting for its
    // signature, and one for the carrier that is present.
    let forged = env.order("forged", json!({ "target": { "serial": env.t.other } }));
    env.sign(&forged, "hr");
    std::fs::write(
        &forged,
        std::fs::read_to_string(&forged)
            .unwrap_or_default()
            .replace("reinit", "destroy-keys"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let waiting = env.order(
        "later",
        json!({ "target": { "serial": env.t.other }, "certificates": [] }),
    );
    env.sign(&waiting, "it");
    let unsigned = env.order("unsigned", json!({}));
    let ready = env.order("ready", json!({}));
    env.sign(&ready, "hr");
    for f in [&forged, &waiting, &unsigned, &ready] {
        let name = f.file_name().unwrap_or_default();
        std::fs::rename(f, spool.join(name)).unwrap_or_else(|e| panic!("{e}"));
        let sig = custody_core::order::signature_path(f);
        if sig.exists() {
            std::fs::rename(&sig, custody_core::order::signature_path(&spool.join(name)))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    let report = spool_pass(&env);
    assert_eq!(entry(&report, "forged.json")["action"], "rejected");
    assert_eq!(entry(&report, "forged.json")["code"], "signature_invalid");
    assert_eq!(entry(&report, "later.json")["action"], "waiting");
    assert_eq!(entry(&report, "unsigned.json")["action"], "waiting");
    assert_eq!(entry(&report, "ready.json")["action"], "completed");
    let reason =
        std::fs::read_to_string(spool.join("rejected/forged.json.reason")).unwrap_or_default();
    assert!(reason.starts_with("signature_invalid: "), "{reason}");
    assert!(spool.join("rejected/forged.json.sig").exists());
    assert!(
        spool.join("done/ready.json").exists() && spool.join("done/ready.json.result").exists()
    );
    assert!(spool.join("later.json").exists(), "waiting orders stay");
    assert!(!env.alice_has_objects());
    let rejected = env.events_of("order_rejected");
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].data["source"]
        .as_str()
        .unwrap_or("")
        .starts_with("spool:"));
    let received: Vec<String> = env
        .events_of("order_received")
        .iter()
        .map(|e| e.data["order_id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        received.contains(&"later".to_owned()),
        "verified on arrival: {received:?}"
    );

    // A second pass with the carrier still absent changes nothing and journals nothing.
    let events = env.events().len();
    let report = spool_pass(&env);
    assert_eq!(entry(&report, "later.json")["action"], "waiting");
    assert_eq!(env.events().len(), events);

    // Plug it in: the next pass executes the order.
    std::fs::rename(&away, &home).unwrap_or_else(|e| panic!("{e}"));
    let report = spool_pass(&env);
    assert_eq!(
        entry(&report, "later.json")["action"],
        "completed",
        "{report}"
    );
    assert!(!env.listing_of(&env.t.other).contains("ID:         01"));
    assert_eq!(env.events_of("wipe_completed").len(), 2);

    // Dropping an executed order again: a replay, refused and moved away.
    std::fs::copy(spool.join("done/ready.json"), spool.join("again.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        spool.join("done/ready.json.sig"),
        spool.join("again.json.sig"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report = spool_pass(&env);
    assert_eq!(entry(&report, "again.json")["code"], "already_executed");
    assert!(spool.join("rejected/again.json.reason").exists());

    // An order whose signature never came is rejected after the grace period.
    assert_eq!(entry(&report, "unsigned.json")["action"], "waiting");
    let eleven_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(660);
    std::fs::File::options()
        .write(true)
        .open(spool.join("unsigned.json"))
        .and_then(|f| f.set_modified(eleven_minutes_ago))
        .unwrap_or_else(|e| panic!("{e}"));
    let report = spool_pass(&env);
    assert_eq!(entry(&report, "unsigned.json")["code"], "signature_missing");
    assert!(spool.join("rejected/unsigned.json.reason").exists());
}

#[test]
fn spool_without_an_so_pin_moves_the_order_to_failed_without_touching_anything() {
    let env = Env::new("spool-nopin");
    let spool = env.path("spool");
    std::fs::create_dir_all(&spool).unwrap_or_else(|e| panic!("{e}"));
    let before = env.token_listing();
    let order = env.order("nopin", json!({}));
    env.sign(&order, "hr");
    std::fs::rename(&order, spool.join("nopin.json")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(
        custody_core::order::signature_path(&order),
        spool.join("nopin.json.sig"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report = spool_pass(&env);
    assert_eq!(entry(&report, "nopin.json")["action"], "failed");
    assert_eq!(entry(&report, "nopin.json")["code"], "pin_missing");
    assert!(spool.join("failed/nopin.json.reason").exists());
    assert_eq!(env.token_listing(), before);
}

#[test]
fn status_overdue_lists_orders_past_the_day_after_dismissal() {
    let env = Env::new("overdue");
    // Two orders for an absent carrier: received, not executed.
    let today = time::OffsetDateTime::now_utc().date();
    let old = env.order(
        "old",
        json!({ "target": { "serial": "0123456789abcdef" }, "dismissed": "2026-01-05" }),
    );
    env.sign(&old, "hr");
    let fresh = env.order(
        "fresh",
        json!({ "target": { "serial": "0123456789abcdef" }, "dismissed": today.to_string() }),
    );
    env.sign(&fresh, "hr");
    for o in [&old, &fresh] {
        let out = env.wipe(o);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    }
    let run = |args: &[&str]| {
        env.command(MODULE)
            .env("TZ", "Europe/Kyiv")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let out = run(&["--json", "status", "--overdue"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json_of(&out);
    assert_eq!(j["time_zone"], "Europe/Kyiv");
    assert_eq!(j["overdue"], 1);
    let orders = j["orders"].as_array().cloned().unwrap_or_default();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["order_id"], "old");
    assert_eq!(orders[0]["due"], "2026-01-07T00:00:00+02:00");
    assert_eq!(orders[0]["due_utc"], "2026-01-06T22:00:00.000Z");
    assert_eq!(orders[0]["state"], "received");

    let out = run(&["--json", "status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "without --overdue the listing is informational"
    );
    assert_eq!(json_of(&out)["orders"].as_array().map(Vec::len), Some(2));
    let out = run(&["status", "--overdue"]);
    assert!(text(&out).contains("OVERDUE"), "{}", text(&out));
}
