//! Makes one carrier on any PKCS#11 implementation: C_InitToken on a free slot (or on a given
//! slot, which re-initialises the token there), C_InitPIN, then the spec's objects.
//!
//! Like the set builder's worker, it runs in a child process (`custody-fixtures provision`)
//! whose environment names the implementation's private configuration (SOFTHSM2_CONF,
//! KRYOPTIC_CONF, TPM2_PKCS11_STORE, P11_KIT_SERVER_ADDRESS, …): never the system's tokens.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{fill_token, free_slot, TokenJob};
use crate::manifest::TokenManifest;
use crate::spec::{Bytes, TokenSpec};

/// One carrier to make.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionJob {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token: label, PINs (given explicitly: the SO PIN of a token to re-initialise
    /// must be its current one) and objects.
    pub token: TokenSpec,
    /// Number of the carrier within its instance (certificate serials derive from it).
    pub index: usize,
    /// Seed of certificate serials (unique per instance).
    pub spec_hash: String,
    /// The instance's CA key, PKCS#8 DER.
    pub ca_key_pkcs8: Bytes,
    /// Directory for DER copies of the certificates.
    pub certs_dir: PathBuf,
    /// Leave the key usage attributes to the module (see [`TokenJob::module_usage`]).
    #[serde(default)]
    pub module_usage: bool,
    /// The token to re-initialise, by serial and label (slot ids shift between processes
    /// on some implementations); `None`: the first slot with an uninitialised token.
    pub reinit: Option<Existing>,
}

impl std::fmt::Debug for ProvisionJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionJob")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("reinit", &self.reinit)
            .finish_non_exhaustive()
    }
}

/// A token as C_GetTokenInfo shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Existing {
    /// Serial.
    pub serial: String,
    /// Label.
    pub label: String,
}

/// Times a re-initialisation is tried when the module lost an object's contents.
const ATTEMPTS: usize = 3;

/// Makes the carrier of `job`; returns its slot id and manifest (PIN files and token
/// directory left empty: the caller knows its instance's layout).
///
/// What was made is read back through a fresh `C_Initialize`: SoftHSM2 writes a new object
/// with empty attributes first and its values in a second write, and has been seen to lose
/// the second write while another process (custody watching) reads the token; the object
/// then stays empty on disk although every call returned CKR_OK. The token is then
/// re-initialised and filled again (with the SO PIN it has), at most `ATTEMPTS` times.
pub fn provision(job: &ProvisionJob) -> anyhow::Result<(u64, TokenManifest)> {
    let mut job = job.clone();
    let mut attempt = 1;
    loop {
        let lost = provision_once(&job).and_then(|(slot, manifest)| {
            let (label, held) = read_back(&job.module, &manifest.serial, &[&manifest.label])?;
            let lost: Vec<String> = manifest
                .objects
                .iter()
                .filter(|o| {
                    o.cert_sha256
                        .as_ref()
                        .is_some_and(|sha| !held.contains(sha))
                })
                .map(|o| o.id_hex.clone())
                .collect();
            Ok((slot, manifest, label, lost))
        });
        let (serial, label, why) = match (lost, &job.reinit) {
            (Ok((slot, manifest, _, lost)), _) if lost.is_empty() => return Ok((slot, manifest)),
            // A token just made is re-initialised the same way, with the SO PIN it got.
            (Ok((_, manifest, label, lost)), _) if attempt < ATTEMPTS => (
                manifest.serial,
                label,
                format!("the module lost the value of certificate(s) {lost:?}"),
            ),
            (Err(e), Some(existing)) if attempt < ATTEMPTS => {
                // C_InitToken may or may not have given it the new label.
                let new = job.token.label.as_utf8().unwrap_or_default();
                let (label, _) = read_back(&job.module, &existing.serial, &[&existing.label, new])?;
                (existing.serial.clone(), label, format!("{e:#}"))
            }
            (Ok((_, manifest, _, lost)), _) => bail!(
                "the module lost the value of certificate(s) {lost:?} on token {} although every call returned CKR_OK (attempt {attempt})",
                manifest.serial
            ),
            (Err(e), _) => return Err(e),
        };
        eprintln!("custody-fixtures: token {serial}: {why}; re-initialising it again");
        job.reinit = Some(Existing { serial, label });
        attempt += 1;
    }
}

/// The label of the token with `serial` and one of `labels` (serials alone do not tell
/// tokens apart on tpm2-pkcs11) and the SHA-256 (hex) of every certificate value on it, as a
/// fresh `C_Initialize` shows them.
fn read_back(
    module: &Path,
    serial: &str,
    labels: &[&str],
) -> anyhow::Result<(String, Vec<String>)> {
    let pkcs11 = Pkcs11::new(module)
        .with_context(|| format!("loading PKCS#11 module {}", module.display()))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .context("C_Initialize (reading back)")?;
    let held = token_contents(&pkcs11, serial, labels);
    let finalized = pkcs11.finalize().context("C_Finalize");
    let held = held?;
    finalized?;
    Ok(held)
}

fn token_contents(
    pkcs11: &Pkcs11,
    serial: &str,
    labels: &[&str],
) -> anyhow::Result<(String, Vec<String>)> {
    let mut found = Vec::new();
    for slot in pkcs11.get_slots_with_token().context("C_GetSlotList")? {
        let info = pkcs11.get_token_info(slot).context("C_GetTokenInfo")?;
        if info.serial_number() == serial && labels.contains(&info.label()) {
            found.push((slot, info.label().to_owned()));
        }
    }
    let [(slot, label)] = <[_; 1]>::try_from(found).map_err(|found| {
        anyhow::anyhow!(
            "{} tokens have serial {serial} and a label of {labels:?}, expected one",
            found.len()
        )
    })?;
    let session = pkcs11.open_ro_session(slot).context("C_OpenSession")?;
    let mut values = Vec::new();
    for handle in session
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .context("C_FindObjects")?
    {
        for attribute in session
            .get_attributes(handle, &[AttributeType::Value])
            .context("C_GetAttributeValue")?
        {
            if let Attribute::Value(value) = attribute {
                values.push(hex::encode(Sha256::digest(&value)));
            }
        }
    }
    Ok((label, values))
}

fn provision_once(job: &ProvisionJob) -> anyhow::Result<(u64, TokenManifest)> {
    let pkcs11 = Pkcs11::new(&job.module)
        .with_context(|| format!("loading PKCS#11 module {}", job.module.display()))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .context("C_Initialize")?;
    let result = provision_on(&pkcs11, job);
    let finalized = pkcs11.finalize().context("C_Finalize");
    let made = result?;
    finalized?;
    Ok(made)
}

fn provision_on(pkcs11: &Pkcs11, job: &ProvisionJob) -> anyhow::Result<(u64, TokenManifest)> {
    let Some(label) = job.token.label.as_utf8() else {
        bail!("provisioning needs a UTF-8 label")
    };
    let user_pin = job.token.user_pin(job.index);
    let so_pin = job.token.so_pin(job.index);
    let slot = match &job.reinit {
        None => free_slot(pkcs11)?,
        Some(existing) => {
            let mut found = Vec::new();
            for slot in pkcs11.get_slots_with_token().context("C_GetSlotList")? {
                let info = pkcs11.get_token_info(slot).context("C_GetTokenInfo")?;
                if info.serial_number() == existing.serial && info.label() == existing.label {
                    found.push(slot);
                }
            }
            match found.as_slice() {
                [slot] => *slot,
                _ => bail!("{} tokens are {existing:?}, expected one", found.len()),
            }
        }
    };
    pkcs11
        .init_token(slot, &AuthPin::new(so_pin.as_str().into()), label)
        .with_context(|| format!("C_InitToken on slot {}", slot.id()))?;
    let token_job = TokenJob {
        index: job.index,
        token: job.token.clone(),
        spec_hash: job.spec_hash.clone(),
        ca_key_pkcs8: job.ca_key_pkcs8.clone(),
        conf: PathBuf::new(),
        module: job.module.clone(),
        certs_dir: job.certs_dir.clone(),
        module_usage: job.module_usage,
    };
    let manifest = fill_token(pkcs11, slot, &token_job, true, &user_pin, &so_pin)?;
    Ok((slot.id(), manifest))
}
