//! Positive controls: the matrices' checks do find what they look for, on real components
//! (a token really gone from its slot; a wipe recorded although its objects are back).

use custody_tests::FaultPlan;

use super::support::*;
use super::wipe::{check, objects_remain};

#[test]
fn the_matrix_checks_see_a_real_removal_and_an_unverified_wipe() -> TestResult {
    let w = World::new("controls")?;
    let [a, b] = [&w.set.manifest().tokens[0], &w.set.manifest().tokens[1]];

    // A token pulled out for real: the scan's removal is found by `removals`.
    let journal = w.dir.join("run.db");
    w.journal_copy(&journal)?;
    let custody = w.custody(&w.set, &journal);
    w.fault.set_plan(&FaultPlan::new().hide(&a.serial))?;
    custody.run(&["scan"])?.expect(0)?;
    let new = events(&journal)?;
    let found = removals(new.get(w.baseline_events..).unwrap_or_default());
    assert!(
        found
            .iter()
            .any(|r| r.starts_with("carrier_removed") && r.contains(&a.serial)),
        "{found:?}"
    );
    assert!(verify_problem(&custody)?.is_none());

    // Objects on the token: `objects_remain` sees them, and `check` flags a wipe_completed
    // or a key_removed recorded while they are there.
    assert!(objects_remain(&w.set, &a.serial)?);
    let wrong: Vec<_> = new
        .iter()
        .cloned()
        .map(|mut e| {
            e.kind = custody_core::event::EventKind::WipeCompleted;
            e
        })
        .take(1)
        .collect();
    assert_eq!(check(&wrong, &a.serial, &b.serial, false).len(), 1);
    assert!(check(&wrong, &a.serial, &b.serial, true).is_empty());
    Ok(())
}
