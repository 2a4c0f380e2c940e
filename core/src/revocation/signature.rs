//! Checks that an issuer's key signed what [`Signed`] holds (a certificate or a CRL), with
//! OpenSSL for RSA, ECDSA and Ed25519 keys.

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::sign::Verifier;
use openssl::x509::X509;

use crate::cert::Signed;

/// The digest of a signature algorithm OID; `None` for Ed25519 (no separate digest).
fn digest(oid: &str) -> Result<Option<MessageDigest>, String> {
    Ok(Some(match oid {
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => MessageDigest::sha1(),
        "1.2.840.113549.1.1.14" | "1.2.840.10045.4.3.1" => MessageDigest::sha224(),
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => MessageDigest::sha256(),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => MessageDigest::sha384(),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => MessageDigest::sha512(),
        "1.3.101.112" => return Ok(None),
        other => return Err(format!("signature algorithm {other} is not supported")),
    }))
}

/// The issuer's public key.
pub(super) fn issuer_key(issuer_der: &[u8]) -> Result<PKey<Public>, String> {
    let issuer = X509::from_der(issuer_der).map_err(|e| format!("issuer certificate: {e}"))?;
    issuer
        .public_key()
        .map_err(|e| format!("the issuer's key type is not supported: {e}"))
}

/// `Ok` when the issuer's key verifies the signature; the reason otherwise.
pub(super) fn verify(signed: &Signed, issuer_der: &[u8]) -> Result<(), String> {
    let key = issuer_key(issuer_der)?;
    let md = digest(&signed.algorithm_oid)?;
    let ssl = |e: openssl::error::ErrorStack| e.to_string();
    let good = match md {
        Some(md) => {
            let mut v = Verifier::new(md, &key).map_err(ssl)?;
            v.update(&signed.tbs).map_err(ssl)?;
            v.verify(&signed.signature).unwrap_or(false)
        }
        None => {
            let mut v = Verifier::new_without_digest(&key).map_err(ssl)?;
            v.verify_oneshot(&signed.signature, &signed.tbs)
                .unwrap_or(false)
        }
    };
    if good {
        Ok(())
    } else {
        Err("bad signature".into())
    }
}
