//! The fixture CA: one software ECDSA P-256 key per token set that issues every certificate.
//!
//! Certificates for keys generated on a token are made with rcgen (`CertificateParams::signed_by`
//! over the public key read back from the token). rcgen cannot express a DSTU 4145
//! SubjectPublicKeyInfo, so that one certificate is assembled here with yasna and signed with
//! the same CA key. Names, serials and validity are deterministic for a given spec, so cached
//! and fresh sets differ only in key material and signatures (the manifest has those).

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm,
    SigningKey as _,
};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use yasna::models::{GeneralizedTime, ObjectIdentifier, UTCTime};
use yasna::Tag;

use crate::profile::{oid, write_name, Extension, NameAttribute, Profile};
use crate::spec::{Day, Validity};

/// Length of a DSTU 4145 public key on curve m=257: 257 bits rounded up to bytes, plus one.
pub(crate) const DSTU_M257_KEY_LEN: usize = 33;

/// The CA of one token set.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    name: Vec<NameAttribute>,
    key_id: Vec<u8>,
}

impl Ca {
    /// A new CA key and its self-signed certificate (DER and PEM).
    pub(crate) fn generate(spec_hash: &str) -> anyhow::Result<(Self, Vec<u8>, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the fixture CA key")?;
        let params = ca_params(spec_hash)?;
        let cert = params
            .self_signed(&key)
            .context("self-signing the fixture CA")?;
        let ca = Self::from_key(key, params)?;
        Ok((ca, cert.der().to_vec(), cert.pem()))
    }

    /// The CA of a set, from its PKCS#8 key (the worker processes get the key this way).
    pub(crate) fn from_pkcs8(spec_hash: &str, pkcs8: &[u8]) -> anyhow::Result<Self> {
        let key = KeyPair::try_from(pkcs8).context("reading the fixture CA key (PKCS#8)")?;
        Self::from_key(key, ca_params(spec_hash)?)
    }

    fn from_key(key: KeyPair, params: CertificateParams) -> anyhow::Result<Self> {
        let key_id = params.key_identifier(&key);
        Ok(Self {
            issuer: Issuer::new(params, key),
            name: ca_name(),
            key_id,
        })
    }

    /// The CA key as PKCS#8 DER.
    pub(crate) fn pkcs8(&self) -> Vec<u8> {
        self.issuer.key().serialize_der()
    }

    /// Issues a certificate (DER) for a public key read from a token.
    pub(crate) fn issue(
        &self,
        profile: &Profile,
        validity: &Validity,
        serial: &[u8],
        public_key: &TokenPublicKey,
    ) -> anyhow::Result<Vec<u8>> {
        let mut params = CertificateParams::default();
        params.not_before = start_of(validity.not_before)?;
        params.not_after = end_of(validity.not_after)?;
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params.distinguished_name = rcgen_name(&profile.subject())?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions = profile
            .extensions()
            .into_iter()
            .map(|ext| {
                let mut custom = CustomExtension::from_oid_content(ext.oid, ext.value);
                custom.set_criticality(ext.critical);
                custom
            })
            .collect();
        let cert = params
            .signed_by(public_key, &self.issuer)
            .context("issuing a certificate with rcgen")?;
        Ok(cert.der().to_vec())
    }

    /// Issues a certificate (DER) whose SubjectPublicKeyInfo is DSTU 4145 (little-endian, named
    /// curve m=257) holding `public_key` as an OCTET STRING inside the BIT STRING, as
    /// Ukrainian certificates do. Signed with ECDSA by the fixture CA.
    pub(crate) fn issue_dstu(
        &self,
        profile: &Profile,
        validity: &Validity,
        serial: &[u8],
        public_key: &[u8; DSTU_M257_KEY_LEN],
    ) -> anyhow::Result<Vec<u8>> {
        let spki = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(oid::DSTU_4145_LE));
                    // DSTU4145Params ::= SEQUENCE { namedCurve OID, dke OCTET STRING OPTIONAL }
                    w.next().write_sequence(|w| {
                        w.next()
                            .write_oid(&ObjectIdentifier::from_slice(oid::DSTU_4145_CURVE_M257));
                    });
                });
                let key = yasna::construct_der(|w| w.write_bytes(public_key));
                w.next().write_bitvec_bytes(&key, key.len() * 8);
            });
        });
        let subject_key_id = Sha256::digest(&spki)[..20].to_vec();
        let mut extensions = vec![
            Extension {
                oid: oid::AUTHORITY_KEY_IDENTIFIER,
                critical: false,
                value: yasna::construct_der(|w| {
                    w.write_sequence(|w| {
                        w.next().write_tagged_implicit(Tag::context(0), |w| {
                            w.write_bytes(&self.key_id)
                        });
                    });
                }),
            },
            Extension {
                oid: oid::SUBJECT_KEY_IDENTIFIER,
                critical: false,
                value: yasna::construct_der(|w| w.write_bytes(&subject_key_id)),
            },
            Extension {
                oid: oid::BASIC_CONSTRAINTS,
                critical: true,
                value: yasna::construct_der(|w| w.write_sequence(|_| {})),
            },
        ];
        extensions.extend(profile.extensions());
        let not_before = start_of(validity.not_before)?;
        let not_after = end_of(validity.not_after)?;
        let signature_algorithm = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next()
                    .write_oid(&ObjectIdentifier::from_slice(oid::ECDSA_WITH_SHA256));
            });
        });
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_tagged(Tag::context(0), |w| w.write_u8(2));
                w.next().write_bigint_bytes(serial, true);
                w.next().write_der(&signature_algorithm);
                write_name(w.next(), &self.name);
                w.next().write_sequence(|w| {
                    write_time(w.next(), not_before);
                    write_time(w.next(), not_after);
                });
                write_name(w.next(), &profile.subject());
                w.next().write_der(&spki);
                w.next().write_tagged(Tag::context(3), |w| {
                    w.write_sequence(|w| {
                        for ext in &extensions {
                            w.next().write_sequence(|w| {
                                w.next().write_oid(&ObjectIdentifier::from_slice(ext.oid));
                                if ext.critical {
                                    w.next().write_bool(true);
                                }
                                w.next().write_bytes(&ext.value);
                            });
                        }
                    });
                });
            });
        });
        let signature = self
            .issuer
            .key()
            .sign(&tbs)
            .context("signing the DSTU 4145 certificate")?;
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                w.next().write_der(&signature_algorithm);
                w.next().write_bitvec_bytes(&signature, signature.len() * 8);
            });
        }))
    }
}

/// A public key read back from a token, in the form rcgen signs over.
pub(crate) struct TokenPublicKey {
    /// The BIT STRING contents of the SubjectPublicKeyInfo: the uncompressed EC point, or the
    /// DER RSAPublicKey.
    key: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
}

impl TokenPublicKey {
    /// An EC P-256 key from its uncompressed point (0x04 || X || Y).
    pub(crate) fn ec_p256(point: Vec<u8>) -> Self {
        Self {
            key: point,
            algorithm: &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }

    /// An RSA key from its modulus and public exponent (big-endian, unsigned).
    pub(crate) fn rsa(modulus: &[u8], exponent: &[u8]) -> Self {
        let key = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_bigint_bytes(modulus, true);
                w.next().write_bigint_bytes(exponent, true);
            });
        });
        Self {
            key,
            algorithm: &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl PublicKeyData for TokenPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

/// The CA's subject name: fixed, so every set's CA has the same name.
fn ca_name() -> Vec<NameAttribute> {
    vec![
        NameAttribute {
            oid: oid::COUNTRY,
            value: "UA".to_owned(),
            printable: true,
        },
        NameAttribute {
            oid: oid::ORGANIZATION,
            value: "Custody test fixtures".to_owned(),
            printable: false,
        },
        NameAttribute {
            oid: oid::COMMON_NAME,
            value: "Custody Fixture CA (test only)".to_owned(),
            printable: false,
        },
    ]
}

fn ca_params(spec_hash: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.not_before = start_of(Day::new(2024, 1, 1)?)?;
    params.not_after = end_of(Day::new(2049, 12, 31)?)?;
    params.serial_number = Some(SerialNumber::from_slice(&serial_for(spec_hash, &[b"ca"])));
    params.distinguished_name = rcgen_name(&ca_name())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A positive 16-byte serial derived from the spec hash and the object's coordinates.
pub(crate) fn serial_for(spec_hash: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"custody-fixtures serial\0");
    hasher.update(spec_hash.as_bytes());
    for part in parts {
        hasher.update([0]);
        hasher.update(part);
    }
    let mut serial = hasher.finalize()[..16].to_vec();
    // Positive, and no leading zero byte, so the INTEGER is always 16 bytes.
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

/// A made-up 33-byte DSTU 4145 public key derived from the certificate serial.
pub(crate) fn dstu_key_for(serial: &[u8]) -> [u8; DSTU_M257_KEY_LEN] {
    let digest = Sha256::digest([b"dstu-4145-m257\0".as_slice(), serial].concat());
    let mut key = [0u8; DSTU_M257_KEY_LEN];
    key[..32].copy_from_slice(&digest);
    // The top byte of a compressed m=257 point holds only one bit.
    key[32] = digest[0] & 1;
    key
}

fn rcgen_name(name: &[NameAttribute]) -> anyhow::Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    for attribute in name {
        let value =
            if attribute.printable {
                DnValue::PrintableString(
                    attribute.value.as_str().try_into().with_context(|| {
                        format!("{:?} is not a PrintableString", attribute.value)
                    })?,
                )
            } else {
                DnValue::Utf8String(attribute.value.clone())
            };
        dn.push(DnType::CustomDnType(attribute.oid.to_vec()), value);
    }
    Ok(dn)
}

fn start_of(day: Day) -> anyhow::Result<OffsetDateTime> {
    Ok(day.to_date()?.midnight().assume_utc())
}

fn end_of(day: Day) -> anyhow::Result<OffsetDateTime> {
    Ok(day
        .to_date()?
        .with_hms(23, 59, 59)
        .context("23:59:59 is a time")?
        .assume_utc())
}

/// UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5).
fn write_time(writer: yasna::DERWriter<'_>, at: OffsetDateTime) {
    if at.year() < 2050 {
        writer.write_utctime(&UTCTime::from_datetime(at));
    } else {
        writer.write_generalized_time(&GeneralizedTime::from_datetime(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer as _, X509Certificate};

    #[test]
    fn dstu_certificate_names_its_issuer_like_the_ca_certificate() -> anyhow::Result<()> {
        let (ca, ca_der, _) = Ca::generate("test")?;
        let serial = serial_for("test", &[b"x"]);
        let der = ca.issue_dstu(
            &Profile::ua_seal(),
            &Validity::default(),
            &serial,
            &dstu_key_for(&serial),
        )?;
        let (_, ca_cert) = X509Certificate::from_der(&ca_der)?;
        let (rest, cert) = X509Certificate::from_der(&der)?;
        assert!(rest.is_empty());
        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.804.2.1.1.1.1.3.1.1"
        );
        // BIT STRING holding OCTET STRING (0x04) of 33 bytes.
        assert_eq!(&cert.public_key().subject_public_key.data[..2], &[0x04, 33]);
        Ok(())
    }

    #[test]
    fn ca_key_survives_pkcs8_round_trip() -> anyhow::Result<()> {
        let (ca, _, _) = Ca::generate("h")?;
        let again = Ca::from_pkcs8("h", &ca.pkcs8())?;
        assert_eq!(again.key_id, ca.key_id);
        Ok(())
    }

    #[test]
    fn serials_are_positive_and_16_bytes() {
        for n in 0u8..50 {
            let serial = serial_for("s", &[&[n]]);
            assert_eq!(serial.len(), 16);
            assert!(serial[0] >= 1 && serial[0] < 0x80);
        }
    }
}
