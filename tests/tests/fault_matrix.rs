//! The fault matrix: a device removal (CKR_DEVICE_REMOVED) injected at EVERY PKCS#11 call
//! index of `custody scan`, of `custody watch` up to and through its first poll cycle, of
//! `custody issue` and of a wipe (`custody wipe --order`), each on its own copy of the journal
//! (and of the tokens, for the wipe), always with both carriers plugged in. After each run:
//!
//! - no `carrier_removed`, `cert_removed` or `key_removed` for a carrier that is present (for
//!   the wipe's target, certificate and key removals only when its objects are really gone);
//! - no `wipe_completed` unless an independent reader (pkcs11-tool, straight to SoftHSM2) finds
//!   the target's objects gone;
//! - `custody journal verify` exits 0.
//!
//! How many indexes: the call log of a clean run of the same command. Every run is the real
//! `custody` binary through the fault module. Each matrix prints its duration and every
//! violation (index, the call at that index in the clean run, what went wrong).

mod fault_matrix {
    mod controls;
    mod issue;
    mod scan;
    mod support;
    mod watch;
    mod wipe;
}
