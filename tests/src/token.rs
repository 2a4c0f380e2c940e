//! Builds one token in the current process with cryptoki: the worker side of a set build.
//!
//! This is the only module that uses cryptoki. It runs in a child process whose environment
//! already holds SOFTHSM2_CONF for a private, empty token directory (SoftHSM2 reads the variable
//! at C_Initialize); it refuses to run otherwise, so it can never touch the system's tokens.
//! The parent ([`crate::set`]) sends a [`TokenJob`] as JSON on stdin and reads the
//! [`TokenManifest`] from stdout.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Date};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::ca::{dstu_key_for, serial_for, Ca, TokenPublicKey};
use crate::manifest::{ObjectClass as Class, ObjectManifest, TokenManifest};
use crate::spec::{Bytes, Day, ObjectKind, ObjectSpec, TokenSpec};

mod provision;
pub use provision::{provision, Existing, ProvisionJob};

/// DER of the prime256v1 OID: CKA_EC_PARAMS of a P-256 key.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// What one worker process builds: one token of a set.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenJob {
    /// Position of the token in the spec.
    pub index: usize,
    /// The token.
    pub token: TokenSpec,
    /// [`crate::Spec::hash`] of the whole spec (certificate serials derive from it).
    pub spec_hash: String,
    /// The set's CA key, PKCS#8 DER.
    pub ca_key_pkcs8: Bytes,
    /// The worker's own softhsm2.conf; must equal SOFTHSM2_CONF in the worker's environment.
    pub conf: PathBuf,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// Directory for DER copies of the certificates (`<set>/certs`).
    pub certs_dir: PathBuf,
}

impl fmt::Debug for TokenJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenJob")
            .field("index", &self.index)
            .field("token", &self.token)
            .field("conf", &self.conf)
            .finish_non_exhaustive()
    }
}

/// Builds the token of `job` on the SoftHSM2 named by SOFTHSM2_CONF (which must be `job.conf`).
///
/// The returned manifest has no PIN file paths and no token directory yet; the parent fills
/// them in after moving the token into the set.
pub fn build_token(job: &TokenJob) -> anyhow::Result<TokenManifest> {
    let conf = std::env::var_os("SOFTHSM2_CONF").unwrap_or_default();
    ensure!(
        Path::new(&conf) == job.conf,
        "refusing to build: SOFTHSM2_CONF is {:?}, the job's private configuration is {} \
         (run through `custody-fixtures build`, never by hand)",
        conf,
        job.conf.display()
    );
    // The configuration must be one the builder wrote, for an empty token directory beside it:
    // a worker only ever adds a token to a directory of its own.
    let token_dir = job
        .conf
        .parent()
        .context("the job's configuration has a directory")?
        .join("tokens");
    let conf_text = std::fs::read_to_string(&job.conf)
        .with_context(|| format!("reading {}", job.conf.display()))?;
    ensure!(
        conf_text == crate::softhsm::render_conf(&token_dir)?,
        "refusing to build: {} was not written by custody-fixtures for {}",
        job.conf.display(),
        token_dir.display()
    );
    let mut existing = std::fs::read_dir(&token_dir)
        .with_context(|| format!("reading {}", token_dir.display()))?;
    ensure!(
        existing.next().is_none(),
        "refusing to build: {} already holds tokens",
        token_dir.display()
    );
    let label = job.token.label.as_bytes();
    let user_pin = job.token.user_pin(job.index);
    let so_pin = job.token.so_pin(job.index);
    let utf8_label = std::str::from_utf8(label).ok();
    if utf8_label.is_none() {
        init_with_softhsm2_util(label, &user_pin, &so_pin)?;
    }

    let pkcs11 = Pkcs11::new(&job.module).with_context(|| {
        format!(
            "loading PKCS#11 module {} (install the Debian package softhsm2, or set \
             SOFTHSM2_MODULE)",
            job.module.display()
        )
    })?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .context("C_Initialize")?;
    let result = build_on(&pkcs11, job, utf8_label, &user_pin, &so_pin);
    let finalized = pkcs11.finalize().context("C_Finalize");
    let manifest = result?;
    finalized?;
    Ok(manifest)
}

fn build_on(
    pkcs11: &Pkcs11,
    job: &TokenJob,
    utf8_label: Option<&str>,
    user_pin: &str,
    so_pin: &str,
) -> anyhow::Result<TokenManifest> {
    let so = AuthPin::new(so_pin.into());
    if let Some(label) = utf8_label {
        let free = free_slot(pkcs11)?;
        pkcs11
            .init_token(free, &so, label)
            .context("C_InitToken on the free slot")?;
    }
    let slot = initialized_slot(pkcs11)?;
    fill_token(pkcs11, slot, job, utf8_label.is_some(), user_pin, so_pin)
}

/// Fills the token in `slot` with the job's objects: first, when `set_user_pin`, C_InitPIN
/// as SO (the token was just initialised), then every object as the user.
fn fill_token(
    pkcs11: &Pkcs11,
    slot: Slot,
    job: &TokenJob,
    set_user_pin: bool,
    user_pin: &str,
    so_pin: &str,
) -> anyhow::Result<TokenManifest> {
    let user = AuthPin::new(user_pin.into());
    let so = AuthPin::new(so_pin.into());
    let session = pkcs11.open_rw_session(slot).context("C_OpenSession")?;
    if set_user_pin {
        session
            .login(UserType::So, Some(&so))
            .context("C_Login (SO)")?;
        session.init_pin(&user).context("C_InitPIN")?;
        session.logout().context("C_Logout (SO)")?;
    }
    session
        .login(UserType::User, Some(&user))
        .context("C_Login (user)")?;

    let ca = Ca::from_pkcs8(&job.spec_hash, &job.ca_key_pkcs8.0)?;
    let mut objects = Vec::new();
    for (number, object) in job.token.objects.iter().enumerate() {
        let made = Maker {
            session: &session,
            ca: &ca,
            job,
            number,
            object,
        }
        .make()
        .with_context(|| {
            format!(
                "object {number} ({}, id {}) of token {} ({})",
                object.kind.name(),
                object.id.to_hex(),
                job.index,
                job.token.label
            )
        })?;
        objects.extend(made);
    }
    session.logout().context("C_Logout (user)")?;
    drop(session);

    let info = pkcs11.get_token_info(slot).context("C_GetTokenInfo")?;
    Ok(TokenManifest {
        index: job.index,
        label: info.label().to_owned(),
        label_hex: hex::encode(job.token.label.as_bytes()),
        serial: info.serial_number().to_owned(),
        manufacturer: info.manufacturer_id().to_owned(),
        model: info.model().to_owned(),
        user_pin: user_pin.to_owned(),
        so_pin: so_pin.to_owned(),
        user_pin_file: PathBuf::new(),
        so_pin_file: PathBuf::new(),
        token_dir: PathBuf::new(),
        objects,
    })
}

/// cryptoki's `init_token` takes `&str`; a label that is not UTF-8 goes through softhsm2-util,
/// which copies the bytes as they are. Runs before C_Initialize of this process.
fn init_with_softhsm2_util(label: &[u8], user_pin: &str, so_pin: &str) -> anyhow::Result<()> {
    // Fixture PINs are public test values, so argv is acceptable here (never in the agent).
    let output = Command::new("softhsm2-util")
        .arg("--init-token")
        .arg("--free")
        .arg("--label")
        .arg(OsStr::from_bytes(label))
        .args(["--so-pin", so_pin, "--pin", user_pin])
        .output()
        .context("running softhsm2-util (install the Debian package softhsm2)")?;
    ensure!(
        output.status.success(),
        "softhsm2-util --init-token failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn free_slot(pkcs11: &Pkcs11) -> anyhow::Result<Slot> {
    for slot in pkcs11.get_slots_with_token().context("C_GetSlotList")? {
        let info = pkcs11.get_token_info(slot).context("C_GetTokenInfo")?;
        if !info.token_initialized() {
            return Ok(slot);
        }
    }
    bail!("SoftHSM2 shows no free slot")
}

fn initialized_slot(pkcs11: &Pkcs11) -> anyhow::Result<Slot> {
    let slots = pkcs11
        .get_slots_with_initialized_token()
        .context("C_GetSlotList")?;
    match slots.as_slice() {
        [slot] => Ok(*slot),
        _ => bail!(
            "expected exactly one initialised token in the worker's token directory, found {}",
            slots.len()
        ),
    }
}

/// Makes one spec object on an open user session.
struct Maker<'a> {
    session: &'a Session,
    ca: &'a Ca,
    job: &'a TokenJob,
    number: usize,
    object: &'a ObjectSpec,
}

impl Maker<'_> {
    fn make(&self) -> anyhow::Result<Vec<ObjectManifest>> {
        let serial = serial_for(
            &self.job.spec_hash,
            &[&self.job.index.to_be_bytes(), &self.number.to_be_bytes()],
        );
        match &self.object.kind {
            ObjectKind::EcKeyCert {
                profile,
                validity,
                start_date,
            } => {
                let public = [
                    Attribute::KeyType(cryptoki::object::KeyType::EC),
                    Attribute::EcParams(P256_PARAMS.to_vec()),
                ];
                let (public_key, keys) = self.key_pair(
                    &Mechanism::EccKeyPairGen,
                    &public,
                    "ec-p256",
                    *start_date,
                    |session, handle| {
                        let point = single_attribute(session, handle, AttributeType::EcPoint)?;
                        // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point.
                        let point = yasna::parse_der(&point, |r| r.read_bytes())
                            .context("CKA_EC_POINT is not a DER OCTET STRING")?;
                        Ok(TokenPublicKey::ec_p256(point))
                    },
                )?;
                let der = self.ca.issue(profile, validity, &serial, &public_key)?;
                self.finish_with_cert(keys, &der, Some("ec-p256"))
            }
            ObjectKind::RsaKeyCert {
                bits,
                profile,
                validity,
                start_date,
            } => {
                let key_type = format!("rsa-{bits}");
                let public = [
                    Attribute::KeyType(cryptoki::object::KeyType::RSA),
                    Attribute::ModulusBits(u64::from(*bits).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ];
                let (public_key, keys) = self.key_pair(
                    &Mechanism::RsaPkcsKeyPairGen,
                    &public,
                    &key_type,
                    *start_date,
                    |session, handle| {
                        let modulus = single_attribute(session, handle, AttributeType::Modulus)?;
                        let exponent =
                            single_attribute(session, handle, AttributeType::PublicExponent)?;
                        Ok(TokenPublicKey::rsa(&modulus, &exponent))
                    },
                )?;
                let der = self.ca.issue(profile, validity, &serial, &public_key)?;
                self.finish_with_cert(keys, &der, Some(&key_type))
            }
            ObjectKind::DstuCert { profile, validity } => {
                let der = self
                    .ca
                    .issue_dstu(profile, validity, &serial, &dstu_key_for(&serial))?;
                self.finish_with_cert(Vec::new(), &der, Some("dstu4145-m257"))
            }
            ObjectKind::CertFile { path } => {
                let der =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let key_type = CertFacts::parse(&der).map(|facts| facts.key_type);
                self.finish_with_cert(Vec::new(), &der, key_type.as_deref())
            }
            ObjectKind::RawCert { value, subject } => {
                let subject = subject.as_ref().map(|s| s.0.clone()).unwrap_or_default();
                self.create_cert(&value.0, Some(subject), None)
            }
        }
    }

    /// Generates a key pair on the token; returns the public key (read back with `read`) and
    /// the manifest entries of the private and public key (spki filled in later).
    fn key_pair(
        &self,
        mechanism: &Mechanism<'_>,
        public_template: &[Attribute],
        key_type: &str,
        start_date: Option<Day>,
        read: impl FnOnce(&Session, ObjectHandle) -> anyhow::Result<TokenPublicKey>,
    ) -> anyhow::Result<(TokenPublicKey, Vec<ObjectManifest>)> {
        let mut common = vec![
            Attribute::Token(true),
            Attribute::Id(self.object.id.0.clone()),
        ];
        if let Some(label) = &self.object.label {
            common.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(day) = start_date {
            common.push(Attribute::StartDate(ck_date(day)?));
        }
        // Signing keys only: SoftHSM2 would otherwise default encrypt/wrap (public) and
        // decrypt/unwrap (private) to true.
        let mut public = common.clone();
        public.extend([
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
        ]);
        public.extend_from_slice(public_template);
        let mut private = common;
        private.extend([
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);
        let (public_handle, _private_handle) = self
            .session
            .generate_key_pair(mechanism, &public, &private)
            .with_context(|| format!("C_GenerateKeyPair ({key_type})"))?;
        let key = read(self.session, public_handle)?;
        let entries = [Class::PrivateKey, Class::PublicKey]
            .into_iter()
            .map(|class| ObjectManifest {
                start_date: start_date.map(|day| day.to_string()),
                key_type: Some(key_type.to_owned()),
                ..self.entry(class)
            })
            .collect();
        Ok((key, entries))
    }

    /// Creates the certificate object and completes the key entries with its SPKI hash.
    fn finish_with_cert(
        &self,
        mut keys: Vec<ObjectManifest>,
        der: &[u8],
        key_type: Option<&str>,
    ) -> anyhow::Result<Vec<ObjectManifest>> {
        let mut cert = self.create_cert(der, None, key_type)?;
        for key in &mut keys {
            key.spki_sha256 = cert.first().and_then(|c| c.spki_sha256.clone());
        }
        keys.append(&mut cert);
        Ok(keys)
    }

    /// Creates a CKO_CERTIFICATE object. Subject, issuer and serial come from the DER when it
    /// parses; else CKA_SUBJECT is `raw_subject` (SoftHSM2 requires one) and the rest is left
    /// out.
    fn create_cert(
        &self,
        der: &[u8],
        raw_subject: Option<Vec<u8>>,
        key_type: Option<&str>,
    ) -> anyhow::Result<Vec<ObjectManifest>> {
        let facts = CertFacts::parse(der);
        let mut template = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Value(der.to_vec()),
            Attribute::Id(self.object.id.0.clone()),
        ];
        if let Some(label) = &self.object.label {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        match (&facts, raw_subject) {
            (_, Some(subject)) => template.push(Attribute::Subject(subject)),
            (Some(facts), None) => template.extend([
                Attribute::Subject(facts.subject.clone()),
                Attribute::Issuer(facts.issuer.clone()),
                Attribute::SerialNumber(facts.serial.clone()),
            ]),
            (None, None) => bail!("the certificate does not parse as X.509"),
        }
        self.session
            .create_object(&template)
            .context("C_CreateObject (certificate)")?;

        let file = self.job.certs_dir.join(format!(
            "{:03}-{:02}-{}.der",
            self.job.index,
            self.number,
            self.object.id.to_hex()
        ));
        std::fs::write(&file, der).with_context(|| format!("writing {}", file.display()))?;
        Ok(vec![ObjectManifest {
            key_type: key_type.map(str::to_owned),
            spki_sha256: facts.as_ref().map(|f| hex::encode(Sha256::digest(&f.spki))),
            cert_sha256: Some(hex::encode(Sha256::digest(der))),
            x509: Some(facts.is_some()),
            subject: facts.map(|f| f.subject_text),
            cert_file: Some(file),
            ..self.entry(Class::Certificate)
        }])
    }

    fn entry(&self, class: Class) -> ObjectManifest {
        let label = self.object.label.as_ref();
        ObjectManifest {
            class,
            source: self.object.kind.name().to_owned(),
            id_hex: self.object.id.to_hex(),
            label_hex: label.map(|l| hex::encode(l.as_bytes())),
            label_utf8: label.and_then(|l| l.as_utf8().map(str::to_owned)),
            key_type: None,
            spki_sha256: None,
            cert_sha256: None,
            x509: None,
            subject: None,
            cert_file: None,
            start_date: None,
        }
    }
}

/// What the certificate object's attributes need from a DER certificate.
struct CertFacts {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    /// DER INTEGER, as CKA_SERIAL_NUMBER wants it.
    serial: Vec<u8>,
    spki: Vec<u8>,
    subject_text: String,
    key_type: String,
}

impl CertFacts {
    fn parse(der: &[u8]) -> Option<Self> {
        let (rest, cert) = X509Certificate::from_der(der).ok()?;
        if !rest.is_empty() {
            return None;
        }
        let tbs = &cert.tbs_certificate;
        let algorithm = tbs.subject_pki.algorithm.algorithm.to_id_string();
        let key_type = match algorithm.as_str() {
            "1.2.840.10045.2.1" => "ec".to_owned(),
            "1.2.840.113549.1.1.1" => "rsa".to_owned(),
            "1.2.804.2.1.1.1.1.3.1.1" => "dstu4145".to_owned(),
            other => other.to_owned(),
        };
        Some(Self {
            subject: tbs.subject.as_raw().to_vec(),
            issuer: tbs.issuer.as_raw().to_vec(),
            serial: der_tlv(0x02, tbs.raw_serial()),
            spki: tbs.subject_pki.raw.to_vec(),
            subject_text: tbs.subject.to_string(),
            key_type,
        })
    }
}

fn single_attribute(
    session: &Session,
    handle: ObjectHandle,
    attribute: AttributeType,
) -> anyhow::Result<Vec<u8>> {
    let values = session
        .get_attributes(handle, &[attribute])
        .with_context(|| format!("C_GetAttributeValue ({attribute})"))?;
    for value in values {
        match value {
            Attribute::EcPoint(bytes)
            | Attribute::Modulus(bytes)
            | Attribute::PublicExponent(bytes) => return Ok(bytes),
            _ => {}
        }
    }
    bail!("the public key has no {attribute}")
}

fn ck_date(day: Day) -> anyhow::Result<Date> {
    let year = format!("{:04}", day.year);
    let month = format!("{:02}", day.month);
    let day_of_month = format!("{:02}", day.day);
    let bad = || format!("{day} does not fit CK_DATE");
    Ok(Date::new(
        year.as_bytes().try_into().with_context(bad)?,
        month.as_bytes().try_into().with_context(bad)?,
        day_of_month.as_bytes().try_into().with_context(bad)?,
    ))
}

/// A DER TLV with definite length.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len_bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | len_bytes.len() as u8);
        out.extend(len_bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_tlv_lengths() {
        assert_eq!(der_tlv(0x02, &[1]), vec![0x02, 0x01, 0x01]);
        let long = vec![0u8; 300];
        let tlv = der_tlv(0x04, &long);
        assert_eq!(&tlv[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(tlv.len(), 304);
    }
}
