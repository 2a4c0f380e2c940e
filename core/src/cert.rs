//! TEMPORARY stub until the certificate parser lands.
#![allow(missing_docs)]
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(String),
}
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxNumber {
    pub value: String,
}
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: time::OffsetDateTime,
    pub sha256: String,
    pub public_key_sha256: String,
    pub holder_name: Option<String>,
    pub tax_number: Option<TaxNumber>,
    pub org_code: Option<TaxNumber>,
}
impl CertInfo {
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        Err(CertError::Malformed(format!("{} bytes", der.len())))
    }
}
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
pub fn ec_point_fingerprint(p: &[u8]) -> String {
    sha256_hex(p)
}
pub fn rsa_modulus_fingerprint(m: &[u8]) -> String {
    sha256_hex(m)
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
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| CertError::Malformed(e.to_string()))?;
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
