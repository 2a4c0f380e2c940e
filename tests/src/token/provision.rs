//! Makes one carrier on any PKCS#11 implementation: C_InitToken on a free slot (or on a given
//! slot, which re-initialises the token there), C_InitPIN, then the spec's objects.
//!
//! Like the set builder's worker, it runs in a child process (`custody-fixtures provision`)
//! whose environment names the implementation's private configuration (SOFTHSM2_CONF,
//! KRYOPTIC_CONF, TPM2_PKCS11_STORE, P11_KIT_SERVER_ADDRESS, …): never the system's tokens.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};

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

/// Makes the carrier of `job`; returns its slot id and manifest (PIN files and token
/// directory left empty: the caller knows its instance's layout).
pub fn provision(job: &ProvisionJob) -> anyhow::Result<(u64, TokenManifest)> {
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
    };
    let manifest = fill_token(pkcs11, slot, &token_job, true, &user_pin, &so_pin)?;
    Ok((slot.id(), manifest))
}
