//! The destructive PKCS#11 calls and the fresh-context check that follows them.
//!
//! A carrier is resolved once by serial into a [`ResolvedToken`]; every later call re-reads
//! that slot's token info and refuses to act when it no longer shows the same carrier (a
//! token swapped between the check and the wipe). The check after a wipe ([`Module::verify_gone`])
//! runs in a fresh context: C_Finalize + C_Initialize, the carrier found again by serial (slot
//! ids change after C_InitToken), a new session, login where possible, then a search for
//! every old CKA_ID, public key and certificate fingerprint.

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::pin::login_slot;
use super::{map_err, Module, PinSource, PinTarget};
use crate::error::{Error, Result};
use crate::id::{CarrierId, RawBytes};
use crate::inventory::{CarrierSnapshot, Login};

/// A carrier resolved once by serial; only [`Module::resolve`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedToken {
    slot: u64,
    id: CarrierId,
    label: String,
}

impl ResolvedToken {
    /// The slot id at resolution time.
    pub fn slot(&self) -> u64 {
        self.slot
    }

    /// Manufacturer, model, serial as the token reported them.
    pub fn carrier(&self) -> &CarrierId {
        &self.id
    }

    /// Label at resolution time.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// What looking for a carrier by serial found.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Exactly one initialised token with the serial (and manufacturer/model when given).
    Found(ResolvedToken),
    /// None.
    Absent,
    /// Tokens with the serial but another manufacturer or model.
    Mismatch(Vec<CarrierId>),
    /// More than one token matches: refuse rather than guess.
    Ambiguous(Vec<u64>),
}

/// One object destroyed by C_DestroyObject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyedObject {
    /// `private_key`, `public_key` or `certificate`.
    pub class: String,
    /// CKA_ID (hex).
    pub id: String,
    /// CKA_LABEL, escaped.
    pub label: String,
}

/// What must be gone from a carrier after a wipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoneSpec {
    /// The carrier's serial.
    pub serial: String,
    /// Its manufacturer.
    pub manufacturer: String,
    /// Its model.
    pub model: String,
    /// CKA_IDs (hex) of the objects that were on it.
    pub cka_ids: Vec<String>,
    /// Public-key fingerprints of the keys that were on it.
    pub public_keys: Vec<String>,
    /// SHA-256 of the certificates that were on it (and those the order named).
    pub certificates: Vec<String>,
    /// True for `destroy-keys`: no private key at all may remain.
    pub no_private_keys: bool,
    /// For `reinit`: the slot the token was re-initialised in and the label it was given.
    /// Some implementations give a re-initialised token a new serial (kryoptic); the check
    /// then finds the token wiped in that slot, by the label the wipe set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reinit_in: Option<ReinitTrace>,
}

/// Where a `reinit` wipe left the token: its slot and the label C_InitToken gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReinitTrace {
    /// Slot id of the token when it was wiped.
    pub slot: u64,
    /// The label the wipe gave it.
    pub label: String,
}

/// An object found where none may be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemainingObject {
    /// `private_key`, `public_key` or `certificate`.
    pub class: String,
    /// CKA_ID (hex).
    pub id: String,
    /// Why it counts: `cka_id`, `public_key`, `certificate` or `private_key`.
    pub matched: String,
}

/// The result of the fresh-context check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoneReport {
    /// C_Finalize + C_Initialize ran before the check.
    pub fresh_context: bool,
    /// The carrier was found by serial.
    pub token_found: bool,
    /// Its slot in the fresh context.
    pub slot: Option<u64>,
    /// Its label in the fresh context.
    pub label: Option<String>,
    /// CKF_USER_PIN_INITIALIZED in the fresh context.
    pub user_pin_initialized: Option<bool>,
    /// The check logged in as the user.
    pub logged_in: bool,
    /// Private objects were visible to the check: logged in, or no user PIN exists (after
    /// C_InitToken no one can own private objects).
    pub private_objects_visible: bool,
    /// Objects the check could see.
    pub objects_visible: usize,
    /// Old objects still there.
    pub remaining: Vec<RemainingObject>,
    /// True only when the carrier was found, private objects were visible and nothing
    /// remains.
    pub passed: bool,
    /// Why it did not pass, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The serial the token shows after a `reinit` wipe, when C_InitToken changed it: the
    /// token was found in the slot it was wiped in, with the label the wipe gave it, the
    /// same manufacturer and model and no user PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_after: Option<String>,
}

/// A PIN given for one resolved carrier (the check after a wipe).
struct OnePin<'a>(Option<&'a SecretString>);

impl PinSource for OnePin<'_> {
    fn user_pin(&self, _: &PinTarget<'_>) -> Result<Option<SecretString>> {
        Ok(self.0.cloned())
    }

    fn any(&self) -> bool {
        self.0.is_some()
    }
}

impl Module {
    /// Finds the initialised token with `serial` (and `manufacturer` / `model` when given).
    pub fn resolve(
        &self,
        serial: &str,
        manufacturer: Option<&str>,
        model: Option<&str>,
    ) -> Result<Resolution> {
        let ctx = self.ctx()?;
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| map_err("C_GetSlotList", e))?;
        let mut found = Vec::new();
        let mut mismatched = Vec::new();
        for slot in slots {
            let info = match ctx.get_token_info(slot) {
                Ok(i) => i,
                Err(e) => {
                    tracing::debug!(slot = slot.id(), cause = %e, "token info unreadable");
                    continue;
                }
            };
            let t = super::TokenStrings::of(&info);
            if !info.token_initialized() || t.serial != serial {
                continue;
            }
            let id = CarrierId {
                manufacturer: t.manufacturer,
                model: t.model,
                serial: t.serial,
                discriminator: None,
            };
            let ok = manufacturer.is_none_or(|m| m == id.manufacturer)
                && model.is_none_or(|m| m == id.model);
            if ok {
                found.push(ResolvedToken {
                    slot: slot.id(),
                    id,
                    label: t.label,
                });
            } else {
                mismatched.push(id);
            }
        }
        Ok(match found.len() {
            1 => Resolution::Found(found.remove(0)),
            0 if mismatched.is_empty() => Resolution::Absent,
            0 => Resolution::Mismatch(mismatched),
            _ => Resolution::Ambiguous(found.iter().map(|t| t.slot).collect()),
        })
    }

    /// Checks that the resolved slot still holds the same carrier.
    fn still_there(&self, t: &ResolvedToken) -> Result<Slot> {
        let ctx = self.ctx()?;
        let slot = Slot::try_from(t.slot).map_err(|e| map_err("C_GetSlotList", e))?;
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| map_err("C_GetTokenInfo", e))?;
        let now = super::TokenStrings::of(&info);
        let same = info.token_initialized()
            && now.serial == t.id.serial
            && now.manufacturer == t.id.manufacturer
            && now.model == t.id.model;
        if !same {
            return Err(Error::Refused(format!(
                "slot {} no longer holds carrier {}; nothing was done. Run the order again",
                t.slot, t.id.serial
            )));
        }
        Ok(slot)
    }

    /// Reads the resolved carrier, private keys too when `pins` has a PIN for it that the
    /// token accepts.
    pub fn read_token(&self, t: &ResolvedToken, pins: &dyn PinSource) -> Result<CarrierSnapshot> {
        self.still_there(t)?;
        self.read_slot_by_id(t.slot, pins, None, None, &mut None)?
            .ok_or_else(|| Error::TokenAbsent(t.id.serial.clone()))
    }

    /// C_InitToken with the SO PIN: the token deletes every object and forgets the user PIN.
    /// The caller must hold no session on the slot.
    pub fn init_token(&self, t: &ResolvedToken, so_pin: &SecretString, label: &str) -> Result<()> {
        let slot = self.still_there(t)?;
        let info = self
            .ctx()?
            .get_token_info(slot)
            .map_err(|e| map_err("C_GetTokenInfo", e))?;
        if info.so_pin_locked() || info.so_pin_final_try() {
            return Err(Error::Refused(format!(
                "the SO PIN of carrier {} is locked or has one try left (CKF_SO_PIN_LOCKED / FINAL_TRY); custody does not risk it and nothing was done. Reset the counter by hand with the right SO PIN, then run the order again",
                t.id.serial
            )));
        }
        let pin = AuthPin::from(so_pin.expose_secret());
        tracing::info!(serial = %t.id.serial, slot = t.slot, "C_InitToken");
        self.ctx()?
            .init_token(slot, &pin, label)
            .map_err(|e| map_err("C_InitToken", e))
    }

    /// Logs in as the user and destroys every private key and the certificates and public
    /// keys sharing its CKA_ID. Returns what was destroyed, also when a later call fails
    /// (then the error is returned with the list in the log only; the check that follows
    /// finds what remains).
    pub fn destroy_keys(
        &self,
        t: &ResolvedToken,
        user_pin: &SecretString,
    ) -> Result<Vec<DestroyedObject>> {
        let slot = self.still_there(t)?;
        let session = self
            .ctx()?
            .open_rw_session(slot)
            .map_err(|e| map_err("C_OpenSession", e))?;
        login_slot(self.ctx()?, slot, &session, user_pin)?;
        let private = find(&session, &[Attribute::Class(ObjectClass::PRIVATE_KEY)])?;
        let mut targets: Vec<(ObjectHandle, &'static str, Vec<u8>, Vec<u8>)> = Vec::new();
        let mut ids: Vec<Vec<u8>> = Vec::new();
        for h in private {
            let (id, label) = id_label(&session, h)?;
            if !id.is_empty() && !ids.contains(&id) {
                ids.push(id.clone());
            }
            targets.push((h, "private_key", id, label));
        }
        for id in &ids {
            for (class, name) in [
                (ObjectClass::CERTIFICATE, "certificate"),
                (ObjectClass::PUBLIC_KEY, "public_key"),
            ] {
                for h in find(
                    &session,
                    &[Attribute::Class(class), Attribute::Id(id.clone())],
                )? {
                    let (id, label) = id_label(&session, h)?;
                    targets.push((h, name, id, label));
                }
            }
        }
        let mut destroyed = Vec::with_capacity(targets.len());
        for (h, class, id, label) in targets {
            tracing::info!(serial = %t.id.serial, class, id = %hex::encode(&id), "C_DestroyObject");
            session
                .destroy_object(h)
                .map_err(|e| map_err("C_DestroyObject", e))?;
            destroyed.push(DestroyedObject {
                class: class.to_owned(),
                id: hex::encode(&id),
                label: RawBytes::new(label).escaped(),
            });
        }
        let _ = session.logout();
        Ok(destroyed)
    }

    /// The check after a wipe, in a fresh context (see the module docs).
    pub fn verify_gone(
        &mut self,
        spec: &GoneSpec,
        user_pin: Option<&SecretString>,
    ) -> Result<GoneReport> {
        self.reinitialize()?;
        let mut report = GoneReport {
            fresh_context: true,
            token_found: false,
            slot: None,
            label: None,
            user_pin_initialized: None,
            logged_in: false,
            private_objects_visible: false,
            objects_visible: 0,
            remaining: Vec::new(),
            passed: false,
            problem: None,
            serial_after: None,
        };
        let t = match self.resolve(&spec.serial, Some(&spec.manufacturer), Some(&spec.model))? {
            Resolution::Found(t) => t,
            Resolution::Absent | Resolution::Mismatch(_)
                if self.reinitialised_in(spec)?.is_some() =>
            {
                let t = self.reinitialised_in(spec)?.ok_or_else(|| {
                    Error::Refused("the re-initialised token went away during the check".into())
                })?;
                report.serial_after = Some(t.id.serial.clone());
                t
            }
            Resolution::Absent | Resolution::Mismatch(_) => {
                report.problem = Some(format!(
                    "carrier {} is not present: the wipe cannot be confirmed",
                    spec.serial
                ));
                return Ok(report);
            }
            Resolution::Ambiguous(slots) => {
                report.problem = Some(format!(
                    "{} carriers show serial {}: the wipe cannot be confirmed",
                    slots.len(),
                    spec.serial
                ));
                return Ok(report);
            }
        };
        report.token_found = true;
        report.slot = Some(t.slot);
        report.label = Some(t.label.clone());
        let snap = self.read_token(&t, &OnePin(user_pin))?;
        report.user_pin_initialized = Some(snap.flags.user_pin_initialized);
        report.logged_in = snap.login == Login::LoggedIn;
        report.private_objects_visible = report.logged_in || !snap.flags.user_pin_initialized;
        let private = snap.private_keys.as_deref().unwrap_or_default();
        report.objects_visible = snap.certificates.len() + snap.public_keys.len() + private.len();
        let id_hit = |id: &RawBytes| !id.is_empty() && spec.cka_ids.contains(&id.hex());
        let key_hit =
            |fp: Option<&str>| fp.is_some_and(|f| spec.public_keys.iter().any(|k| k == f));
        for c in &snap.certificates {
            let matched = if spec.certificates.contains(&c.sha256) {
                Some("certificate")
            } else if id_hit(&c.id) {
                Some("cka_id")
            } else if key_hit(c.info.as_ref().map(|i| i.public_key_sha256.as_str())) {
                Some("public_key")
            } else {
                None
            };
            if let Some(m) = matched {
                report.remaining.push(RemainingObject {
                    class: "certificate".into(),
                    id: c.id.hex(),
                    matched: m.into(),
                });
            }
        }
        for (class, keys) in [
            ("public_key", &snap.public_keys[..]),
            ("private_key", private),
        ] {
            for k in keys {
                let matched = if id_hit(&k.id) {
                    Some("cka_id")
                } else if key_hit(k.public_key_sha256.as_deref()) {
                    Some("public_key")
                } else if class == "private_key" && spec.no_private_keys {
                    Some("private_key")
                } else {
                    None
                };
                if let Some(m) = matched {
                    report.remaining.push(RemainingObject {
                        class: class.into(),
                        id: k.id.hex(),
                        matched: m.into(),
                    });
                }
            }
        }
        report.passed = report.private_objects_visible && report.remaining.is_empty();
        if !report.remaining.is_empty() {
            report.problem = Some(format!(
                "{} object(s) of the carrier remain",
                report.remaining.len()
            ));
        } else if !report.private_objects_visible {
            report.problem = Some(
                "the user PIN is set and could not be used, so private keys could not be looked for: the wipe cannot be confirmed"
                    .into(),
            );
        }
        Ok(report)
    }
}

impl Module {
    /// After a `reinit` wipe whose token no longer shows its serial: the token in the slot
    /// it was wiped in, when it carries the label the wipe gave it, the same manufacturer and
    /// model, and no user PIN (as C_InitToken leaves it). Anything else is not taken for it.
    fn reinitialised_in(&self, spec: &GoneSpec) -> Result<Option<ResolvedToken>> {
        let Some(trace) = &spec.reinit_in else {
            return Ok(None);
        };
        if !self.slots()?.contains(&trace.slot) {
            return Ok(None);
        }
        Ok(self.token_info(trace.slot)?.and_then(|t| {
            let wiped = t.label == trace.label
                && t.id.manufacturer == spec.manufacturer
                && t.id.model == spec.model
                && !t.flags.user_pin_initialized;
            wiped.then_some(ResolvedToken {
                slot: trace.slot,
                id: t.id,
                label: t.label,
            })
        }))
    }
}

fn find(session: &Session, template: &[Attribute]) -> Result<Vec<ObjectHandle>> {
    session
        .find_objects(template)
        .map_err(|e| map_err("C_FindObjects", e))
}

fn id_label(session: &Session, h: ObjectHandle) -> Result<(Vec<u8>, Vec<u8>)> {
    let attrs = session
        .get_attributes(h, &[AttributeType::Id, AttributeType::Label])
        .map_err(|e| map_err("C_GetAttributeValue", e))?;
    let (mut id, mut label) = (Vec::new(), Vec::new());
    for a in attrs {
        match a {
            Attribute::Id(v) => id = v,
            Attribute::Label(v) => label = v,
            _ => {}
        }
    }
    Ok((id, label))
}
