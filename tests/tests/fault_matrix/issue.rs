//! `custody issue --ack-sign` (scan, key and certificate reads, C_Login, C_Sign) with a
//! device removal at every call index.

use custody_tests::PAIR_USER_PIN;

use super::support::*;

#[test]
fn device_removal_at_every_call_of_issue() -> TestResult {
    let w = World::new("issue")?;
    let serial = w.set.manifest().tokens[0].serial.clone();
    let args = [
        "issue",
        "--carrier",
        serial.as_str(),
        "--holder",
        "Тестенко Тест Тестович",
        "--ack-sign",
        "--pin-stdin",
    ];
    let pin = format!("{PAIR_USER_PIN}\n");
    let journal = w.dir.join("clean.db");
    let clean = w.clean_calls(|| {
        w.journal_copy(&journal)?;
        run_with_input(&w.custody(&w.set, &journal), &args, &pin)?.expect(0)?;
        Ok(())
    })?;
    let mut matrix = Matrix::new("issue", clean);
    let indexes = matrix.indexes();
    matrix.run(&w, &indexes, |lane, index| {
        let custody = lane.custody(&w, &lane.set);
        w.journal_copy(&lane.journal)?;
        lane.inject(Persistence::OneCall, index)?;
        run_with_input(&custody, &args, &pin)?;
        let injected = lane.injected()?;
        let new = events(&lane.journal)?;
        let mut problems = removals(new.get(w.baseline_events..).unwrap_or_default());
        problems.extend(verify_problem(&custody)?);
        Ok((injected, problems))
    })?;
    matrix.finish()
}
