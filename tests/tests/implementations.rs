//! The same behaviour tests on every PKCS#11 implementation in
//! `custody_tests::implementation::IMPLEMENTATIONS`: each test starts its implementation from
//! scratch (private configuration, sockets, ports, daemons), runs the real `custody` binary
//! against it, and prints which implementation and versions it runs on.
//!
//! Written once: [`behaviours!`] makes one module per implementation with one `#[test]` per
//! behaviour, so `cargo test --test implementations kryoptic::` runs one implementation and
//! `cargo test --test implementations wipe_by_reinit` one behaviour everywhere. A further
//! implementation is one more line in the list at the bottom.

#[path = "implementations/support.rs"]
mod support;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use custody_tests::implementation::Support;
use custody_tests::sched::RunDelay;
use serde_json::Value;
use support::{TestResult, World, PATIENCE};

/// The default poll interval (no configuration).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

fn carriers(scan: &Value) -> Vec<&Value> {
    scan["modules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["carriers"].as_array().into_iter().flatten())
        .collect()
}

fn kinds(scan: &Value) -> Vec<String> {
    scan["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect()
}

/// `custody scan` reads label, manufacturer, model, serial and the certificate of every
/// carrier as the module reports them; a second scan of the unchanged state adds no event.
fn scan_reads_every_field_and_rescan_adds_nothing(name: &str) -> TestResult {
    let Some(mut w) = World::start(name, "scan")? else {
        return Ok(());
    };
    let made = [w.instance.insert("alpha")?, w.instance.insert("beta")?];
    let scan = w.json(&["scan"], 0)?;
    let found = carriers(&scan);
    ensure!(found.len() == 2, "[{name}] expected 2 carriers: {scan:#}");
    for carrier in &made {
        let token = &carrier.token;
        let got = found
            .iter()
            .find(|c| c["label"] == token.label.as_str())
            .with_context(|| format!("[{name}] no carrier labelled {}: {scan:#}", token.label))?;
        // Token strings are shown percent-encoded where they hold control bytes (the NULs in
        // tpm2-pkcs11's model), unchanged otherwise.
        let shown = custody_core::id::percent_encode;
        ensure!(
            got["id"]["serial"] == shown(&token.serial).as_str()
                && got["id"]["manufacturer"] == shown(&token.manufacturer).as_str()
                && got["id"]["model"] == shown(&token.model).as_str(),
            "[{name}] token fields differ from the module's: {got:#} vs {token:?} {} {} {}",
            token.serial,
            token.manufacturer,
            token.model
        );
        let certs = got["certificates"].as_array().cloned().unwrap_or_default();
        ensure!(
            certs.len() == 1 && certs[0]["sha256"].as_str() == carrier.cert_sha256(),
            "[{name}] certificate of {}: {certs:#?}",
            token.label
        );
        ensure!(
            got["public_keys"].as_array().map(Vec::len) == Some(1),
            "[{name}] public key of {}: {got:#}",
            token.label
        );
    }
    let enrolled = kinds(&scan)
        .iter()
        .filter(|k| *k == "carrier_enrolled")
        .count();
    ensure!(
        enrolled == 2,
        "[{name}] events of the first scan: {:?}",
        kinds(&scan)
    );

    let again = w.json(&["scan"], 0)?;
    ensure!(
        kinds(&again).is_empty(),
        "[{name}] a re-scan of an unchanged state recorded {:?}",
        kinds(&again)
    );
    w.assert_verifies()
}

/// `custody watch` in its default configuration records a carrier inserted while it runs
/// within one interval + 1 s, and its removal once it is gone; nothing else. The bound is of
/// the service's own time: what the service and the implementation's daemons spent waiting
/// for a CPU meanwhile (`sched::RunDelay`, on a machine shared with other test suites) is
/// added to it and printed; a row one poll late still misses it.
fn watch_sees_insertion_and_removal(name: &str) -> TestResult {
    let Some(mut w) = World::start(name, "watch")? else {
        return Ok(());
    };
    if !w.supports("insertion and removal", w.caps.insert_remove) {
        return Ok(());
    }
    let first = w.instance.insert("first")?;
    let mut watch = w.watch(&[])?;
    w.wait_events("first carrier enrolled", PATIENCE, |e| {
        e.iter().any(|e| e.kind.as_str() == "carrier_enrolled")
    })?;
    let key_first = w.carrier_key(&first.token.label)?;

    // Measured from the moment the carrier is complete to the time of the journal row.
    let slack = DEFAULT_INTERVAL + Duration::from_secs(1);
    let mut pids = w.instance.daemon_pids();
    pids.push(watch.pid());
    let second = w.instance.insert("second")?;
    let inserted = time::OffsetDateTime::now_utc();
    let waiting = RunDelay::start(&pids);
    w.wait_events("second carrier enrolled", PATIENCE, |e| {
        e.iter()
            .filter(|e| e.kind.as_str() == "carrier_enrolled")
            .count()
            == 2
    })?;
    let key_second = w.carrier_key(&second.token.label)?;
    ensure!(key_first != key_second, "[{name}] two carriers, one key");
    let took = w.latency(&key_second, "carrier_enrolled", inserted)?;
    let bound = within(&w, "insertion", took, slack, &waiting);
    ensure!(
        took <= bound,
        "[{name}] insertion took {took:?} to reach the journal (at most {bound:?})"
    );

    w.instance.remove(&second)?;
    let removed = time::OffsetDateTime::now_utc();
    let waiting = RunDelay::start(&pids);
    let took = w.latency(&key_second, "carrier_removed", removed)?;
    let bound = within(&w, "removal", took, slack, &waiting);
    ensure!(
        took <= bound,
        "[{name}] removal took {took:?} to reach the journal (at most {bound:?})"
    );
    watch.check_running()?;
    ensure!(
        w.events_of(&key_first, "carrier_removed")?.is_empty(),
        "[{name}] the carrier still present was recorded removed"
    );
    watch.stop()?;
    w.assert_verifies()
}

/// The bound of a latency `took`: `slack` plus the time the service and the daemons waited
/// for a CPU since `waiting` started (printed with it).
fn within(w: &World, what: &str, took: Duration, slack: Duration, waiting: &RunDelay) -> Duration {
    let starved = waiting.waited();
    w.note(&format!(
        "{what} -> journal row: {} ms (bound {} ms: {} ms + {} ms its processes waited for a CPU)",
        took.as_millis(),
        (slack + starved).as_millis(),
        slack.as_millis(),
        starved.as_millis()
    ));
    slack + starved
}

/// The server between custody and the tokens is killed while `custody watch` runs: no
/// carrier is recorded removed while it is down; once it is back, carriers inserted meanwhile
/// are enrolled and nothing present is recorded removed.
fn remote_server_killed_and_restarted(name: &str) -> TestResult {
    let Some(mut w) = World::start(name, "server-restart")? else {
        return Ok(());
    };
    if !w.caps.server {
        w.note("server killed and restarted: no server process in this implementation");
        return Ok(());
    }
    let first = w.instance.insert("first")?;
    let mut watch = w.watch(&["--interval", "300ms"])?;
    w.wait_events("enrolled", PATIENCE, |e| {
        e.iter().any(|e| e.kind.as_str() == "carrier_enrolled")
    })?;
    let key = w.carrier_key(&first.token.label)?;

    w.instance.kill_server()?;
    // Ten polls with the server down.
    std::thread::sleep(Duration::from_secs(3));
    watch.check_running()?;
    ensure!(
        w.events_of(&key, "carrier_removed")?.is_empty(),
        "[{name}] carrier recorded removed while the server was down: {:#?}",
        w.events()?
    );

    w.instance.restart_server()?;
    let second = w.instance.insert("second")?;
    w.wait_events("the carrier inserted after the restart", PATIENCE, |e| {
        e.iter()
            .filter(|e| e.kind.as_str() == "carrier_enrolled")
            .count()
            == 2
    })?;
    w.carrier_key(&second.token.label)?;
    // A few more polls after recovery.
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        w.events_of(&key, "carrier_removed")?.is_empty(),
        "[{name}] carrier recorded removed after the server came back: {:#?}",
        w.events()?
    );
    watch.check_running()?;
    watch.stop()?;
    w.assert_verifies()
}

/// `custody issue --ack-sign` hands a carrier over with the holder's acknowledgement signed by
/// the key on the carrier (C_Sign) and verified; the journal verifies.
fn issue_with_signed_acknowledgement(name: &str) -> TestResult {
    let Some(mut w) = World::start(name, "issue")? else {
        return Ok(());
    };
    if !w.supports("issuance with a signed acknowledgement", w.caps.sign) {
        return Ok(());
    }
    let carrier = w.instance.insert("issued")?;
    w.json(&["scan"], 0)?;
    let key = w.carrier_key(&carrier.token.label)?;
    let (code, v, err) = w.json_with_stdin(
        &[
            "issue",
            "--carrier",
            carrier.serial(),
            "--holder",
            "Шевченко Тарас Григорович",
            "--ack-sign",
            "--pin-stdin",
        ],
        &format!("{}\n", carrier.token.user_pin),
    )?;
    ensure!(code == 0, "[{name}] issue exited {code}: {v:#} {err}");
    let ack = &v["data"]["acknowledgement"];
    ensure!(
        ack["status"] == "verified" && ack["algorithm"] == "ECDSA P-256 SHA-256",
        "[{name}] acknowledgement: {ack:#}"
    );
    ensure!(
        w.events_of(&key, "issued")?.len() == 1,
        "[{name}] no issued event for {key}"
    );
    ensure!(
        !err.contains(&carrier.token.user_pin) && !v.to_string().contains(&carrier.token.user_pin),
        "[{name}] the PIN was printed"
    );
    w.assert_verifies()
}

/// A signed order wipes one carrier by `method`, verified in a fresh context, and a
/// bystander keeps its keys. Where the implementation lacks the PKCS#11 function the method
/// needs, the wipe is refused or fails with a message naming it, and nothing is destroyed.
fn wipe(name: &str, method: &str) -> TestResult {
    let Some(mut w) = World::start(name, &format!("wipe-{method}"))? else {
        return Ok(());
    };
    let support = match method {
        "reinit" => w.caps.wipe_reinit,
        _ => w.caps.wipe_destroy_keys,
    };
    let signer = w.trust_signer()?;
    let target = w.instance.insert("target")?;
    let bystander = w.instance.insert("bystander")?;
    w.json(&["scan"], 0)?;
    let key = w.carrier_key(&target.token.label)?;
    let cert = target
        .cert_sha256()
        .context("the target has a certificate")?;
    let order = w.signed_order(&signer, &target, method, cert)?;
    let (pin_option, pin_file) = match method {
        "reinit" => ("--so-pin-file", &target.token.so_pin_file),
        _ => ("--user-pin-file", &target.token.user_pin_file),
    };
    let mut args = vec!["wipe", "--order", order.to_str().context("path")?];
    if !pin_file.as_os_str().is_empty() {
        args.extend([pin_option, pin_file.to_str().context("path")?]);
    }
    let (mut code, mut v, mut err) = w.json_with_stdin(&args, "")?;
    let mut bystander = Some(bystander);
    if target.serial() == bystander.as_ref().map_or("", |b| b.serial()) {
        // Weak serials (tpm2-pkcs11: every serial is 0000000000000000): an order names a
        // serial, so it matches both carriers and is refused with nothing touched, until the
        // other one is unplugged.
        ensure!(
            code == 1 && v["refusal"]["code"] == "target_ambiguous",
            "[{name}] an order matching two carriers was not refused as ambiguous: {v:#} {err}"
        );
        w.note("two carriers with the same serial: the order is refused as ambiguous; the other one is removed and the order run again");
        if let Some(b) = bystander.take() {
            w.instance.remove(&b)?;
        }
        (code, v, err) = w.json_with_stdin(&args, "")?;
    }
    let after = w.json(&["scan"], 0)?;
    let certs_of = |label: &str| -> usize {
        carriers(&after)
            .iter()
            .filter(|c| c["label"] == label)
            .map(|c| c["certificates"].as_array().map_or(0, Vec::len))
            .sum()
    };
    if let Some(b) = &bystander {
        ensure!(
            certs_of(&b.token.label) == 1,
            "[{name}] the bystander lost its certificate: {after:#}"
        );
    }
    match support {
        Support::Yes => {
            ensure!(
                code == 0 && v["outcome"] == "completed",
                "[{name}] wipe by {method} exited {code}: {v:#} {err}"
            );
            ensure!(
                w.events_of(&key, "wipe_completed")?.len() == 1,
                "[{name}] no wipe_completed for {key}"
            );
            ensure!(
                certs_of(&target.token.label) == 0,
                "[{name}] the target still has a certificate after the wipe: {after:#}"
            );
            let after_key = v["report"]["carrier_after"].as_str();
            if method == "reinit" && w.caps.new_serial_on_reinit {
                // C_InitToken gave the token a new serial: the wipe is verified on the token
                // in the same slot with the label the wipe gave it, and the journal links the
                // carrier's old key to its new one.
                let new_key = after_key.with_context(|| {
                    format!("[{name}] no carrier_after in a wipe that changed the serial: {v:#}")
                })?;
                let serial_after = v["report"]["verification"]["serial_after"].as_str();
                ensure!(
                    serial_after.is_some_and(|s| s != target.serial() && new_key.ends_with(s)),
                    "[{name}] serial after the wipe: {v:#}"
                );
                let completed = w.events_of(&key, "wipe_completed")?;
                ensure!(
                    completed[0].data["carrier_after"] == new_key,
                    "[{name}] wipe_completed does not link {key} to {new_key}: {:#}",
                    completed[0].data
                );
                ensure!(
                    !w.events_of(new_key, "carrier_enrolled")?.is_empty(),
                    "[{name}] the re-initialised carrier {new_key} is not in the journal"
                );
                w.note(&format!("reinit changed the serial: {key} -> {new_key}"));
            } else {
                ensure!(
                    after_key.is_none(),
                    "[{name}] carrier_after without a serial change: {v:#}"
                );
            }
        }
        Support::Missing(missing) => {
            w.note(&format!("wipe by {method}: not supported here ({missing})"));
            let text = format!("{v} {err}");
            ensure!(
                code != 0 && v["outcome"] != "completed",
                "[{name}] wipe by {method} claims success: {v:#}"
            );
            if pin_file.as_os_str().is_empty() {
                // The carrier has no PIN to give (a read-only card): refused before any call.
                ensure!(
                    v["refusal"]["code"] == "pin_missing" && text.contains("nothing was touched"),
                    "[{name}] a wipe without the PIN it needs was not refused as pin_missing: {text}"
                );
            } else {
                ensure!(
                    text.contains("C_InitToken") || text.contains("C_DestroyObject"),
                    "[{name}] the refusal does not name the PKCS#11 function: {text}"
                );
            }
            ensure!(
                w.events_of(&key, "wipe_completed")?.is_empty(),
                "[{name}] wipe_completed recorded for a wipe that could not run"
            );
            ensure!(
                certs_of(&target.token.label) == 1,
                "[{name}] the target lost its certificate in a refused wipe: {after:#}"
            );
        }
    }
    w.assert_verifies()
}

/// Another tool re-initialises a carrier in place (C_InitToken, new label, new key and
/// certificate) while `custody watch` runs: the journal shows the carrier as it is now (on
/// kryoptic with a new serial, so a new carrier, and the old one no longer present), never
/// a change of another carrier. `check_interval`: the service's content checks; `within`:
/// how soon the new certificate must be recorded, or with `content_checks` false (the
/// content check is not due in time) the re-initialisation itself: a new carrier enrolled,
/// or the carrier recorded as re-initialised or changed (the tool's later objects are for the
/// next content check).
fn reinitialised_by_another_tool_while_watch_runs(
    name: &str,
    check_interval: &str,
    within: Duration,
    content_checks: bool,
) -> TestResult {
    let Some(mut w) = World::start(name, &format!("reinit-by-tool-{check_interval}"))? else {
        return Ok(());
    };
    if !w.supports("re-initialisation by another tool", w.caps.reinit_by_tool) {
        return Ok(());
    }
    let carrier = w.instance.insert("before")?;
    let other = w.instance.insert("other")?;
    let mut watch = w.watch(&["--interval", "300ms", "--check-interval", check_interval])?;
    w.wait_events("enrolled", PATIENCE, |e| {
        e.iter()
            .filter(|e| e.kind.as_str() == "carrier_enrolled")
            .count()
            == 2
    })?;
    let old_key = w.carrier_key(&carrier.token.label)?;
    let other_key = w.carrier_key(&other.token.label)?;
    ensure!(
        old_key != other_key,
        "[{name}] two carriers, one key: {old_key}"
    );
    // From here on every wait fails at once, with the journal, if an event names the carrier
    // the tool did not touch.
    w.expect_untouched(&other_key)?;
    let now = w.instance.reinit_by_tool(&carrier, "after")?;
    let cert = now.cert_sha256().context("a certificate")?.to_owned();
    if content_checks {
        let carrier_now = if now.serial() == carrier.serial() {
            Some(old_key.clone())
        } else {
            None
        };
        w.wait_events("the new certificate", within, |e| {
            e.iter().any(|e| {
                e.kind.as_str() == "cert_added"
                    && e.data.to_string().contains(&cert)
                    && carrier_now
                        .as_ref()
                        .is_none_or(|k| e.carrier.as_deref() == Some(k.as_str()))
            })
        })?;
    } else {
        let new_serial = now.serial() != carrier.serial();
        let took = w.wait_events("the re-initialisation", within, |e| {
            if new_serial {
                e.iter()
                    .filter(|e| e.kind.as_str() == "carrier_enrolled")
                    .count()
                    == 3
            } else {
                e.iter().any(|e| {
                    e.carrier.as_deref() == Some(old_key.as_str())
                        && matches!(e.kind.as_str(), "carrier_reinitialised" | "carrier_changed")
                })
            }
        })?;
        w.note(&format!(
            "re-initialisation recorded {took:?} after the tool finished, no content check"
        ));
    }
    if now.serial() != carrier.serial() {
        // The tool sets the label after C_InitToken: a read in between records the token
        // with the module's default label, and the next check the label it ends with.
        w.wait_events("the new label", PATIENCE, |_| {
            w.carrier_key(&now.token.label).is_ok()
        })?;
        let new_key = w.carrier_key(&now.token.label)?;
        ensure!(new_key != old_key, "[{name}] new serial, same key");
        w.wait_events("the old carrier gone", PATIENCE, |_| {
            w.present(&old_key).ok().flatten() == Some(false)
        })?;
        ensure!(
            w.present(&new_key)? == Some(true),
            "[{name}] the re-initialised carrier is not present"
        );
        w.note(&format!(
            "re-initialised by another tool: {old_key} -> {new_key}"
        ));
    } else {
        ensure!(
            w.present(&old_key)? == Some(true),
            "[{name}] the carrier re-initialised in place is not present"
        );
    }
    w.assert_untouched()?;
    watch.check_running()?;
    watch.stop()?;
    w.assert_untouched()?;
    w.assert_verifies()
}

/// One module per implementation, one test per behaviour.
macro_rules! behaviours {
    ($($module:ident => $name:literal),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn scan_reads_every_field_and_rescan_adds_nothing() -> TestResult {
                super::scan_reads_every_field_and_rescan_adds_nothing($name)
            }

            #[test]
            fn issue_with_signed_acknowledgement() -> TestResult {
                super::issue_with_signed_acknowledgement($name)
            }

            #[test]
            fn wipe_by_reinit() -> TestResult {
                super::wipe($name, "reinit")
            }

            #[test]
            fn wipe_by_destroy_keys() -> TestResult {
                super::wipe($name, "destroy-keys")
            }

            #[test]
            fn watch_sees_insertion_and_removal() -> TestResult {
                super::watch_sees_insertion_and_removal($name)
            }

            #[test]
            fn reinitialised_by_another_tool_while_watch_runs() -> TestResult {
                super::reinitialised_by_another_tool_while_watch_runs(
                    $name, "600ms", PATIENCE, true,
                )
            }

            /// Content checks every 10 minutes: only the identity check after a
            /// re-initialisation (at most 10 s after it) can see the new token in time.
            #[test]
            fn reinitialised_by_another_tool_seen_without_a_content_check() -> TestResult {
                super::reinitialised_by_another_tool_while_watch_runs(
                    $name,
                    "10m",
                    Duration::from_secs(20),
                    false,
                )
            }

            #[test]
            fn remote_server_killed_and_restarted() -> TestResult {
                super::remote_server_killed_and_restarted($name)
            }
        }
    )*};
}

behaviours! {
    softhsm2 => "softhsm2",
    kryoptic => "kryoptic",
    tpm2_pkcs11 => "tpm2-pkcs11",
    p11kit_remote => "p11-kit-remote",
    opensc => "opensc",
}
