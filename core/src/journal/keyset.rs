//! What a row of the mandated form says was handed over: the key set (keys and
//! certificates) and column 2, when its keys were generated. Built from a carrier's last
//! snapshot; shared by issuance and the form.

use serde::{Deserialize, Serialize};

use super::timestamp;
use crate::id::RawBytes;
use crate::inventory::{CarrierSnapshot, KeyClass};

/// Where column 2 (date and time the keys were generated) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeneratedSource {
    /// CKA_START_DATE of a key on the carrier (a date, no time).
    KeyAttribute,
    /// notBefore of the key's certificate.
    Certificate,
    /// When custody first saw the carrier.
    FirstSeen,
}

/// Column 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generated {
    /// `YYYY-MM-DD` (key attribute) or RFC 3339 UTC.
    pub at: String,
    /// Where it came from.
    pub source: GeneratedSource,
}

/// The stored name of a [`GeneratedSource`] (`form_rows.generated_source`).
pub(crate) fn source_text(s: GeneratedSource) -> &'static str {
    match s {
        GeneratedSource::KeyAttribute => "key_attribute",
        GeneratedSource::Certificate => "certificate",
        GeneratedSource::FirstSeen => "first_seen",
    }
}

/// A key handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Public or private.
    pub class: KeyClass,
    /// CKA_ID.
    pub id: RawBytes,
    /// Key type name.
    pub key_type_name: String,
    /// Public-key fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_sha256: Option<String>,
    /// CKA_START_DATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// CKA_LOCAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
}

/// A certificate handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertEntry {
    /// SHA-256 of the DER.
    pub sha256: String,
    /// CKA_ID.
    pub id: RawBytes,
    /// Subject, when parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Holder named in it, when parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_name: Option<String>,
    /// notBefore (UTC), when parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// notAfter (UTC), when parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// The DER, hex, when it was read off the carrier at issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub der: Option<String>,
}

/// The keys and certificates handed over with a carrier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// Key objects (private keys when they were read, and public keys).
    pub keys: Vec<KeyEntry>,
    /// Certificates.
    pub certificates: Vec<CertEntry>,
}

/// The key set on a carrier as last scanned.
pub(crate) fn key_set_of(s: &CarrierSnapshot) -> KeySet {
    let keys = s
        .private_keys
        .iter()
        .flatten()
        .chain(&s.public_keys)
        .map(|k| KeyEntry {
            class: k.class,
            id: k.id.clone(),
            key_type_name: k.key_type_name.clone(),
            public_key_sha256: k.public_key_sha256.clone(),
            start_date: k.start_date.clone(),
            local: k.local,
        })
        .collect();
    let certificates = s
        .certificates
        .iter()
        .map(|c| {
            let info = c.info.as_ref();
            CertEntry {
                sha256: c.sha256.clone(),
                id: c.id.clone(),
                subject: info.map(|i| i.subject.clone()),
                holder_name: info.and_then(|i| i.holder_name.clone()),
                not_before: info.map(|i| timestamp(i.not_before)),
                not_after: info.map(|i| timestamp(i.not_after)),
                der: None,
            }
        })
        .collect();
    KeySet { keys, certificates }
}

/// Column 2: CKA_START_DATE of the keys (private keys first), else the earliest notBefore
/// of the certificates, else when the carrier was first seen.
pub(crate) fn generated_of(s: &CarrierSnapshot, key_set: &KeySet, first_seen: &str) -> Generated {
    let private = s
        .private_keys
        .iter()
        .flatten()
        .filter_map(|k| k.start_date.clone())
        .min();
    let any = key_set
        .keys
        .iter()
        .filter_map(|k| k.start_date.clone())
        .min();
    if let Some(d) = private.or(any) {
        return Generated {
            at: d,
            source: GeneratedSource::KeyAttribute,
        };
    }
    if let Some(nb) = key_set
        .certificates
        .iter()
        .filter_map(|c| c.not_before.clone())
        .min()
    {
        return Generated {
            at: nb,
            source: GeneratedSource::Certificate,
        };
    }
    Generated {
        at: first_seen.to_owned(),
        source: GeneratedSource::FirstSeen,
    }
}
