//! Issuing carriers to signers, revocation, the journal in its mandated form (export,
//! import, HTML in a real browser), certificate export and signed checkpoints, end to end:
//! the real `custody` binary, real SoftHSM2 tokens, a real SQLite journal.

#[path = "issuance/checkpoint.rs"]
mod checkpoint;
#[path = "issuance/common.rs"]
mod common;
#[path = "issuance/dstu_provider.rs"]
mod dstu_provider;
#[path = "issuance/expiry.rs"]
mod expiry;
#[path = "issuance/form.rs"]
mod form;
#[path = "issuance/holders.rs"]
mod holders;
#[path = "issuance/issue.rs"]
mod issue;
#[path = "issuance/remote.rs"]
mod remote;
#[path = "issuance/revocation_check.rs"]
mod revocation_check;
#[path = "issuance/revocation_dstu.rs"]
mod revocation_dstu;
#[path = "issuance/revocation_https.rs"]
mod revocation_https;
#[path = "support/service.rs"]
mod service;
