//! PINs go only where they belong, measured with pkcs11-spy (every C_Login, the slot it went
//! to and what the token answered): rules name one carrier, a wipe logs in only on its
//! target, a rejected PIN is offered once per version of its source over any number of
//! scans, tokens without a user PIN are never logged in to. And a wipe's target is resolved
//! across all modules. The spy logs PINs in clear: its log stays in the test's directory,
//! is never printed, and is deleted after reading.

use std::process::Command;

use serde_json::json;

use super::support::*;

/// A configuration with one rule per carrier: alice's user PIN file is right, other's is
/// wrong (`bystander.pin`).
fn rules_with_a_wrong_pin_for_other(env: &Env) -> std::path::PathBuf {
    private_file(&env.path("bystander.pin"), "000000-wrong\n");
    let config = env.config.clone();
    let allowed = std::fs::read_to_string(&env.config).unwrap_or_default();
    let orders: String = allowed
        .lines()
        .take_while(|l| !l.starts_with("[[pin]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    let rule = |serial: &str, file: &str| {
        format!(
            "[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"{serial}\"\nuser_pin_file = \"{}\"\nso_pin_file = \"{}\"\n",
            env.path(file).display(),
            env.path("so.pin").display()
        )
    };
    std::fs::write(
        &config,
        format!(
            "{orders}{}{}",
            rule(&env.t.alice, "user.pin"),
            rule(&env.t.other, "bystander.pin")
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    config
}

/// custody under the spy with the configuration `config` (the env's configuration file).
fn spied_with(env: &Env, config: &std::path::Path, args: &[&str]) -> (std::process::Output, Spy) {
    assert_eq!(config, env.config.as_path());
    let log = env.path("spy.log");
    let _ = std::fs::remove_file(&log);
    let out = env
        .command(SPY)
        .env("PKCS11SPY", MODULE)
        .env("PKCS11SPY_OUTPUT", &log)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let spy = Spy::read(&log);
    let _ = std::fs::remove_file(&log);
    (out, spy)
}

/// The scan's problems of one scope, as text.
fn problems(scan: &serde_json::Value, scope: &str) -> Vec<String> {
    scan["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["scope"] == scope)
        .map(|p| format!("{}: {}", p["subject"], p["message"]))
        .collect()
}

#[test]
fn a_wildcard_pin_rule_is_refused_with_how_to_write_one() -> TestResult {
    let env = Env::new("pin-wildcard");
    let config = env.config.clone();
    std::fs::write(
        &config,
        format!(
            "[[pin]]\nserial = \"*\"\nuser_pin_file = \"{}\"\n",
            env.path("user.pin").display()
        ),
    )?;
    let (out, spy) = spied_with(&env, &config, &["scan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1, in [[pin]]: the rule has no manufacturer")
            && err.contains("manufacturer = ")
            && err.contains("model = "),
        "{err}"
    );
    assert!(spy.logins.is_empty());
    // A full identity with a wildcard serial: refused by line and key.
    std::fs::write(
        &config,
        format!(
            "[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"*\"\nuser_pin_file = \"{}\"\n",
            env.path("user.pin").display()
        ),
    )?;
    let (out, spy) = spied_with(&env, &config, &["scan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4, [[pin]] serial: a wildcard"), "{err}");
    assert!(spy.logins.is_empty());
    Ok(())
}

#[test]
fn a_wipe_logs_in_only_on_its_target() -> TestResult {
    let env = Env::new("pin-bystander");
    let config = rules_with_a_wrong_pin_for_other(&env);
    // destroy-keys logs in with the target's user PIN (from its rule); the journal's scans
    // before and after the wipe read the bystander too.
    let order = env.order("ord-bystander", json!({ "method": "destroy-keys" }));
    env.sign(&order, "hr");
    let (out, spy) = spied_with(
        &env,
        &config,
        &["--json", "wipe", "--order", order.to_str().unwrap_or("")],
    );
    assert!(spy.saw_initialize, "the module ran under the spy");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json_of(&out)["outcome"], "completed");
    let (on_target, failed_on_target) = spy.logins_on(&env.t.alice);
    assert!(
        on_target >= 1,
        "the target was logged in to: {:?}",
        spy.logins
    );
    assert_eq!(failed_on_target, 0);
    assert_eq!(
        spy.logins_on(&env.t.other),
        (0, 0),
        "a wipe offered a PIN to a bystander: {:?}",
        spy.logins
    );
    assert_eq!(
        spy.logins.len(),
        on_target,
        "every login went to a known slot"
    );
    Ok(())
}

#[test]
fn a_rejected_pin_is_offered_once_per_version_of_its_source_over_any_number_of_scans() -> TestResult
{
    let env = Env::new("pin-memory");
    let config = rules_with_a_wrong_pin_for_other(&env);
    let other = env.t.other.clone();
    let scan = || {
        let (out, spy) = spied_with(&env, &config, &["--json", "scan"]);
        assert!(spy.saw_initialize, "the module ran under the spy");
        assert_eq!(spy.logins_on(&env.t.alice).1, 0);
        (out, spy.logins_on(&other).1)
    };
    // The first scan offers the wrong PIN once (exit 1); SoftHSM2 then sets
    // CKF_USER_PIN_COUNT_LOW, and the next scans do not risk another (a warning, exit 0).
    let (out, mut failed) = scan();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for _ in 0..2 {
        let (out, f) = scan();
        failed += f;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let skipped = problems(&json_of(&out), "login_skipped");
        assert!(
            skipped.len() == 1 && skipped[0].contains("CKF_USER_PIN_COUNT_LOW"),
            "{skipped:?}"
        );
    }
    assert_eq!(
        failed, 1,
        "a PIN was offered to a token counting wrong PINs"
    );

    // Someone logs in by hand with the right PIN: the counter is reset. The same wrong PIN
    // source is still not offered again, by any later process.
    let _ = env.listing_of(&other);
    for _ in 0..2 {
        let (out, f) = scan();
        failed += f;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let login = problems(&json_of(&out), "login");
        assert!(
            login.len() == 1 && login[0].contains("not offered again until PIN file"),
            "{login:?}"
        );
    }
    assert_eq!(failed, 1, "a rejected PIN was offered again");
    // The memory names the source, never the PIN.
    let memory = std::fs::read_to_string(env.path("journal.db.pin-rejections"))?;
    assert!(memory.contains("bystander.pin") && !memory.contains("000000-wrong"));

    // A new version of the file (still wrong): offered once more, then not again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    private_file(&env.path("bystander.pin"), "000001-wrong\n");
    let _ = env.listing_of(&other);
    for _ in 0..3 {
        failed += scan().1;
    }
    assert_eq!(failed, 2);

    // The right PIN (and the counter reset): logged in, private keys read.
    std::thread::sleep(std::time::Duration::from_millis(20));
    private_file(&env.path("bystander.pin"), &format!("{USER_PIN}\n"));
    let _ = env.listing_of(&other);
    let (out, spy) = spied_with(&env, &config, &["--json", "scan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(spy.logins_on(&other), (1, 0));
    Ok(())
}

#[test]
fn a_token_without_a_user_pin_skips_its_rule_and_the_scan_succeeds() -> TestResult {
    let env = Env::new("pin-none");
    // C_InitToken alone leaves the user PIN uninitialised.
    let init = Command::new("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--init-token",
            "--label",
            "no-user-pin",
            "--so-pin",
            SO_PIN,
        ])
        .env("SOFTHSM2_CONF", &env.conf)
        .output()?;
    assert!(init.status.success(), "{}", text(&init));
    let slots = Command::new("softhsm2-util")
        .arg("--show-slots")
        .env("SOFTHSM2_CONF", &env.conf)
        .output()?;
    let slots = String::from_utf8_lossy(&slots.stdout).into_owned();
    let mut serial = None;
    let mut last = None;
    for line in slots.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix("Serial number:") {
            last = Some(s.trim().to_owned());
        }
        if line.strip_prefix("Label:").map(str::trim) == Some("no-user-pin") {
            serial = last.clone();
        }
    }
    let serial = serial.ok_or("no serial for the new token")?;
    let config = env.config.clone();
    std::fs::write(
        &config,
        format!(
            "[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"{serial}\"\nuser_pin_file = \"{}\"\n",
            env.path("user.pin").display()
        ),
    )?;
    let (out, spy) = spied_with(&env, &config, &["--json", "scan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(spy.logins_on(&serial), (0, 0), "{:?}", spy.logins);
    let scan = json_of(&out);
    let carrier = scan["modules"][0]["carriers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"]["serial"] == serial.as_str()))
        .ok_or("carrier missing from the scan")?;
    assert_eq!(carrier["login"]["state"], "skipped");
    assert!(carrier["login"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("no user PIN")));
    assert_eq!(problems(&scan, "login_skipped").len(), 1);
    Ok(())
}

#[test]
fn an_order_matching_the_same_carrier_in_two_modules_is_refused_as_target_ambiguous() -> TestResult
{
    let env = Env::new("two-modules");
    // A second copy of SoftHSM2 is a second module (its own library instance) that shows
    // the same tokens: the same serial in two modules.
    let copy = env.path("libsofthsm2-copy.so");
    std::fs::copy(MODULE, &copy)?;
    let before = env.token_listing();
    let order = env.order("ord-two-modules", json!({}));
    env.sign(&order, "hr");
    let so = env.path("so.pin");
    let (out, spy) = {
        let log = env.path("spy.log");
        let out = env
            .command(SPY)
            .env("PKCS11SPY", MODULE)
            .env("PKCS11SPY_OUTPUT", &log)
            .arg("--module")
            .arg(&copy)
            .args(["--json", "wipe", "--order"])
            .arg(&order)
            .arg("--so-pin-file")
            .arg(&so)
            .output()?;
        let spy = Spy::read(&log);
        let _ = std::fs::remove_file(&log);
        (out, spy)
    };
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json_of(&out);
    assert_eq!(report["outcome"], "refused");
    assert_eq!(report["refusal"]["code"], "target_ambiguous");
    let message = report["refusal"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("libsofthsm2-copy.so"), "{message}");
    assert_eq!(spy.destructive(), 0);
    assert!(spy.logins.is_empty(), "{:?}", spy.logins);
    assert_eq!(env.token_listing(), before, "nothing was touched");
    let rejected = env.events_of("order_rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].data["code"], "target_ambiguous");
    Ok(())
}

#[test]
fn a_pin_rule_matching_the_same_carrier_in_two_modules_offers_its_pin_to_neither() -> TestResult {
    let env = Env::new("pin-two-modules");
    let orders: String = std::fs::read_to_string(&env.config)?
        .lines()
        .take_while(|l| !l.starts_with("[[pin]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &env.config,
        format!(
            "{orders}[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"{}\"\nuser_pin_file = \"{}\"\n",
            env.t.alice,
            env.path("user.pin").display()
        ),
    )?;
    let scan = |extra: Option<&std::path::Path>| {
        let log = env.path("spy.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = env.command(SPY);
        cmd.env("PKCS11SPY", MODULE).env("PKCS11SPY_OUTPUT", &log);
        if let Some(copy) = extra {
            cmd.arg("--module").arg(copy);
        }
        let out = cmd.args(["--json", "scan"]).output();
        let spy = Spy::read(&log);
        let _ = std::fs::remove_file(&log);
        (out, spy)
    };
    let alice_in = |scan: &serde_json::Value, module: usize| {
        scan["modules"][module]["carriers"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["id"]["serial"] == env.t.alice.as_str())
            })
            .map(|c| c["login"].clone())
            .unwrap_or_default()
    };
    // Positive control: one module, the rule names one carrier, which is logged in to.
    let (out, spy) = scan(None);
    let out = out?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(spy.logins_on(&env.t.alice), (1, 0), "{:?}", spy.logins);
    assert_eq!(alice_in(&json_of(&out), 0)["state"], "logged_in");

    // A second copy of SoftHSM2 shows the same carrier: the rule matches two present
    // carriers, in two modules, and its PIN is offered to neither (exit 1, login problems).
    let copy = env.path("libsofthsm2-copy.so");
    std::fs::copy(MODULE, &copy)?;
    let (out, spy) = scan(Some(&copy));
    let out = out?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(spy.saw_initialize, "the first module ran under the spy");
    assert!(spy.logins.is_empty(), "{:?}", spy.logins);
    let report = json_of(&out);
    for module in 0..2 {
        let login = alice_in(&report, module);
        assert_eq!(login["state"], "failed", "{login}");
        let reason = login["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("matches 2 present carriers") && reason.contains("module "),
            "{reason}"
        );
    }
    let logins = problems(&report, "login");
    assert_eq!(logins.len(), 2, "{logins:?}");
    Ok(())
}

#[test]
fn order_create_names_the_carrier_fully_with_the_certificates_the_journal_knows() -> TestResult {
    let env = Env::new("order-create-full");
    assert!(env.custody(&["scan"]).status.success());
    let create = |serial: &str, extra: &[&str]| {
        let mut args = vec![
            "order",
            "create",
            "--carrier",
            serial,
            "--holder",
            "Шевченко Тарас",
            "--dismissed",
            "2026-11-23",
            "--method",
            "reinit",
            "--responsible",
            "Коваленко Ольга",
        ];
        args.extend_from_slice(extra);
        env.custody(&args)
    };
    let out = create(&env.t.alice, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let order = json_of(&out);
    assert_eq!(order["target"]["manufacturer"], "SoftHSM project");
    assert_eq!(order["target"]["model"], "SoftHSM v2");
    assert_eq!(order["target"]["serial"], env.t.alice.as_str());
    assert_eq!(order["certificates"], json!([env.t.cert_sha256]));

    // A serial the journal does not know: refused unless manufacturer and model are given.
    let out = create("0123456789abcdef", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--manufacturer and --model"));
    let out = create(
        "0123456789abcdef",
        &["--manufacturer", "SoftHSM project", "--model", "SoftHSM v2"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json_of(&out)["target"]["model"], "SoftHSM v2");
    Ok(())
}
