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
    let journal = w.dir.join("clean.db");
    let clean = w.clean_calls(|| {
        w.journal_copy(&journal)?;
        w.custody(&w.set, &journal).run(&["scan"])?.expect(0)?;
        Ok(())
    })?;
    let mut matrix = Matrix::new(name, clean);
    let indexes = matrix.indexes();
    matrix.run(&w, &indexes, |lane, index| {
        let custody = lane.custody(&w, &lane.set);
        w.journal_copy(&lane.journal)?;
        lane.inject(persistence, index)?;
        custody.run(&["scan"])?;
        let injected = lane.injected()?;
        let after_fault = events(&lane.journal)?;
        let mut problems = removals(after_fault.get(w.baseline_events..).unwrap_or_default());
        // Both carriers are still there: a clean scan afterwards removes nothing either.
        lane.fault.set_plan(&FaultPlan::new())?;
        custody.run(&["scan"])?;
        let after_clean = events(&lane.journal)?;
        problems.extend(
            removals(after_clean.get(after_fault.len()..).unwrap_or_default())
                .into_iter()
                .map(|p| format!("in the clean scan after: {p}")),
        );
        problems.extend(verify_problem(&custody)?);
        Ok((injected, problems))
    })?;
    matrix.finish()
}
