//! `custody wipe --order` (method `reinit`) with a device removal at every call index, each
//! on a fresh copy of the tokens. Whether the target's objects are gone is checked by
//! pkcs11-tool straight against SoftHSM2, never through the fault module. After each faulted
//! run a clean re-run of the same order must leave the carrier wiped and verified, recorded
//! once (a wipe is safe to re-run after a failure).

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context as _};
use custody_core::journal::EventRow;
use custody_tests::{FaultPlan, TokenSet, PAIR_USER_PIN};

use super::support::*;

/// Whether pkcs11-tool, straight to SoftHSM2, still finds an object with CKA_ID 01 on the
/// token with this serial (public objects, and private ones when the user PIN still works).
pub(crate) fn objects_remain(set: &TokenSet, serial: &str) -> anyhow::Result<bool> {
    let slot = (u64::from_str_radix(serial, 16)? & 0x7fff_ffff).to_string();
    let mut listing = String::new();
    for login in [false, true] {
        let mut command = set.command("pkcs11-tool");
        command
            .arg("--module")
            .arg(set.module())
            .args(["--slot", &slot, "-O"]);
        if login {
            command.args(["--login", "--pin", PAIR_USER_PIN]);
        }
        let out = command.output().context("running pkcs11-tool")?;
        ensure!(
            login || out.status.success(),
            "pkcs11-tool cannot list slot {slot}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        listing.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    Ok(listing.lines().any(|l| l.trim() == "ID:         01"))
}

fn of_kind<'a>(events: &'a [EventRow], wanted: &str) -> Vec<&'a EventRow> {
    events.iter().filter(|e| kind(e) == wanted).collect()
}

#[test]
fn device_removal_at_every_call_of_a_wipe() -> TestResult {
    let w = World::new("wipe")?;
    let tokens = &w.set.manifest().tokens;
    let (target, bystander) = (&tokens[0], &tokens[1]);
    let so_pin = target.so_pin_file.display().to_string();
    std::fs::set_permissions(
        &target.so_pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;

    // The order, as an administrator makes it, signed once.
    let order = w.dir.join("order.json");
    let created = w.custody(&w.set, &w.baseline).run(&[
        "order",
        "create",
        "--carrier",
        &target.serial,
        "--holder",
        "Тестенко Тест Тестович",
        "--dismissed",
        "2026-11-23",
        "--method",
        "reinit",
        "--responsible",
        "Коваленко Ольга Петрівна",
        "--id",
        "ord-matrix",
    ])?;
    let created = created.expect(0)?;
    std::fs::write(&order, &created.stdout)?;
    let sign = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "custody-order", "-f"])
        .arg(w.dir.join("hr"))
        .arg(&order)
        .output()?;
    ensure!(sign.status.success(), "ssh-keygen -Y sign failed");
    let order = order.display().to_string();
    let args = [
        "wipe",
        "--order",
        order.as_str(),
        "--so-pin-file",
        so_pin.as_str(),
    ];

    let fresh = |dir: &Path, journal: &Path| -> anyhow::Result<TokenSet> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        w.journal_copy(journal)?;
        w.set.copy_to(dir)
    };
    let journal = w.dir.join("clean.db");
    let set = fresh(&w.dir.join("clean-set"), &journal)?;
    let clean = w.clean_calls(|| {
        w.custody(&set, &journal).run(&args)?.expect(0)?;
        ensure!(
            !objects_remain(&set, &target.serial)?,
            "the clean wipe left objects"
        );
        Ok(())
    })?;

    let mut matrix = Matrix::new("wipe", clean);
    let indexes = matrix.indexes();
    matrix.run(&w, &indexes, |lane, index| {
        let set = fresh(&lane.dir.join("wiped-set"), &lane.journal)?;
        let custody = lane.custody(&w, &set);
        lane.inject(Persistence::OneCall, index)?;
        custody.run(&args)?;
        let injected = lane.injected()?;
        let new = events(&lane.journal)?;
        let new = new.get(w.baseline_events..).unwrap_or_default();
        let gone = !objects_remain(&set, &target.serial)?;
        let mut problems = check(new, &target.serial, &bystander.serial, gone);
        problems.extend(verify_problem(&custody)?);

        // A clean re-run of the same order finishes the job, once.
        lane.fault.set_plan(&FaultPlan::new())?;
        let rerun = custody.run(&args)?;
        let all = events(&lane.journal)?;
        let after = all.get(w.baseline_events..).unwrap_or_default();
        let gone = !objects_remain(&set, &target.serial)?;
        let completed = of_kind(after, "wipe_completed").len();
        if !gone || completed != 1 {
            problems.push(format!(
                "after a clean re-run (exit {}): objects gone: {gone}, wipe_completed: {completed}",
                rerun.code
            ));
        }
        problems.extend(
            check(after, &target.serial, &bystander.serial, gone)
                .into_iter()
                .map(|p| format!("after a clean re-run: {p}")),
        );
        Ok((injected, problems))
    })?;
    matrix.finish()
}

/// The rules for the events a wipe run appended, given whether the target's objects are
/// really gone.
pub(crate) fn check(new: &[EventRow], target: &str, bystander: &str, gone: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let on = |e: &EventRow, serial: &str| {
        e.carrier
            .as_deref()
            .is_some_and(|c| c.rsplit('/').next() == Some(serial))
    };
    for e in new {
        let k = kind(e);
        let what = format!("{k} #{} of {}", e.seq, e.carrier.as_deref().unwrap_or("-"));
        match k.as_str() {
            "carrier_removed" => problems.push(format!("{what}, a present carrier")),
            "cert_removed" | "key_removed" if on(e, bystander) => {
                problems.push(format!("{what}, the bystander"))
            }
            "cert_removed" | "key_removed" if on(e, target) && !gone => {
                problems.push(format!("{what}, whose objects are still there"))
            }
            "wipe_completed" if !gone => {
                problems.push(format!("{what}, but pkcs11-tool still finds the objects"))
            }
            _ => {}
        }
    }
    problems
}
