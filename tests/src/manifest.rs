//! The manifest of a built token set (`<dir>/manifest.json`): what is on every token, read back
//! from SoftHSM2 where it matters (serials, labels), with PINs and fingerprints.
//!
//! The manifest is the truth about a set: tests look values up here instead of assuming them.
//! Paths in it are absolute; [`Manifest::relocate`] rewrites them when a set is copied.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Version of the manifest layout.
pub const MANIFEST_FORMAT: u32 = 1;

/// A built token set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] when written.
    pub format: u32,
    /// [`crate::BUILDER_VERSION`] of the builder that made the set.
    pub builder: String,
    /// Name of the set (`demo`, `bench:10:5`, …), if it has one.
    pub name: Option<String>,
    /// Cache key: [`crate::Spec::hash`] of the spec.
    pub spec_hash: String,
    /// The set's directory.
    pub dir: PathBuf,
    /// `<dir>/softhsm2.conf`: point SOFTHSM2_CONF here.
    pub conf: PathBuf,
    /// `<dir>/env`: `export` lines for a shell.
    pub env_file: PathBuf,
    /// The PKCS#11 module the set was built with.
    pub module: PathBuf,
    /// The fixture CA that issued the certificates.
    pub ca: CaManifest,
    /// The tokens, in spec order.
    pub tokens: Vec<TokenManifest>,
}

/// The fixture CA of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaManifest {
    /// `<dir>/ca/ca.der`.
    pub cert_der: PathBuf,
    /// `<dir>/ca/ca.pem` (for `openssl verify -CAfile`).
    pub cert_pem: PathBuf,
    /// `<dir>/ca/ca-key.pk8`, PKCS#8 DER, mode 0600 (to issue more test certificates).
    pub key_pkcs8: PathBuf,
    /// SHA-256 of the CA certificate DER, lower-case hex.
    pub cert_sha256: String,
}

/// One token of a set.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenManifest {
    /// Position in the spec.
    pub index: usize,
    /// Label as C_GetTokenInfo reports it (cryptoki decodes lossily and trims the padding).
    pub label: String,
    /// The label bytes as written (before space padding), lower-case hex.
    pub label_hex: String,
    /// Serial number as C_GetTokenInfo reports it (16 hex characters for SoftHSM2).
    pub serial: String,
    /// Manufacturer as C_GetTokenInfo reports it.
    pub manufacturer: String,
    /// Model as C_GetTokenInfo reports it.
    pub model: String,
    /// The user PIN (a fixture value).
    pub user_pin: String,
    /// The security officer PIN (a fixture value).
    pub so_pin: String,
    /// File holding the user PIN, mode 0600.
    pub user_pin_file: PathBuf,
    /// File holding the SO PIN, mode 0600.
    pub so_pin_file: PathBuf,
    /// SoftHSM2's directory of this token under `<dir>/tokens`.
    pub token_dir: PathBuf,
    /// Every object created on the token, in creation order (a key pair with certificate
    /// gives three entries: private key, public key, certificate).
    pub objects: Vec<ObjectManifest>,
}

impl fmt::Debug for TokenManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManifest")
            .field("index", &self.index)
            .field("label", &self.label)
            .field("serial", &self.serial)
            .field("objects", &self.objects.len())
            .finish_non_exhaustive()
    }
}

impl TokenManifest {
    /// The objects of one class.
    pub fn objects_of(&self, class: ObjectClass) -> impl Iterator<Item = &ObjectManifest> {
        self.objects
            .iter()
            .filter(move |object| object.class == class)
    }

    /// The number of certificate objects.
    pub fn certificate_count(&self) -> usize {
        self.objects_of(ObjectClass::Certificate).count()
    }
}

/// PKCS#11 object class of a manifest entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectClass {
    /// CKO_CERTIFICATE (CKC_X_509).
    Certificate,
    /// CKO_PUBLIC_KEY.
    PublicKey,
    /// CKO_PRIVATE_KEY.
    PrivateKey,
}

/// One object on a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectManifest {
    /// Object class.
    pub class: ObjectClass,
    /// The spec object kind that made it (`ec_key_cert`, `dstu_cert`, `raw_cert`, …).
    pub source: String,
    /// CKA_ID, lower-case hex.
    pub id_hex: String,
    /// CKA_LABEL, lower-case hex; absent when no label was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_hex: Option<String>,
    /// CKA_LABEL when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_utf8: Option<String>,
    /// Key algorithm: `ec-p256`, `rsa-2048`, `dstu4145-m257`, …; absent for certificates from
    /// files and raw values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex (keys, and certificates that
    /// parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
    /// SHA-256 of CKA_VALUE, lower-case hex (certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// Whether CKA_VALUE parses as an X.509 certificate (certificates); false for garbage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<bool>,
    /// Subject as x509-parser prints it (certificates that parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A copy of CKA_VALUE under `<dir>/certs` (certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// CKA_START_DATE when set (keys), `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
}

impl Manifest {
    /// Reads `<dir>/manifest.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `<dir>/manifest.json` (pretty JSON).
    pub fn save(&self) -> anyhow::Result<()> {
        self.save_to(&self.dir.join("manifest.json"))
    }

    /// Writes the manifest (pretty JSON) to `path`, atomically.
    pub fn save_to(&self, path: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).context("serialising the manifest")?;
        json.push(b'\n');
        crate::softhsm::write_atomic(path, &json)
    }

    /// The token with this label (as C_GetTokenInfo reports it).
    pub fn token(&self, label: &str) -> Option<&TokenManifest> {
        self.tokens.iter().find(|token| token.label == label)
    }

    /// Rewrites every path under the old `dir` to lie under `new_dir` (after a copy).
    pub fn relocate(&mut self, new_dir: &Path) {
        let old = self.dir.clone();
        let moved = |path: &mut PathBuf| {
            if let Ok(rest) = path.strip_prefix(&old) {
                *path = new_dir.join(rest);
            }
        };
        moved(&mut self.conf);
        moved(&mut self.env_file);
        moved(&mut self.ca.cert_der);
        moved(&mut self.ca.cert_pem);
        moved(&mut self.ca.key_pkcs8);
        for token in &mut self.tokens {
            moved(&mut token.user_pin_file);
            moved(&mut token.so_pin_file);
            moved(&mut token.token_dir);
            for object in &mut token.objects {
                if let Some(file) = object.cert_file.as_mut() {
                    moved(file);
                }
            }
        }
        self.dir = new_dir.to_path_buf();
    }
}
