//! The two-workstation walkthrough of docs/fleet.md, `softhsm-fixtures/fleet-demo.sh`, run as
//! written (its own private PostgreSQL cluster) with the `custody` binary under test.

use std::path::Path;
use std::process::Command;

use anyhow::ensure;
use custody_tests::custody_bin;

use super::{dir, TestResult};

#[test]
fn the_two_workstation_demo_runs_and_the_form_shows_both() -> TestResult {
    let dir = dir("fleet_demo")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm-fixtures/fleet-demo.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("CUSTODY_BIN", custody_bin())
        .env("FLEET_DEMO_DIR", dir.join("fleet"))
        .env_remove("PGPASSWORD")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "Enrolled agent ws-01",
        "Enrolled agent ws-02",
        "Synced 4 event(s)",
        "Synced 3 event(s)",
        "Synced 0 event(s)",
        "identical to the local ones",
        "2 agent(s), 2 journal(s)",
        "No alarm, no destruction overdue.",
        "all verify",
        "ws-01/1,03.02.2025 10:00,\"Алмаз-1К, сер. № 00001017\"",
        "ws-01/2,11.03.2025 09:30",
        "\"20.10.2025, Сидоренко Марія Іванівна\"",
        "ws-02/1,14.04.2025 14:15,\"SecureToken-337, сер. № 2A7F0031\"",
    ] {
        ensure!(
            stdout.contains(expected),
            "{expected:?} missing:\n{stdout}\n{stderr}"
        );
    }
    // The cluster was stopped and removed.
    let left: Vec<_> = std::fs::read_dir("/tmp")?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("custody-fleet-demo.")
        })
        .filter(|e| stdout.contains(&*e.file_name().to_string_lossy()))
        .collect();
    ensure!(
        left.is_empty(),
        "the demo's cluster directory was left: {left:?}"
    );
    Ok(())
}
