//! `custody watch` with a device removal at every call index of its start (the first scan)
//! and of its first poll cycle (re-initialisation, slot list, content checks).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use custody_tests::{Custody, FaultModule};

use super::support::*;

const INTERVAL: &str = "100ms";

/// Runs `custody watch` until the process has made call `until` (by the fault module's
/// log), then stops it with SIGTERM. Returns its exit code.
fn watch_until(
    fault: &FaultModule,
    custody: &Custody,
    until: u64,
    log: &Path,
    grace: Duration,
) -> anyhow::Result<i32> {
    let stderr = std::fs::File::create(log)?;
    let mut child = custody
        .command()
        .args([
            "watch",
            "--interval",
            INTERVAL,
            "--check-interval",
            INTERVAL,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("starting custody watch")?;
    let result = wait_for_call(fault, &mut child, until, grace);
    stop(&mut child).and_then(|code| result.map(|()| code))
}

/// Waits until the watch made call `until`, or exited, or `grace` passed since the fault (a
/// module that failed stays failing, or is retried only later).
fn wait_for_call(
    fault: &FaultModule,
    child: &mut Child,
    until: u64,
    grace: Duration,
) -> anyhow::Result<()> {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut injected_at = None;
    loop {
        let calls = fault.calls()?;
        let mine = calls.iter().filter(|c| c.pid == pid);
        let reached = mine.clone().filter_map(|c| c.index).max().unwrap_or(0);
        if injected_at.is_none() && mine.clone().any(|c| c.origin == "fault") {
            injected_at = Some(Instant::now());
        }
        if reached >= until
            || child.try_wait()?.is_some()
            || injected_at.is_some_and(|at| at.elapsed() > grace)
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "custody watch made only {reached} of {until} calls in 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then up to 10 s for a clean exit; SIGKILL after that (the test fails then).
fn stop(child: &mut Child) -> anyhow::Result<i32> {
    if let Some(status) = child.try_wait()? {
        return Ok(status.code().unwrap_or(-1));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM {} failed", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    child.wait()?;
    anyhow::bail!("custody watch did not stop within 10 s of SIGTERM")
}

/// One call fails with CKR_DEVICE_REMOVED; the calls after it work.
#[test]
fn device_removal_at_every_call_of_a_watch_cycle() -> TestResult {
    watch_matrix("watch", Persistence::OneCall)
}

/// From the call on, the device is gone until the watch is stopped: every call fails with
/// CKR_DEVICE_REMOVED, except C_GetSlotList, which answers no slots (p11-kit's remote module
/// with its server dead). Indexes that fall on a C_GetSlotList are left out: an outage that
/// starts with an empty slot list, no error before it, is what every token pulled out
/// looks like.
#[test]
fn device_gone_from_every_call_of_a_watch_cycle_on() -> TestResult {
    watch_matrix("watch-gone", Persistence::Gone)
}

fn watch_matrix(name: &'static str, persistence: Persistence) -> TestResult {
    let w = World::new(name)?;
    let journal = w.dir.join("clean.db");
    let stderr = w.dir.join("watch.log");
    // A clean run long enough for three poll cycles.
    let clean = w.clean_calls(|| {
        w.journal_copy(&journal)?;
        let custody = w.custody(&w.set, &journal);
        watch_until(&w.fault, &custody, 250, &stderr, Duration::ZERO)?;
        Ok(())
    })?;
    // A poll starts with C_Finalize (when custody re-initialises the module) or with
    // C_GetSlotList; the start's scan ends after its first C_CloseSession. The matrix covers
    // the start (the first scan) and every poll up to and including the first one with
    // content checks (object reads).
    let poll_after = |after: u64| {
        clean
            .iter()
            .filter(|c| c.function == "C_Finalize" || c.function == "C_GetSlotList")
            .filter_map(|c| c.index)
            .find(|i| *i > after)
    };
    let index_of = |function: &str, after: u64| {
        clean
            .iter()
            .filter(|c| c.function == function)
            .filter_map(|c| c.index)
            .find(|i| *i > after)
    };
    let scanned = index_of("C_CloseSession", 0).context("no scan in the clean watch")?;
    let cycle_start = poll_after(scanned).context("no poll in the clean watch")?;
    let checked = index_of("C_FindObjects", cycle_start).context("no content check")?;
    let cycle_end = poll_after(checked).context("no poll after the check")? - 1;
    let cycle = cycle_end + 1 - cycle_start;
    println!(
        "{name}: start = calls 1..{}, poll cycles through the first content check = calls {cycle_start}..={cycle_end}",
        cycle_start - 1
    );
    let mut matrix = Matrix::new(name, clean);
    let slot_lists: Vec<u64> = matrix
        .clean()
        .iter()
        .filter(|c| c.function == "C_GetSlotList")
        .filter_map(|c| c.index)
        .collect();
    let indexes: Vec<u64> = (1..=cycle_end)
        .filter(|i| !(matches!(persistence, Persistence::Gone) && slot_lists.contains(i)))
        .collect();
    // A one-call fault is over after two cycles; an outage lasts until the watch stops, long
    // enough for custody to retry the module (1 s back-off).
    let grace = match persistence {
        Persistence::OneCall => Duration::from_millis(700),
        _ => Duration::from_millis(2500),
    };
    matrix.run(&w, &indexes, |lane, index| {
        let custody = lane.custody(&w, &lane.set);
        w.journal_copy(&lane.journal)?;
        lane.inject(persistence, index)?;
        let stderr = lane.dir.join("watch.log");
        // Two more whole cycles after the fault.
        let code = watch_until(
            &lane.fault,
            &custody,
            index.max(cycle_end) + 2 * cycle,
            &stderr,
            grace,
        )?;
        let injected = lane.injected()?;
        let new = events(&lane.journal)?;
        let mut problems = removals(new.get(w.baseline_events..).unwrap_or_default());
        if code != 0 {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            problems.push(format!("custody watch exited {code} on SIGTERM: {tail:?}"));
        }
        problems.extend(verify_problem(&custody)?);
        Ok((injected, problems))
    })?;
    matrix.finish()
}
