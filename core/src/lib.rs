//! custody-core: the custody journal of secure key carriers.
//!
//! Synchronous library behind the `custody` agent. It reads carriers through PKCS#11, parses
//! their certificates (including Ukrainian qualified certificates), and keeps an append-only,
//! hash-chained journal in SQLite.
//!
//! # Layout
//!
//! - [`token`]: the only code that talks PKCS#11 (`cryptoki`): modules, slots, objects, login.
//! - [`ack`]: acknowledgements of receipt: the signed statement and its verification.
//! - [`cert`]: the only code that parses X.509 (`x509-parser`): [`cert::CertInfo`].
//! - [`journal`]: the only code that uses SQLite (`rusqlite`): schema, events, hash chain.
//! - [`fleet`]: the only code that uses PostgreSQL (`postgres`): the organisation's journal.
//! - [`inventory`]: snapshots of carriers and the diff that turns a scan into events.
//! - [`order`]: signed destruction orders: parse, verify -> [`order::VerifiedOrder`].
//! - [`wipe`]: plan, execute and verify a wipe; accepts only a verified order; reconcile.
//! - [`mod@file`]: modes of what custody creates (0700/0600); opening untrusted names safely.
//! - [`id`]: carrier identity and raw PKCS#11 byte strings.
//! - [`event`]: the kinds of journal events ([`event::EventKind`]).
//! - [`revocation`]: asks the provider (CRL, OCSP over HTTP) whether certificates are revoked;
//!   every answer is checked against the issuer's key.
//! - [`rejection`]: why an order was refused ([`rejection::Rejection`]).
//! - [`stop`]: the service's stop request, which ends waits between PKCS#11 calls.
//! - [`utc`]: the one text form of a time in the journal.
//! - [`error`]: the one error type.

pub mod ack;
pub mod cert;
pub mod error;
pub mod event;
pub mod file;
pub mod fleet;
pub mod id;
pub mod inventory;
pub mod journal;
pub mod order;
pub mod rejection;
pub mod revocation;
pub mod stop;
pub mod token;
pub mod utc;
pub mod wipe;

pub use error::{Error, Result};
