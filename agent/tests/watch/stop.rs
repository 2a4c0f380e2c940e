//! Two SIGTERMs at once (GNU `timeout` signals the child and then its process group) are
//! one request to stop, even while the worker is blocked inside a PKCS#11 call: the poll in
//! hand finishes and the service exits 0, not 2.

use std::time::Duration;

use crate::{assert_verifies, SpyFifo, TestResult, World, BIG_CERTS};

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
