//! `custody scan` with a device removal at every call index.

use custody_tests::FaultPlan;

use super::support::*;

/// One call fails with CKR_DEVICE_REMOVED; the calls after it work.
#[test]
fn device_removal_at_every_call_of_scan() -> TestResult {
    scan_matrix("scan", Persistence::OneCall)
}

/// From the call on, every call fails with CKR_DEVICE_REMOVED (the module's device is gone
/// until the scan ends).
#[test]
fn device_removal_from_every_call_of_scan_on() -> TestResult {
    scan_matrix("scan-from", Persistence::FromThere)
}

fn scan_matrix(name: &'static str, persistence: Persistence) -> TestResult {
    let w = World::new(name)?;
    let journal = w.dir.join("run.db");
    let custody = w.custody(&w.set, &journal);
    let clean = w.clean_calls(|| {
        w.journal_copy(&journal)?;
        custody.run(&["scan"])?.expect(0)?;
        Ok(())
    })?;
    let mut matrix = Matrix::new(name, clean);
    for index in matrix.indexes() {
        w.journal_copy(&journal)?;
        match persistence {
            Persistence::OneCall => w.inject_at(index)?,
            Persistence::FromThere => w.inject_from(index)?,
        }
        custody.run(&["scan"])?;
        let injected = w.injected()?;
        let after_fault = events(&journal)?;
        let mut problems = removals(after_fault.get(w.baseline_events..).unwrap_or_default());
        // Both carriers are still there: a clean scan afterwards removes nothing either.
        w.fault.set_plan(&FaultPlan::new())?;
        custody.run(&["scan"])?;
        let after_clean = events(&journal)?;
        problems.extend(
            removals(after_clean.get(after_fault.len()..).unwrap_or_default())
                .into_iter()
                .map(|p| format!("in the clean scan after: {p}")),
        );
        problems.extend(verify_problem(&custody)?);
        matrix.record(index, injected, problems);
    }
    matrix.finish()
}
