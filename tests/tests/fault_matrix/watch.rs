//! `custody watch` with a device removal at every call index of its start (the first scan)
//! and of its first poll cycle (re-initialisation, slot list, content checks).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use custody_tests::Custody;

use super::support::*;

const INTERVAL: &str = "100ms";

/// Runs `custody watch` until the process has made call `until` (by the fault module's
/// log), then stops it with SIGTERM. Returns its exit code.
fn watch_until(w: &World, custody: &Custody, until: u64, log: &Path) -> anyhow::Result<i32> {
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
    let result = wait_for_call(w, &mut child, until);
    stop(&mut child).and_then(|code| result.map(|()| code))
}

/// Waits until the watch made call `until`, or exited, or 700 ms (7 intervals) passed since
/// the fault (a module that failed stays failing or is retried only later).
fn wait_for_call(w: &World, child: &mut Child, until: u64) -> anyhow::Result<()> {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut injected_at = None;
    loop {
        let calls = w.fault.calls()?;
        let mine = calls.iter().filter(|c| c.pid == pid);
        let reached = mine.clone().filter_map(|c| c.index).max().unwrap_or(0);
        if injected_at.is_none() && mine.clone().any(|c| c.origin == "fault") {
            injected_at = Some(Instant::now());
        }
        if reached >= until
            || child.try_wait()?.is_some()
            || injected_at.is_some_and(|at| at.elapsed() > Duration::from_millis(700))
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

/// From the call on, every call fails with CKR_DEVICE_REMOVED until the watch is stopped.
#[test]
fn device_removal_from_every_call_of_a_watch_cycle_on() -> TestResult {
    watch_matrix("watch-from", Persistence::FromThere)
}

fn watch_matrix(name: &'static str, persistence: Persistence) -> TestResult {
    let w = World::new(name)?;
    let journal = w.dir.join("run.db");
    let custody = w.custody(&w.set, &journal);
    let stderr = w.dir.join("watch.log");
    // A clean run long enough for three poll cycles.
    let clean = w.clean_calls(|| {
        w.journal_copy(&journal)?;
        watch_until(&w, &custody, 250, &stderr)?;
        Ok(())
    })?;
    // A poll cycle runs from one C_Finalize (re-initialisation before the poll) to the next.
    // The matrix covers the start (the first scan) and every cycle up to and including the
    // first one with content checks (object reads).
    let index_of = |function: &str, after: u64| {
        clean
            .iter()
            .filter(|c| c.function == function)
            .filter_map(|c| c.index)
            .find(|i| *i > after)
    };
    let cycle_start = index_of("C_Finalize", 0).context("no poll in the clean watch")?;
    let checked = index_of("C_FindObjects", cycle_start).context("no content check")?;
    let cycle_end = index_of("C_Finalize", checked).context("no poll after the check")? - 1;
    let cycle = cycle_end + 1 - cycle_start;
    let mut matrix = Matrix::new(name, clean);
    println!(
        "{name}: start = calls 1..{}, poll cycles through the first content check = calls {cycle_start}..={cycle_end}",
        cycle_start - 1
    );
    for index in 1..=cycle_end {
        w.journal_copy(&journal)?;
        match persistence {
            Persistence::OneCall => w.inject_at(index)?,
            Persistence::FromThere => w.inject_from(index)?,
        }
        // Two more whole cycles after the fault.
        let code = watch_until(&w, &custody, index.max(cycle_end) + 2 * cycle, &stderr)?;
        let injected = w.injected()?;
        let new = events(&journal)?;
        let mut problems = removals(new.get(w.baseline_events..).unwrap_or_default());
        if code != 0 {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            problems.push(format!("custody watch exited {code} on SIGTERM: {tail:?}"));
        }
        problems.extend(verify_problem(&custody)?);
        matrix.record(index, injected, problems);
    }
    matrix.finish()
}
