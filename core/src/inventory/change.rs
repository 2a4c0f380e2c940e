//! One carrier's changes between two reads ([`Change`]), and the proof every removal needs
//! ([`ConfirmedAbsence`]).

use serde::{Deserialize, Serialize};

use super::snapshot::{CarrierSnapshot, CertObject, KeyClass, KeyObject, TokenFlags};
use crate::event::EventKind;
use crate::id::{CarrierId, RawBytes};

/// Proof that a complete observation of a healthy module showed something absent. Its only
/// constructor is private to `inventory`, and the comparison of observations makes one only
/// for a complete read, so no other code can build a removal ([`Change::CarrierRemoved`],
/// [`Change::CertRemoved`], [`Change::KeyRemoved`]): a module that failed, a carrier pulled
/// mid-read or a list that ended early never removes anything.
///
/// It is neither `Clone` nor `Copy`, so one proof stands for one removal.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfirmedAbsence(());

impl ConfirmedAbsence {
    pub(super) fn confirmed() -> Self {
        Self(())
    }

    /// One proof per removal: the complete read that confirmed one absence confirms every
    /// absence it shows.
    fn again(&self) -> Self {
        Self(())
    }
}

/// One change between the journal's view of a carrier and a new snapshot. Each becomes one
/// journal event of the same name.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Change {
    /// First time this carrier is seen.
    CarrierEnrolled {
        /// The carrier as read (without its objects, which follow as their own events).
        carrier: CarrierSummary,
    },
    /// A carrier recorded as removed is present again.
    CarrierSeen {
        /// Label now.
        label: String,
    },
    /// The token was re-initialised (C_InitToken): user PIN reset and/or all objects gone.
    CarrierReinitialised {
        /// Label before.
        old_label: String,
        /// Label now.
        new_label: String,
        /// Flags now (a re-initialisation changes the PIN flags; recorded so that the
        /// carrier's state can be re-derived from the events).
        flags: TokenFlags,
    },
    /// Label or PIN-state flags changed.
    CarrierChanged {
        /// Label before, when it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_label: Option<String>,
        /// Label now, when it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_label: Option<String>,
        /// Flags now, when they changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<TokenFlags>,
    },
    /// The carrier is gone from its module.
    CarrierRemoved {
        /// Label when last seen.
        label: String,
        /// The complete observation that showed it gone.
        #[serde(skip)]
        proof: ConfirmedAbsence,
    },
    /// A certificate object appeared.
    CertAdded {
        /// The object.
        cert: Box<CertObject>,
    },
    /// A certificate object disappeared.
    CertRemoved {
        /// SHA-256 of the certificate.
        sha256: String,
        /// CKA_ID.
        id: RawBytes,
        /// Subject, when it was parsed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// The complete read that showed it gone.
        #[serde(skip)]
        proof: ConfirmedAbsence,
    },
    /// A key object appeared.
    KeyAdded {
        /// The object.
        key: KeyObject,
    },
    /// A key object disappeared.
    KeyRemoved {
        /// Public or private.
        class: KeyClass,
        /// CKA_ID.
        id: RawBytes,
        /// Public-key fingerprint, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_key_sha256: Option<String>,
        /// The complete read that showed it gone.
        #[serde(skip)]
        proof: ConfirmedAbsence,
    },
}

impl Change {
    /// The journal event kind of this change.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::CarrierEnrolled { .. } => EventKind::CarrierEnrolled,
            Self::CarrierSeen { .. } => EventKind::CarrierSeen,
            Self::CarrierReinitialised { .. } => EventKind::CarrierReinitialised,
            Self::CarrierChanged { .. } => EventKind::CarrierChanged,
            Self::CarrierRemoved { .. } => EventKind::CarrierRemoved,
            Self::CertAdded { .. } => EventKind::CertAdded,
            Self::CertRemoved { .. } => EventKind::CertRemoved,
            Self::KeyAdded { .. } => EventKind::KeyAdded,
            Self::KeyRemoved { .. } => EventKind::KeyRemoved,
        }
    }
}

/// A carrier without its objects: what `carrier_enrolled` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierSummary {
    /// Identity.
    pub id: CarrierId,
    /// Label.
    pub label: String,
    /// See [`CarrierSnapshot::strings_lossy`].
    pub strings_lossy: bool,
    /// See [`CarrierSnapshot::serial_weak`].
    pub serial_weak: bool,
    /// Flags.
    pub flags: TokenFlags,
    /// Hardware version.
    pub hardware_version: String,
    /// Firmware version.
    pub firmware_version: String,
    /// Module path.
    pub module: String,
}

impl From<&CarrierSnapshot> for CarrierSummary {
    fn from(s: &CarrierSnapshot) -> Self {
        Self {
            id: s.id.clone(),
            label: s.label.clone(),
            strings_lossy: s.strings_lossy,
            serial_weak: s.serial_weak,
            flags: s.flags,
            hardware_version: s.hardware_version.clone(),
            firmware_version: s.firmware_version.clone(),
            module: s.module.clone(),
        }
    }
}

/// The journal's view of a carrier before a read.
#[derive(Debug, Clone)]
pub(super) struct Previous {
    /// The last snapshot recorded.
    pub snapshot: CarrierSnapshot,
    /// Whether the carrier was present at the last scan.
    pub present: bool,
}

/// Compares the journal's view of a carrier with a complete read of it (`proof`) and returns
/// the changes in the order they are to be journaled, plus the snapshot to store (private
/// keys carried over when this read could not see them).
pub(super) fn diff(
    known: Option<&Previous>,
    new: &CarrierSnapshot,
    complete: &ConfirmedAbsence,
) -> (Vec<Change>, CarrierSnapshot) {
    let mut stored = new.clone();
    let mut changes = Vec::new();
    let Some(known) = known else {
        changes.push(Change::CarrierEnrolled {
            carrier: CarrierSummary::from(new),
        });
        changes.extend(new.certificates.iter().map(|c| Change::CertAdded {
            cert: Box::new(c.clone()),
        }));
        let keys = new
            .public_keys
            .iter()
            .chain(new.private_keys.iter().flatten());
        changes.extend(keys.map(|k| Change::KeyAdded { key: k.clone() }));
        return (changes, stored);
    };
    let old = &known.snapshot;
    if !known.present {
        changes.push(Change::CarrierSeen {
            label: new.label.clone(),
        });
    }
    let objects_gone = !old.certificates.is_empty() || !old.public_keys.is_empty();
    let objects_gone = objects_gone
        && !new
            .certificates
            .iter()
            .any(|c| old.certificates.iter().any(|o| same_cert(o, c)))
        && !new
            .public_keys
            .iter()
            .any(|k| old.public_keys.iter().any(|o| same_key(o, k)));
    let reinitialised = (old.flags.user_pin_initialized && !new.flags.user_pin_initialized)
        || (old.label != new.label && objects_gone);
    if reinitialised {
        changes.push(Change::CarrierReinitialised {
            old_label: old.label.clone(),
            new_label: new.label.clone(),
            flags: new.flags,
        });
    } else if old.label != new.label || old.flags != new.flags {
        let label_changed = old.label != new.label;
        changes.push(Change::CarrierChanged {
            old_label: label_changed.then(|| old.label.clone()),
            new_label: label_changed.then(|| new.label.clone()),
            flags: (old.flags != new.flags).then_some(new.flags),
        });
    }
    for c in &old.certificates {
        if !new.certificates.iter().any(|n| same_cert(c, n)) {
            changes.push(Change::CertRemoved {
                sha256: c.sha256.clone(),
                id: c.id.clone(),
                subject: c.info.as_ref().map(|i| i.subject.clone()),
                proof: complete.again(),
            });
        }
    }
    for c in &new.certificates {
        if !old.certificates.iter().any(|o| same_cert(o, c)) {
            changes.push(Change::CertAdded {
                cert: Box::new(c.clone()),
            });
        }
    }
    diff_keys(&old.public_keys, &new.public_keys, complete, &mut changes);
    match (&old.private_keys, &new.private_keys) {
        (Some(o), Some(n)) => diff_keys(o, n, complete, &mut changes),
        (None, Some(n)) => diff_keys(&[], n, complete, &mut changes),
        (Some(o), None) if reinitialised => {
            diff_keys(o, &[], complete, &mut changes);
            stored.private_keys = Some(Vec::new());
        }
        (Some(o), None) => stored.private_keys = Some(o.clone()),
        (None, None) => {}
    }
    (changes, stored)
}

fn diff_keys(
    old: &[KeyObject],
    new: &[KeyObject],
    complete: &ConfirmedAbsence,
    changes: &mut Vec<Change>,
) {
    for k in old {
        if !new.iter().any(|n| same_key(k, n)) {
            changes.push(Change::KeyRemoved {
                class: k.class,
                id: k.id.clone(),
                public_key_sha256: k.public_key_sha256.clone(),
                proof: complete.again(),
            });
        }
    }
    for k in new {
        if !old.iter().any(|o| same_key(o, k)) {
            changes.push(Change::KeyAdded { key: k.clone() });
        }
    }
}

fn same_cert(a: &CertObject, b: &CertObject) -> bool {
    a.sha256 == b.sha256 && a.id == b.id
}

fn same_key(a: &KeyObject, b: &KeyObject) -> bool {
    a.class == b.class
        && a.id == b.id
        && a.key_type == b.key_type
        && a.public_key_sha256 == b.public_key_sha256
}
