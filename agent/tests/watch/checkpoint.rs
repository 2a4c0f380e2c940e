//! The service keeps the journal signed: a checkpoint whenever the newest one is older than
//! `[service] checkpoint_interval` (default 24 h), and none while it is younger.

use std::time::Duration;

use serde_json::Value;

use crate::{assert_verifies, wait_for, TestResult, World};

/// The seq of the newest checkpoint `journal verify` checked, and how many it checked.
fn checkpoints(w: &World) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let v = w.verify()?;
    let c = &v["checkpoints"];
    Ok((
        c["latest"]["seq"].as_u64().ok_or("no latest checkpoint")?,
        c["checked"].as_u64().ok_or("no checked count")?,
    ))
}

fn configure(w: &World, extra: &str) -> TestResult {
    let spool = w.dir.join("spool");
    std::fs::write(
        &w.config,
        format!("[service]\nspool = \"{}\"\n{extra}", spool.display()),
    )?;
    Ok(())
}

#[test]
fn the_service_writes_a_checkpoint_whenever_the_newest_is_older_than_the_interval() -> TestResult {
    let w = World::new("service-checkpoint");
    configure(&w, "checkpoint_interval = \"2s\"\n")?;
    let mut service = w.watch()?;
    service.wait_log("watching", Duration::from_secs(30))?;
    // The journal's creation checkpoint is #1; the service adds one every 2 s.
    wait_for(Duration::from_secs(30), || {
        let (seq, _) = checkpoints(&w).ok()?;
        (seq >= 3).then_some(())
    })
    .map_err(|e| {
        format!(
            "no two checkpoints by the service {e}; log: {:?}",
            service.log()
        )
    })?;
    assert_eq!(service.stop()?, Some(0));
    let written: Vec<Value> = service
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "checkpoint written")
        .collect();
    assert!(written.len() >= 2, "log: {:?}", service.log());
    let times: Vec<time::OffsetDateTime> = written
        .iter()
        .filter_map(|v| v["timestamp"].as_str())
        .filter_map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .collect();
    assert_eq!(times.len(), written.len(), "{written:?}");
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= time::Duration::milliseconds(1900),
            "checkpoints closer than the interval: {written:?}"
        );
    }
    assert_verifies(&w)?;
    let (seq, checked) = checkpoints(&w)?;
    assert_eq!(checked, seq, "every checkpoint written is checked");

    // With the default interval (24 h) the newest checkpoint is young: none is written.
    configure(&w, "")?;
    let mut service = w.watch()?;
    service.wait_log("watching", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(service.stop()?, Some(0));
    assert_eq!(checkpoints(&w)?.0, seq, "log: {:?}", service.log());
    assert_verifies(&w)?;
    Ok(())
}
