//! X.509 certificates: turns DER bytes into an owned [`CertInfo`] with the Ukrainian fields the
//! custody journal needs (DRFO / EDRPOU codes, qcStatements, DSTU 4145 keys), and computes the
//! public-key fingerprints that pair a certificate with PKCS#11 key objects.
//!
//! This is the only module that uses `x509_parser` (and the `asn1_rs` it re-exports); none of its
//! types leave this file. It reads certificates only: it never verifies signatures or chains.
//! Strings are kept as decoded, control characters included: escaping for display is the
//! caller's job.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::asn1_rs::{Any, Class, FromDer, Tag, ToDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{ExtendedKeyUsage, KeyUsage, ParsedExtension};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

mod dstu;
mod ocsp;
mod revocation;

pub use dstu::{dstu_public_key, dstu_signature_octets, DstuCurve, DstuKey};
pub use ocsp::{ocsp_signed, OcspSigned};

pub use revocation::{
    issued_cert, parse_crl, reason_name, CrlInfo, IssuedCert, RevokedEntry, Signed,
};

const OID_EC: &str = "1.2.840.10045.2.1";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_DSTU4145_LE: &str = "1.2.804.2.1.1.1.1.3.1.1";
const OID_DSTU4145_BE: &str = "1.2.804.2.1.1.1.1.3.1.1.1.1";
/// Named DSTU 4145 curves are `1.2.804.2.1.1.1.1.3.1.1.2.N`, N = 0..=9.
const DSTU_CURVE_PREFIX: &str = "1.2.804.2.1.1.1.1.3.1.1.2.";
const DSTU_CURVE_M: [u32; 10] = [163, 167, 173, 179, 191, 233, 257, 307, 367, 431];
const OID_QC_STATEMENTS: &str = "1.3.6.1.5.5.7.1.3";
const OID_SUBJECT_DIRECTORY_ATTRIBUTES: &str = "2.5.29.9";
const OID_DRFO: &str = "1.2.804.2.1.1.1.11.1.4.1.1";
const OID_EDRPOU: &str = "1.2.804.2.1.1.1.11.1.4.2.1";
const OID_QC_COMPLIANCE: &str = "0.4.0.1862.1.1";
const OID_QC_SSCD: &str = "0.4.0.1862.1.4";
const OID_QC_TYPE: &str = "0.4.0.1862.1.6";
const OID_UA_QC_STATEMENT: &str = "1.2.804.2.1.1.1.2.1";
const OID_UA_QC_POLICY: &str = "1.2.804.2.1.1.1.2.2";

/// Error parsing a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The bytes are not one DER-encoded X.509 certificate (garbage, truncated, empty, or
    /// followed by trailing bytes). Check that the object really holds a certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(String),
}

/// What the journal needs to know about one certificate; owned, serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// Subject name, RFC 4514 style: last RDN first, `, ` between RDNs, `+` inside one; strings
    /// decoded (UTF8String, PrintableString, BMPString, ...) with `\` only before `,` `+` `;` `\`
    /// and edge spaces (quotes and control characters stay as they are); non-string values as
    /// `#` + DER hex; unknown attribute types as dotted OIDs.
    pub subject: String,
    /// Issuer name, same format as `subject`.
    pub issuer: String,
    /// Serial number, lower-case hex without separators or leading `00` bytes (zero is `00`).
    pub serial: String,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Lower-case hex SHA-256 of the whole DER certificate.
    pub sha256: String,
    /// The subject public key's algorithm.
    pub key: KeyAlgorithm,
    /// Lower-case hex SHA-256 of the key material, to pair with PKCS#11 key objects through
    /// [`ec_point_fingerprint`] / [`rsa_modulus_fingerprint`]: EC the point (`04||X||Y`),
    /// Ed25519 the raw key, RSA the modulus without leading zeros, anything else (DSTU 4145) the
    /// subjectPublicKey bytes, or the content of the DER OCTET STRING they hold.
    pub public_key_sha256: String,
    /// Key usage bits by name (`digitalSignature`, `nonRepudiation`, ...), in RFC 5280 order.
    pub key_usage: Vec<String>,
    /// Extended key usages: known names first (`anyExtendedKeyUsage`, `serverAuth`, `clientAuth`,
    /// `codeSigning`, `emailProtection`, `timeStamping`, `OCSPSigning`), then dotted OIDs.
    pub extended_key_usage: Vec<String>,
    /// Basic constraints say this is a CA certificate.
    pub is_ca: bool,
    /// The first subject commonName, else givenName + " " + surname.
    pub holder_name: Option<String>,
    /// Subject organizationName.
    pub organization: Option<String>,
    /// Personal tax number (RNOKPP / DRFO) of the holder: the DRFO attribute of the Subject
    /// Directory Attributes, else a subject serialNumber `TINUA-<digits>`.
    pub tax_number: Option<TaxNumber>,
    /// Organisation code (EDRPOU): the EDRPOU attribute of the Subject Directory Attributes,
    /// else a subject organizationIdentifier `NTRUA-<digits>`.
    pub org_code: Option<OrgCode>,
    /// What the qcStatements extension and the certificate policies say.
    pub qc: QcStatements,
}

/// Algorithm of a subject public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAlgorithm {
    /// Dotted OID of the SubjectPublicKeyInfo algorithm.
    pub oid: String,
    /// `EC`, `RSA`, `DSTU 4145`, `Ed25519`, else the OID.
    pub name: String,
    /// Curve: `P-256`, `P-384`, `secp256k1`, ..., `DSTU 4145 m=257` (named DSTU curve, or the
    /// field degree of explicit DSTU parameters), or the dotted OID of an unknown named curve.
    pub curve: Option<String>,
    /// RSA modulus bits, or the field size of a known curve (DSTU 4145: m).
    pub bits: Option<u32>,
}

/// A personal tax number (RNOKPP, formerly DRFO code) and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxNumber {
    /// The number, as written in the certificate.
    pub value: String,
    /// Where it was found.
    pub source: IdSource,
}

/// An organisation code (EDRPOU) and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgCode {
    /// The code, as written in the certificate.
    pub value: String,
    /// Where it was found.
    pub source: IdSource,
}

/// Where a tax number or organisation code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdSource {
    /// The Subject Directory Attributes extension (DRFO / EDRPOU attributes).
    SubjectDirectoryAttributes,
    /// Subject serialNumber `TINUA-<digits>`.
    SubjectSerialNumber,
    /// Subject organizationIdentifier `NTRUA-<digits>`.
    OrganizationIdentifier,
}

/// Qualified-certificate statements (ETSI EN 319 412-5) and the Ukrainian qualified markers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QcStatements {
    /// The qcStatements extension is present (even if it could not be parsed).
    pub present: bool,
    /// QcCompliance: an EU-style qualified certificate.
    pub compliance: bool,
    /// QcSSCD: the private key lives on a qualified signature creation device.
    pub sscd: bool,
    /// QcType values: `esign`, `eseal`, `web`, else dotted OIDs.
    pub types: Vec<String>,
    /// Ukrainian qualified: statement 1.2.804.2.1.1.1.2.1 or policy 1.2.804.2.1.1.1.2.2.
    pub ua_qualified: bool,
}

impl CertInfo {
    /// Parses one DER certificate. Only bytes that are not exactly one X.509 certificate fail;
    /// extensions that cannot be understood leave their fields empty.
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let malformed = |e: String| CertError::Malformed(e);
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed(format!(
                "{} bytes follow the certificate",
                rest.len()
            )));
        }
        let tbs = &cert.tbs_certificate;
        let (mut key_usage, mut extended_key_usage, mut is_ca) = (Vec::new(), Vec::new(), false);
        let (mut qc, mut sda) = (QcStatements::default(), SubjectDirectory::default());
        for ext in tbs.extensions() {
            match (ext.oid.to_id_string().as_str(), ext.parsed_extension()) {
                (OID_QC_STATEMENTS, _) => parse_qc_statements(ext.value, &mut qc),
                (OID_SUBJECT_DIRECTORY_ATTRIBUTES, _) => sda = parse_subject_directory(ext.value),
                (_, ParsedExtension::KeyUsage(ku)) => key_usage = key_usage_names(ku),
                (_, ParsedExtension::ExtendedKeyUsage(eku)) => extended_key_usage = eku_names(eku),
                (_, ParsedExtension::BasicConstraints(bc)) => is_ca = bc.ca,
                (_, ParsedExtension::CertificatePolicies(policies)) => {
                    let ua = policies
                        .iter()
                        .any(|p| p.policy_id.to_id_string() == OID_UA_QC_POLICY);
                    qc.ua_qualified |= ua;
                }
                _ => {}
            }
        }
        let first = |oid: &str| {
            let mut attrs = tbs.subject().iter_attributes();
            attrs
                .find(|a| a.attr_type().to_id_string() == oid)
                .map(|a| decode_value(a.attr_value()))
        };
        // Subject Directory Attributes win over the TINUA- / NTRUA- subject attributes.
        let code = |from_sda: Option<String>, oid: &str, prefix: &str, source: IdSource| {
            from_sda
                .map(|v| (v, IdSource::SubjectDirectoryAttributes))
                .or_else(|| {
                    let value = first(oid)?;
                    let digits = value.trim().strip_prefix(prefix)?;
                    let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                    ok.then(|| (digits.to_owned(), source))
                })
        };
        let tax = code(sda.drfo, "2.5.4.5", "TINUA-", IdSource::SubjectSerialNumber);
        let org_source = IdSource::OrganizationIdentifier;
        let org = code(sda.edrpou, "2.5.4.97", "NTRUA-", org_source);
        let (key, public_key_sha256) = key_algorithm(tbs.public_key());
        Ok(Self {
            subject: format_name(tbs.subject()),
            issuer: format_name(tbs.issuer()),
            serial: hex::encode(strip_leading_zeros(tbs.raw_serial())),
            not_before: tbs.validity().not_before.to_datetime(),
            not_after: tbs.validity().not_after.to_datetime(),
            sha256: sha256_hex(der),
            key,
            public_key_sha256,
            key_usage,
            extended_key_usage,
            is_ca,
            holder_name: first("2.5.4.3").or_else(|| {
                let names = [first("2.5.4.42"), first("2.5.4.4")];
                let names: Vec<String> = names.into_iter().flatten().collect();
                (!names.is_empty()).then(|| names.join(" "))
            }),
            organization: first("2.5.4.10"),
            tax_number: tax.map(|(value, source)| TaxNumber { value, source }),
            org_code: org.map(|(value, source)| OrgCode { value, source }),
            qc,
        })
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Fingerprint of a PKCS#11 `CKA_EC_POINT` value, equal to a certificate's
/// [`CertInfo::public_key_sha256`] for the same key.
///
/// Accepts the DER OCTET STRING that PKCS#11 specifies (SoftHSM) or a raw point (some modules).
/// A value is taken as raw when it is an uncompressed SEC1 point of a standard size (`04`, 49,
/// 57, 65, 97, 129 or 133 bytes; no DER-wrapped point has those lengths); otherwise, when it is
/// exactly one DER OCTET STRING, its content is used; else the bytes as they are.
pub fn ec_point_fingerprint(ec_point: &[u8]) -> String {
    const RAW_UNCOMPRESSED_LENS: [usize; 6] = [49, 57, 65, 97, 129, 133];
    if ec_point.first() == Some(&0x04) && RAW_UNCOMPRESSED_LENS.contains(&ec_point.len()) {
        return sha256_hex(ec_point);
    }
    sha256_hex(octet_string_content(ec_point).unwrap_or(ec_point))
}

/// Fingerprint of an RSA modulus (`CKA_MODULUS`, big-endian; leading zero bytes ignored), equal to
/// a certificate's [`CertInfo::public_key_sha256`] for the same key.
pub fn rsa_modulus_fingerprint(modulus: &[u8]) -> String {
    sha256_hex(strip_leading_zeros(modulus))
}

/// Drops leading zero bytes but keeps at least one byte.
fn strip_leading_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        if rest.is_empty() {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// Algorithm description and public-key fingerprint of a SubjectPublicKeyInfo.
fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> (KeyAlgorithm, String) {
    let oid = spki.algorithm.algorithm.to_id_string();
    let key_bytes: &[u8] = &spki.subject_public_key.data;
    let unwrapped = octet_string_content(key_bytes).unwrap_or(key_bytes);
    let params = spki.algorithm.parameters.as_ref();
    let (name, curve, bits, material) = match oid.as_str() {
        OID_EC => {
            let curve = params.and_then(der_oid);
            let named = curve.as_deref().and_then(ec_curve);
            let curve = named.map(|(name, _)| name.to_owned()).or(curve);
            ("EC", curve, named.map(|(_, bits)| bits), key_bytes)
        }
        OID_RSA => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let modulus = strip_leading_zeros(rsa.modulus);
                ("RSA", None, modulus_bits(modulus), modulus)
            }
            _ => ("RSA", None, None, key_bytes),
        },
        OID_ED25519 => ("Ed25519", None, None, key_bytes),
        OID_DSTU4145_LE | OID_DSTU4145_BE => {
            let (curve, bits) = params.map_or((None, None), dstu_curve);
            ("DSTU 4145", curve, bits, unwrapped)
        }
        _ => (oid.as_str(), None, None, unwrapped),
    };
    let alg = KeyAlgorithm {
        oid: oid.clone(),
        name: name.to_owned(),
        curve,
        bits,
    };
    (alg, sha256_hex(material))
}

fn ec_curve(oid: &str) -> Option<(&'static str, u32)> {
    Some(match oid {
        "1.2.840.10045.3.1.7" => ("P-256", 256),
        "1.3.132.0.34" => ("P-384", 384),
        "1.3.132.0.35" => ("P-521", 521),
        "1.3.132.0.10" => ("secp256k1", 256),
        "1.3.132.0.33" => ("P-224", 224),
        "1.2.840.10045.3.1.1" => ("P-192", 192),
        "1.3.36.3.3.2.8.1.1.7" => ("brainpoolP256r1", 256),
        "1.3.36.3.3.2.8.1.1.11" => ("brainpoolP384r1", 384),
        "1.3.36.3.3.2.8.1.1.13" => ("brainpoolP512r1", 512),
        _ => return None,
    })
}

fn modulus_bits(modulus: &[u8]) -> Option<u32> {
    let first = modulus.first()?;
    let len = u32::try_from(modulus.len()).ok()?;
    Some((len - 1) * 8 + (8 - first.leading_zeros()))
}

/// DSTU 4145 parameters: `SEQUENCE { namedCurve OID | ECBinary, dke OCTET STRING OPTIONAL }`,
/// `ECBinary ::= SEQUENCE { version [0] OPTIONAL, f SEQUENCE { m INTEGER, .. }, a, b, n, bp }`.
fn dstu_curve(params: &Any<'_>) -> (Option<String>, Option<u32>) {
    let Some(first) = der_children(params, Tag::Sequence).and_then(|p| p.into_iter().next()) else {
        return (None, None);
    };
    let m = match der_oid(&first) {
        Some(oid) => {
            let n = oid
                .strip_prefix(DSTU_CURVE_PREFIX)
                .and_then(|n| n.parse::<usize>().ok());
            match n.and_then(|n| DSTU_CURVE_M.get(n)) {
                Some(&m) => Some(m),
                None => return (Some(oid), None),
            }
        }
        None => der_children(&first, Tag::Sequence)
            .and_then(|ecb| ecb.into_iter().find(|a| a.class() == Class::Universal))
            .and_then(|field| der_children(&field, Tag::Sequence)?.into_iter().next())
            .filter(|m| m.class() == Class::Universal)
            .and_then(|m| m.as_u32().ok()),
    };
    (m.map(|m| format!("DSTU 4145 m={m}")), m)
}

fn key_usage_names(ku: &KeyUsage) -> Vec<String> {
    const BITS: &str = "digitalSignature nonRepudiation keyEncipherment dataEncipherment \
        keyAgreement keyCertSign cRLSign encipherOnly decipherOnly";
    let set = BITS
        .split_whitespace()
        .enumerate()
        .filter(|(bit, _)| ku.flags >> bit & 1 == 1);
    set.map(|(_, name)| name.to_owned()).collect()
}

fn eku_names(eku: &ExtendedKeyUsage<'_>) -> Vec<String> {
    let known = [
        (eku.any, "anyExtendedKeyUsage"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ];
    let names = known
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| (*name).to_owned());
    names
        .chain(eku.other.iter().map(|oid| oid.to_id_string()))
        .collect()
}

/// The Ukrainian codes found in the Subject Directory Attributes extension.
#[derive(Default)]
struct SubjectDirectory {
    drfo: Option<String>,
    edrpou: Option<String>,
}

/// `SubjectDirectoryAttributes ::= SEQUENCE OF Attribute`,
/// `Attribute ::= SEQUENCE { type OID, values SET OF ANY }`. The first string value counts;
/// it is kept as written (a DRFO attribute may hold a passport number instead of digits).
fn parse_subject_directory(value: &[u8]) -> SubjectDirectory {
    let mut found = SubjectDirectory::default();
    let attrs = der_one(value).and_then(|top| der_children(&top, Tag::Sequence));
    for attr in attrs.unwrap_or_default() {
        let parts = der_children(&attr, Tag::Sequence).unwrap_or_default();
        let (Some(oid), Some(values)) = (parts.first().and_then(der_oid), parts.get(1)) else {
            continue;
        };
        let slot = match oid.as_str() {
            OID_DRFO => &mut found.drfo,
            OID_EDRPOU => &mut found.edrpou,
            _ => continue,
        };
        let values = der_children(values, Tag::Set).unwrap_or_default();
        if slot.is_none() {
            *slot = values
                .iter()
                .find_map(string_value)
                .filter(|v| !v.trim().is_empty());
        }
    }
    found
}

/// `QCStatements ::= SEQUENCE OF SEQUENCE { statementId OID, statementInfo ANY OPTIONAL }`.
/// Marks the extension present; statements that cannot be parsed are skipped.
fn parse_qc_statements(value: &[u8], qc: &mut QcStatements) {
    qc.present = true;
    let statements = der_one(value).and_then(|top| der_children(&top, Tag::Sequence));
    for statement in statements.unwrap_or_default() {
        let parts = der_children(&statement, Tag::Sequence).unwrap_or_default();
        match parts.first().and_then(der_oid).as_deref() {
            Some(OID_QC_COMPLIANCE) => qc.compliance = true,
            Some(OID_QC_SSCD) => qc.sscd = true,
            Some(OID_UA_QC_STATEMENT) => qc.ua_qualified = true,
            Some(OID_QC_TYPE) => {
                let types = parts
                    .get(1)
                    .and_then(|info| der_children(info, Tag::Sequence));
                for oid in types.unwrap_or_default().iter().filter_map(der_oid) {
                    qc.types.push(match oid.as_str() {
                        "0.4.0.1862.1.6.1" => "esign".to_owned(),
                        "0.4.0.1862.1.6.2" => "eseal".to_owned(),
                        "0.4.0.1862.1.6.3" => "web".to_owned(),
                        _ => oid,
                    });
                }
            }
            _ => {}
        }
    }
}

/// Exactly one DER element, nothing after it.
fn der_one(input: &[u8]) -> Option<Any<'_>> {
    match Any::from_der(input) {
        Ok(([], any)) => Some(any),
        _ => None,
    }
}

/// The elements inside a universal constructed SEQUENCE or SET.
fn der_children<'a>(any: &Any<'a>, tag: Tag) -> Option<Vec<Any<'a>>> {
    if any.class() != Class::Universal || any.tag() != tag || !any.header.is_constructed() {
        return None;
    }
    let (mut rest, mut items) = (any.data, Vec::new());
    while !rest.is_empty() {
        let (next, item) = Any::from_der(rest).ok()?;
        items.push(item);
        rest = next;
    }
    Some(items)
}

/// An OBJECT IDENTIFIER as a dotted string. The tag and the encoding are checked here because
/// `Any::as_oid` checks neither (it reads any bytes as arcs).
fn der_oid(any: &Any<'_>) -> Option<String> {
    let is_oid = any.class() == Class::Universal && any.tag() == Tag::Oid;
    let complete = any.data.last().is_some_and(|b| b & 0x80 == 0);
    let oid = (is_oid && complete && !any.header.is_constructed()).then(|| any.as_oid().ok());
    oid.flatten().map(|o| o.to_id_string())
}

fn octet_string_content(bytes: &[u8]) -> Option<&[u8]> {
    let any = der_one(bytes)?;
    let primitive = any.class() == Class::Universal && !any.header.is_constructed();
    (primitive && any.tag() == Tag::OctetString).then_some(any.data)
}

/// Decodes an ASN.1 character string (invalid code units become U+FFFD); `None` for other types.
fn string_value(any: &Any<'_>) -> Option<String> {
    if any.class() != Class::Universal || any.header.is_constructed() {
        return None;
    }
    let data = any.data;
    Some(match any.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => String::from_utf8_lossy(data).into_owned(),
        // T.61 in practice carries Latin-1.
        Tag::TeletexString => data.iter().map(|&b| char::from(b)).collect(),
        Tag::BmpString => {
            let units = data.chunks(2).map(|c| match c {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                _ => 0xFFFD,
            });
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
        Tag::UniversalString => data
            .chunks(4)
            .map(|c| <[u8; 4]>::try_from(c).map_or(0xFFFD, u32::from_be_bytes))
            .map(|code| char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        _ => return None,
    })
}

/// A string value as text; anything else as `#` + hex of its DER encoding (RFC 4514).
fn decode_value(any: &Any<'_>) -> String {
    string_value(any).unwrap_or_else(|| {
        let der = any.to_der_vec().unwrap_or_else(|_| any.data.to_vec());
        format!("#{}", hex::encode(der))
    })
}

fn attribute_label(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "surname",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "givenName",
        "2.5.4.43" => "initials",
        "2.5.4.97" => "organizationIdentifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// RFC 4514 order (last RDN first), `+` between the values of a multi-valued RDN.
fn format_name(name: &X509Name<'_>) -> String {
    let rdns = name.iter_rdn().map(|rdn| {
        let avas = rdn.iter().map(|ava| {
            let oid = ava.attr_type().to_id_string();
            let label = attribute_label(&oid).map_or(oid.clone(), str::to_owned);
            let value = string_value(ava.attr_value()).map_or_else(
                || decode_value(ava.attr_value()),
                |text| escape_value(&text),
            );
            format!("{label}={value}")
        });
        avas.collect::<Vec<_>>().join("+")
    });
    let mut rdns: Vec<String> = rdns.collect();
    rdns.reverse();
    rdns.join(", ")
}

/// Escapes what would change how the name splits into RDNs (`\ , + ;`) and leading `#`/space or
/// trailing space, so nothing is lost; quotes and control characters are left as they are.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let edge = (i == 0 && (c == '#' || c == ' ')) || (i == last && c == ' ');
        if edge || matches!(c, '\\' | ',' | '+' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The subject public key of a certificate, for checking signatures made with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPublicKey {
    /// Algorithm OID, dotted (1.2.840.10045.2.1 for EC, 1.2.840.113549.1.1.1 for RSA).
    pub algorithm_oid: String,
    /// The parameters when they are an OID: the named curve of EC and DSTU 4145 keys.
    pub parameters_oid: Option<String>,
    /// The whole SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

/// Reads the SubjectPublicKeyInfo of a DER certificate.
pub fn subject_public_key(der: &[u8]) -> Result<SubjectPublicKey, CertError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::Malformed(e.to_string()))?;
    let spki = cert.public_key();
    Ok(SubjectPublicKey {
        algorithm_oid: spki.algorithm.algorithm.to_id_string(),
        parameters_oid: spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string()),
        spki_der: spki.raw.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use time::format_description::well_known::Rfc3339;

    const UA_CERTS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/ua-certs/"
    );

    /// Reads a real certificate; `None` (test not run, said on stderr) when the shared test
    /// data is absent — except under CI (`CI` set), where its absence fails the test.
    fn ua_cert(name: &str) -> Option<Vec<u8>> {
        if !Path::new(UA_CERTS).is_dir() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{UA_CERTS} is absent; the tests read ../shared/testdata (CI: failing, not skipping)"
            );
            eprintln!("NOT RUN: {UA_CERTS} is absent");
            return None;
        }
        Some(std::fs::read(Path::new(UA_CERTS).join(name)).expect("read test certificate"))
    }

    /// One line per fact, to pin against what openssl says.
    fn summary(c: &CertInfo) -> String {
        let time = |t: OffsetDateTime| t.format(&Rfc3339).expect("rfc3339");
        let code = |c: Option<(&String, IdSource)>| c.map(|(v, s)| format!("{v} {s:?}"));
        let (k, q) = (&c.key, &c.qc);
        [
            format!("subject {}", c.subject),
            format!("issuer {}", c.issuer),
            format!(
                "serial {} valid {} {}",
                c.serial,
                time(c.not_before),
                time(c.not_after)
            ),
            format!("sha256 {}", c.sha256),
            format!(
                "key {} {:?} {:?} {}",
                k.name, k.curve, k.bits, c.public_key_sha256
            ),
            format!(
                "usage {:?} {:?} ca={}",
                c.key_usage, c.extended_key_usage, c.is_ca
            ),
            format!("holder {:?} org {:?}", c.holder_name, c.organization),
            format!(
                "tax {:?}",
                code(c.tax_number.as_ref().map(|t| (&t.value, t.source)))
            ),
            format!(
                "edrpou {:?}",
                code(c.org_code.as_ref().map(|o| (&o.value, o.source)))
            ),
            format!(
                "qc {} {} {} {:?} {}",
                q.present, q.compliance, q.sscd, q.types, q.ua_qualified
            ),
        ]
        .join("\n")
    }

    /// Established with `openssl x509 -text -nameopt RFC2253,-esc_msb`, `openssl asn1parse`
    /// (SDA, qcStatements, DSTU parameters) and `sha256sum`; `public_key_sha256` is the SHA-256
    /// of the SPKI point (EC) or of the OCTET STRING inside the BIT STRING (DSTU), cut with dd.
    /// None has a DRFO attribute or a TINUA- serialNumber; none has QcType.
    const PINNED: [(&str, &str); 6] = [
        (
            "CA-Justice-ECDSA-261217.cer",
            r#"
            subject organizationIdentifier=NTRUA-39787008, L=Kyiv, C=UA, serialNumber=UA-39787008-1217, CN=CA of the Justice of Ukraine, OU=Certification Authority, O=State enterprise "NAIS"
            issuer organizationIdentifier=NTRUA-00015622, L=Kyiv, C=UA, serialNumber=UA-00015622-256, CN=Central certification authority, OU=Administrator ITS CCA, O=Ministry of Justice of Ukraine
            serial 0a16ad03d02fa86c010000000100000090000000 valid 2017-12-26T18:51:00Z 2022-12-26T18:51:00Z
            sha256 486e2dc1332a16e34d9929cd0f30ec7e45a3a81e9c9550b8df14f4d6eb43964a
            key EC Some("P-256") Some(256) 9d4f27165c4af640110f5e77d129a5df7590eb6a1e70c1b4d5430441da6a1b0a
            usage ["keyCertSign", "cRLSign"] [] ca=true
            holder Some("CA of the Justice of Ukraine") org Some("State enterprise \"NAIS\"")
            tax None
            edrpou Some("39787008 OrganizationIdentifier")
            qc true false false [] true"#,
        ),
        (
            "CA-Justice.cer",
            r#"
            subject L=Київ, C=UA, serialNumber=UA-39787008-2015, CN=АЦСК органів юстиції України, OU=Акредитований центр сертифікації ключів, O=ДП "НАІС"
            issuer L=Київ, C=UA, serialNumber=UA-00015622-2012, CN=Центральний засвідчувальний орган, OU=Адміністратор ІТС ЦЗО, O=Міністерство юстиції України
            serial 3004751def2c78ae010000000100000061000000 valid 2015-12-18T14:00:00Z 2020-12-18T14:00:00Z
            sha256 f28ecf3e6a0dc077f0078cced526a8ce50bc1e33aab69a7ab2d18d30c6814b8b
            key DSTU 4145 Some("DSTU 4145 m=257") Some(257) 3274d90b08406f47b6fc081ee95b209a462e2a130cc62bf2698dedea5dcb230b
            usage ["keyCertSign", "cRLSign"] [] ca=true
            holder Some("АЦСК органів юстиції України") org Some("ДП \"НАІС\"")
            tax None
            edrpou None
            qc true false false [] true"#,
        ),
        (
            "SFS_1.cer",
            r#"
            subject L=Київ, C=UA, serialNumber=2122385, CN=Державна фіскальна служба України.  ОТРИМАНО, O=Державна фіскальна служба України
            issuer L=Київ, C=UA, serialNumber=UA-39384476, CN=Акредитований центр сертифікації ключів ІДД ДФС, OU=Управління (центр) сертифікації ключів ІДД ДФС, O=Інформаційно-довідковий департамент ДФС
            serial 33b6cb7bf721b9ce040000009162200086e34a00 valid 2016-11-02T22:00:00Z 2018-11-02T22:00:00Z
            sha256 97d6468f200bd6cc55be127eba94329e872db83edc13aafa9bb621e1dcbb56db
            key DSTU 4145 Some("DSTU 4145 m=257") Some(257) 5112329640351474a578f7af4b4b4def6354c71c6887edee7fe0d63a1c4d12e8
            usage ["digitalSignature", "nonRepudiation"] ["1.2.804.2.1.1.1.3.9"] ca=false
            holder Some("Державна фіскальна служба України.  ОТРИМАНО") org Some("Державна фіскальна служба України")
            tax None
            edrpou Some("39292197 SubjectDirectoryAttributes")
            qc true false false [] true"#,
        ),
        (
            "diia-CA-05E19E2CD92EA2990100000001000000E1000000.cer",
            r#"
            subject organizationIdentifier=NTRUA-43395033, L=Київ, C=UA, serialNumber=UA-43395033-1000, CN="Дія". Кваліфікований надавач електронних довірчих послуг, O=ДП "ДІЯ"
            issuer L=Київ, C=UA, serialNumber=UA-43220851-2020, CN=Центральний засвідчувальний орган, OU=Адміністратор ІТС ЦЗО, O=Міністерство цифрової трансформації України
            serial 05e19e2cd92ea2990100000001000000e1000000 valid 2020-06-03T07:39:00Z 2025-06-03T07:39:00Z
            sha256 f3290634e25c0fc05f5269031f814f674fa860cb379eac26986f0fa47202fd2e
            key DSTU 4145 Some("DSTU 4145 m=257") Some(257) efac3d2f422d3d9490b22d7bb2646520a09f24ba6ab59c6d5201a470075779fe
            usage ["keyCertSign", "cRLSign"] ["1.3.6.1.4.1.19398.1.1.8.31"] ca=true
            holder Some("\"Дія\". Кваліфікований надавач електронних довірчих послуг") org Some("ДП \"ДІЯ\"")
            tax None
            edrpou Some("43395033 OrganizationIdentifier")
            qc true true true [] true"#,
        ),
        // Explicit ECBinary parameters (no curve OID): x^431 + x^5 + x^3 + x + 1.
        (
            "diia-test-kep-7775604.cer",
            r#"
            subject L=Київ, C=UA, serialNumber=401065, CN=ДП ДІЯ (Тестування), O=ДП ДІЯ (Тестування)
            issuer organizationIdentifier=NTRUA-43395033, L=Київ, C=UA, serialNumber=UA-43395033-1000, CN="Дія". Кваліфікований надавач електронних довірчих послуг, O=ДП "ДІЯ"
            serial 3ed5083160dbc59b04000000a91e060074a57600 valid 2022-04-05T17:57:59Z 2024-04-05T17:57:59Z
            sha256 400de869f3a72f14de1dbf193982d94b602b71b04fea66a2d3e539464df75e2d
            key DSTU 4145 Some("DSTU 4145 m=431") Some(431) 55818c953cf91efabc146ea3c28a6e6ce98e29d9422c1511b6475a08e2a8245f
            usage ["keyAgreement"] [] ca=false
            holder Some("ДП ДІЯ (Тестування)") org Some("ДП ДІЯ (Тестування)")
            tax None
            edrpou Some("43395033 SubjectDirectoryAttributes")
            qc true true false [] true"#,
        ),
        (
            "diia-test-sign-7775603.cer",
            r#"
            subject L=Київ, C=UA, serialNumber=401065, CN=ДП ДІЯ (Тестування), O=ДП ДІЯ (Тестування)
            issuer organizationIdentifier=NTRUA-43395033, L=Київ, C=UA, serialNumber=UA-43395033-1000, CN="Дія". Кваліфікований надавач електронних довірчих послуг, O=ДП "ДІЯ"
            serial 3ed5083160dbc59b04000000a91e060073a57600 valid 2022-04-05T17:57:59Z 2024-04-05T17:57:59Z
            sha256 87638df7d34be31e221be426f7906a58343a29260ed037826183bf64cdc76be8
            key DSTU 4145 Some("DSTU 4145 m=257") Some(257) 40412af6ac61adff0c571f6aa89a7a48a6b143c5753a40dde042ec6f457926c0
            usage ["digitalSignature", "nonRepudiation"] ["1.2.804.2.1.1.1.3.9"] ca=false
            holder Some("ДП ДІЯ (Тестування)") org Some("ДП ДІЯ (Тестування)")
            tax None
            edrpou Some("43395033 SubjectDirectoryAttributes")
            qc true true false [] true"#,
        ),
    ];

    #[test]
    fn every_real_ukrainian_certificate_matches_openssl() {
        let Ok(dir) = std::fs::read_dir(UA_CERTS) else {
            eprintln!("skipping: {UA_CERTS} is absent");
            return;
        };
        let mut seen = 0;
        for entry in dir {
            let name = entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if !name.ends_with(".cer") {
                continue;
            }
            let pinned = PINNED.iter().find(|(file, _)| *file == name);
            let (_, expected) = pinned.unwrap_or_else(|| panic!("pin the facts of {name}"));
            let der = std::fs::read(Path::new(UA_CERTS).join(&name)).expect("read");
            let info = CertInfo::parse(&der).expect(&name);
            let expected: Vec<&str> = expected.trim().lines().map(str::trim).collect();
            assert_eq!(summary(&info), expected.join("\n"), "{name}");
            // A token's key object gives the same fingerprint (as DER OCTET STRING or raw point).
            let (_, cert) = X509Certificate::from_der(&der).expect("parsed above");
            let point: &[u8] = &cert.public_key().subject_public_key.data;
            assert_eq!(
                ec_point_fingerprint(point),
                info.public_key_sha256,
                "{name}"
            );
            let json = serde_json::to_string(&info).expect("serialise");
            assert_eq!(
                serde_json::from_str::<CertInfo>(&json).expect("deserialise"),
                info
            );
            seen += 1;
        }
        assert_eq!(seen, PINNED.len());
    }

    #[test]
    fn non_certificates_are_malformed() {
        let malformed = |der: &[u8]| matches!(CertInfo::parse(der), Err(CertError::Malformed(_)));
        assert!(malformed(b"this is not a certificate at all"));
        assert!(malformed(&[]));
        assert!(malformed(&[0x30, 0x00]));
        let Some(der) = ua_cert("SFS_1.cer") else {
            return;
        };
        for len in [1, 4, 100, der.len() / 2, der.len() - 1] {
            assert!(malformed(&der[..len]), "truncated to {len}");
        }
        let err = CertInfo::parse(&[&der[..], &[0]].concat()).expect_err("trailing byte");
        assert!(err.to_string().contains("1 bytes follow"), "{err}");
    }

    #[test]
    fn corrupted_certificates_never_panic() {
        // EC key; SDA + qcStatements; the richest qcStatements. Every byte, twice (~1 s).
        let files = ["CA-Justice-ECDSA-261217.cer", "SFS_1.cer", PINNED[3].0];
        for file in files {
            let Some(der) = ua_cert(file) else { return };
            for i in 0..der.len() {
                for byte in [0xff, der[i].wrapping_add(1)] {
                    let mut bad = der.clone();
                    bad[i] = byte;
                    let _ = CertInfo::parse(&bad);
                }
            }
        }
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = u8::try_from(content.len())
            .ok()
            .filter(|l| *l < 0x80)
            .expect("short form");
        [&[tag, len][..], content].concat()
    }

    fn oid(hex_body: &str) -> Vec<u8> {
        tlv(0x06, &hex::decode(hex_body).expect("hex"))
    }

    fn seq(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &items.concat())
    }

    const QC_COMPLIANCE: &str = "04008e460101";
    const QC_SSCD: &str = "04008e460104";
    const QC_TYPE: &str = "04008e460106";
    const QC_TYPE_ESIGN: &str = "04008e46010601";

    #[test]
    fn qc_statements_are_read_by_hand() {
        let types = seq(&[oid(QC_TYPE_ESIGN), oid("04008e46010602"), oid("2a03")]);
        let der = seq(&[
            seq(&[oid(QC_COMPLIANCE)]),
            seq(&[oid(QC_SSCD)]),
            seq(&[oid(QC_TYPE), types]),
            seq(&[oid("2a8624020101010201")]),
        ]);
        let mut qc = QcStatements::default();
        parse_qc_statements(&der, &mut qc);
        assert!(qc.present && qc.compliance && qc.sscd && qc.ua_qualified);
        assert_eq!(qc.types, ["esign", "eseal", "1.2.3"]);
        let present = QcStatements {
            present: true,
            ..QcStatements::default()
        };
        for broken in [
            &[][..],
            &[0x30, 0x05, 0x30],
            &[0x04, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
        ] {
            let mut qc = QcStatements::default();
            parse_qc_statements(broken, &mut qc);
            assert_eq!(qc, present, "{broken:?}");
        }
        // A bad statement (or an OCTET STRING posing as an OID) does not hide the good ones.
        let der = seq(&[
            seq(&[tlv(0x04, &[0x2a])]),
            seq(&[tlv(0x13, b"x")]),
            seq(&[oid(QC_SSCD)]),
        ]);
        let mut qc = QcStatements::default();
        parse_qc_statements(&der, &mut qc);
        assert_eq!(
            qc,
            QcStatements {
                sscd: true,
                ..present
            }
        );
    }

    #[test]
    fn strings_of_every_kind_are_decoded() {
        let text = |tag: Tag, data: &[u8]| string_value(&Any::from_tag_and_data(tag, data));
        let bmp: Vec<u8> = "Київ".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(text(Tag::BmpString, &bmp).as_deref(), Some("Київ"));
        assert_eq!(text(Tag::BmpString, &[0x04]).as_deref(), Some("\u{fffd}"));
        let universal: Vec<u8> = "Їж"
            .chars()
            .flat_map(|c| u32::from(c).to_be_bytes())
            .collect();
        assert_eq!(
            text(Tag::UniversalString, &universal).as_deref(),
            Some("Їж")
        );
        assert_eq!(
            text(Tag::TeletexString, b"M\xfcller").as_deref(),
            Some("Müller")
        );
        assert_eq!(
            text(Tag::Utf8String, b"bad \xff").as_deref(),
            Some("bad \u{fffd}")
        );
        assert_eq!(text(Tag::Integer, &[1]), None);
        assert_eq!(
            decode_value(&Any::from_tag_and_data(Tag::Integer, &[1])),
            "#020101"
        );
        assert_eq!(
            escape_value(" #a,b+c;d\\e \"f\" "),
            "\\ #a\\,b\\+c\\;d\\\\e \"f\"\\ "
        );
    }

    #[test]
    fn ec_point_forms_agree() {
        let mut point = vec![0x04, 0x3f];
        point.resize(65, 0xab);
        let raw = ec_point_fingerprint(&point);
        assert_eq!(
            raw,
            sha256_hex(&point),
            "a raw P-256 point that looks like DER stays raw"
        );
        assert_eq!(ec_point_fingerprint(&tlv(0x04, &point)), raw);
        let dstu = [0x5a; 33];
        assert_eq!(ec_point_fingerprint(&tlv(0x04, &dstu)), sha256_hex(&dstu));
        assert_eq!(ec_point_fingerprint(&dstu), sha256_hex(&dstu));
        assert_eq!(
            rsa_modulus_fingerprint(&[0, 0, 0xc1, 2]),
            sha256_hex(&[0xc1, 2])
        );
    }

    /// A scratch directory for openssl, removed on drop.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs openssl in `dir`; `None` (test skipped) when openssl cannot be started.
    fn openssl(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
        let out = Command::new("openssl").current_dir(dir).args(args).output();
        let out = out
            .map_err(|e| eprintln!("skipping: cannot run openssl: {e}"))
            .ok()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl {args:?}: {stderr}");
        Some(out.stdout)
    }

    const P256: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

    /// A self-signed certificate from `openssl req -x509` (key in `key.pem`), and its directory.
    fn openssl_cert(newkey: &[&str], subj: &str, ext: &[&str]) -> Option<(Vec<u8>, TempDir)> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("custody-cert-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let dir = TempDir(dir);
        let mut args = vec![
            "req", "-x509", "-nodes", "-keyout", "key.pem", "-out", "cert.der",
        ];
        args.extend(["-outform", "DER", "-days", "30", "-utf8", "-subj", subj]);
        args.extend(newkey);
        ext.iter().for_each(|e| args.extend(["-addext", e]));
        openssl(&dir.0, &args)?;
        Some((
            std::fs::read(dir.0.join("cert.der")).expect("cert.der"),
            dir,
        ))
    }

    #[test]
    fn generated_ec_certificate_pairs_with_its_point() {
        let ext = [
            "keyUsage=critical,digitalSignature",
            "extendedKeyUsage=clientAuth,1.2.3.4",
        ];
        let Some((der, dir)) = openssl_cert(&P256, "/CN=Тест EC/O=Org/C=UA", &ext) else {
            return;
        };
        let info = CertInfo::parse(&der).expect("parse");
        assert_eq!(info.subject, "C=UA, O=Org, CN=Тест EC");
        assert_eq!(
            (info.key.name.as_str(), info.key.curve.as_deref()),
            ("EC", Some("P-256"))
        );
        assert_eq!((info.key.oid.as_str(), info.key.bits), (OID_EC, Some(256)));
        assert_eq!(info.key_usage, ["digitalSignature"]);
        assert_eq!(info.extended_key_usage, ["clientAuth", "1.2.3.4"]);
        assert_eq!(info.sha256, sha256_hex(&der));
        // The point as openssl exports it: the last 65 bytes of the SubjectPublicKeyInfo.
        let pubout = ["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"];
        let spki = openssl(&dir.0, &pubout).expect("openssl ran before");
        let point = &spki[spki.len() - 65..];
        assert_eq!(ec_point_fingerprint(point), info.public_key_sha256);
        assert_eq!(
            ec_point_fingerprint(&tlv(0x04, point)),
            info.public_key_sha256
        );
    }

    #[test]
    fn generated_rsa_certificate_pairs_with_its_modulus() {
        let rsa = ["-newkey", "rsa:2048"];
        let Some((der, dir)) = openssl_cert(&rsa, "/GN=Іван/SN=Іваненко", &[]) else {
            return;
        };
        let info = CertInfo::parse(&der).expect("parse");
        assert_eq!((info.key.name.as_str(), info.key.bits), ("RSA", Some(2048)));
        assert_eq!(info.key.curve, None);
        assert_eq!(info.holder_name.as_deref(), Some("Іван Іваненко"));
        let out = openssl(&dir.0, &["rsa", "-in", "key.pem", "-noout", "-modulus"]).expect("ran");
        let text = String::from_utf8(out).expect("ascii");
        let modulus = hex::decode(text.trim().trim_start_matches("Modulus=")).expect("hex");
        assert_eq!(rsa_modulus_fingerprint(&modulus), info.public_key_sha256);
        assert_eq!(
            rsa_modulus_fingerprint(&[&[0][..], &modulus].concat()),
            info.public_key_sha256
        );
    }

    #[test]
    fn hostile_subject_is_kept_verbatim() {
        let subj = "/CN=a\u{1}b\u{1b}[31mc\nd,e\\+f/O=x+OU=y";
        let Some((der, _dir)) = openssl_cert(&P256, subj, &[]) else {
            return;
        };
        let info = CertInfo::parse(&der).expect("parse");
        assert_eq!(
            info.holder_name.as_deref(),
            Some("a\u{1}b\u{1b}[31mc\nd,e+f")
        );
        assert_eq!(info.subject, "O=x+OU=y, CN=a\u{1}b\u{1b}[31mc\nd\\,e\\+f");
    }

    #[test]
    fn ukrainian_codes_prefer_subject_directory_attributes() {
        let subj =
            "/CN=Іваненко Іван/serialNumber=TINUA-1234567890/organizationIdentifier=NTRUA-12345678";
        let attr = |oid_hex: &str, value: &[u8]| seq(&[oid(oid_hex), tlv(0x31, &tlv(0x13, value))]);
        let sda = seq(&[
            attr("2a8624020101010b01040101", b"3333333333"),
            attr("2a8624020101010b01040201", b"87654321"),
        ]);
        let qc = seq(&[
            seq(&[oid(QC_COMPLIANCE)]),
            seq(&[oid(QC_TYPE), seq(&[oid(QC_TYPE_ESIGN)])]),
        ]);
        let ext = [
            format!("2.5.29.9=DER:{}", hex::encode(&sda)),
            format!("1.3.6.1.5.5.7.1.3=critical,DER:{}", hex::encode(&qc)),
        ];
        let ext: Vec<&str> = ext.iter().map(String::as_str).collect();
        let Some((der, _dir)) = openssl_cert(&P256, subj, &ext) else {
            return;
        };
        let info = CertInfo::parse(&der).expect("parse");
        let sda = IdSource::SubjectDirectoryAttributes;
        let tax = TaxNumber {
            value: "3333333333".into(),
            source: sda,
        };
        assert_eq!(info.tax_number, Some(tax));
        assert_eq!(
            info.org_code,
            Some(OrgCode {
                value: "87654321".into(),
                source: sda
            })
        );
        assert!(info.qc.present && info.qc.compliance && !info.qc.ua_qualified);
        assert_eq!(info.qc.types, ["esign"]);

        let Some((der, _dir)) = openssl_cert(&P256, subj, &[]) else {
            return;
        };
        let info = CertInfo::parse(&der).expect("parse");
        let tax = TaxNumber {
            value: "1234567890".into(),
            source: IdSource::SubjectSerialNumber,
        };
        assert_eq!(info.tax_number, Some(tax));
        let org = OrgCode {
            value: "12345678".into(),
            source: IdSource::OrganizationIdentifier,
        };
        assert_eq!(info.org_code, Some(org));
        assert_eq!(info.qc, QcStatements::default());
        let json = serde_json::to_string(&info).expect("json");
        assert!(
            json.contains(r#""source":"subject_serial_number""#),
            "{json}"
        );
    }

    #[test]
    fn broken_extensions_leave_fields_empty() {
        let ext = [
            "1.3.6.1.5.5.7.1.3=critical,DER:3003300106",
            "2.5.29.9=DER:300a3008060204003101",
            "2.5.29.15=critical,DER:0500",
            "2.5.29.19=critical,DER:30020500",
        ];
        let Some((der, _dir)) = openssl_cert(&P256, "/CN=x", &ext) else {
            return;
        };
        let info = CertInfo::parse(&der).expect("a broken extension does not fail the certificate");
        assert_eq!(
            info.qc,
            QcStatements {
                present: true,
                ..QcStatements::default()
            }
        );
        assert_eq!((info.tax_number, info.org_code), (None, None));
        assert!(info.key_usage.is_empty() && !info.is_ca);
    }
}
