//! Two SIGTERMs at once (GNU `timeout` signals the child and then its process group) are
//! one request to stop, even while the worker is blocked inside a PKCS#11 call: the poll in
//! hand finishes and the service exits 0, not 2.

use std::time::Duration;

use crate::{assert_verifies, run, Service, SpyFifo, TestResult, World, BIG_CERTS, SOFTHSM};

#[test]
fn two_sigterms_at_once_are_one_request_to_stop() -> TestResult {
    let w = World::new("two-sigterms");
    let serial = w.add_big_token()?;
    let spy = SpyFifo::new(&w)?;
    let mut service = w.watch_spied(&spy.path)?;
    service.wait_log("watching", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(500));
    service.signal("TERM")?;
    std::thread::sleep(Duration::from_millis(50));
    service.signal("TERM")?;
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        service.child.try_wait()?.is_none(),
        "the poll in hand is still blocked"
    );
    spy.read(true);
    assert_eq!(
        service.wait_exit(Duration::from_secs(20))?,
        Some(0),
        "log: {:?}",
        service.log()
    );
    assert_verifies(&w)?;
    let kinds = w.kinds(&serial);
    assert_eq!(
        kinds.iter().filter(|k| *k == "cert_added").count(),
        BIG_CERTS
    );
    Ok(())
}

/// At shutdown `last_seen` is written only for carriers whose slot still shows the same token
/// (the identity check of the last polls may not have been due): a token deleted after the
/// last poll (SoftHSM2 keeps listing it until re-initialised; its C_GetTokenInfo fails) keeps
/// the `last_seen` of the poll that saw it, while the other carrier's moves (the control).
#[test]
fn at_shutdown_last_seen_moves_only_for_carriers_still_there() -> TestResult {
    let w = World::new("shutdown-last-seen");
    let kept = w.init_token("kept")?;
    let gone = w.init_token("gone")?;
    let mut c = w.custody();
    c.args(["--module", SOFTHSM, "--log-format", "json", "watch"])
        .args(["--interval", "60s", "--check-interval", "60s"]);
    let mut service = Service::spawn(c)?;
    w.wait_kind(&gone, "carrier_enrolled", 1, Duration::from_secs(30))?;
    let seen = |serial: &str| {
        w.show(serial)
            .map(|c| c["carrier"]["last_seen"].clone())
            .unwrap_or_default()
    };
    let (kept0, gone0) = (seen(&kept), seen(&gone));
    assert!(kept0.is_string() && gone0.is_string(), "{kept0} {gone0}");
    run(w
        .cmd("softhsm2-util")
        .args(["--delete-token", "--serial", &gone]))?;
    // Timestamps have millisecond resolution.
    std::thread::sleep(Duration::from_millis(50));
    service.signal("TERM")?;
    assert_eq!(
        service.wait_exit(Duration::from_secs(20))?,
        Some(0),
        "log: {:?}",
        service.log()
    );
    assert_ne!(
        seen(&kept),
        kept0,
        "the carrier still there was seen at shutdown"
    );
    assert_eq!(
        seen(&gone),
        gone0,
        "the deleted token was not seen at shutdown"
    );
    assert_eq!(w.kinds(&gone), ["carrier_enrolled"]);
    assert_verifies(&w)
}
