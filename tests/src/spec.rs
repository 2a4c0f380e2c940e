//! Fixture specifications: which tokens a set holds and which objects each token carries.
//!
//! A [`Spec`] is plain data (serde JSON) so that tests, the `custody-fixtures` binary and
//! hand-written files all describe token sets the same way. This module owns the named sets
//! (`demo`, `bench:N:K`, `edge`), validation, and the cache hash of a spec. It never talks to
//! a PKCS#11 module.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::profile::Profile;

/// Version of the builder's output format; part of every cache key.
///
/// Bump it whenever the bytes a build produces (objects, attributes, certificate profiles,
/// manifest fields, file layout) change, so that stale cache entries are never reused.
pub const BUILDER_VERSION: &str = concat!("custody-fixtures/3 (", env!("CARGO_PKG_VERSION"), ")");

/// Longest token label SoftHSM2 keeps: the CK_TOKEN_INFO label field is 32 bytes.
pub const TOKEN_LABEL_MAX: usize = 32;

/// A set of tokens to build, each with its objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Name of the set, for messages and the manifest (`demo`, `bench:10:5`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tokens, in build order; their index is their position here.
    pub tokens: Vec<TokenSpec>,
}

/// One token: its label, PINs and objects.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Token label; at most 32 bytes. Raw bytes that are not UTF-8 are written with
    /// `softhsm2-util`, because cryptoki's `init_token` takes a `&str`.
    pub label: Text,
    /// User PIN; default `4321` followed by the token index in three digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_pin: Option<String>,
    /// Security officer PIN; default `8765` followed by the token index in three digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub so_pin: Option<String>,
    /// Objects to create on the token, in order.
    #[serde(default)]
    pub objects: Vec<ObjectSpec>,
}

// Fixture PINs are public test values, but keep the habit: no PIN in Debug output.
impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSpec")
            .field("label", &self.label)
            .field("objects", &self.objects)
            .finish_non_exhaustive()
    }
}

/// One object (or key pair with its certificate) on a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSpec {
    /// CKA_ID, shared by the key pair and its certificate (hex in JSON).
    pub id: Bytes,
    /// CKA_LABEL, shared by the key pair and its certificate; absent: no CKA_LABEL given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Text>,
    /// What to create.
    #[serde(flatten)]
    pub kind: ObjectKind,
}

/// The kinds of objects a fixture token can carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ObjectKind {
    /// An EC P-256 key pair generated on the token (CKM_EC_KEY_PAIR_GEN) and a certificate for
    /// its public key, issued by the set's fixture CA.
    EcKeyCert {
        /// Certificate profile.
        profile: Profile,
        /// Certificate validity; default 2025-01-01 to 2035-01-01.
        #[serde(default)]
        validity: Validity,
        /// CKA_START_DATE on both keys; absent: not set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_date: Option<Day>,
    },
    /// An RSA key pair generated on the token (CKM_RSA_PKCS_KEY_PAIR_GEN) and its certificate.
    RsaKeyCert {
        /// Modulus length; default 2048.
        #[serde(default = "default_rsa_bits")]
        bits: u32,
        /// Certificate profile.
        profile: Profile,
        /// Certificate validity; default 2025-01-01 to 2035-01-01.
        #[serde(default)]
        validity: Validity,
        /// CKA_START_DATE on both keys; absent: not set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_date: Option<Day>,
    },
    /// A certificate object only, whose SubjectPublicKeyInfo is a DSTU 4145 key (curve m=257,
    /// OID 1.2.804.2.1.1.1.1.3.1.1.2.6); signed by the fixture CA with ECDSA. SoftHSM2
    /// cannot hold DSTU keys, so there is no key pair.
    DstuCert {
        /// Certificate profile (subject and extensions).
        profile: Profile,
        /// Certificate validity; default 2025-01-01 to 2035-01-01.
        #[serde(default)]
        validity: Validity,
    },
    /// A certificate object holding a DER file as it is.
    CertFile {
        /// Path of the DER certificate.
        path: PathBuf,
    },
    /// A certificate object whose CKA_VALUE is arbitrary bytes (garbage, truncated DER, …).
    RawCert {
        /// CKA_VALUE (hex in JSON).
        value: Bytes,
        /// CKA_SUBJECT (hex in JSON); default empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Bytes>,
    },
}

fn default_rsa_bits() -> u32 {
    2048
}

impl ObjectKind {
    /// The `kind` tag as written in JSON and in the manifest.
    pub fn name(&self) -> &'static str {
        match self {
            Self::EcKeyCert { .. } => "ec_key_cert",
            Self::RsaKeyCert { .. } => "rsa_key_cert",
            Self::DstuCert { .. } => "dstu_cert",
            Self::CertFile { .. } => "cert_file",
            Self::RawCert { .. } => "raw_cert",
        }
    }
}

/// Raw bytes, written as a hex string in JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// Parses hex (upper or lower case, no separators).
    pub fn from_hex(hex_text: &str) -> anyhow::Result<Self> {
        hex::decode(hex_text)
            .map(Self)
            .with_context(|| format!("{hex_text:?} is not hex"))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// A label: UTF-8 text (a JSON string) or raw bytes (`{"hex": "ff00"}` in JSON), so that
/// tests can make labels with control characters or invalid UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Text {
    /// UTF-8 text.
    Utf8(String),
    /// Raw bytes.
    Raw {
        /// The bytes, hex in JSON.
        hex: Bytes,
    },
}

impl Text {
    /// Raw bytes given as hex.
    pub fn from_hex(hex_text: &str) -> anyhow::Result<Self> {
        Ok(Self::Raw {
            hex: Bytes::from_hex(hex_text)?,
        })
    }

    /// The bytes this label stands for.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Utf8(text) => text.as_bytes(),
            Self::Raw { hex } => &hex.0,
        }
    }

    /// The label as UTF-8, when it is.
    pub fn as_utf8(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }
}

/// UTF-8 labels show as a quoted string (with escapes), raw ones as `hex:…`.
impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_utf8() {
            Some(text) => write!(f, "{text:?}"),
            None => write!(f, "hex:{}", hex::encode(self.as_bytes())),
        }
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Self::Utf8(text.to_owned())
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Self::Utf8(text)
    }
}

/// A calendar day (UTC), written `YYYY-MM-DD` in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day {
    /// Year, 1950..=9999.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31 (checked against the month).
    pub day: u8,
}

impl Day {
    /// A day; fails on dates that do not exist.
    pub fn new(year: u16, month: u8, day: u8) -> anyhow::Result<Self> {
        let day_value = Self { year, month, day };
        day_value.to_date()?;
        Ok(day_value)
    }

    /// The day as a `time::Date`.
    pub fn to_date(self) -> anyhow::Result<time::Date> {
        ensure!(
            (1950..=9999).contains(&self.year),
            "year {} is outside 1950..=9999",
            self.year
        );
        let month = time::Month::try_from(self.month)
            .with_context(|| format!("month {} does not exist", self.month))?;
        time::Date::from_calendar_date(i32::from(self.year), month, self.day)
            .with_context(|| format!("{self} is not a date"))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl std::str::FromStr for Day {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut parts = text.splitn(3, '-');
        let (Some(year), Some(month), Some(day)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("{text:?} is not YYYY-MM-DD");
        };
        let number_error = || format!("{text:?} is not YYYY-MM-DD");
        Self::new(
            year.parse().with_context(number_error)?,
            month.parse().with_context(number_error)?,
            day.parse().with_context(number_error)?,
        )
    }
}

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Certificate validity, whole days in UTC (notBefore at 00:00:00, notAfter at 23:59:59).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    /// First day of validity.
    pub not_before: Day,
    /// Last day of validity.
    pub not_after: Day,
}

impl Default for Validity {
    /// 2025-01-01 to 2035-01-01: fixed, so cached and fresh sets carry the same dates.
    fn default() -> Self {
        Self {
            not_before: Day {
                year: 2025,
                month: 1,
                day: 1,
            },
            not_after: Day {
                year: 2035,
                month: 1,
                day: 1,
            },
        }
    }
}

impl Spec {
    /// An empty spec; add tokens with [`Spec::token`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token (builder style).
    #[must_use]
    pub fn token(mut self, token: TokenSpec) -> Self {
        self.tokens.push(token);
        self
    }

    /// Sets the name shown in messages and the manifest (builder style).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A named set: `demo`, `edge`, or `bench:N:K`. The demo set takes its real Ukrainian
    /// certificates from `ua_certs` when given, else from [`default_ua_certs_dir`].
    pub fn from_name(name: &str, ua_certs: Option<&Path>) -> anyhow::Result<Self> {
        if name == "demo" {
            let dir = ua_certs
                .map(Path::to_path_buf)
                .or_else(default_ua_certs_dir);
            return Self::demo_with(dir.as_deref());
        }
        if name == "edge" {
            return Ok(Self::edge());
        }
        if let Some(rest) = name.strip_prefix("bench:") {
            let (tokens, keys) = rest
                .split_once(':')
                .with_context(|| format!("{name:?}: write bench:N:K"))?;
            let tokens = tokens
                .parse()
                .with_context(|| format!("{name:?}: N is not a number"))?;
            let keys = keys
                .parse()
                .with_context(|| format!("{name:?}: K is not a number"))?;
            return Ok(Self::bench(tokens, keys));
        }
        bail!("unknown token set {name:?}: use demo, edge, bench:N:K, or a spec file")
    }

    /// The demo set, with the real Ukrainian certificates when they are found
    /// (see [`default_ua_certs_dir`]).
    pub fn demo() -> Self {
        // The demo spec without real certificates cannot fail; reading the directory can.
        match Self::demo_with(default_ua_certs_dir().as_deref()) {
            Ok(spec) => spec,
            Err(_) => Self::demo_without_real_certs(),
        }
    }

    /// The demo set; `ua_certs` names a directory of `.cer` files put on an extra token
    /// "UA real certs" as certificate objects (ids 01, 02, … in file-name order).
    pub fn demo_with(ua_certs: Option<&Path>) -> anyhow::Result<Self> {
        let mut spec = Self::demo_without_real_certs();
        if let Some(dir) = ua_certs {
            let mut files = Vec::new();
            for entry in
                std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let path = entry
                    .with_context(|| format!("reading {}", dir.display()))?
                    .path();
                if path
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("cer"))
                {
                    files.push(path);
                }
            }
            files.sort();
            ensure!(!files.is_empty(), "{} holds no .cer files", dir.display());
            let mut token = TokenSpec::new("UA real certs");
            for (n, path) in files.into_iter().enumerate() {
                let stem = path
                    .file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
                    .unwrap_or_default();
                token = token.cert_file(&format!("{:02x}", n + 1), &stem, path);
            }
            spec.tokens.push(token);
        }
        Ok(spec)
    }

    fn demo_without_real_certs() -> Self {
        let seal = Profile::ua_seal();
        Self::new()
            .named("demo")
            .token(TokenSpec::new("Іваненко І.І.").ec_key_cert(
                "01",
                "Іваненко Іван Іванович",
                Profile::ua_person(),
            ))
            .token(TokenSpec::new("RSA signer").rsa_key_cert(
                "01",
                "RSA signer",
                Profile::plain("RSA Signer (fixture)"),
            ))
            .token(
                TokenSpec::new("ЦНАП печатка")
                    .ec_key_cert("01", "ЦНАП печатка", seal.clone())
                    .dstu_cert("02", "ЦНАП печатка ДСТУ 4145", seal),
            )
            .token(TokenSpec::new("Empty token"))
            .token(TokenSpec::new("Бухгалтерія №1").ec_key_cert(
                "01",
                "Бухгалтерія",
                Profile::plain("Бухгалтерія (fixture)"),
            ))
    }

    /// `n` tokens labelled `bench-000`, `bench-001`, …, each with `k` EC P-256 key pairs and
    /// certificates (ids 0001, 0002, …; labels `key-0001`, …).
    pub fn bench(n: usize, k: usize) -> Self {
        let mut spec = Self::new().named(format!("bench:{n}:{k}"));
        for t in 0..n {
            let mut token = TokenSpec::new(&format!("bench-{t:03}"));
            for key in 1..=k {
                token = token.ec_key_cert(
                    &format!("{key:04x}"),
                    &format!("key-{key:04}"),
                    Profile::plain(&format!("bench-{t:03} key {key}")),
                );
            }
            spec.tokens.push(token);
        }
        spec
    }

    /// Awkward cases for parsers and the inventory: a token label that is not UTF-8, object
    /// labels with control characters and invalid UTF-8, a garbage certificate value, an
    /// expired certificate, an object without label, a long CKA_ID, a duplicate CKA_ID.
    pub fn edge() -> Self {
        let expired = Validity {
            not_before: Day {
                year: 2020,
                month: 1,
                day: 1,
            },
            not_after: Day {
                year: 2021,
                month: 1,
                day: 1,
            },
        };
        let mut odd = TokenSpec::new("Edge objects")
            .object(ObjectSpec {
                id: Bytes(vec![0x01]),
                label: Some(Text::from("tab\there\nnewline\u{7f}")),
                kind: ObjectKind::EcKeyCert {
                    profile: Profile::plain("control characters"),
                    validity: Validity::default(),
                    start_date: Day::new(2025, 3, 14).ok(),
                },
            })
            .object(ObjectSpec {
                id: Bytes(vec![0x02]),
                label: Some(Text::Raw {
                    hex: Bytes(vec![0xff, 0xfe, b'k', b'e', b'y', 0x00, 0xc3]),
                }),
                kind: ObjectKind::EcKeyCert {
                    profile: Profile::plain("invalid UTF-8 label"),
                    validity: expired,
                    start_date: None,
                },
            })
            .object(ObjectSpec {
                id: Bytes(vec![0x03]),
                label: Some(Text::from("garbage")),
                kind: ObjectKind::RawCert {
                    value: Bytes(b"\x30\x82\xff\xffnot a certificate".to_vec()),
                    subject: None,
                },
            })
            .object(ObjectSpec {
                id: Bytes((0u8..20).collect()),
                label: None,
                kind: ObjectKind::EcKeyCert {
                    profile: Profile::plain("no label, long id"),
                    validity: Validity::default(),
                    start_date: None,
                },
            });
        // A second certificate with the CKA_ID of the first key: pairing must not assume
        // one certificate per id.
        odd = odd.object(ObjectSpec {
            id: Bytes(vec![0x01]),
            label: Some(Text::from("same id, other cert")),
            kind: ObjectKind::DstuCert {
                profile: Profile::ua_person(),
                validity: Validity::default(),
            },
        });
        Self::new()
            .named("edge")
            .token(
                TokenSpec::new("")
                    .label_bytes(b"\xff\xfeNot UTF-8 \xd0")
                    .ec_key_cert("01", "key", Profile::plain("non-UTF-8 token label")),
            )
            .token(odd)
    }

    /// Checks what SoftHSM2 or the builder would otherwise reject late or silently change.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (index, token) in self.tokens.iter().enumerate() {
            let what = || format!("token {index} ({})", token.label);
            let label = token.label.as_bytes();
            ensure!(
                label.len() <= TOKEN_LABEL_MAX,
                "{}: label is {} bytes, SoftHSM2 keeps {TOKEN_LABEL_MAX} (cryptoki would cut it silently)",
                what(),
                label.len()
            );
            for pin in [token.user_pin(index), token.so_pin(index)] {
                ensure!(
                    (4..=255).contains(&pin.len()),
                    "{}: PINs must be 4 to 255 bytes for SoftHSM2",
                    what()
                );
            }
            for object in &token.objects {
                match &object.kind {
                    ObjectKind::EcKeyCert {
                        validity, profile, ..
                    }
                    | ObjectKind::DstuCert { validity, profile } => {
                        validity_check(validity).with_context(what)?;
                        profile.validate().with_context(what)?;
                    }
                    ObjectKind::RsaKeyCert {
                        bits,
                        validity,
                        profile,
                        ..
                    } => {
                        validity_check(validity).with_context(what)?;
                        profile.validate().with_context(what)?;
                        ensure!(
                            (1024..=8192).contains(bits) && bits % 8 == 0,
                            "{}: RSA modulus of {bits} bits",
                            what()
                        );
                    }
                    ObjectKind::CertFile { path } => ensure!(
                        path.is_file(),
                        "{}: certificate file {} not found",
                        what(),
                        path.display()
                    ),
                    ObjectKind::RawCert { .. } => {}
                }
            }
        }
        Ok(())
    }

    /// Hex SHA-256 over the builder version, this spec's JSON and the contents of every file it
    /// names: the cache key of the built set.
    pub fn hash(&self) -> anyhow::Result<String> {
        let mut hasher = Sha256::new();
        hasher.update(BUILDER_VERSION.as_bytes());
        hasher.update([0]);
        hasher.update(serde_json::to_vec(self).context("serialising the spec")?);
        for token in &self.tokens {
            for object in &token.objects {
                if let ObjectKind::CertFile { path } = &object.kind {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    hasher.update([0]);
                    hasher.update(Sha256::digest(&bytes));
                }
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

fn validity_check(validity: &Validity) -> anyhow::Result<()> {
    validity.not_before.to_date()?;
    validity.not_after.to_date()?;
    ensure!(
        validity.not_before <= validity.not_after,
        "validity ends ({}) before it starts ({})",
        validity.not_after,
        validity.not_before
    );
    Ok(())
}

impl TokenSpec {
    /// A token with a UTF-8 label and no objects.
    pub fn new(label: &str) -> Self {
        Self {
            label: Text::from(label),
            user_pin: None,
            so_pin: None,
            objects: Vec::new(),
        }
    }

    /// Replaces the label by raw bytes (may be invalid UTF-8; at most 32 bytes).
    #[must_use]
    pub fn label_bytes(mut self, label: &[u8]) -> Self {
        self.label = Text::Raw {
            hex: Bytes(label.to_vec()),
        };
        self
    }

    /// Sets the user and SO PINs.
    #[must_use]
    pub fn pins(mut self, user_pin: &str, so_pin: &str) -> Self {
        self.user_pin = Some(user_pin.to_owned());
        self.so_pin = Some(so_pin.to_owned());
        self
    }

    /// Adds any object.
    #[must_use]
    pub fn object(mut self, object: ObjectSpec) -> Self {
        self.objects.push(object);
        self
    }

    /// Adds an EC P-256 key pair generated on the token and its certificate.
    ///
    /// `id` is hex; an id that is not hex is taken as its UTF-8 bytes.
    #[must_use]
    pub fn ec_key_cert(self, id: &str, label: &str, profile: Profile) -> Self {
        self.object(ObjectSpec {
            id: id_bytes(id),
            label: Some(Text::from(label)),
            kind: ObjectKind::EcKeyCert {
                profile,
                validity: Validity::default(),
                start_date: None,
            },
        })
    }

    /// Adds an RSA 2048 key pair generated on the token and its certificate.
    #[must_use]
    pub fn rsa_key_cert(self, id: &str, label: &str, profile: Profile) -> Self {
        self.object(ObjectSpec {
            id: id_bytes(id),
            label: Some(Text::from(label)),
            kind: ObjectKind::RsaKeyCert {
                bits: default_rsa_bits(),
                profile,
                validity: Validity::default(),
                start_date: None,
            },
        })
    }

    /// Adds a certificate object with a DSTU 4145 public key (no key pair).
    #[must_use]
    pub fn dstu_cert(self, id: &str, label: &str, profile: Profile) -> Self {
        self.object(ObjectSpec {
            id: id_bytes(id),
            label: Some(Text::from(label)),
            kind: ObjectKind::DstuCert {
                profile,
                validity: Validity::default(),
            },
        })
    }

    /// Adds a certificate object read from a DER file.
    #[must_use]
    pub fn cert_file(self, id: &str, label: &str, path: impl Into<PathBuf>) -> Self {
        self.object(ObjectSpec {
            id: id_bytes(id),
            label: Some(Text::from(label)),
            kind: ObjectKind::CertFile { path: path.into() },
        })
    }

    /// Adds a certificate object whose CKA_VALUE is `value` as it is.
    #[must_use]
    pub fn raw_cert(self, id: &str, label: &str, value: &[u8]) -> Self {
        self.object(ObjectSpec {
            id: id_bytes(id),
            label: Some(Text::from(label)),
            kind: ObjectKind::RawCert {
                value: Bytes(value.to_vec()),
                subject: None,
            },
        })
    }

    /// The user PIN this token gets when it is token number `index` of its set.
    pub fn user_pin(&self, index: usize) -> String {
        self.user_pin
            .clone()
            .unwrap_or_else(|| format!("4321{index:03}"))
    }

    /// The SO PIN this token gets when it is token number `index` of its set.
    pub fn so_pin(&self, index: usize) -> String {
        self.so_pin
            .clone()
            .unwrap_or_else(|| format!("8765{index:03}"))
    }
}

fn id_bytes(id: &str) -> Bytes {
    Bytes::from_hex(id).unwrap_or_else(|_| Bytes(id.as_bytes().to_vec()))
}

/// `../shared/testdata/ua-certs` beside the repository root, when that directory exists.
///
/// The path is fixed at compile time from this package's location, so the binary built by
/// `softhsm-fixtures/build.sh` finds it from any working directory.
pub fn default_ua_certs_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/ua-certs");
    let dir = dir.canonicalize().ok()?;
    dir.is_dir().then_some(dir)
}

/// [`default_ua_certs_dir`] for a test that needs it: `None` (the test says it did not run)
/// when ../shared/testdata is absent on a developer's machine; under CI (`CI` set) its
/// absence fails the test instead, so a CI run never passes without the real certificates.
pub fn ua_certs_dir_for_test(test: &str) -> Option<PathBuf> {
    let dir = default_ua_certs_dir();
    if dir.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: ../shared/testdata/ua-certs is absent beside the repository; the tests read it from there (CI=true: failing instead of skipping)"
        );
        eprintln!("NOT RUN: {test}: ../shared/testdata/ua-certs is absent");
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_json() -> anyhow::Result<()> {
        let spec = Spec::edge().token(TokenSpec::new("x").raw_cert("aa", "r", b"\x00\x01"));
        let json = serde_json::to_string_pretty(&spec)?;
        let back: Spec = serde_json::from_str(&json)?;
        assert_eq!(back, spec);
        Ok(())
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let json = r#"{"tokens":[{"label":"a","objects":[{"id":"01","kind":"raw_cert","value":"00","typo":1}]}]}"#;
        assert!(serde_json::from_str::<Spec>(json).is_err());
    }

    #[test]
    fn long_token_label_is_rejected() {
        let spec = Spec::new().token(TokenSpec::new("Токен Бухгалтерія"));
        assert!(spec.validate().is_err());
    }

    #[test]
    fn named_sets_parse() -> anyhow::Result<()> {
        let bench = Spec::from_name("bench:3:2", None)?;
        assert_eq!(bench.tokens.len(), 3);
        assert!(bench.tokens.iter().all(|t| t.objects.len() == 2));
        assert!(Spec::from_name("bench:3", None).is_err());
        assert!(Spec::from_name("nope", None).is_err());
        Spec::demo_with(None)?.validate()?;
        Spec::edge().validate()?;
        Ok(())
    }

    #[test]
    fn hash_changes_with_the_spec() -> anyhow::Result<()> {
        assert_ne!(Spec::bench(1, 1).hash()?, Spec::bench(1, 2).hash()?);
        assert_eq!(Spec::bench(1, 1).hash()?, Spec::bench(1, 1).hash()?);
        Ok(())
    }

    #[test]
    fn days_parse_and_reject_impossible_dates() {
        assert!("2025-02-29".parse::<Day>().is_err());
        assert!("2024-02-29".parse::<Day>().is_ok());
        assert!("2024-2".parse::<Day>().is_err());
    }
}
