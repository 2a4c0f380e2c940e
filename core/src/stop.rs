//! A process-wide request to stop, set by the service when it is asked to shut down.
//!
//! What it owns: the waits custody does *between* PKCS#11 calls — the journal's wait for
//! another writer ([`crate::journal`]), the wait for the wipe lock ([`crate::wipe`]) and
//! the order spool's loop over its files — give up as soon as it is set, so the service
//! ends promptly whatever it is doing. It never interrupts a PKCS#11 call in progress, and
//! a one-shot command never sets it.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every wait between PKCS#11 calls to give up.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// True once [`request`] was called.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
