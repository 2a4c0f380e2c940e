//! Attacks on the journal file by someone who can write it (the sqlite3 tool, no custody
//! key): custody must not act against its own hash-chained record, and `journal verify`
//! must name what was changed.

use serde_json::json;

use super::security::assert_refused;
use super::support::*;

fn verify(env: &Env) -> (Option<i32>, String) {
    let out = env.custody(&["journal", "verify"]);
    (out.status.code(), text(&out))
}

#[test]
fn replay_after_the_orders_table_is_rewritten_is_refused_from_the_events() {
    let env = Env::new("tamper-orders");
    let order = env.order("ord-tamper", json!({}));
    env.sign(&order, "hr");
    let out = env.wipe(&order);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    env.reissue_alice();
    // The orders table is outside the hash chain: one UPDATE claims the wipe failed.
    env.sqlite("UPDATE orders SET state = 'failed' WHERE order_id = 'ord-tamper';");
    // The same signed order again: the events say it was executed.
    assert_refused(&env, &order, "already_executed");
    assert!(env.listing_of(&env.t.alice).contains("new holder"));
    assert_eq!(env.events_of("wipe_completed").len(), 1);
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("orders/ord-tamper") && out.contains("state"),
        "verify names the row: {out}"
    );
}

#[test]
fn a_deleted_order_row_does_not_make_an_executed_order_new() {
    let env = Env::new("tamper-orders-delete");
    let order = env.order("ord-gone", json!({}));
    env.sign(&order, "hr");
    let out = env.wipe(&order);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    env.reissue_alice();
    env.sqlite("DELETE FROM orders WHERE order_id = 'ord-gone';");
    assert_refused(&env, &order, "already_executed");
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("orders/ord-gone") && out.contains("missing"),
        "{out}"
    );
}

#[test]
fn a_planted_trigger_stops_every_wipe_before_anything_is_touched() {
    let env = Env::new("tamper-trigger");
    // Scan once so that the journal exists.
    let out = env.custody(&["scan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Would reset every executed order to failed, and so re-open it for a replay.
    env.sqlite(
        "CREATE TRIGGER keep_failed AFTER UPDATE OF state ON orders \
         BEGIN UPDATE orders SET state = 'failed' WHERE order_id = NEW.order_id; END;",
    );
    let events = env.sqlite_count("SELECT count(*) FROM events;");
    let before = env.token_listing();
    let order = env.order("ord-trigger", json!({}));
    env.sign(&order, "hr");
    let out = env.wipe(&order);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("trigger `keep_failed` on orders"),
        "{}",
        text(&out)
    );
    assert_eq!(env.token_listing(), before, "nothing was touched");
    assert!(env.alice_has_objects());
    assert_eq!(env.sqlite_count("SELECT count(*) FROM events;"), events);
    let (code, out) = verify(&env);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("keep_failed"), "{out}");
}
