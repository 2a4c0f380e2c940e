//! A PKCS#15 application for the virtual card ([`crate::smartcard`]): what OpenSC's
//! `opensc-pkcs11.so` reads as a token with an EC P-256 key pair and its certificate.
//!
//! Layout (PKCS#15 v1.1, ISO 7816-15):
//!
//! ```text
//! 3F00 MF
//!   2F00 EF.DIR        one application template: the PKCS#15 AID, label, path 3F00 5015
//!   5015 DF.PKCS15     DF name = the PKCS#15 AID
//!     5031 EF.ODF      -> PrKDF 4400, PuKDF 4401, CDF 4404
//!     5032 EF.TokenInfo serial, manufacturer, label, flags (read-only; no login required)
//!     4400 EF.PrKDF    one private EC key, id = key id, reference 1, path 4B01
//!     4401 EF.PuKDF    its public key, SubjectPublicKeyInfo in 5501
//!     4404 EF.CDF      its certificate, in 4301
//!     4301 EF          the certificate (DER)
//!     5501 EF          the public key (SubjectPublicKeyInfo DER)
//! ```
//!
//! The card has no PIN and no authentication objects; its certificate is issued by a fixture
//! CA made for the card (the `ca` module), never read from files of other projects.

use anyhow::Context as _;
use rcgen::{KeyPair, PublicKeyData as _};
use yasna::{DERWriter, Tag};

use crate::ca::{serial_for, Ca, TokenPublicKey};
use crate::profile::Profile;
use crate::smartcard::{CardImage, MF};
use crate::spec::Validity;

/// The PKCS#15 application identifier.
pub const PKCS15_AID: &[u8] = b"\xA0\x00\x00\x00\x63PKCS-15";
const APP: u16 = 0x5015;
const PRKDF: u16 = 0x4400;
const PUKDF: u16 = 0x4401;
const CDF: u16 = 0x4404;
const CERT: u16 = 0x4301;
const PUBKEY: u16 = 0x5501;
const KEY: u16 = 0x4B01;

/// What goes on one card.
#[derive(Debug, Clone)]
pub struct CardSpec {
    /// Token label (PKCS#15 TokenInfo label).
    pub label: String,
    /// Manufacturer (TokenInfo manufacturerID).
    pub manufacturer: String,
    /// Serial number bytes (OpenSC shows them as hex).
    pub serial: Vec<u8>,
    /// The certificate's subject and extensions.
    pub profile: Profile,
    /// CKA_ID of the key, its public key and its certificate.
    pub key_id: Vec<u8>,
}

impl CardSpec {
    /// A card of a Ukrainian signer, with a serial derived from `seed`.
    pub fn new(label: &str, seed: &str) -> Self {
        Self {
            label: label.to_owned(),
            manufacturer: "custody test card".to_owned(),
            serial: serial_for(seed, &[b"card"])[..8].to_vec(),
            profile: Profile::ua_person(),
            key_id: vec![0x45, 0x01],
        }
    }

    /// The serial as OpenSC shows it (lower-case hex).
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }
}

/// A card made from a [`CardSpec`]: its image and what a test checks against.
#[derive(Debug, Clone)]
pub struct Pkcs15Card {
    /// The file system to insert.
    pub image: CardImage,
    /// The certificate (DER).
    pub certificate: Vec<u8>,
    /// The public key (SubjectPublicKeyInfo DER).
    pub public_key: Vec<u8>,
    /// The spec it was made from.
    pub spec: CardSpec,
}

impl Pkcs15Card {
    /// Generates a key pair, has a fixture CA certify it and lays out the application.
    pub fn generate(spec: &CardSpec) -> anyhow::Result<Self> {
        let seed = spec.serial_hex();
        let (ca, _, _) = Ca::generate(&seed)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the card's key pair")?;
        let certificate = ca.issue(
            &spec.profile,
            &Validity::default(),
            &serial_for(&seed, &[b"certificate"]),
            &TokenPublicKey::ec_p256(key.public_key_raw().to_vec()),
        )?;
        let public_key = key.subject_public_key_info();
        let image = image(spec, &certificate, &public_key);
        Ok(Self {
            image,
            certificate,
            public_key,
            spec: spec.clone(),
        })
    }
}

fn path(ids: &[u16]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_be_bytes()).collect()
}

fn image(spec: &CardSpec, certificate: &[u8], public_key: &[u8]) -> CardImage {
    let app = |id: u16| [MF, APP, id];
    CardImage::new(b"custody")
        .ef(&[MF, 0x2F00], ef_dir(&spec.label))
        .df(&[MF, APP], Some(PKCS15_AID))
        .ef(&app(0x5031), odf())
        .ef(&app(0x5032), token_info(spec))
        .ef(&app(PRKDF), prkdf(spec))
        .ef(&app(PUKDF), pukdf(spec))
        .ef(&app(CDF), cdf(spec))
        .ef(&app(CERT), certificate.to_vec())
        .ef(&app(PUBKEY), public_key.to_vec())
}

/// EF.DIR: one application template, `[APPLICATION 1] { aid, label, path }`.
fn ef_dir(label: &str) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_tagged_implicit(Tag::application(1), |w| {
            w.write_sequence(|w| {
                w.next()
                    .write_tagged_implicit(Tag::application(15), |w| w.write_bytes(PKCS15_AID));
                w.next()
                    .write_tagged_implicit(Tag::application(16), |w| w.write_utf8_string(label));
                w.next().write_tagged_implicit(Tag::application(17), |w| {
                    w.write_bytes(&path(&[MF, APP]))
                });
            });
        });
    })
}

fn write_path(w: DERWriter<'_>, id: u16) {
    w.write_sequence(|w| w.next().write_bytes(&path(&[MF, APP, id])));
}

/// EF.ODF: `[0] PrKDF`, `[1] PuKDF`, `[4] CDF`, each a path.
fn odf() -> Vec<u8> {
    [(0, PRKDF), (1, PUKDF), (4, CDF)]
        .into_iter()
        .flat_map(|(tag, id)| {
            yasna::construct_der(|w| {
                w.write_tagged(Tag::context(tag), |w| write_path(w, id));
            })
        })
        .collect()
}

/// EF.TokenInfo: version 0, serial, manufacturer, `[0]` label, flags (read-only).
fn token_info(spec: &CardSpec) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_bytes(&spec.serial);
            w.next().write_utf8_string(&spec.manufacturer);
            w.next()
                .write_tagged_implicit(Tag::context(0), |w| w.write_utf8_string(&spec.label));
            // TokenFlags: readonly(0)
            w.next().write_bitvec_bytes(&[0x80], 1);
        });
    })
}

/// CommonObjectAttributes: the label only (no flags: not private, no authId).
fn common_object(w: DERWriter<'_>, label: &str) {
    w.write_sequence(|w| w.next().write_utf8_string(label));
}

/// EF.PrKDF: `privateECKey [0] { common, { id, usage sign, access flags, reference },
/// [1] { { path }, fieldSize } }`.
fn prkdf(spec: &CardSpec) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_tagged_implicit(Tag::context(0), |w| {
            w.write_sequence(|w| {
                common_object(w.next(), "signing key");
                w.next().write_sequence(|w| {
                    w.next().write_bytes(&spec.key_id);
                    // KeyUsageFlags: sign(2), nonRepudiation(9)
                    w.next().write_bitvec_bytes(&[0x20, 0x40], 10);
                    // KeyAccessFlags: sensitive(0), alwaysSensitive(2), neverExtractable(3),
                    // local(4)
                    w.next().write_bitvec_bytes(&[0xB8], 5);
                    w.next().write_u8(1);
                });
                w.next().write_tagged(Tag::context(1), |w| {
                    w.write_sequence(|w| {
                        write_path(w.next(), KEY);
                        w.next().write_u16(256);
                    });
                });
            });
        });
    })
}

/// EF.PuKDF: `publicECKey [0] { common, { id, usage verify }, [1] { { path } } }`.
fn pukdf(spec: &CardSpec) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_tagged_implicit(Tag::context(0), |w| {
            w.write_sequence(|w| {
                common_object(w.next(), "signing key");
                w.next().write_sequence(|w| {
                    w.next().write_bytes(&spec.key_id);
                    // KeyUsageFlags: verify(6)
                    w.next().write_bitvec_bytes(&[0x02], 7);
                });
                w.next().write_tagged(Tag::context(1), |w| {
                    w.write_sequence(|w| write_path(w.next(), PUBKEY));
                });
            });
        });
    })
}

/// EF.CDF: `x509Certificate { common, { id }, [1] { { path } } }`.
fn cdf(spec: &CardSpec) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            common_object(w.next(), "signing certificate");
            w.next()
                .write_sequence(|w| w.next().write_bytes(&spec.key_id));
            w.next().write_tagged(Tag::context(1), |w| {
                w.write_sequence(|w| write_path(w.next(), CERT));
            });
        });
    })
}
