//! The kinds of journal events: one enum, stored in the `kind` column (and hashed) as the
//! same snake_case text it serialises to.
//!
//! This module owns the names only; it knows nothing of SQLite, carriers or orders, so
//! every other module can name an event kind without depending on the journal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a journal event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A carrier custody had not seen before.
    CarrierEnrolled,
    /// A carrier that was gone is present again.
    CarrierSeen,
    /// A carrier was re-initialised in place (its old objects are gone).
    CarrierReinitialised,
    /// A carrier's label or other token data changed.
    CarrierChanged,
    /// A complete observation shows a carrier absent.
    CarrierRemoved,
    /// A certificate appeared on a carrier.
    CertAdded,
    /// A certificate disappeared from a carrier.
    CertRemoved,
    /// A key object appeared on a carrier.
    KeyAdded,
    /// A key object disappeared from a carrier.
    KeyRemoved,
    /// A PKCS#11 module stopped answering: its carriers keep their state.
    ModuleUnavailable,
    /// A module that was unavailable answers again.
    ModuleRecovered,
    /// A carrier was handed to a signer (a new row of the mandated form).
    Issued,
    /// A signed acknowledgement added to an existing form row.
    IssueAcknowledged,
    /// Revocation of certificates was requested from the provider.
    RevocationRequested,
    /// The provider confirmed a revocation.
    RevocationConfirmed,
    /// A row of a paper journal was imported.
    Imported,
    /// A signed checkpoint over the events before it.
    Checkpoint,
    /// A destruction order whose signature verified was received.
    OrderReceived,
    /// A destruction order was refused.
    OrderRejected,
    /// A wipe is about to start (intent).
    WipeStarted,
    /// A wipe was done and verified.
    WipeCompleted,
    /// A wipe failed or could not be verified.
    WipeFailed,
    /// A free-text note.
    Note,
    /// A holder (a person carriers are issued to) was recorded or their record changed.
    HolderRecorded,
    /// A key in a provider's HSM was deleted (or revoked) by the provider, with evidence.
    RemoteKeyDestroyed,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 25] = [
        Self::CarrierEnrolled,
        Self::CarrierSeen,
        Self::CarrierReinitialised,
        Self::CarrierChanged,
        Self::CarrierRemoved,
        Self::CertAdded,
        Self::CertRemoved,
        Self::KeyAdded,
        Self::KeyRemoved,
        Self::ModuleUnavailable,
        Self::ModuleRecovered,
        Self::Issued,
        Self::IssueAcknowledged,
        Self::RevocationRequested,
        Self::RevocationConfirmed,
        Self::Imported,
        Self::Checkpoint,
        Self::OrderReceived,
        Self::OrderRejected,
        Self::WipeStarted,
        Self::WipeCompleted,
        Self::WipeFailed,
        Self::Note,
        Self::HolderRecorded,
        Self::RemoteKeyDestroyed,
    ];

    /// The stored name, as in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CarrierEnrolled => "carrier_enrolled",
            Self::CarrierSeen => "carrier_seen",
            Self::CarrierReinitialised => "carrier_reinitialised",
            Self::CarrierChanged => "carrier_changed",
            Self::CarrierRemoved => "carrier_removed",
            Self::CertAdded => "cert_added",
            Self::CertRemoved => "cert_removed",
            Self::KeyAdded => "key_added",
            Self::KeyRemoved => "key_removed",
            Self::ModuleUnavailable => "module_unavailable",
            Self::ModuleRecovered => "module_recovered",
            Self::Issued => "issued",
            Self::IssueAcknowledged => "issue_acknowledged",
            Self::RevocationRequested => "revocation_requested",
            Self::RevocationConfirmed => "revocation_confirmed",
            Self::Imported => "imported",
            Self::Checkpoint => "checkpoint",
            Self::OrderReceived => "order_received",
            Self::OrderRejected => "order_rejected",
            Self::WipeStarted => "wipe_started",
            Self::WipeCompleted => "wipe_completed",
            Self::WipeFailed => "wipe_failed",
            Self::Note => "note",
            Self::HolderRecorded => "holder_recorded",
            Self::RemoteKeyDestroyed => "remote_key_destroyed",
        }
    }

    /// True for the kinds that concern a carrier's presence or identity.
    pub fn is_carrier(self) -> bool {
        matches!(
            self,
            Self::CarrierEnrolled
                | Self::CarrierSeen
                | Self::CarrierReinitialised
                | Self::CarrierChanged
                | Self::CarrierRemoved
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `kind` that is not one of [`EventKind`]'s names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown journal event kind {0:?}")]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_serde() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert!("carrier_gone".parse::<EventKind>().is_err());
    }
}
