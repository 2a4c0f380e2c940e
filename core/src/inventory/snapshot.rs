//! What one read of a carrier shows: [`CarrierSnapshot`] and its objects. Pure data.

use serde::{Deserialize, Serialize};

use crate::cert::CertInfo;
use crate::error::{Error, Result};
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

    /// SHA-256 of the snapshot without its slot id (not identity; it changes between runs):
    /// equal digests mean nothing the journal records has changed.
    pub fn digest(&self) -> Result<String> {
        let mut s = self.clone();
        s.slot = 0;
        let json = serde_json::to_vec(&s).map_err(|e| Error::JournalCorrupt(e.to_string()))?;
        Ok(crate::cert::sha256_hex(&json))
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
