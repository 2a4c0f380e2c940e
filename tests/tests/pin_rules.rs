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

/// pkcs11-spy (OpenSC): logs every call of the module it wraps, PINs included.
const SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so";

/// The same carrier in two modules, appearing in both within one poll of `custody watch`:
/// the rule naming it is refused on both (every module is listed before any token is read),
/// measured by the C_Login calls of each module (the fault module's call log, pkcs11-spy).
/// Module 1 is the fault module in front of SoftHSM2, module 2 pkcs11-spy in front of a copy
/// of SoftHSM2 (its own library instance) on the same token directory, so both show the
/// same tokens; the fault module reports fault-b under another serial. Positive controls in
/// the same run: the rule for fault-b's real serial matches only module 2's fault-b, the rule
/// for the serial the fault module reports only module 1's: one login each.
#[test]
fn watch_refuses_a_rule_matching_one_carrier_that_appears_in_two_modules_in_one_poll() -> TestResult
{
    let probe = World::new("watch-twins-probe", &FaultPlan::new())?;
    let (a, b) = (probe.serial("fault-a")?, probe.serial("fault-b")?);
    drop(probe);
    let b_fault = "b-via-fault";
    let plan =
        FaultPlan::from_json(json!({"slot_events": false})).token(&b, json!({"serial": b_fault}));
    let w = World::new("watch-twins", &plan)?;
    ensure!(
        Path::new(SPY).is_file(),
        "{SPY} is missing: install opensc-pkcs11 (softhsm-fixtures/ensure-packages.sh)"
    );
    // The tokens are put in only once the service polls.
    let staging = w.dir.join("staging");
    std::fs::create_dir_all(&staging)?;
    let mut moves = Vec::new();
    for t in &w.set.manifest().tokens {
        let name = t.token_dir.file_name().context("token directory name")?;
        std::fs::rename(&t.token_dir, staging.join(name))?;
        moves.push((staging.join(name), t.token_dir.clone()));
    }
    let copy = w.dir.join("libsofthsm2-copy.so");
    std::fs::copy(w.fault.target(), &copy)?;
    let spy_log = w.dir.join("spy.log");
    let config = w.dir.join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[[module]]\npath = \"{}\"\nreinit = \"always\"\n[[module]]\npath = \"{SPY}\"\nreinit = \"always\"\n{}{}{}",
            w.fault.module().display(),
            rule(&a, None, &w.pin_file("fault-a")?),
            rule(&b, None, &w.pin_file("fault-b")?),
            rule(b_fault, None, &w.pin_file("fault-b")?),
        ),
    )?;
    w.fault.clear_log()?;
    let mut command = std::process::Command::new(custody_tests::custody_bin());
    command
        .envs(w.set.env())
        .envs(w.fault.env())
        .env_remove("CUSTODY_FAULT_PLAN")
        .env("PKCS11SPY", &copy)
        .env("PKCS11SPY_OUTPUT", &spy_log)
        .env("CUSTODY_CONFIG", &config)
        // The trace line `polled` tells when a poll has listed the modules.
        .env("CUSTODY_LOG", "info,custody_agent::worker::slots=trace")
        .arg("--journal")
        .arg(w.dir.join("journal.db"))
        .args(["--log-format", "json", "watch", "--interval", "2s"])
        .args(["--check-interval", "60s"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn()?;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().context("stderr")?;
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    let lines = |needle: &str| -> usize {
        log.lock()
            .map(|l| l.iter().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
    };
    let fault_logins = || -> anyhow::Result<usize> {
        Ok(w.fault
            .calls()?
            .iter()
            .filter(|c| c.function == "C_Login")
            .count())
    };
    let spy_logins = || -> usize {
        std::fs::read_to_string(&spy_log)
            .map(|t| t.lines().filter(|l| l.ends_with(" C_Login")).count())
            .unwrap_or(0)
    };
    let result = (|| -> TestResult {
        let polled = format!("\"module\":\"{SPY}\"");
        let wait = |what: &str, f: &mut dyn FnMut() -> anyhow::Result<bool>| -> TestResult {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !f()? {
                ensure!(std::time::Instant::now() < until, "not within 30 s: {what}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(())
        };
        // Right after a poll has listed both modules (the spy's module is listed last), the
        // tokens go in at once: the next poll shows them in both.
        let seen = lines("\"message\":\"polled\"");
        wait("a poll", &mut || {
            Ok(log
                .lock()
                .map(|l| {
                    l.iter()
                        .filter(|l| l.contains("\"message\":\"polled\""))
                        .skip(seen)
                        .any(|l| l.contains(&polled))
                })
                .unwrap_or(false))
        })?;
        for (from, to) in &moves {
            std::fs::rename(from, to)?;
        }
        wait("both positive controls logged in", &mut || {
            Ok(fault_logins()? >= 1 && spy_logins() >= 1)
        })?;
        wait("the rule for fault-a refused in both modules", &mut || {
            Ok(lines("matches 2 present carriers") >= 2)
        })?;
        // Two more polls: nothing else is logged in to.
        std::thread::sleep(std::time::Duration::from_secs(5));
        ensure!(
            fault_logins()? == 1,
            "{} C_Login through the fault module",
            fault_logins()?
        );
        ensure!(
            spy_logins() == 1,
            "{} C_Login through the spy",
            spy_logins()
        );
        Ok(())
    })();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    let _ = std::fs::remove_file(&spy_log);
    if let Err(e) = result {
        let text = log.lock().map(|l| l.join("\n")).unwrap_or_default();
        anyhow::bail!("{e:#}\nservice log:\n{text}");
    }
    ensure!(status.success(), "custody watch exited {status}");
    let refused = log
        .lock()
        .map(|l| {
            l.iter()
                .filter(|l| l.contains("matches 2 present carriers"))
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    ensure!(
        refused
            .iter()
            .all(|l| l.contains("fault-a") || l.contains(&a)),
        "{refused:#?}"
    );
    let verify = Custody::new(&w.set, &w.dir.join("journal.db")).run(&["journal", "verify"])?;
    ensure!(verify.code == 0, "{}", verify.stdout);
    Ok(())
}
