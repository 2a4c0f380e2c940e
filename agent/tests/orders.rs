//! End-to-end tests of destruction orders and wipes: the real `custody` binary against
//! SoftHSM2 (one test binary, one temporary world per test).

mod orders {
    mod canary;
    mod cli;
    mod crash;
    mod pins;
    mod security;
    mod service;
    mod spool;
    mod support;
    mod tamper;
    mod wipe;
}
