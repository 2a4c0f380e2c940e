//! Signing with a key on a carrier (C_Sign) for acknowledgements of receipt, and reading
//! certificates (DER) off carriers for the journal's certificate store.
//!
//! The carrier is found by identity (manufacturer, model, serial), never by slot. The PIN is
//! exposed only at C_Login and the session is logged out before returning.

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::pin::login_slot;
use super::{map_err, read_attributes, Module};
use crate::ack::CarrierSignature;
use crate::error::{Error, Result};
use crate::id::{CarrierId, RawBytes};

/// CKK_DSTU4145, the vendor key type of Ukrainian DSTU 4145 keys.
const CKK_DSTU4145: u64 = 0x8042_0131;
/// CKM_DSTU4145, the vendor signing mechanism for those keys.
const CKM_DSTU4145: u64 = 0x8042_0031;

/// Which key signs, and how.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// CKA_ID of the private key; default: the one signing key that has a certificate.
    pub key_id: Option<RawBytes>,
    /// A vendor mechanism number for key types custody does not know (default for DSTU 4145
    /// keys: CKM_DSTU4145 = 0x80420031 over the SHA-256 digest).
    pub vendor_mechanism: Option<u64>,
}

/// A certificate object read off a carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierCertificate {
    /// CKA_ID.
    pub id: RawBytes,
    /// CKA_VALUE, the DER certificate.
    pub der: Vec<u8>,
}

impl Module {
    /// The slot holding the carrier `id` (matched on manufacturer, model and serial).
    fn find_carrier(&self, id: &CarrierId) -> Result<Slot> {
        let ctx = self.ctx()?;
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| map_err("C_GetSlotList", e))?;
        let mut found = Vec::new();
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            if info.token_initialized()
                && info.manufacturer_id().trim_end() == id.manufacturer
                && info.model().trim_end() == id.model
                && info.serial_number().trim_end() == id.serial
            {
                found.push(slot);
            }
        }
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::TokenAbsent(id.key())),
            _ => Err(Error::Refused(format!(
                "{} carriers show the serial {}; unplug all but the one to sign with",
                found.len(),
                id.serial
            ))),
        }
    }

    /// Every certificate object on the carrier `id`, with its DER value.
    pub fn carrier_certificates(&self, id: &CarrierId) -> Result<Vec<CarrierCertificate>> {
        let slot = self.find_carrier(id)?;
        let session = self
            .ctx()?
            .open_ro_session(slot)
            .map_err(|e| map_err("C_OpenSession", e))?;
        certificates(&session)
    }

    /// Logs in to the carrier `id` with `pin` and signs `message` with its signing key (see
    /// [`SignOptions`]): ECDSA keys with CKM_ECDSA over SHA-256(message), RSA keys with
    /// CKM_SHA256_RSA_PKCS, DSTU 4145 and other vendor keys with a vendor mechanism over
    /// SHA-256(message). Returns the signature and the key's certificate.
    pub fn sign_on_carrier(
        &self,
        id: &CarrierId,
        pin: &SecretString,
        message: &[u8],
        options: &SignOptions,
    ) -> Result<CarrierSignature> {
        let slot = self.find_carrier(id)?;
        let session = self
            .ctx()?
            .open_ro_session(slot)
            .map_err(|e| map_err("C_OpenSession", e))?;
        let certs = certificates(&session)?;
        login_slot(self.ctx()?, slot, &session, pin)?;
        let result = sign_in(&session, &certs, message, options);
        if let Err(e) = session.logout() {
            tracing::debug!(cause = %e, "C_Logout failed");
        }
        result
    }
}

struct PrivateKey {
    handle: ObjectHandle,
    id: RawBytes,
    key_type: Option<u64>,
    can_sign: bool,
}

fn sign_in(
    session: &Session,
    certs: &[CarrierCertificate],
    message: &[u8],
    options: &SignOptions,
) -> Result<CarrierSignature> {
    let handles = session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .map_err(|e| map_err("C_FindObjects", e))?;
    let mut keys = Vec::new();
    for handle in handles {
        let attrs = read_attributes(
            session,
            handle,
            &[
                AttributeType::Id,
                AttributeType::KeyType,
                AttributeType::Sign,
            ],
        )?;
        let mut key = PrivateKey {
            handle,
            id: RawBytes::default(),
            key_type: None,
            can_sign: true,
        };
        for a in attrs {
            match a {
                Attribute::Id(v) => key.id = RawBytes::new(v),
                Attribute::KeyType(t) => key.key_type = Some(*t),
                Attribute::Sign(b) => key.can_sign = b,
                _ => {}
            }
        }
        keys.push(key);
    }
    let has_cert = |k: &PrivateKey| certs.iter().any(|c| c.id == k.id);
    let chosen: Vec<&PrivateKey> = match &options.key_id {
        Some(id) => keys.iter().filter(|k| &k.id == id).collect(),
        None => keys.iter().filter(|k| k.can_sign && has_cert(k)).collect(),
    };
    let key = match chosen.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::Refused(match &options.key_id {
                Some(id) => format!("no private key with CKA_ID {} on this carrier", id.hex()),
                None => "no signing key with a certificate on this carrier; an acknowledgement needs one (or choose a key with --ack-key-id)".into(),
            }))
        }
        many => {
            let ids: Vec<String> = many.iter().map(|k| k.id.hex()).collect();
            return Err(Error::Refused(format!(
                "several signing keys on this carrier (CKA_ID {}); choose one with --ack-key-id",
                ids.join(", ")
            )));
        }
    };
    let cert = certs.iter().find(|c| c.id == key.id).ok_or_else(|| {
        Error::Refused(format!(
            "the key with CKA_ID {} has no certificate on the carrier; custody checks the acknowledgement against it",
            key.id.hex()
        ))
    })?;
    let digest = Sha256::digest(message);
    let (mechanism, name, data): (Mechanism<'_>, String, &[u8]) =
        match (key.key_type, options.vendor_mechanism) {
            (_, Some(m)) => vendor(m)?,
            (Some(t), None) if t == u64::from(KeyType::EC) => {
                (Mechanism::Ecdsa, "CKM_ECDSA".into(), &digest[..])
            }
            (Some(t), None) if t == u64::from(KeyType::RSA) => {
                (Mechanism::Sha256RsaPkcs, "CKM_SHA256_RSA_PKCS".into(), message)
            }
            (Some(CKK_DSTU4145), None) => vendor(CKM_DSTU4145)?,
            (t, None) => {
                return Err(Error::Refused(format!(
                    "custody does not know how to sign with key type {}; pass the vendor's signing mechanism with --ack-mechanism 0x…",
                    t.map(crate::inventory::key_type_name)
                        .unwrap_or_else(|| "unknown".into())
                )))
            }
        };
    let data = if name.starts_with("0x") {
        &digest[..]
    } else {
        data
    };
    let signature = session
        .sign(&mechanism, key.handle, data)
        .map_err(|e| map_err("C_Sign", e))?;
    Ok(CarrierSignature {
        signature,
        mechanism: name,
        key_id: key.id.hex(),
        cert_der: cert.der.clone(),
    })
}

fn vendor(m: u64) -> Result<(Mechanism<'static>, String, &'static [u8])> {
    let t = MechanismType::new_vendor_defined(m as _).map_err(|e| {
        Error::Refused(format!(
            "0x{m:08x} is not a vendor mechanism number (they start at 0x80000000): {e}"
        ))
    })?;
    Ok((
        Mechanism::VendorDefined(
            cryptoki::mechanism::vendor_defined::VendorDefinedMechanism::new::<()>(t, None),
        ),
        format!("0x{m:08x}"),
        &[],
    ))
}

fn certificates(session: &Session) -> Result<Vec<CarrierCertificate>> {
    let handles = session
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .map_err(|e| map_err("C_FindObjects", e))?;
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        let attrs = read_attributes(session, handle, &[AttributeType::Id, AttributeType::Value])?;
        let mut cert = CarrierCertificate {
            id: RawBytes::default(),
            der: Vec::new(),
        };
        for a in attrs {
            match a {
                Attribute::Id(v) => cert.id = RawBytes::new(v),
                Attribute::Value(v) => cert.der = v,
                _ => {}
            }
        }
        if !cert.der.is_empty() {
            out.push(cert);
        }
    }
    Ok(out)
}
