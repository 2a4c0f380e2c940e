//! Acknowledgements of receipt: the holder signs the journal entry of an issuance with the
//! key on the carrier, and custody checks the signature against the certificate's public key.
//!
//! The signed bytes are [`Statement::message`]: a short UTF-8 text naming the journal, the
//! row number, the carrier, the key set, the holder and the date, so that a person (or an
//! auditor with `openssl`) can read what was signed. Supported: ECDSA P-256 with SHA-256
//! (PKCS#11 `CKM_ECDSA` over the SHA-256 digest, signature r‖s) and RSA PKCS#1 v1.5 with
//! SHA-256 (`CKM_SHA256_RSA_PKCS`). Signatures by other keys (DSTU 4145 above all) are
//! stored and marked "not verified: algorithm unsupported".
//!
//! An [`Acknowledgement`] can only be made by [`verify`] (it is `#[non_exhaustive]`), so a
//! "verified" status in the journal always went through the check. No PKCS#11 here.

use serde::{Deserialize, Serialize};

use crate::cert;
use crate::error::{Error, Result};

/// The first line of every acknowledgement message.
pub const FORMAT: &str = "custody issuance acknowledgement v1";

const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_DSTU4145_LE: &str = "1.2.804.2.1.1.1.1.3.1.1";
const OID_DSTU4145_BE: &str = "1.2.804.2.1.1.1.1.3.1";

/// What the holder signs: the journal entry of the issuance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The journal's id.
    pub journal_id: String,
    /// The row number ("№ п/п") the issuance gets.
    pub row_no: u64,
    /// Carrier key (manufacturer/model/serial).
    pub carrier: String,
    /// Public-key fingerprints of the keys handed over, sorted.
    pub keys: Vec<String>,
    /// SHA-256 of the certificates handed over, sorted.
    pub certificates: Vec<String>,
    /// The holder's full name.
    pub holder: String,
    /// The holder's position, if given.
    pub position: Option<String>,
    /// The holder's tax number, if known.
    pub tax_number: Option<String>,
    /// Date of handover, YYYY-MM-DD.
    pub date: String,
    /// Time of the journal entry (UTC, RFC 3339).
    pub at: String,
}

impl Statement {
    /// The exact bytes the holder signs: one `name: value` line per field after the
    /// [`FORMAT`] line; values have line breaks and other control characters escaped.
    pub fn message(&self) -> String {
        let line = |name: &str, value: &str| format!("{name}: {}\n", crate::id::escape_text(value));
        let mut m = format!("{FORMAT}\n");
        m += &line("journal", &self.journal_id);
        m += &line("row", &self.row_no.to_string());
        m += &line("carrier", &self.carrier);
        m += &line("keys", &self.keys.join(","));
        m += &line("certificates", &self.certificates.join(","));
        m += &line("holder", &self.holder);
        m += &line("position", self.position.as_deref().unwrap_or(""));
        m += &line("tax_number", self.tax_number.as_deref().unwrap_or(""));
        m += &line("date", &self.date);
        m += &line("at", &self.at);
        m
    }
}

/// Outcome of checking an acknowledgement signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// The signature verifies against the certificate's public key.
    Verified,
    /// Stored but not checked (see [`Acknowledgement::reason`]).
    NotVerified,
}

/// A signature made with the key on the carrier, as the token returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierSignature {
    /// The signature bytes (r‖s for ECDSA).
    pub signature: Vec<u8>,
    /// The PKCS#11 mechanism used, by name (`CKM_ECDSA`, `CKM_SHA256_RSA_PKCS`, `0x…`).
    pub mechanism: String,
    /// CKA_ID of the private key, hex.
    pub key_id: String,
    /// The certificate of that key, DER.
    pub cert_der: Vec<u8>,
}

/// A checked (or, for unsupported algorithms, stored) acknowledgement. Only [`verify`]
/// makes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Acknowledgement {
    /// Verified or not.
    pub status: AckStatus,
    /// Why it was not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The signature algorithm, for people.
    pub algorithm: String,
    /// The PKCS#11 mechanism used.
    pub mechanism: String,
    /// CKA_ID of the signing key, hex.
    pub key_id: String,
    /// SHA-256 of the certificate checked against.
    pub cert_sha256: String,
    /// The signed message (see [`Statement::message`]).
    pub message: String,
    /// The signature, hex.
    pub signature: String,
}

/// Checks `sig` over `statement` against the public key of `sig.cert_der`. A signature that
/// does not verify is refused ([`Error::Refused`]); one by an unsupported algorithm is
/// accepted as [`AckStatus::NotVerified`].
pub fn verify(statement: &Statement, sig: &CarrierSignature) -> Result<Acknowledgement> {
    let message = statement.message();
    let spk = cert::subject_public_key(&sig.cert_der)?;
    let cert_sha256 = cert::sha256_hex(&sig.cert_der);
    let mut ack = Acknowledgement {
        status: AckStatus::NotVerified,
        reason: None,
        algorithm: String::new(),
        mechanism: sig.mechanism.clone(),
        key_id: sig.key_id.clone(),
        cert_sha256,
        message,
        signature: hex::encode(&sig.signature),
    };
    let checked = match (spk.algorithm_oid.as_str(), spk.parameters_oid.as_deref()) {
        (OID_EC, Some(OID_P256)) => {
            ack.algorithm = "ECDSA P-256 SHA-256".into();
            Some(verify_p256(
                &spk.spki_der,
                ack.message.as_bytes(),
                &sig.signature,
            ))
        }
        (OID_RSA, _) => {
            ack.algorithm = "RSA PKCS#1 v1.5 SHA-256".into();
            Some(verify_rsa(
                &spk.spki_der,
                ack.message.as_bytes(),
                &sig.signature,
            ))
        }
        (OID_DSTU4145_LE | OID_DSTU4145_BE, _) => {
            ack.algorithm = "DSTU 4145".into();
            None
        }
        (OID_EC, curve) => {
            ack.algorithm = format!("ECDSA curve {}", curve.unwrap_or("unnamed"));
            None
        }
        (other, _) => {
            ack.algorithm = format!("algorithm {other}");
            None
        }
    };
    match checked {
        Some(Ok(())) => {
            ack.status = AckStatus::Verified;
            Ok(ack)
        }
        Some(Err(why)) => Err(Error::Refused(format!(
            "the acknowledgement signature does not verify against certificate {} ({why}); nothing was recorded. Check that the holder signed with the key of this carrier",
            &ack.cert_sha256[..16]
        ))),
        None => {
            ack.reason = Some("not verified: algorithm unsupported".into());
            Ok(ack)
        }
    }
}

fn verify_p256(spki: &[u8], message: &[u8], signature: &[u8]) -> std::result::Result<(), String> {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki)
        .map_err(|e| format!("public key: {e}"))?;
    let sig = p256::ecdsa::Signature::from_slice(signature)
        .map_err(|_| format!("not an ECDSA P-256 signature ({} bytes)", signature.len()))?;
    key.verify(message, &sig)
        .map_err(|_| "ECDSA signature invalid".to_owned())
}

fn verify_rsa(spki: &[u8], message: &[u8], signature: &[u8]) -> std::result::Result<(), String> {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let key =
        rsa::RsaPublicKey::from_public_key_der(spki).map_err(|e| format!("public key: {e}"))?;
    let key = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key);
    let sig = rsa::pkcs1v15::Signature::try_from(signature)
        .map_err(|_| "not an RSA signature".to_owned())?;
    key.verify(message, &sig)
        .map_err(|_| "RSA signature invalid".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Statement {
        Statement {
            journal_id: "8d6c1c1e-0000-4000-8000-000000000000".into(),
            row_no: 7,
            carrier: "SoftHSM project/SoftHSM v2/0123abcd".into(),
            keys: vec!["aa".into()],
            certificates: vec!["bb".into()],
            holder: "Іваненко Іван\nІванович".into(),
            position: None,
            tax_number: Some("1234567890".into()),
            date: "2026-11-23".into(),
            at: "2026-11-23T10:00:00.000Z".into(),
        }
    }

    #[test]
    fn message_is_line_per_field_with_escaped_values() {
        let m = statement().message();
        assert!(m.starts_with("custody issuance acknowledgement v1\njournal: 8d6c"));
        assert!(m.contains("holder: Іваненко Іван\\x0aІванович\n"), "{m}");
        assert_eq!(m.lines().count(), 11);
    }

    /// A real certificate from ../shared/testdata; `None` when it is absent, except under
    /// CI (`CI` set), where that fails the test.
    fn ua_cert(name: &str) -> Option<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata/ua-certs")
            .join(name);
        let read = std::fs::read(&path).ok();
        assert!(
            read.is_some() || std::env::var_os("CI").is_none(),
            "{} is absent; the tests read ../shared/testdata (CI: failing, not skipping)",
            path.display()
        );
        read
    }

    #[test]
    fn dstu_signatures_are_stored_not_verified() {
        let Some(der) = ua_cert("diia-test-sign-7775603.cer") else {
            eprintln!("NOT RUN: ../shared/testdata/ua-certs is not there");
            return;
        };
        let sig = CarrierSignature {
            signature: vec![1; 64],
            mechanism: "0x80420011".into(),
            key_id: "01".into(),
            cert_der: der,
        };
        let ack = verify(&statement(), &sig).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ack.status, AckStatus::NotVerified);
        assert_eq!(ack.algorithm, "DSTU 4145");
        assert_eq!(
            ack.reason.as_deref(),
            Some("not verified: algorithm unsupported")
        );
    }

    #[test]
    fn garbage_certificate_is_an_error() {
        let sig = CarrierSignature {
            signature: vec![1; 64],
            mechanism: "CKM_ECDSA".into(),
            key_id: "01".into(),
            cert_der: b"not a certificate".to_vec(),
        };
        assert!(matches!(
            verify(&statement(), &sig),
            Err(Error::Certificate(_))
        ));
    }
}
