//! Keys that live in a qualified provider's HSM (remote QES such as Smart-Diia): no carrier
//! to scan, so the administrator records them by hand with their certificate. Never touches
//! PKCS#11.
//!
//! A remote key is a carrier of its own: manufacturer = the provider, model =
//! [`REMOTE_MODEL`] («хмарний КЕП»), serial = the certificate's serial number, read through
//! the pseudo-module `remote:PROVIDER:SERIAL` (so no scan of a real module ever removes it).
//! Adding it writes what a scan of such a carrier would (`carrier_enrolled`, `cert_added`
//! carrying its form row, with the certificate's DER so that it can be issued and exported).
//! Its destruction is the provider's deletion (or revocation) of the key, recorded as
//! `remote_key_destroyed` with the provider's confirmation as evidence ([`RemoteDestruction`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::query::resolve_carrier;
use super::{db_err, Actor, EventKind, Journal, ScanRecord};
use crate::error::{Error, Result};
use crate::inventory::{
    CarrierSnapshot, CertObject, KeyPairing, Login, ModuleInfo, ModuleScan, TokenFlags,
};

/// Column 3's carrier type of a key in a provider's HSM.
pub const REMOTE_MODEL: &str = "хмарний КЕП";

/// The pseudo-module prefix of remote keys.
pub const REMOTE_MODULE: &str = "remote:";

/// Evidence of a remote key's destruction: the provider's confirmation, as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The file's name as given.
    pub file: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The data of a `remote_key_destroyed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDestruction {
    /// The provider.
    pub provider: String,
    /// Date the provider deleted (or revoked) the key, YYYY-MM-DD.
    pub date: String,
    /// The person responsible for the destruction.
    pub responsible: String,
    /// The provider's reference (letter, ticket), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The provider's confirmation.
    pub evidence: Evidence,
}

/// What recording a remote key's destruction did.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteDestroyed {
    /// The event.
    pub seq: u64,
    /// The carrier key.
    pub carrier: String,
    /// What was recorded.
    pub data: RemoteDestruction,
}

/// True for a carrier read through a remote pseudo-module.
pub fn is_remote_module(module: &str) -> bool {
    module.starts_with(REMOTE_MODULE)
}

impl Journal {
    /// Records a key held in `provider`'s HSM, identified by its certificate (DER): a
    /// carrier of type «хмарний КЕП» with the provider as manufacturer, and its form row.
    /// Refused: a certificate that does not parse, an empty provider, the same key again.
    pub fn add_remote(
        &mut self,
        provider: &str,
        der: &[u8],
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<ScanRecord> {
        let provider = provider.trim();
        if !provider.chars().any(char::is_alphanumeric) {
            return Err(Error::Refused(
                "the provider is empty; name it with --provider (e.g. \"ДП «Дія»\")".into(),
            ));
        }
        let info = crate::cert::CertInfo::parse(der).map_err(|e| {
            Error::Refused(format!(
                "the file is not an X.509 certificate ({e}); give the key's certificate as DER or PEM"
            ))
        })?;
        let module = format!("{REMOTE_MODULE}{provider}:{}", info.serial);
        let snap = CarrierSnapshot {
            id: crate::id::CarrierId {
                manufacturer: provider.to_owned(),
                model: REMOTE_MODEL.to_owned(),
                serial: info.serial.clone(),
                discriminator: None,
            },
            label: info.holder_name.clone().unwrap_or_default(),
            strings_lossy: false,
            serial_weak: false,
            flags: TokenFlags {
                token_initialized: true,
                ..TokenFlags::default()
            },
            hardware_version: String::new(),
            firmware_version: String::new(),
            module: module.clone(),
            slot: 0,
            certificates: vec![CertObject {
                id: crate::id::RawBytes::new(Vec::new()),
                label: crate::id::RawBytes::new(Vec::new()),
                sha256: info.sha256.clone(),
                info: Some(info),
                parse_error: None,
                key_pairing: KeyPairing::None,
            }],
            public_keys: Vec::new(),
            private_keys: None,
            login: Login::NotAttempted,
        };
        let key = snap.id.key();
        let scan = ModuleScan::read(
            ModuleInfo {
                path: module,
                manufacturer: provider.to_owned(),
                description: "key in the provider's HSM, recorded by hand".into(),
                version: String::new(),
            },
            vec![snap],
            Vec::new(),
            1,
            None,
        );
        let record = self.write(actor, now, |w| {
            let known: bool = w
                .tx()
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM carriers WHERE carrier = ?1)",
                    [&key],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            if known {
                return Err(Error::Refused(format!(
                    "the key {key} is already recorded; `custody journal show {key}` shows it"
                )));
            }
            super::record_scan_with(w, std::slice::from_ref(&scan), &[der.to_vec()])
        })?;
        Ok(record)
    }

    /// The certificates (DER) recorded with a remote key's live form row.
    pub fn remote_certificates(&self, carrier: &str) -> Result<Vec<Vec<u8>>> {
        let Some(row) = self.live_row_of(carrier)? else {
            return Ok(Vec::new());
        };
        let key_set: String = self
            .conn
            .query_row(
                "SELECT key_set FROM form_rows WHERE row_no = ?1",
                [row as i64],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        let key_set: super::KeySet = serde_json::from_str(&key_set)
            .map_err(|e| Error::JournalCorrupt(format!("form row {row}: {e}")))?;
        Ok(key_set
            .certificates
            .iter()
            .filter_map(|c| c.der.as_deref().and_then(|d| hex::decode(d).ok()))
            .collect())
    }

    /// Records that the provider deleted (or revoked) a remote key: column 5 of its row.
    /// Refused: not a remote key, already destroyed, no responsible person.
    pub fn destroy_remote(
        &mut self,
        carrier: &str,
        mut data: RemoteDestruction,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<RemoteDestroyed> {
        data.responsible = data.responsible.trim().to_owned();
        if !data.responsible.chars().any(char::is_alphabetic) {
            return Err(Error::Refused(
                "name the person responsible for the destruction with --responsible \"Full Name\""
                    .into(),
            ));
        }
        let key = self.journal_key()?;
        self.write(actor, now, |w| {
            let c = resolve_carrier(w.tx(), carrier.trim())?;
            // Whether it is a provider's key is what its enrolment recorded, not the
            // carriers table's module column.
            let remote = super::carrier::recorded(w.tx(), &c.carrier)?
                .is_some_and(|r| r.is_remote());
            if !remote {
                return Err(Error::Refused(format!(
                    "carrier {} is not a key in a provider's HSM; destroy a carrier's keys with a signed order (`custody wipe`)",
                    c.serial
                )));
            }
            if let Some((seq, at, _)) = super::query::last_wipe(w.tx(), &c.carrier)? {
                return Err(Error::Refused(format!(
                    "the key {} was recorded as destroyed already ({at}, event #{seq})",
                    c.serial
                )));
            }
            data.provider = c.manufacturer.clone();
            let seq = w.append(EventKind::RemoteKeyDestroyed, Some(&c.carrier), &data)?;
            w.checkpoint(&key)?;
            Ok(RemoteDestroyed {
                seq,
                carrier: c.carrier,
                data,
            })
        })
    }
}
