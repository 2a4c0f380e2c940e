//! Identity that content cannot change, and identifiers that can be printed and typed back:
//! SoftHSM2 tokens seen through the fault-injecting module, which makes their serials weak
//! (`0000000000000000`, as every tpm2-pkcs11 token reports) and puts NUL bytes in a model
//! string (as tpm2-pkcs11 does). Also a carrier whose object list fails mid-read.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use custody_tests::{
    temp_dir, Custody, FaultModule, FaultPlan, Profile, Spec, TokenSet, TokenSpec,
};
use serde_json::{json, Value};

type TestResult = anyhow::Result<()>;

const FIXTURES: &str = env!("CARGO_BIN_EXE_custody-fixtures");
const PIN: &str = "ident-user-4711";
const SO_PIN: &str = "ident-so-4711";
const ZEROS: &str = "0000000000000000";

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("identity")
}

/// Two tokens with an EC key pair and certificate each.
fn pair_spec() -> Spec {
    let token = |label: &str| {
        TokenSpec::new(label).pins(PIN, SO_PIN).ec_key_cert(
            "01",
            label,
            Profile::plain(&format!("{label} (fixture)")),
        )
    };
    Spec::new()
        .named("identity-pair")
        .token(token("weak-a"))
        .token(token("weak-b"))
}

fn setup(name: &str, plan: &FaultPlan) -> anyhow::Result<(TokenSet, FaultModule, Custody)> {
    let dir = temp_dir(&base(), name)?;
    let set = TokenSet::cached(
        Path::new(FIXTURES),
        &pair_spec(),
        &base().join("cache"),
        &dir.join("set"),
    )?;
    let fault = FaultModule::new(&dir.join("fault"), plan)?;
    let custody = Custody::new(&set, &dir.join("journal.db")).through(&fault);
    Ok((set, fault, custody))
}

/// Both tokens report the all-zero serial; token b's model carries NUL bytes.
fn weak_plan(set: &TokenSet) -> FaultPlan {
    let [a, b] = [&set.manifest().tokens[0], &set.manifest().tokens[1]];
    FaultPlan::new()
        .token(&a.serial, json!({"serial": ZEROS}))
        .token(
            &b.serial,
            json!({"serial": ZEROS, "model": "TPM\u{0}\u{0}model"}),
        )
}

fn kinds(scan: &Value) -> Vec<String> {
    scan["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Carrier keys from `custody journal list --json`, by label.
fn keys(custody: &Custody) -> anyhow::Result<Vec<(String, String)>> {
    let list = custody.json(&["journal", "list"], 0)?;
    Ok(list["carriers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["label"].as_str().unwrap_or_default().to_owned(),
                c["carrier"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// pkcs11-tool on the real SoftHSM2 module (not through the fault module).
fn pkcs11_tool(set: &TokenSet, args: &[&str]) -> TestResult {
    let module = set.module().display().to_string();
    let out = set
        .command("pkcs11-tool")
        .args(["--module", module.as_str()])
        .args(args)
        .output()
        .context("running pkcs11-tool")?;
    ensure!(
        out.status.success(),
        "pkcs11-tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn weak_serial_tokens_are_two_carriers_whose_identity_content_does_not_change() -> TestResult {
    let (set, fault, custody) = setup("content", &FaultPlan::new())?;
    fault.set_plan(&weak_plan(&set))?;
    let scan = custody.json(&["scan"], 0)?;
    let enrolled = kinds(&scan)
        .iter()
        .filter(|k| *k == "carrier_enrolled")
        .count();
    assert_eq!(enrolled, 2, "two weak-serial tokens are two carriers");
    let before = keys(&custody)?;
    assert_eq!(before.len(), 2);
    ensure!(before[0].1 != before[1].1, "{before:?}");

    // Token a loses its certificate and public key: content, not identity.
    for kind in ["cert", "pubkey"] {
        pkcs11_tool(
            &set,
            &[
                "--token-label",
                "weak-a",
                "--login",
                "--pin",
                PIN,
                "--delete-object",
                "--type",
                kind,
                "--id",
                "01",
            ],
        )?;
    }
    let scan = custody.json(&["scan"], 0)?;
    let mut changes = kinds(&scan);
    changes.sort();
    assert_eq!(changes, ["cert_removed", "key_removed"], "{scan}");
    assert_eq!(keys(&custody)?, before, "the same two carriers");
    custody.json(&["journal", "verify"], 0)?;
    Ok(())
}

#[test]
fn a_weak_serial_carrier_reinitialised_in_place_is_recorded_as_reinitialised() -> TestResult {
    let (set, fault, custody) = setup("reinit", &FaultPlan::new())?;
    fault.set_plan(&weak_plan(&set))?;
    custody.json(&["scan"], 0)?;
    let before = keys(&custody)?;
    pkcs11_tool(
        &set,
        &[
            "--token-label",
            "weak-a",
            "--init-token",
            "--label",
            "weak-a-again",
            "--so-pin",
            SO_PIN,
        ],
    )?;
    let scan = custody.json(&["scan"], 0)?;
    let changes = kinds(&scan);
    assert_eq!(
        changes.first().map(String::as_str),
        Some("carrier_reinitialised"),
        "{scan}"
    );
    assert!(
        !changes
            .iter()
            .any(|k| k == "carrier_removed" || k == "carrier_enrolled"),
        "{changes:?}"
    );
    let after = keys(&custody)?;
    let mut old: Vec<&String> = before.iter().map(|(_, k)| k).collect();
    let mut new: Vec<&String> = after.iter().map(|(_, k)| k).collect();
    old.sort();
    new.sort();
    assert_eq!(old, new, "the same carriers, one with a new label");
    custody.json(&["journal", "verify"], 0)?;
    Ok(())
}

#[test]
fn a_nul_in_the_model_is_printed_escaped_and_accepted_back() -> TestResult {
    let (set, fault, custody) = setup("nul", &FaultPlan::new())?;
    fault.set_plan(&weak_plan(&set))?;
    custody.json(&["scan"], 0)?;
    let keys = keys(&custody)?;
    let (_, key) = keys
        .iter()
        .find(|(label, _)| label == "weak-b")
        .context("carrier weak-b")?;
    assert!(key.contains("TPM%00%00model"), "{key}");
    // Nothing printed holds a control character: human list, JSON, scan table.
    for args in [
        &["journal", "list"][..],
        &["scan"][..],
        &["journal", "show", key][..],
    ] {
        let run = custody.run(args)?.expect(0)?;
        ensure!(
            !run.stdout.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?}: {:?}",
            run.stdout
        );
    }
    // What `journal list` printed names the carrier everywhere a carrier is named.
    let shown = custody.json(&["journal", "show", key], 0)?;
    assert_eq!(shown["carriers"][0]["carrier"]["carrier"], key.as_str());
    let order = custody
        .run(&[
            "order",
            "create",
            "--carrier",
            key,
            "--holder",
            "Тарас Шевченко",
            "--dismissed",
            "2026-11-23",
            "--method",
            "reinit",
            "--responsible",
            "Леся Українка",
        ])?
        .expect(0)?;
    let order: Value = serde_json::from_str(&order.stdout)?;
    assert_eq!(order["target"]["serial"], ZEROS, "{order}");
    assert_eq!(order["target"]["model"], "TPM%00%00model", "{order}");
    Ok(())
}

#[test]
fn a_carrier_whose_object_list_fails_mid_read_keeps_its_objects() -> TestResult {
    let (set, fault, custody) = setup("midread", &FaultPlan::new())?;
    let scan = custody.json(&["scan"], 0)?;
    let enrolled = kinds(&scan)
        .iter()
        .filter(|k| *k == "carrier_enrolled")
        .count();
    assert_eq!(enrolled, 2, "{scan}");
    // The card is pulled while its objects are read: every C_FindObjects fails.
    fault.set_plan(&FaultPlan::new().fail_every("C_FindObjects", "CKR_DEVICE_REMOVED"))?;
    let out = custody.run(&["scan", "--json"])?.expect(2)?;
    let partial: Value = out.json()?;
    assert!(kinds(&partial).is_empty(), "nothing recorded: {partial}");
    assert_eq!(partial["modules"][0]["complete"], false);
    let problems = partial["modules"][0]["slot_problems"].to_string();
    assert!(problems.contains("CKR_DEVICE_REMOVED"), "{problems}");
    assert!(problems.contains("C_FindObjects"), "{problems}");
    let human = custody.run(&["scan"])?.expect(2)?;
    assert!(human.stdout.contains("partial:"), "{}", human.stdout);
    // Read completely again: nothing changed, nothing to record.
    fault.set_plan(&FaultPlan::new())?;
    let scan = custody.json(&["scan"], 0)?;
    assert!(kinds(&scan).is_empty(), "{scan}");
    drop(set);
    Ok(())
}
