//! End-to-end tests of destruction orders and wipes: the real `custody` binary against
//! SoftHSM2 (one test binary, one temporary world per test).

mod orders {
    mod canary;
    mod cli;
    mod crash;
    mod hostile;
    mod pins;
    mod rows;
    mod security;
    mod service;
    mod spool;
    mod stop;
    mod support;
    mod tamper;
    mod tamper_state;
    mod wipe;
}
