//! PIN rules against carriers SoftHSM2 cannot present by itself, through the fault-injecting
//! module: two tokens with the same manufacturer, model and serial (as tpm2-pkcs11 shows
//! every token), and tokens whose PIN counters say they are close to locking. The module's
//! call log (which never holds PINs) counts every C_Login.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use custody_tests::{pair_spec, temp_dir, Custody, FaultModule, FaultPlan, TokenSet};
use serde_json::{json, Value};

type TestResult = anyhow::Result<()>;

const FIXTURES: &str = env!("CARGO_BIN_EXE_custody-fixtures");
const WEAK: &str = "0000000000000000";

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pin-rules")
}

struct World {
    dir: PathBuf,
    set: TokenSet,
    fault: FaultModule,
}

impl World {
    fn new(name: &str, plan: &FaultPlan) -> anyhow::Result<Self> {
        let dir = temp_dir(&base(), name)?;
        let set = TokenSet::cached(
            Path::new(FIXTURES),
            &pair_spec(),
            &base().join("cache"),
            &dir.join("set"),
        )?;
        for t in &set.manifest().tokens {
            std::fs::set_permissions(
                &t.user_pin_file,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
        }
        let fault = FaultModule::new(&dir.join("fault"), plan)?;
        Ok(Self { dir, set, fault })
    }

    fn serial(&self, label: &str) -> anyhow::Result<String> {
        Ok(self
            .set
            .manifest()
            .token(label)
            .context("token of the pair")?
            .serial
            .clone())
    }

    fn pin_file(&self, label: &str) -> anyhow::Result<PathBuf> {
        Ok(self
            .set
            .manifest()
            .token(label)
            .context("token of the pair")?
            .user_pin_file
            .clone())
    }

    /// `custody --json scan` through the fault module with `config`; its JSON and the
    /// number of C_Login calls it made.
    fn scan(&self, config: &str, code: i32) -> anyhow::Result<(Value, usize)> {
        let path = self.dir.join("custody.toml");
        std::fs::write(&path, config)?;
        self.fault.clear_log()?;
        let scan = Custody::new(&self.set, &self.dir.join("journal.db"))
            .through(&self.fault)
            .with_config(&path)
            .json(&["scan"], code)?;
        let logins = self
            .fault
            .calls()?
            .iter()
            .filter(|c| c.function == "C_Login")
            .count();
        Ok((scan, logins))
    }
}

fn carrier<'a>(scan: &'a Value, label: &str) -> anyhow::Result<&'a Value> {
    scan["modules"][0]["carriers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["label"] == label)
        .with_context(|| format!("no carrier {label} in {scan:#}"))
}

fn rule(serial: &str, label: Option<&str>, pin_file: &Path) -> String {
    let label = label
        .map(|l| format!("label = \"{l}\"\n"))
        .unwrap_or_default();
    format!(
        "[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"{serial}\"\n{label}user_pin_file = \"{}\"\n",
        pin_file.display()
    )
}

#[test]
fn a_rule_matching_two_present_carriers_offers_its_pin_to_neither() -> TestResult {
    // Both tokens of the pair report the same weak serial.
    let probe = World::new("twins-probe", &FaultPlan::new())?;
    let (a, b) = (probe.serial("fault-a")?, probe.serial("fault-b")?);
    let plan = FaultPlan::new()
        .token(&a, json!({"serial": WEAK}))
        .token(&b, json!({"serial": WEAK}));
    let w = World::new("twins", &plan)?;
    let pin = w.pin_file("fault-a")?;

    // Positive control: with the label, exactly the named carrier is logged in to.
    let (scan, logins) = w.scan(&rule(WEAK, Some("fault-a"), &pin), 0)?;
    ensure!(logins == 1, "{logins} logins");
    ensure!(
        carrier(&scan, "fault-a")?["login"]["state"] == "logged_in",
        "{scan:#}"
    );
    ensure!(
        carrier(&scan, "fault-b")?["login"]["state"] == "not_attempted",
        "{scan:#}"
    );

    // Without it the rule matches both: no login at all, and the message asks for a label.
    let (scan, logins) = w.scan(&rule(WEAK, None, &pin), 1)?;
    ensure!(logins == 0, "{logins} logins with an ambiguous rule");
    for label in ["fault-a", "fault-b"] {
        let login = &carrier(&scan, label)?["login"];
        ensure!(login["state"] == "failed", "{login}");
        let reason = login["reason"].as_str().unwrap_or_default();
        ensure!(
            reason.contains("matches 2 present carriers") && reason.contains("label"),
            "{reason}"
        );
    }
    Ok(())
}

#[test]
fn tokens_close_to_locking_are_never_offered_a_pin() -> TestResult {
    let probe = World::new("counters-probe", &FaultPlan::new())?;
    let (a, b) = (probe.serial("fault-a")?, probe.serial("fault-b")?);
    let rules = |w: &World| -> anyhow::Result<String> {
        Ok(format!(
            "{}{}",
            rule(&a, None, &w.pin_file("fault-a")?),
            rule(&b, None, &w.pin_file("fault-b")?)
        ))
    };
    // Positive control: the right PINs, healthy counters: both logged in.
    let w = World::new("counters-control", &FaultPlan::new())?;
    let (_, logins) = w.scan(&rules(&w)?, 0)?;
    ensure!(logins == 2, "{logins} logins");

    for (name, flag) in [
        ("count-low", "CKF_USER_PIN_COUNT_LOW"),
        ("final-try", "CKF_USER_PIN_FINAL_TRY"),
        ("locked", "CKF_USER_PIN_LOCKED"),
    ] {
        let plan = FaultPlan::new()
            .token(&a, json!({"set_flags": [flag]}))
            .token(&b, json!({"set_flags": [flag]}));
        let w = World::new(name, &plan)?;
        let (scan, logins) = w.scan(&rules(&w)?, 0)?;
        ensure!(logins == 0, "{flag}: {logins} logins");
        for label in ["fault-a", "fault-b"] {
            let login = &carrier(&scan, label)?["login"];
            ensure!(login["state"] == "skipped", "{flag}: {login}");
            ensure!(
                login["reason"].as_str().unwrap_or_default().contains(flag),
                "{flag}: {login}"
            );
        }
        let skipped = scan["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["scope"] == "login_skipped")
            .count();
        ensure!(skipped == 2, "{scan:#}");
    }
    Ok(())
}
