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

mod reload;
pub use reload::SlotEvents;

use crate::cert::{self, CertInfo};
use crate::error::{Error, Result};
use crate::id::{is_weak_serial, percent_encode, weak_discriminator, CarrierId, RawBytes};
use crate::inventory::{
    key_type_name, CallError, CarrierSnapshot, CertObject, KeyClass, KeyObject, KeyPairing, Login,
    ModuleInfo, ModuleScan, SlotProblem,
};

pub use pin::{login_refusal, NoPins, PinSource, PinTarget, TokenIdentity};
pub use sign::{CarrierCertificate, SignOptions};
pub use wipe::{
    DestroyedObject, GoneReport, GoneSpec, ReinitTrace, RemainingObject, Resolution, ResolvedToken,
};

/// A loaded, initialised PKCS#11 module. Finalised on drop.
pub struct Module {
    path: PathBuf,
    ctx: Option<Pkcs11>,
    info: ModuleInfo,
    /// The last device or general error a call returned, until a slot list shows tokens
    /// again: an empty list after it is not believed (see
    /// [`crate::inventory::unavailable_if_empty`]). Kept across [`Module::reinitialize`].
    trouble: std::sync::Mutex<Option<CallError>>,
}

/// How reading one slot ended.
#[derive(Debug, Clone)]
pub enum SlotRead {
    /// The token was read completely.
    Carrier(Box<CarrierSnapshot>),
    /// The slot holds a token that is not initialised.
    Uninitialised,
    /// The read did not finish; the problem names the carrier when its token information
    /// was read.
    Partial(SlotProblem),
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
            trouble: std::sync::Mutex::new(None),
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
        initialize(&ctx)
            .map_err(|e| map_err("C_Initialize", e))
            .map_err(|e| self.note(e))
    }

    /// Remembers a device or general error (see `trouble`) and passes the error on.
    fn note(&self, e: Error) -> Error {
        let call = CallError::of(&e);
        if call.is_device_trouble() {
            if let Ok(mut t) = self.trouble.lock() {
                *t = Some(call);
            }
        }
        e
    }

    /// Why an empty slot list from this module would not be believed: the device or
    /// general error it returned last (unless a slot list with tokens came after it), or
    /// its own word that it lost its connection ([`Module::disconnected`]).
    pub fn trouble(&self) -> Option<CallError> {
        self.trouble
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .or_else(|| self.disconnected())
    }

    fn listed(&self, count: usize) {
        if count > 0 {
            if let Ok(mut t) = self.trouble.lock() {
                *t = None;
            }
        }
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
            .map_err(|e| self.note(map_err("C_GetSlotList", e)))?;
        self.listed(slots.len());
        Ok(slots.iter().map(Slot::id).collect())
    }

    /// Whether `slot` holds a token now (C_GetSlotInfo, CKF_TOKEN_PRESENT): one call, what a
    /// watcher asks of the slot a slot event named instead of listing every slot again.
    pub fn token_present(&self, slot: u64) -> Result<bool> {
        let ctx = self.ctx()?;
        let slot = Slot::try_from(slot).map_err(|e| map_err("C_GetSlotInfo", e))?;
        let info = ctx
            .get_slot_info(slot)
            .map_err(|e| self.note(map_err("C_GetSlotInfo", e)))?;
        Ok(info.token_present())
    }

    /// Reads every initialised token. A module that cannot list its slots gives a failed
    /// scan ([`ModuleScan::failed`]); one token that cannot be read completely is a
    /// [`SlotProblem`] and does not stop the others.
    pub fn scan(&self, pins: &dyn PinSource) -> ModuleScan {
        let slots = match self.ctx().and_then(|ctx| {
            ctx.get_slots_with_token()
                .map_err(|e| self.note(map_err("C_GetSlotList", e)))
        }) {
            Ok(slots) => slots,
            Err(e) => return ModuleScan::failed(self.info.clone(), CallError::of(&e)),
        };
        let trouble = if slots.is_empty() {
            self.trouble()
        } else {
            self.listed(slots.len());
            None
        };
        let mut carriers = Vec::with_capacity(slots.len());
        let mut slot_problems = Vec::new();
        let present = match pins.any().then(|| self.identities()).transpose() {
            Ok(present) => present,
            Err(e) => return ModuleScan::failed(self.info.clone(), CallError::of(&self.note(e))),
        };
        for slot in &slots {
            match self.read_slot_listed(slot.id(), pins, present.as_deref(), None) {
                SlotRead::Carrier(c) => carriers.push(*c),
                SlotRead::Uninitialised => {}
                SlotRead::Partial(p) => slot_problems.push(p),
            }
        }
        ModuleScan::read(
            self.info.clone(),
            carriers,
            slot_problems,
            slots.len(),
            trouble,
        )
    }

    /// Reads the token in `slot`: complete, not initialised, or partial (with the call that
    /// failed).
    pub fn read_slot_id(&self, slot: u64, pins: &dyn PinSource) -> SlotRead {
        self.read_slot_listed(slot, pins, None, None)
    }

    /// [`Self::read_slot_id`] of a slot read before as `known`: certificates whose DER is
    /// unchanged (same SHA-256) take their parsed form from `known` instead of being parsed
    /// again, which is most of a watcher's content check after the module's own calls.
    pub fn read_slot_again(
        &self,
        slot: u64,
        pins: &dyn PinSource,
        known: &CarrierSnapshot,
    ) -> SlotRead {
        self.read_slot_listed(slot, pins, None, Some(known))
    }

    /// [`Self::read_slot_id`] with the module's tokens already listed (see `read_slot`).
    fn read_slot_listed(
        &self,
        slot: u64,
        pins: &dyn PinSource,
        present: Option<&[TokenIdentity]>,
        known: Option<&CarrierSnapshot>,
    ) -> SlotRead {
        let mut carrier = None;
        match self.read_slot_by_id(slot, pins, present, known, &mut carrier) {
            Ok(Some(snapshot)) => SlotRead::Carrier(Box::new(snapshot)),
            Ok(None) => SlotRead::Uninitialised,
            Err(e) => {
                let e = self.note(e);
                tracing::warn!(slot, carrier = carrier.as_deref().unwrap_or("?"), cause = %e, "token could not be read completely");
                SlotRead::Partial(SlotProblem {
                    slot,
                    carrier,
                    message: e.to_string(),
                })
            }
        }
    }

    fn read_slot_by_id(
        &self,
        slot: u64,
        pins: &dyn PinSource,
        present: Option<&[TokenIdentity]>,
        known: Option<&CarrierSnapshot>,
        carrier: &mut Option<String>,
    ) -> Result<Option<CarrierSnapshot>> {
        let ctx = self.ctx()?;
        let slot = Slot::try_from(slot).map_err(|e| map_err("C_GetSlotList", e))?;
        self.read_slot(ctx, slot, pins, (present, known), carrier)
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
    /// `known`: the last read of this slot, whose parsed certificates may be reused.
    fn read_slot(
        &self,
        ctx: &Pkcs11,
        slot: Slot,
        pins: &dyn PinSource,
        (present, known): (Option<&[TokenIdentity]>, Option<&CarrierSnapshot>),
        carrier: &mut Option<String>,
    ) -> Result<Option<CarrierSnapshot>> {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| map_err("C_GetTokenInfo", e))?;
        if !info.token_initialized() {
            return Ok(None);
        }
        let mut snapshot = token_snapshot(&info, slot, &self.path);
        if snapshot.serial_weak {
            // From the label, never from content: see inventory::identity.
            snapshot.id.discriminator = Some(weak_discriminator(&snapshot.label));
        }
        *carrier = Some(snapshot.id.key());
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| map_err("C_OpenSession", e))?;
        snapshot.certificates = read_certificates(&session, known)?;
        snapshot.public_keys = read_keys(&session, KeyClass::Public)?;
        snapshot.login = pin::scan_login(self, ctx, slot, &session, &mut snapshot, pins, present)?;
        // A token pulled mid-read can answer the object calls with CKR_OK and nothing: the
        // read counts only if the session is still there after it.
        session
            .get_session_info()
            .map_err(|e| map_err("C_GetSessionInfo", e))?;
        // Closed here rather than on drop (which ignores the result), so that a device that
        // dies as the session closes makes the read partial and is remembered as trouble.
        session.close().map_err(|e| map_err("C_CloseSession", e))?;
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
            rv: rv_name(rv),
        },
        other => Error::Pkcs11 {
            op,
            rv: other.to_string(),
        },
    }
}

/// The PKCS#11 name of a return value: `DeviceError` → `CKR_DEVICE_ERROR`.
fn rv_name(rv: RvError) -> String {
    let debug = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The strings of CK_TOKEN_INFO as custody prints and stores them: trailing padding removed,
/// control characters percent-encoded ([`percent_encode`]), one way everywhere.
pub(crate) struct TokenStrings {
    pub(crate) label: String,
    pub(crate) manufacturer: String,
    pub(crate) model: String,
    pub(crate) serial: String,
}

impl TokenStrings {
    pub(crate) fn of(info: &TokenInfo) -> Self {
        let clean = |s: &str| percent_encode(s.trim_end());
        Self {
            label: clean(info.label()),
            manufacturer: clean(info.manufacturer_id()),
            model: clean(info.model()),
            serial: clean(info.serial_number()),
        }
    }
}

fn token_snapshot(info: &TokenInfo, slot: Slot, module: &Path) -> CarrierSnapshot {
    let TokenStrings {
        label,
        manufacturer,
        model,
        serial,
    } = TokenStrings::of(info);
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

fn read_certificates(
    session: &Session,
    known: Option<&CarrierSnapshot>,
) -> Result<Vec<CertObject>> {
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
        if value.is_empty() {
            // A certificate object without its DER is not a certificate (yet): SoftHSM2 stores
            // a new object with empty attributes first and fills them in a second write, and
            // has been seen to lose that second write when another process reads the token
            // meanwhile. Recording it would record a certificate that does not exist (the
            // SHA-256 of nothing); it counts once it has a value.
            unfinished("certificate", &id, "CKA_VALUE");
            continue;
        }
        let sha256 = cert::sha256_hex(&value);
        let before = known.and_then(|k| k.certificates.iter().find(|c| c.sha256 == sha256));
        let (info, parse_error) = match before.map(|c| (c.info.clone(), c.parse_error.clone())) {
            Some(parsed) => parsed,
            None => match CertInfo::parse(&value) {
                Ok(info) => (Some(info), None),
                Err(e) => {
                    let id = RawBytes::new(id.clone());
                    let label = RawBytes::new(label.clone());
                    tracing::warn!(id = %id.hex(), label = %label, cause = %e, "certificate object does not parse");
                    (None, Some(e.to_string()))
                }
            },
        };
        out.push(CertObject {
            id: RawBytes::new(id),
            label: RawBytes::new(label),
            sha256,
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
        if class == KeyClass::Public
            && key.public_key_sha256.is_none()
            && matches!(key.key_type, CKK_RSA | CKK_EC)
        {
            // An RSA or EC public key without its modulus or point: one being generated (see
            // `read_certificates`).
            let missing = if key.key_type == CKK_RSA {
                "CKA_MODULUS"
            } else {
                "CKA_EC_POINT"
            };
            unfinished("public key", key.id.as_bytes(), missing);
            continue;
        }
        out.push(key);
    }
    Ok(out)
}

/// Says that an object without what every finished object of its kind has was left out of a
/// read (another program is writing it, or left it unfinished).
fn unfinished(what: &str, id: &[u8], missing: &str) {
    tracing::warn!(
        object = what,
        id = %hex::encode(id),
        missing,
        "an unfinished object is left out of the read (another program is writing it, or left it without its value); it counts once it is complete"
    );
}

/// CKK_RSA.
const CKK_RSA: u64 = 0;
/// CKK_EC.
const CKK_EC: u64 = 3;

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
