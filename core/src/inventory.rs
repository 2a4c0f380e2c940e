//! What one scan sees on a carrier ([`CarrierSnapshot`]) and what changed between two
//! snapshots ([`diff`]).
//!
//! Pure data and logic: no PKCS#11 and no SQLite here. `token` fills snapshots, `journal`
//! turns [`Change`]s into hash-chained events.

use serde::{Deserialize, Serialize};

use crate::cert::CertInfo;
use crate::event::EventKind;
use crate::id::{CarrierId, RawBytes};

/// Token flags from CK_TOKEN_INFO that matter for custody.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFlags {
    /// CKF_TOKEN_INITIALIZED.
    pub token_initialized: bool,
    /// CKF_LOGIN_REQUIRED.
    pub login_required: bool,
    /// CKF_USER_PIN_INITIALIZED.
    pub user_pin_initialized: bool,
    /// CKF_USER_PIN_COUNT_LOW.
    pub user_pin_count_low: bool,
    /// CKF_USER_PIN_FINAL_TRY.
    pub user_pin_final_try: bool,
    /// CKF_USER_PIN_LOCKED.
    pub user_pin_locked: bool,
    /// CKF_SO_PIN_COUNT_LOW.
    pub so_pin_count_low: bool,
    /// CKF_SO_PIN_FINAL_TRY.
    pub so_pin_final_try: bool,
    /// CKF_SO_PIN_LOCKED.
    pub so_pin_locked: bool,
    /// CKF_WRITE_PROTECTED.
    pub write_protected: bool,
}

/// Everything one scan read from one carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierSnapshot {
    /// Manufacturer, model, serial (the identity).
    pub id: CarrierId,
    /// Token label as decoded by the PKCS#11 binding.
    pub label: String,
    /// True when the binding replaced invalid UTF-8 in a token string (label, manufacturer,
    /// model or serial) with U+FFFD.
    pub strings_lossy: bool,
    /// True when the serial cannot tell carriers apart (see [`crate::id::is_weak_serial`]).
    pub serial_weak: bool,
    /// Token flags.
    pub flags: TokenFlags,
    /// Hardware version `major.minor`.
    pub hardware_version: String,
    /// Firmware version `major.minor`.
    pub firmware_version: String,
    /// The module this carrier was read through.
    pub module: String,
    /// The slot id at the time of the scan; not identity, it changes between runs.
    pub slot: u64,
    /// Certificate objects visible without login.
    pub certificates: Vec<CertObject>,
    /// Public key objects visible without login.
    pub public_keys: Vec<KeyObject>,
    /// Private keys, when a PIN source was configured and the login succeeded; `None`
    /// when they were not read.
    pub private_keys: Option<Vec<KeyObject>>,
    /// What happened when logging in.
    pub login: Login,
}

/// The outcome of the login attempt during a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum Login {
    /// No PIN source configured for this carrier.
    NotAttempted,
    /// Logged in; private keys were read.
    LoggedIn,
    /// The login failed (wrong PIN, locked PIN, unreadable PIN source); never retried.
    Failed(String),
    /// A PIN source exists, but the token has no user PIN, or its PIN counters say it is
    /// close to locking: no PIN was offered (the reason says which).
    Skipped(String),
}

/// A certificate object on a carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertObject {
    /// CKA_ID.
    pub id: RawBytes,
    /// CKA_LABEL.
    pub label: RawBytes,
    /// SHA-256 of CKA_VALUE (the DER certificate), lower-case hex.
    pub sha256: String,
    /// The parsed certificate, unless it did not parse.
    pub info: Option<CertInfo>,
    /// Why CKA_VALUE did not parse as a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// The key this certificate pairs with on the same carrier.
    pub key_pairing: KeyPairing,
}

/// How a certificate pairs with the keys on its carrier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPairing {
    /// No key object with the certificate's CKA_ID.
    #[default]
    None,
    /// A key with the same CKA_ID whose public key could not be compared.
    IdOnly,
    /// Same CKA_ID and the same public key.
    Confirmed,
    /// Same CKA_ID but a different public key: the pairing is wrong.
    Mismatch,
}

/// Public or private key object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyClass {
    /// CKO_PUBLIC_KEY.
    Public,
    /// CKO_PRIVATE_KEY.
    Private,
}

/// A key object on a carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyObject {
    /// Public or private.
    pub class: KeyClass,
    /// CKA_ID.
    pub id: RawBytes,
    /// CKA_LABEL.
    pub label: RawBytes,
    /// CKA_KEY_TYPE as the raw number (vendor types such as CKK_DSTU4145 = 0x80420131 kept).
    pub key_type: u64,
    /// A name for the key type: `RSA`, `EC`, `DSTU 4145`, or `vendor 0x…`.
    pub key_type_name: String,
    /// Fingerprint of the public key material (same scheme as certificates), when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_sha256: Option<String>,
    /// CKA_LOCAL: generated on the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
    /// CKA_NEVER_EXTRACTABLE (private keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub never_extractable: Option<bool>,
    /// CKA_ALWAYS_SENSITIVE (private keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_sensitive: Option<bool>,
    /// CKA_START_DATE as `YYYY-MM-DD`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
}

/// Names a PKCS#11 key type number.
pub fn key_type_name(raw: u64) -> String {
    match raw {
        0x0 => "RSA".into(),
        0x1 => "DSA".into(),
        0x2 => "DH".into(),
        0x3 => "EC".into(),
        0x40 => "Ed25519/EC_EDWARDS".into(),
        0x41 => "EC_MONTGOMERY".into(),
        0x8042_0131 => "DSTU 4145".into(),
        other if other >= 0x8000_0000 => format!("vendor 0x{other:08x}"),
        other => format!("0x{other:x}"),
    }
}

impl CarrierSnapshot {
    /// Puts certificates and keys in a canonical order. PKCS#11 does not order
    /// `C_FindObjects` results, and SoftHSM2's order changes from one `C_Initialize` to the
    /// next: without this, two reads of an unchanged carrier would differ.
    pub fn sort_objects(&mut self) {
        self.certificates
            .sort_by(|a, b| (&a.sha256, &a.id, &a.label).cmp(&(&b.sha256, &b.id, &b.label)));
        let key = |k: &KeyObject| {
            (
                k.class,
                k.id.clone(),
                k.key_type,
                k.public_key_sha256.clone(),
                k.label.clone(),
            )
        };
        self.public_keys.sort_by_key(key);
        if let Some(private) = self.private_keys.as_mut() {
            private.sort_by_key(key);
        }
    }

    /// Fills in [`CertObject::key_pairing`] from the keys on the carrier: a key with the same
    /// CKA_ID, confirmed by comparing public-key fingerprints.
    pub fn pair_keys(&mut self) {
        let private = self.private_keys.as_deref().unwrap_or_default();
        for cert in &mut self.certificates {
            let cert_key = cert.info.as_ref().map(|i| i.public_key_sha256.as_str());
            let mut pairing = KeyPairing::None;
            for key in self.public_keys.iter().chain(private) {
                if key.id != cert.id {
                    continue;
                }
                let here = match (cert_key, key.public_key_sha256.as_deref()) {
                    (Some(a), Some(b)) if a == b => KeyPairing::Confirmed,
                    (Some(_), Some(_)) => KeyPairing::Mismatch,
                    _ => KeyPairing::IdOnly,
                };
                pairing = pairing.max_by_evidence(here);
            }
            cert.key_pairing = pairing;
        }
    }

    /// Sorted public-key fingerprints of this snapshot (used for weak-serial identity).
    pub fn public_key_fingerprints(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .public_keys
            .iter()
            .filter_map(|k| k.public_key_sha256.as_deref())
            .chain(
                self.certificates
                    .iter()
                    .filter_map(|c| c.info.as_ref().map(|i| i.public_key_sha256.as_str())),
            )
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl KeyPairing {
    fn rank(self) -> u8 {
        match self {
            Self::None => 0,
            Self::IdOnly => 1,
            Self::Mismatch => 2,
            Self::Confirmed => 3,
        }
    }

    fn max_by_evidence(self, other: Self) -> Self {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// One change between the journal's view of a carrier and a new snapshot. Each becomes one
/// journal event of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The journal's view of a carrier before a scan.
#[derive(Debug, Clone)]
pub struct KnownCarrier {
    /// The last snapshot recorded.
    pub snapshot: CarrierSnapshot,
    /// Whether the carrier was present at the last scan.
    pub present: bool,
}

/// Compares the journal's view of a carrier with a new snapshot and returns the changes in
/// the order they are to be journaled, plus the snapshot to store (private keys carried over
/// when this scan could not read them).
pub fn diff(known: Option<&KnownCarrier>, new: &CarrierSnapshot) -> (Vec<Change>, CarrierSnapshot) {
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
    diff_keys(&old.public_keys, &new.public_keys, &mut changes);
    match (&old.private_keys, &new.private_keys) {
        (Some(o), Some(n)) => diff_keys(o, n, &mut changes),
        (None, Some(n)) => diff_keys(&[], n, &mut changes),
        (Some(o), None) if reinitialised => {
            diff_keys(o, &[], &mut changes);
            stored.private_keys = Some(Vec::new());
        }
        (Some(o), None) => stored.private_keys = Some(o.clone()),
        (None, None) => {}
    }
    (changes, stored)
}

fn diff_keys(old: &[KeyObject], new: &[KeyObject], changes: &mut Vec<Change>) {
    for k in old {
        if !new.iter().any(|n| same_key(k, n)) {
            changes.push(Change::KeyRemoved {
                class: k.class,
                id: k.id.clone(),
                public_key_sha256: k.public_key_sha256.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(class: KeyClass, id: u8, fpr: &str) -> KeyObject {
        KeyObject {
            class,
            id: RawBytes::new(vec![id]),
            label: RawBytes::new(b"k".to_vec()),
            key_type: 3,
            key_type_name: key_type_name(3),
            public_key_sha256: Some(fpr.into()),
            local: Some(true),
            never_extractable: None,
            always_sensitive: None,
            start_date: None,
        }
    }

    fn cert(id: u8, sha: &str) -> CertObject {
        CertObject {
            id: RawBytes::new(vec![id]),
            label: RawBytes::default(),
            sha256: sha.into(),
            info: None,
            parse_error: Some("garbage".into()),
            key_pairing: KeyPairing::None,
        }
    }

    fn snapshot(label: &str) -> CarrierSnapshot {
        CarrierSnapshot {
            id: CarrierId {
                manufacturer: "SoftHSM project".into(),
                model: "SoftHSM v2".into(),
                serial: "0123abcd4567ef89".into(),
                discriminator: None,
            },
            label: label.into(),
            strings_lossy: false,
            serial_weak: false,
            flags: TokenFlags {
                token_initialized: true,
                user_pin_initialized: true,
                login_required: true,
                ..TokenFlags::default()
            },
            hardware_version: "2.6".into(),
            firmware_version: "2.6".into(),
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            slot: 1,
            certificates: vec![cert(1, "aa")],
            public_keys: vec![key(KeyClass::Public, 1, "f1")],
            private_keys: None,
            login: Login::NotAttempted,
        }
    }

    fn kinds(changes: &[Change]) -> Vec<&'static str> {
        changes.iter().map(|c| c.kind().as_str()).collect()
    }

    #[test]
    fn object_order_does_not_matter_once_sorted() {
        let mut a = snapshot("a");
        a.certificates = vec![cert(2, "bb"), cert(1, "aa")];
        a.public_keys = vec![
            key(KeyClass::Public, 2, "f2"),
            key(KeyClass::Public, 1, "f1"),
        ];
        let mut b = a.clone();
        b.certificates.reverse();
        b.public_keys.reverse();
        assert_ne!(a, b);
        a.sort_objects();
        b.sort_objects();
        assert_eq!(a, b);
        assert_eq!(a.certificates[0].sha256, "aa");
    }

    #[test]
    fn first_sight_enrolls_with_every_object() {
        let (changes, _) = diff(None, &snapshot("a"));
        assert_eq!(
            kinds(&changes),
            ["carrier_enrolled", "cert_added", "key_added"]
        );
    }

    #[test]
    fn unchanged_state_gives_no_change() {
        let s = snapshot("a");
        let known = KnownCarrier {
            snapshot: s.clone(),
            present: true,
        };
        let (changes, stored) = diff(Some(&known), &s);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(stored, s);
    }

    #[test]
    fn slot_change_alone_is_not_a_change() {
        let s = snapshot("a");
        let known = KnownCarrier {
            snapshot: s.clone(),
            present: true,
        };
        let mut moved = s;
        moved.slot = 99;
        assert!(diff(Some(&known), &moved).0.is_empty());
    }

    #[test]
    fn cert_added_and_removed() {
        let s = snapshot("a");
        let known = KnownCarrier {
            snapshot: s.clone(),
            present: true,
        };
        let mut n = s;
        n.certificates = vec![cert(2, "bb")];
        let (changes, _) = diff(Some(&known), &n);
        assert_eq!(kinds(&changes), ["cert_removed", "cert_added"]);
    }

    #[test]
    fn reinit_with_new_key_is_recorded_as_such() {
        let s = snapshot("old");
        let known = KnownCarrier {
            snapshot: s.clone(),
            present: true,
        };
        let mut n = s;
        n.label = "new".into();
        n.flags.user_pin_initialized = false;
        n.certificates.clear();
        n.public_keys = vec![key(KeyClass::Public, 7, "f7")];
        let (changes, _) = diff(Some(&known), &n);
        assert_eq!(
            kinds(&changes),
            [
                "carrier_reinitialised",
                "cert_removed",
                "key_removed",
                "key_added"
            ]
        );
    }

    #[test]
    fn reappearing_carrier_is_seen_again() {
        let s = snapshot("a");
        let known = KnownCarrier {
            snapshot: s.clone(),
            present: false,
        };
        assert_eq!(kinds(&diff(Some(&known), &s).0), ["carrier_seen"]);
    }

    #[test]
    fn private_keys_unread_are_carried_over_not_removed() {
        let mut s = snapshot("a");
        s.private_keys = Some(vec![key(KeyClass::Private, 1, "f1")]);
        let known = KnownCarrier {
            snapshot: s.clone(),
            present: true,
        };
        let mut n = s.clone();
        n.private_keys = None;
        let (changes, stored) = diff(Some(&known), &n);
        assert!(changes.is_empty());
        assert_eq!(stored.private_keys, s.private_keys);
    }

    #[test]
    fn pairing_confirms_by_public_key() {
        let mut s = snapshot("a");
        s.pair_keys();
        // the test certificate has no parsed info: only the id can match
        assert_eq!(s.certificates[0].key_pairing, KeyPairing::IdOnly);
    }

    #[test]
    fn vendor_key_types_are_named_not_rejected() {
        assert_eq!(key_type_name(0x8042_0131), "DSTU 4145");
        assert_eq!(key_type_name(0x8000_0001), "vendor 0x80000001");
    }
}
