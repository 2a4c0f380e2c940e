//! What reads of carriers show, and the one place that decides what changed.
//!
//! Pure data and logic: no PKCS#11 and no SQLite here. `token` fills [`ModuleScan`]s,
//! [`compare`] turns them and the journal's [`Known`] state into a [`Comparison`], and
//! `journal` stores its steps as hash-chained events without deciding anything itself.
//!
//! # Layout
//! - `snapshot`: one carrier as read ([`CarrierSnapshot`]) and its objects.
//! - `observation`: one module as read ([`ModuleScan`]), complete or partial, with reasons.
//! - `change`: the changes of one carrier ([`Change`]) and the proof a removal needs
//!   ([`ConfirmedAbsence`]).
//! - `identity`: which carrier a token with a weak serial is.
//! - `compare`: observations against the journal's knowledge.

mod change;
mod compare;
mod identity;
mod observation;
mod snapshot;

pub use change::{CarrierSummary, Change, ConfirmedAbsence};
pub use compare::{compare, Comparison, Known, KnownCarrier, ModuleChange, Observed, Step};
pub use observation::{
    disagreements, unavailable_if_empty, CallError, ModuleInfo, ModuleScan, SlotProblem,
};
pub use snapshot::{
    key_type_name, CarrierSnapshot, CertObject, KeyClass, KeyObject, KeyPairing, Login, TokenFlags,
};

#[cfg(test)]
mod tests;
