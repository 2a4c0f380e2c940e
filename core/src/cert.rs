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
