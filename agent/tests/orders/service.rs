//! The order spool inside the running service (`custody watch`): an order dropped into the
//! spool is executed by the service while it watches, and the carrier's change after the wipe
//! is journaled by the watcher.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use super::support::*;

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn the_service_executes_a_spooled_order_and_journals_the_wiped_carrier() -> TestResult {
    let env = Env::new("service-spool");
    env.configure_so_pin();
    let spool = env.path("spool");
    std::fs::create_dir_all(&spool)?;
    let mut child = env
        .command(MODULE)
        .args(["--log-format", "json", "watch", "--interval", "200ms"])
        .args(["--check-interval", "400ms"])
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    let logged = |m: &str| {
        log.lock()
            .map(|l| {
                l.iter()
                    .any(|x| x.contains(&format!("\"message\":\"{m}\"")))
            })
            .unwrap_or(false)
    };
    assert!(
        wait_until(Duration::from_secs(20), || !env
            .events_of("carrier_enrolled")
            .is_empty()),
        "the service enrolled nothing; log: {:?}",
        log.lock().map(|l| l.clone()).unwrap_or_default()
    );

    // Drop a signed order in (written under a dot-name, then renamed, as documented).
    let order = env.order("ready", json!({}));
    env.sign(&order, "hr");
    let sig = custody_core::order::signature_path(&order);
    std::fs::rename(
        &sig,
        custody_core::order::signature_path(&spool.join("ready.json")),
    )?;
    std::fs::rename(&order, spool.join(".ready.json"))?;
    std::fs::rename(spool.join(".ready.json"), spool.join("ready.json"))?;

    assert!(
        wait_until(Duration::from_secs(30), || spool
            .join("done/ready.json.result")
            .exists()),
        "the service did not execute the order; log: {:?}",
        log.lock().map(|l| l.clone()).unwrap_or_default()
    );
    assert_eq!(env.events_of("wipe_completed").len(), 1);
    assert!(logged("order executed: carrier wiped and verified"));
    assert!(!env.alice_has_objects());
    // The watcher reads the carrier again after the wipe: the re-initialisation is journaled.
    assert!(
        wait_until(Duration::from_secs(30), || !env
            .events_of("carrier_reinitialised")
            .is_empty()),
        "events: {:?}",
        env.events().iter().map(|e| e.kind).collect::<Vec<_>>()
    );

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = child.wait()?;
    assert_eq!(status.code(), Some(0));
    let v = env.custody(&["journal", "verify", "--json"]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    Ok(())
}
