//! Certificate profiles: subject names and extensions of the certificates the fixtures issue.
//!
//! The Ukrainian qualified profiles are built here from the public structure of such
//! certificates (ETSI EN 319 412, the Ukrainian OIDs); nothing is copied from real ones.
//! This module only describes names and extensions as DER; signing belongs to the `ca` module.

use anyhow::ensure;
use serde::{Deserialize, Serialize};

/// Object identifiers used by the profiles, as arcs.
pub mod oid {
    /// id-at-commonName.
    pub const COMMON_NAME: &[u64] = &[2, 5, 4, 3];
    /// id-at-surname.
    pub const SURNAME: &[u64] = &[2, 5, 4, 4];
    /// id-at-serialNumber (holds `TINUA-<DRFO>` for persons).
    pub const SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];
    /// id-at-countryName.
    pub const COUNTRY: &[u64] = &[2, 5, 4, 6];
    /// id-at-localityName.
    pub const LOCALITY: &[u64] = &[2, 5, 4, 7];
    /// id-at-organizationName.
    pub const ORGANIZATION: &[u64] = &[2, 5, 4, 10];
    /// id-at-title.
    pub const TITLE: &[u64] = &[2, 5, 4, 12];
    /// id-at-givenName.
    pub const GIVEN_NAME: &[u64] = &[2, 5, 4, 42];
    /// id-at-organizationIdentifier (holds `NTRUA-<EDRPOU>`).
    pub const ORGANIZATION_IDENTIFIER: &[u64] = &[2, 5, 4, 97];

    /// id-ce-subjectDirectoryAttributes.
    pub const SUBJECT_DIRECTORY_ATTRIBUTES: &[u64] = &[2, 5, 29, 9];
    /// id-ce-subjectKeyIdentifier.
    pub const SUBJECT_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 14];
    /// id-ce-keyUsage.
    pub const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
    /// id-ce-basicConstraints.
    pub const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
    /// id-ce-certificatePolicies.
    pub const CERTIFICATE_POLICIES: &[u64] = &[2, 5, 29, 32];
    /// id-ce-authorityKeyIdentifier.
    pub const AUTHORITY_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 35];
    /// id-ce-extKeyUsage.
    pub const EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
    /// id-pe-qcStatements.
    pub const QC_STATEMENTS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 3];

    /// ETSI QcCompliance.
    pub const QC_COMPLIANCE: &[u64] = &[0, 4, 0, 1862, 1, 1];
    /// ETSI QcSSCD: the private key is on a qualified signature creation device.
    pub const QC_SSCD: &[u64] = &[0, 4, 0, 1862, 1, 4];
    /// ETSI QcType.
    pub const QC_TYPE: &[u64] = &[0, 4, 0, 1862, 1, 6];
    /// ETSI QcType esign.
    pub const QC_TYPE_ESIGN: &[u64] = &[0, 4, 0, 1862, 1, 6, 1];
    /// ETSI QcType eseal.
    pub const QC_TYPE_ESEAL: &[u64] = &[0, 4, 0, 1862, 1, 6, 2];
    /// Ukrainian qualified-certificate statement.
    pub const UA_QC_STATEMENT: &[u64] = &[1, 2, 804, 2, 1, 1, 1, 2, 1];
    /// Ukrainian qualified-certificate policy.
    pub const UA_QC_POLICY: &[u64] = &[1, 2, 804, 2, 1, 1, 1, 2, 2];
    /// DRFO (personal tax number) attribute in Subject Directory Attributes.
    pub const DRFO: &[u64] = &[1, 2, 804, 2, 1, 1, 1, 11, 1, 4, 1, 1];
    /// EDRPOU (organisation code) attribute in Subject Directory Attributes.
    pub const EDRPOU: &[u64] = &[1, 2, 804, 2, 1, 1, 1, 11, 1, 4, 2, 1];
    /// Extended key usage "stamp" (electronic seal) of Ukrainian certificates.
    pub const UA_EKU_STAMP: &[u64] = &[1, 2, 804, 2, 1, 1, 1, 3, 9];

    /// DSTU 4145 public key, little-endian encoding.
    pub const DSTU_4145_LE: &[u64] = &[1, 2, 804, 2, 1, 1, 1, 1, 3, 1, 1];
    /// DSTU 4145 named curve m=257 (pb 257).
    pub const DSTU_4145_CURVE_M257: &[u64] = &[1, 2, 804, 2, 1, 1, 1, 1, 3, 1, 1, 2, 6];
    /// ecdsa-with-SHA256.
    pub const ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
}

/// What a certificate says about its holder; the key algorithm comes from the object kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Profile {
    /// Only a common name; key usage digitalSignature. Cheap, for benchmarks.
    Plain {
        /// Subject CN.
        common_name: String,
    },
    /// A Ukrainian qualified certificate of a natural person (QcType esign).
    UaPerson(Person),
    /// A Ukrainian qualified certificate of an organisation's seal (QcType eseal).
    UaSeal(Seal),
}

/// Subject of a personal qualified certificate. Missing JSON fields take the defaults of
/// [`Person::default`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Person {
    /// Full name: CN.
    pub common_name: String,
    /// Surname.
    pub surname: String,
    /// Given name and patronymic.
    pub given_name: String,
    /// Position.
    pub title: String,
    /// Employer: O.
    pub organization: String,
    /// L.
    pub locality: String,
    /// Personal tax number, 10 digits: subject serialNumber `TINUA-<drfo>` and the DRFO
    /// attribute.
    pub drfo: String,
    /// Employer's code, 8 digits: organizationIdentifier `NTRUA-<edrpou>` and the EDRPOU
    /// attribute.
    pub edrpou: String,
}

impl Default for Person {
    /// Іваненко Іван Іванович of Прилуцька міська рада (made-up numbers).
    fn default() -> Self {
        Self {
            common_name: "Іваненко Іван Іванович".to_owned(),
            surname: "Іваненко".to_owned(),
            given_name: "Іван Іванович".to_owned(),
            title: "Начальник відділу".to_owned(),
            organization: "Прилуцька міська рада".to_owned(),
            locality: "Прилуки".to_owned(),
            drfo: "1234567890".to_owned(),
            edrpou: "12345678".to_owned(),
        }
    }
}

/// Subject of an organisation's qualified seal certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Seal {
    /// CN, the seal's name.
    pub common_name: String,
    /// O.
    pub organization: String,
    /// L.
    pub locality: String,
    /// Organisation code, 8 digits: organizationIdentifier `NTRUA-<edrpou>` and the EDRPOU
    /// attribute.
    pub edrpou: String,
}

impl Default for Seal {
    /// The seal of the administrative services centre (ЦНАП) of Прилуцька міська рада.
    fn default() -> Self {
        Self {
            common_name: "ЦНАП Прилуцької міської ради".to_owned(),
            organization: "Прилуцька міська рада".to_owned(),
            locality: "Прилуки".to_owned(),
            edrpou: "12345678".to_owned(),
        }
    }
}

impl Profile {
    /// A plain profile with this common name.
    pub fn plain(common_name: &str) -> Self {
        Self::Plain {
            common_name: common_name.to_owned(),
        }
    }

    /// The default Ukrainian person (see [`Person::default`]).
    pub fn ua_person() -> Self {
        Self::UaPerson(Person::default())
    }

    /// The default Ukrainian seal (see [`Seal::default`]).
    pub fn ua_seal() -> Self {
        Self::UaSeal(Seal::default())
    }

    /// Checks the numbers that must be digits of a fixed length.
    pub fn validate(&self) -> anyhow::Result<()> {
        let digits = |name: &str, value: &str, len: usize| {
            ensure!(
                value.len() == len && value.bytes().all(|b| b.is_ascii_digit()),
                "{name} must be {len} digits, not {value:?}"
            );
            Ok(())
        };
        match self {
            Self::Plain { .. } => Ok(()),
            Self::UaPerson(person) => {
                digits("DRFO", &person.drfo, 10)?;
                digits("EDRPOU", &person.edrpou, 8)
            }
            Self::UaSeal(seal) => digits("EDRPOU", &seal.edrpou, 8),
        }
    }

    /// The subject name, as an ordered list of attributes (one per RDN).
    pub(crate) fn subject(&self) -> Vec<NameAttribute> {
        use NameAttribute as A;
        match self {
            Self::Plain { common_name } => vec![A::utf8(oid::COMMON_NAME, common_name)],
            Self::UaPerson(p) => vec![
                A::utf8(oid::ORGANIZATION, &p.organization),
                A::utf8(oid::TITLE, &p.title),
                A::utf8(oid::COMMON_NAME, &p.common_name),
                A::utf8(oid::SURNAME, &p.surname),
                A::utf8(oid::GIVEN_NAME, &p.given_name),
                A::printable(oid::SERIAL_NUMBER, &format!("TINUA-{}", p.drfo)),
                A::printable(oid::COUNTRY, "UA"),
                A::utf8(oid::LOCALITY, &p.locality),
                A::printable(oid::ORGANIZATION_IDENTIFIER, &format!("NTRUA-{}", p.edrpou)),
            ],
            Self::UaSeal(s) => vec![
                A::utf8(oid::ORGANIZATION, &s.organization),
                A::utf8(oid::COMMON_NAME, &s.common_name),
                A::printable(oid::ORGANIZATION_IDENTIFIER, &format!("NTRUA-{}", s.edrpou)),
                A::printable(oid::COUNTRY, "UA"),
                A::utf8(oid::LOCALITY, &s.locality),
            ],
        }
    }

    /// The profile's own extensions (the CA adds key identifiers and basic constraints).
    pub(crate) fn extensions(&self) -> Vec<Extension> {
        match self {
            Self::Plain { .. } => vec![key_usage(false)],
            Self::UaPerson(p) => vec![
                key_usage(true),
                certificate_policies(&[oid::UA_QC_POLICY]),
                qc_statements(oid::QC_TYPE_ESIGN),
                subject_directory_attributes(&[(oid::DRFO, &p.drfo), (oid::EDRPOU, &p.edrpou)]),
            ],
            Self::UaSeal(s) => vec![
                key_usage(true),
                extended_key_usage(&[oid::UA_EKU_STAMP]),
                certificate_policies(&[oid::UA_QC_POLICY]),
                qc_statements(oid::QC_TYPE_ESEAL),
                subject_directory_attributes(&[(oid::EDRPOU, &s.edrpou)]),
            ],
        }
    }
}

/// One attribute of a distinguished name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NameAttribute {
    pub(crate) oid: &'static [u64],
    pub(crate) value: String,
    /// PrintableString when true, else UTF8String.
    pub(crate) printable: bool,
}

impl NameAttribute {
    fn utf8(oid: &'static [u64], value: &str) -> Self {
        Self {
            oid,
            value: value.to_owned(),
            printable: false,
        }
    }

    fn printable(oid: &'static [u64], value: &str) -> Self {
        Self {
            oid,
            value: value.to_owned(),
            printable: true,
        }
    }
}

/// An X.509 extension: OID, criticality and the DER of its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Extension {
    pub(crate) oid: &'static [u64],
    pub(crate) critical: bool,
    pub(crate) value: Vec<u8>,
}

fn oid_of(arcs: &[u64]) -> yasna::models::ObjectIdentifier {
    yasna::models::ObjectIdentifier::from_slice(arcs)
}

/// Writes a Name (SEQUENCE OF SET OF AttributeTypeAndValue), one attribute per RDN.
pub(crate) fn write_name(writer: yasna::DERWriter<'_>, name: &[NameAttribute]) {
    writer.write_sequence(|writer| {
        for attribute in name {
            writer.next().write_set(|writer| {
                writer.next().write_sequence(|writer| {
                    writer.next().write_oid(&oid_of(attribute.oid));
                    if attribute.printable {
                        writer.next().write_printable_string(&attribute.value);
                    } else {
                        writer.next().write_utf8_string(&attribute.value);
                    }
                });
            });
        }
    });
}

/// keyUsage (critical): digitalSignature, plus nonRepudiation for qualified profiles.
fn key_usage(non_repudiation: bool) -> Extension {
    // Bits are numbered from the most significant bit of the first byte.
    let (bits, len) = if non_repudiation {
        (0b1100_0000, 2)
    } else {
        (0b1000_0000, 1)
    };
    Extension {
        oid: oid::KEY_USAGE,
        critical: true,
        value: yasna::construct_der(|w| w.write_bitvec_bytes(&[bits], len)),
    }
}

/// extKeyUsage (non-critical) with the given purposes.
fn extended_key_usage(purposes: &[&[u64]]) -> Extension {
    Extension {
        oid: oid::EXT_KEY_USAGE,
        critical: false,
        value: yasna::construct_der(|w| {
            w.write_sequence(|w| {
                for purpose in purposes {
                    w.next().write_oid(&oid_of(purpose));
                }
            });
        }),
    }
}

/// certificatePolicies: SEQUENCE OF PolicyInformation { policyIdentifier }.
fn certificate_policies(policies: &[&[u64]]) -> Extension {
    Extension {
        oid: oid::CERTIFICATE_POLICIES,
        critical: false,
        value: yasna::construct_der(|w| {
            w.write_sequence(|w| {
                for policy in policies {
                    w.next()
                        .write_sequence(|w| w.next().write_oid(&oid_of(policy)));
                }
            });
        }),
    }
}

/// qcStatements: QcCompliance, QcSSCD, QcType { esign | eseal }, and the Ukrainian statement.
fn qc_statements(qc_type: &[u64]) -> Extension {
    Extension {
        oid: oid::QC_STATEMENTS,
        critical: false,
        value: yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next()
                    .write_sequence(|w| w.next().write_oid(&oid_of(oid::QC_COMPLIANCE)));
                w.next()
                    .write_sequence(|w| w.next().write_oid(&oid_of(oid::QC_SSCD)));
                w.next().write_sequence(|w| {
                    w.next().write_oid(&oid_of(oid::QC_TYPE));
                    w.next()
                        .write_sequence(|w| w.next().write_oid(&oid_of(qc_type)));
                });
                w.next()
                    .write_sequence(|w| w.next().write_oid(&oid_of(oid::UA_QC_STATEMENT)));
            });
        }),
    }
}

/// subjectDirectoryAttributes: SEQUENCE OF Attribute { type, values SET OF PrintableString }.
fn subject_directory_attributes(attributes: &[(&[u64], &str)]) -> Extension {
    Extension {
        oid: oid::SUBJECT_DIRECTORY_ATTRIBUTES,
        critical: false,
        value: yasna::construct_der(|w| {
            w.write_sequence(|w| {
                for (attribute, value) in attributes {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid_of(attribute));
                        w.next()
                            .write_set(|w| w.next().write_printable_string(value));
                    });
                }
            });
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_validate_their_numbers() {
        assert!(Profile::ua_person().validate().is_ok());
        let person = Person {
            drfo: "12345".to_owned(),
            ..Person::default()
        };
        assert!(Profile::UaPerson(person).validate().is_err());
    }

    #[test]
    fn sda_encodes_attribute_sequence() {
        let ext = subject_directory_attributes(&[(oid::EDRPOU, "12345678")]);
        // SEQUENCE { SEQUENCE { OID, SET { PrintableString "12345678" } } }
        assert_eq!(ext.value[0], 0x30);
        assert_eq!(ext.value[2], 0x30);
        assert!(ext
            .value
            .ends_with(&[0x31, 0x0a, 0x13, 0x08, b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8']));
    }

    #[test]
    fn key_usage_bits() {
        // BIT STRING with 6 unused bits: digitalSignature + nonRepudiation; 7: digitalSignature.
        assert_eq!(key_usage(true).value, vec![0x03, 0x02, 0x06, 0xc0]);
        assert_eq!(key_usage(false).value, vec![0x03, 0x02, 0x07, 0x80]);
    }
}
