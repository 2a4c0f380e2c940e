//! Wipes that happen: evidence in the journal, exactly the destructive calls expected, and
//! the carrier re-read independently with pkcs11-tool.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

use serde_json::json;

use super::support::*;

#[test]
fn reinit_wipe_is_verified_and_journaled_with_evidence() -> TestResult {
    let env = Env::new("reinit");
    assert!(env.custody(&["scan"]).status.success());
    let other_before = env.listing_of(&env.t.other);
    // The order as an administrator makes it: custody order create + ssh-keygen -Y sign.
    let out = env.custody(&[
        "order",
        "create",
        "--carrier",
        &env.t.alice,
        "--holder",
        "Шевченко Тарас",
        "--dismissed",
        "2026-11-23",
        "--method",
        "reinit",
        "--responsible",
        "Коваленко Ольга",
        "--cert",
        &env.t.cert_sha256,
        "--id",
        "ord-reinit",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let order = env.path("ord-reinit.json");
    std::fs::write(&order, &out.stdout)?;
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        created["target"]["manufacturer"], "SoftHSM project",
        "filled from the journal"
    );
    let sign = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "custody-order", "-f"])
        .arg(env.t.dir.join("hr"))
        .arg(&order)
        .output()?;
    assert!(sign.status.success());

    let so = env.path("so.pin");
    let (out, spy) = env.custody_spied(&[
        "--json",
        "wipe",
        "--order",
        order.to_str().unwrap_or(""),
        "--so-pin-file",
        so.to_str().unwrap_or(""),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(spy.saw_initialize, "the module ran under the spy");
    assert_eq!(spy.init_token, 1, "exactly one C_InitToken");
    assert_eq!(spy.destroy_object, 0);
    let j = json_of(&out);
    assert_eq!(j["outcome"], "completed");
    assert_eq!(j["report"]["verified"], true);
    assert_eq!(j["report"]["verification"]["fresh_context"], true);
    assert_eq!(j["report"]["verification"]["passed"], true);
    assert_eq!(j["report"]["destroyed"].as_array().map(Vec::len), Some(5));

    // Independent re-read: nothing of alice's remains, the other carrier is untouched.
    assert!(!env.alice_has_objects(), "{}", env.listing_of(&env.t.alice));
    assert_eq!(env.listing_of(&env.t.other), other_before);

    // The journal: order_received, wipe_started, wipe_completed with the column-5 data.
    let journal = env.open_journal();
    assert!(journal.verify()?.ok());
    let completed = env.events_of("wipe_completed");
    assert_eq!(completed.len(), 1);
    let c = &completed[0];
    assert_eq!(c.data["responsible"], "Коваленко Ольга");
    assert_eq!(c.data["order_id"], "ord-reinit");
    assert_eq!(c.data["method"], "reinit");
    assert_eq!(
        c.data["module"]["manufacturer"]
            .as_str()
            .map(|d| d.contains("SoftHSM")),
        Some(true)
    );
    assert_eq!(
        c.carrier.as_deref(),
        Some(format!("SoftHSM project/SoftHSM v2/{}", env.t.alice).as_str())
    );
    let started = env.events_of("wipe_started");
    assert_eq!(started.len(), 1);
    assert!(started[0].seq < c.seq);
    assert_eq!(env.events_of("order_received").len(), 1);
    let row = journal
        .order("ord-reinit")?
        .ok_or("order not in the journal")?;
    assert_eq!(row.state, custody_core::journal::OrderState::Completed);
    // The post-wipe scan recorded the carrier's new state.
    assert!(!env.events_of("carrier_reinitialised").is_empty());
    // The destruction is sealed by a signed checkpoint right after it.
    let checkpoints = env.events_of("checkpoint");
    let sealed = checkpoints.iter().find(|e| e.seq == c.seq + 1);
    assert!(
        sealed.is_some(),
        "no checkpoint after wipe_completed #{}",
        c.seq
    );
    assert!(journal.verify_checkpoints(None)?.ok());

    let shown = env.custody(&["journal", "show", &env.t.alice]);
    let shown = text(&shown);
    assert!(
        shown.contains("wipe_completed") && shown.contains("verified in a fresh context"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn destroy_keys_removes_private_keys_and_their_objects_only() -> TestResult {
    let env = Env::new("destroy");
    // A trust anchor without a private key stays: destroy-keys is about private keys.
    let slot = (u64::from_str_radix(&env.t.alice, 16)? & 0x7fff_ffff).to_string();
    let ca = env.path("ca.der");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-subj",
            "/CN=Trust Anchor",
            "-days",
            "30",
            "-outform",
            "DER",
        ])
        .arg("-keyout")
        .arg(env.path("ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()?;
    assert!(made.status.success(), "{}", text(&made));
    let out = Command::new("pkcs11-tool")
        .args([
            "--module", MODULE, "--slot", &slot, "--login", "--pin", USER_PIN,
        ])
        .args(["--write-object"])
        .arg(&ca)
        .args(["--type", "cert", "--id", "09", "--label", "trust anchor"])
        .env("SOFTHSM2_CONF", &env.conf)
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let order = env.order("ord-destroy", json!({ "method": "destroy-keys" }));
    env.sign(&order, "it");
    let user = env.path("user.pin");
    let (out, spy) = env.custody_spied(&[
        "--json",
        "wipe",
        "--order",
        order.to_str().unwrap_or(""),
        "--user-pin-file",
        user.to_str().unwrap_or(""),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(spy.init_token, 0);
    // Private keys 01 and 02, public keys 01 and 02, certificate 01.
    assert_eq!(spy.destroy_object, 5);
    let j = json_of(&out);
    assert_eq!(j["report"]["verification"]["logged_in"], true);
    assert_eq!(
        j["report"]["destroy_calls"].as_array().map(Vec::len),
        Some(5)
    );
    assert!(!env.alice_has_objects());
    // The user PIN still works: the carrier was not re-initialised.
    let listing = env.listing_of(&env.t.alice);
    assert!(!listing.contains("C_Login failed"), "{listing}");
    assert!(listing.contains("trust anchor"), "{listing}");
    Ok(())
}

#[test]
fn wrong_so_pin_fails_honestly_and_the_order_can_be_run_again() -> TestResult {
    let env = Env::new("wrong-pin");
    let order = env.order("ord-wrong-pin", json!({}));
    env.sign(&order, "hr");
    let bad = env.path("bad.pin");
    private_file(&bad, "not-the-so-pin\n");
    let out = env.custody(&[
        "--json",
        "wipe",
        "--order",
        order.to_str().unwrap_or(""),
        "--so-pin-file",
        bad.to_str().unwrap_or(""),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json_of(&out);
    assert_eq!(j["outcome"], "failed");
    assert_eq!(j["report"]["verified"], false);
    assert!(
        j["report"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("rejected the PIN"),
        "{j}"
    );
    assert!(!j["report"]["verification"]["remaining"]
        .as_array()
        .map(Vec::is_empty)
        .unwrap_or(true));
    assert!(env.alice_has_objects());
    assert!(env.events_of("wipe_completed").is_empty());
    assert_eq!(env.events_of("wipe_failed").len(), 1);

    // A failed order may be run again with the right PIN.
    let out = env.wipe(&order);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!env.alice_has_objects());
    Ok(())
}

#[test]
fn a_locked_journal_means_nothing_is_wiped() -> TestResult {
    // A journal locked by another writer: the transaction that would record the order fails.
    let env = Env::new("locked");
    assert!(env.custody(&["scan"]).status.success());
    let before = env.token_listing();
    let order = env.order("ord-locked", json!({}));
    env.sign(&order, "hr");
    let mut sqlite = Command::new("sqlite3")
        .arg(&env.journal)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut input = sqlite.stdin.take().ok_or("no stdin")?;
    writeln!(input, "BEGIN IMMEDIATE;\nINSERT INTO meta (key, value) VALUES ('lock-holder', 'x');\nSELECT 'locked';")?;
    input.flush()?;
    let mut line = String::new();
    std::io::BufReader::new(sqlite.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    assert_eq!(line.trim(), "locked");

    let so = env.path("so.pin");
    let (out, spy) = env.custody_spied(&[
        "--json",
        "wipe",
        "--order",
        order.to_str().unwrap_or(""),
        "--so-pin-file",
        so.to_str().unwrap_or(""),
    ]);
    writeln!(input, "ROLLBACK;\n.quit")?;
    drop(input);
    sqlite.wait()?;

    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let j = json_of(&out);
    assert_eq!(j["outcome"], "error");
    assert!(j["error"].as_str().unwrap_or("").contains("locked"), "{j}");
    assert_eq!(
        spy.destructive(),
        0,
        "no destructive call while the journal is locked"
    );
    assert_eq!(env.token_listing(), before);
    assert!(env.events_of("wipe_started").is_empty());
    Ok(())
}

#[test]
fn a_journal_that_cannot_grow_means_nothing_is_wiped() -> TestResult {
    // Disk full, staged with a file-size limit on the custody process (SIGXFSZ ignored, so a
    // write past the limit fails with EFBIG, which SQLite reports like a full disk). The
    // limit is far below the journal's size: the first write that records the order fails.
    let env = Env::new("full");
    assert!(env.custody(&["scan"]).status.success());
    let before = env.token_listing();
    let order = env.order("ord-full", json!({}));
    env.sign(&order, "hr");
    let so = env.path("so.pin");
    let inner = {
        let mut c = env.command(MODULE);
        c.args([
            "--json",
            "wipe",
            "--order",
            order.to_str().unwrap_or(""),
            "--so-pin-file",
            so.to_str().unwrap_or(""),
        ]);
        c
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output()?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let j = json_of(&out);
    assert_eq!(j["outcome"], "error", "{j}");
    let error = j["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("disk") || error.contains("full") || error.contains("too large"),
        "{error}"
    );
    // Nothing was wiped: the carrier, re-read independently, is unchanged, and the journal
    // (readable again without the limit) holds no wipe_started and still verifies.
    assert_eq!(env.token_listing(), before);
    assert!(env.events_of("wipe_started").is_empty());
    assert!(env.open_journal().verify()?.ok());
    Ok(())
}
