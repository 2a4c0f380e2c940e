//! Carriers through PKCS#11: the only code in custody that uses `cryptoki`.
//!
//! A [`Module`] is one loaded and initialised PKCS#11 library. [`Module::scan`] reads every
//! initialised token into a [`CarrierSnapshot`] without ever failing the whole scan because of
//! one token or one object. Errors from the binding are translated once, in `map_err`.

mod pin;
mod sign;
mod wipe;

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::{Slot, TokenInfo};
use serde::{Deserialize, Serialize};

mod reload;
pub use reload::SlotEvents;

use crate::cert::{self, CertInfo};
use crate::error::{Error, Result};
use crate::id::{is_weak_serial, CarrierId, RawBytes};
use crate::inventory::{
    key_type_name, CarrierSnapshot, CertObject, KeyClass, KeyObject, KeyPairing, Login,
};

pub use pin::{login_refusal, NoPins, PinSource, PinTarget, TokenIdentity};
pub use sign::{CarrierCertificate, SignOptions};
pub use wipe::{DestroyedObject, GoneReport, GoneSpec, RemainingObject, Resolution, ResolvedToken};

/// What the module says about itself (C_GetInfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Path the module was loaded from.
    pub path: String,
    /// Library manufacturer.
    pub manufacturer: String,
    /// Library description.
    pub description: String,
    /// Library version `major.minor`.
    pub version: String,
}

/// A slot whose token could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotProblem {
    /// The slot id.
    pub slot: u64,
    /// What went wrong.
    pub message: String,
}

/// A problem with one object that did not stop the scan of its carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectProblem {
    /// The carrier's identity key.
    pub carrier: String,
    /// What went wrong.
    pub message: String,
}

/// Everything one module showed in one scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleScan {
    /// The module.
    pub module: ModuleInfo,
    /// Every initialised token that could be read.
    pub carriers: Vec<CarrierSnapshot>,
    /// Slots with a token that could not be read.
    pub slot_problems: Vec<SlotProblem>,
}

/// A loaded, initialised PKCS#11 module. Finalised on drop.
pub struct Module {
    path: PathBuf,
    ctx: Option<Pkcs11>,
    info: ModuleInfo,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Module {
    /// Loads the library at `path` and calls C_Initialize.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::ModuleLoad {
                path: path.into(),
                reason: "no such file".into(),
            });
        }
        let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let ctx = Pkcs11::new(path).map_err(|e| Error::ModuleLoad {
            path: path.into(),
            reason: load_reason(&e),
        })?;
        initialize(&ctx).map_err(|e| Error::ModuleLoad {
            path: path.into(),
            reason: format!("C_Initialize failed: {e}"),
        })?;
        let lib = ctx
            .get_library_info()
            .map_err(|e| map_err("C_GetInfo", e))?;
        let info = ModuleInfo {
            path: path.display().to_string(),
            manufacturer: lib.manufacturer_id().trim_end().to_owned(),
            description: lib.library_description().trim_end().to_owned(),
            version: format!(
                "{}.{}",
                lib.library_version().major(),
                lib.library_version().minor()
            ),
        };
        tracing::debug!(module = %info.path, library = %info.description, "module loaded");
        Ok(Self {
            path: path.into(),
            ctx: Some(ctx),
            info,
        })
    }

    /// What the module says about itself.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// C_Finalize + C_Initialize: some modules (SoftHSM2) learn of tokens created by other
    /// processes only at C_Initialize.
    pub fn reinitialize(&mut self) -> Result<()> {
        let ctx = self.ctx()?.clone();
        if let Err(e) = ctx.clone().finalize() {
            tracing::debug!(cause = %e, "C_Finalize failed");
        }
        initialize(&ctx).map_err(|e| map_err("C_Initialize", e))
    }

    fn ctx(&self) -> Result<&Pkcs11> {
        self.ctx.as_ref().ok_or_else(|| Error::Pkcs11 {
            op: "C_Initialize",
            rv: "module is not initialised".into(),
        })
    }

    /// Ids of the slots that hold a token.
    pub fn slots(&self) -> Result<Vec<u64>> {
        let slots = self
            .ctx()?
            .get_slots_with_token()
            .map_err(|e| map_err("C_GetSlotList", e))?;
        Ok(slots.iter().map(Slot::id).collect())
    }

    /// Reads every initialised token. One token failing is recorded as a [`SlotProblem`] and
    /// does not stop the others.
    pub fn scan(&self, pins: &dyn PinSource) -> Result<ModuleScan> {
        let ctx = self.ctx()?;
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| map_err("C_GetSlotList", e))?;
        let mut carriers = Vec::with_capacity(slots.len());
        let mut slot_problems = Vec::new();
        let present = pins.any().then(|| self.identities()).transpose()?;
        for slot in slots {
            match self.read_slot(ctx, slot, pins, present.as_deref()) {
                Ok(Some(c)) => carriers.push(c),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(slot = slot.id(), cause = %e, "token could not be read");
                    slot_problems.push(SlotProblem {
                        slot: slot.id(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(ModuleScan {
            module: self.info.clone(),
            carriers,
            slot_problems,
        })
    }

    /// Reads the token in `slot`; `None` when the token is not initialised.
    pub fn read_slot_id(&self, slot: u64, pins: &dyn PinSource) -> Result<Option<CarrierSnapshot>> {
        let ctx = self.ctx()?;
        let slot = Slot::try_from(slot).map_err(|e| map_err("C_GetSlotList", e))?;
        self.read_slot(ctx, slot, pins, None)
    }

    /// The token in `slot` as C_GetTokenInfo alone shows it: label, identity without its
    /// discriminator, flags, versions, no objects. `None` when it is not initialised. One call:
    /// what a watcher compares after re-initialising a module whose slot ids stayed the same
    /// (kryoptic initialises a new token in a slot that already existed).
    pub fn token_info(&self, slot: u64) -> Result<Option<CarrierSnapshot>> {
        let ctx = self.ctx()?;
        let slot = Slot::try_from(slot).map_err(|e| map_err("C_GetSlotList", e))?;
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| map_err("C_GetTokenInfo", e))?;
        Ok(info
            .token_initialized()
            .then(|| token_snapshot(&info, slot, &self.path)))
    }

    /// Reads the token in `slot`. `present`: the module's tokens, when already listed (a PIN
    /// source is told about the others before any login; `None`: listed here when needed).
    fn read_slot(
        &self,
        ctx: &Pkcs11,
        slot: Slot,
        pins: &dyn PinSource,
        present: Option<&[TokenIdentity]>,
    ) -> Result<Option<CarrierSnapshot>> {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| map_err("C_GetTokenInfo", e))?;
        if !info.token_initialized() {
            return Ok(None);
        }
        let mut snapshot = token_snapshot(&info, slot, &self.path);
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| map_err("C_OpenSession", e))?;
        snapshot.certificates = read_certificates(&session)?;
        snapshot.public_keys = read_keys(&session, KeyClass::Public)?;
        snapshot.login = pin::scan_login(self, ctx, slot, &session, &mut snapshot, pins, present)?;
        if snapshot.serial_weak {
            let digest = cert::sha256_hex(
                format!(
                    "{}\n{}",
                    snapshot.label,
                    snapshot.public_key_fingerprints().join(",")
                )
                .as_bytes(),
            );
            snapshot.id.discriminator = Some(digest[..16].to_owned());
        }
        snapshot.sort_objects();
        snapshot.pair_keys();
        Ok(Some(snapshot))
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            if let Err(e) = ctx.finalize() {
                tracing::debug!(cause = %e, "C_Finalize failed");
            }
        }
    }
}

fn initialize(ctx: &Pkcs11) -> std::result::Result<(), CkError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        other => other,
    }
}

fn load_reason(e: &CkError) -> String {
    match e {
        CkError::LibraryLoading(inner) => format!("not a loadable shared library ({inner})"),
        CkError::MissingSymbol(sym) => format!("not a PKCS#11 library (no {sym})"),
        other => other.to_string(),
    }
}

/// Translates a binding error into custody's error, naming the PKCS#11 function.
pub(crate) fn map_err(op: &'static str, e: CkError) -> Error {
    match e {
        CkError::Pkcs11(RvError::PinIncorrect, _) => Error::WrongPin { retries_low: false },
        CkError::Pkcs11(RvError::PinLocked, _) => Error::PinLocked,
        CkError::Pkcs11(RvError::FunctionNotSupported, _) => Error::NotSupported { op },
        CkError::Pkcs11(rv, _) => Error::Pkcs11 {
            op,
            rv: format!("{rv:?}"),
        },
        other => Error::Pkcs11 {
            op,
            rv: other.to_string(),
        },
    }
}

fn token_snapshot(info: &TokenInfo, slot: Slot, module: &Path) -> CarrierSnapshot {
    let label = info.label().trim_end().to_owned();
    let manufacturer = info.manufacturer_id().trim_end().to_owned();
    let model = info.model().trim_end().to_owned();
    let serial = info.serial_number().trim_end().to_owned();
    let strings_lossy = [&label, &manufacturer, &model, &serial]
        .iter()
        .any(|s| s.contains('\u{fffd}'));
    let version = |v: cryptoki::types::Version| format!("{}.{}", v.major(), v.minor());
    CarrierSnapshot {
        serial_weak: is_weak_serial(&serial),
        id: CarrierId {
            manufacturer,
            model,
            serial,
            discriminator: None,
        },
        label,
        strings_lossy,
        flags: pin::token_flags(info),
        hardware_version: version(info.hardware_version()),
        firmware_version: version(info.firmware_version()),
        module: module.display().to_string(),
        slot: slot.id(),
        certificates: Vec::new(),
        public_keys: Vec::new(),
        private_keys: None,
        login: Login::NotAttempted,
    }
}

/// Reads attributes in one call; when the binding cannot convert a value (a key type or a
/// date it does not know), reads them one by one and leaves out those that fail, so one odd
/// attribute never costs the others. Vendor key types (CKK_DSTU4145) convert fine.
fn read_attributes(
    session: &Session,
    handle: ObjectHandle,
    wanted: &[AttributeType],
) -> Result<Vec<Attribute>> {
    match session.get_attributes(handle, wanted) {
        Ok(attrs) => Ok(attrs),
        Err(CkError::Pkcs11(rv, _)) => Err(map_err(
            "C_GetAttributeValue",
            CkError::Pkcs11(rv, cryptoki::context::Function::GetAttributeValue),
        )),
        Err(first) => {
            tracing::debug!(cause = %first, "attribute conversion failed; reading one by one");
            let mut out = Vec::with_capacity(wanted.len());
            for t in wanted {
                match session.get_attributes(handle, std::slice::from_ref(t)) {
                    Ok(mut a) => out.append(&mut a),
                    Err(e) => tracing::debug!(attribute = ?t, cause = %e, "attribute left out"),
                }
            }
            Ok(out)
        }
    }
}

fn find(session: &Session, class: ObjectClass) -> Result<Vec<ObjectHandle>> {
    session
        .find_objects(&[Attribute::Class(class)])
        .map_err(|e| map_err("C_FindObjects", e))
}

fn read_certificates(session: &Session) -> Result<Vec<CertObject>> {
    let handles = find(session, ObjectClass::CERTIFICATE)?;
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        let attrs = read_attributes(
            session,
            handle,
            &[
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::Value,
            ],
        )?;
        let (mut id, mut label, mut value) = (Vec::new(), Vec::new(), Vec::new());
        for a in attrs {
            match a {
                Attribute::Id(v) => id = v,
                Attribute::Label(v) => label = v,
                Attribute::Value(v) => value = v,
                _ => {}
            }
        }
        let (info, parse_error) = match CertInfo::parse(&value) {
            Ok(info) => (Some(info), None),
            Err(e) => {
                let id = RawBytes::new(id.clone());
                let label = RawBytes::new(label.clone());
                tracing::warn!(id = %id.hex(), label = %label, cause = %e, "certificate object does not parse");
                (None, Some(e.to_string()))
            }
        };
        out.push(CertObject {
            id: RawBytes::new(id),
            label: RawBytes::new(label),
            sha256: cert::sha256_hex(&value),
            info,
            parse_error,
            key_pairing: KeyPairing::None,
        });
    }
    Ok(out)
}

fn read_keys(session: &Session, class: KeyClass) -> Result<Vec<KeyObject>> {
    let (ck_class, wanted): (_, &[AttributeType]) = match class {
        KeyClass::Public => (
            ObjectClass::PUBLIC_KEY,
            &[
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::KeyType,
                AttributeType::Local,
                AttributeType::StartDate,
                AttributeType::EcPoint,
                AttributeType::Modulus,
                AttributeType::Value,
            ],
        ),
        KeyClass::Private => (
            ObjectClass::PRIVATE_KEY,
            &[
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::KeyType,
                AttributeType::Local,
                AttributeType::StartDate,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::Modulus,
            ],
        ),
    };
    let handles = find(session, ck_class)?;
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        let attrs = read_attributes(session, handle, wanted)?;
        let mut key = KeyObject {
            class,
            id: RawBytes::default(),
            label: RawBytes::default(),
            key_type: u64::MAX,
            key_type_name: String::new(),
            public_key_sha256: None,
            local: None,
            never_extractable: None,
            always_sensitive: None,
            start_date: None,
        };
        for a in attrs {
            match a {
                Attribute::Id(v) => key.id = RawBytes::new(v),
                Attribute::Label(v) => key.label = RawBytes::new(v),
                Attribute::Local(b) => key.local = Some(b),
                Attribute::NeverExtractable(b) => key.never_extractable = Some(b),
                Attribute::AlwaysSensitive(b) => key.always_sensitive = Some(b),
                Attribute::EcPoint(p) if !p.is_empty() => {
                    key.public_key_sha256 = Some(cert::ec_point_fingerprint(&p));
                }
                Attribute::Modulus(m) if !m.is_empty() => {
                    key.public_key_sha256 = Some(cert::rsa_modulus_fingerprint(&m));
                }
                Attribute::Value(v) if !v.is_empty() && key.public_key_sha256.is_none() => {
                    key.public_key_sha256 = Some(cert::ec_point_fingerprint(&v));
                }
                Attribute::KeyType(t) => key.key_type = *t,
                Attribute::StartDate(d) if !d.is_empty() => {
                    let raw: Vec<u8> = [&d.year[..], &d.month[..], &d.day[..]].concat();
                    key.start_date = ck_date(&raw);
                }
                _ => {}
            }
        }
        key.key_type_name = key_type_name(key.key_type);
        out.push(key);
    }
    Ok(out)
}

/// CK_DATE is 8 ASCII digits YYYYMMDD; empty or blank means unset.
fn ck_date(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 8 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s = std::str::from_utf8(bytes).ok()?;
    if s == "00000000" {
        return None;
    }
    Some(format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ck_dates() {
        assert_eq!(ck_date(b"20261123").as_deref(), Some("2026-11-23"));
        assert_eq!(ck_date(b"        "), None);
        assert_eq!(ck_date(b""), None);
        assert_eq!(ck_date(b"2026112"), None);
    }

    #[test]
    fn missing_module_is_a_clear_error() {
        let e = Module::load(Path::new("/nonexistent/libnothing.so")).err();
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("no such file"), "{text}");
    }

    #[test]
    fn a_file_that_is_not_a_library_is_refused() {
        let dir = std::env::temp_dir().join(format!("custody-notlib-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("libfake.so");
        let _ = std::fs::write(&path, b"not an ELF file");
        let text = Module::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(text.contains("not a loadable shared library"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
