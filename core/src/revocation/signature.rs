//! Checks that an issuer's key signed what [`Signed`] holds (a certificate or a CRL), with
//! OpenSSL for RSA, ECDSA and Ed25519 keys, and `structured-dstu4145` for DSTU 4145 keys
//! (signature over the GOST 34.311 hash).

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::sign::Verifier;
use openssl::x509::X509;

use structured_dstu4145::domain::{Domain, Explicit};
use structured_dstu4145::gost::{Dke, Gost34311, DEFAULT_DKE};
use structured_dstu4145::{Basis, ByteOrder};
use structured_pkix::algorithm::dstu4145::Reduction;

use crate::cert::{dstu_public_key, dstu_signature_octets, DstuCurve, DstuKey, Signed};

/// DSTU 4145 with GOST 34.311, little- and big-endian encodings.
const OID_DSTU4145_GOST_LE: &str = "1.2.804.2.1.1.1.1.3.1.1";
const OID_DSTU4145_GOST_BE: &str = "1.2.804.2.1.1.1.1.3.1.1.1.1";

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
    if let Some(key) = dstu_public_key(issuer_der).map_err(|e| e.to_string())? {
        return verify_dstu(signed, &key);
    }
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

fn dstu_err(e: structured_dstu4145::Error) -> String {
    format!("DSTU 4145: {e:?}")
}

/// Verifies a DSTU 4145 signature (GOST 34.311 hash with the key's DKE, or the standard's
/// first DKE when the key names none).
fn verify_dstu(signed: &Signed, key: &DstuKey) -> Result<(), String> {
    let sig_le = match signed.algorithm_oid.as_str() {
        OID_DSTU4145_GOST_LE => true,
        OID_DSTU4145_GOST_BE => false,
        other => {
            return Err(format!(
                "signature algorithm {other} with a DSTU 4145 key is not supported (only DSTU 4145 with GOST 34.311)"
            ))
        }
    };
    let order = |le: bool| {
        if le {
            ByteOrder::LittleEndian
        } else {
            ByteOrder::BigEndian
        }
    };
    let key_order = order(key.little_endian);
    let domain = match &key.curve {
        DstuCurve::Named { degree } => Domain::named(Basis::Polynomial, *degree as usize),
        DstuCurve::Binary {
            degree,
            reduction,
            a,
            b,
            order: n,
            base_point,
        } => {
            let reduction = match reduction.as_slice() {
                [k] => Reduction::Trinomial(*k),
                [k, j, l] => Reduction::Pentanomial {
                    k: *k,
                    j: *j,
                    l: *l,
                },
                _ => return Err("DSTU 4145: bad reduction polynomial".into()),
            };
            Domain::explicit(Explicit {
                degree: *degree,
                reduction,
                a: *a,
                b,
                order: n,
                base_point,
                byte_order: key_order,
            })
        }
    }
    .map_err(dstu_err)?;
    let public = domain.public_key(&key.point, key_order).map_err(dstu_err)?;
    let packed: [u8; 64] = match &key.dke {
        Some(d) => d
            .as_slice()
            .try_into()
            .map_err(|_| "DSTU 4145: the DKE is not 64 bytes".to_owned())?,
        None => DEFAULT_DKE,
    };
    let dke = Dke::new(&packed).map_err(dstu_err)?;
    let mut hash = Gost34311::new(&dke);
    hash.update(&signed.tbs).map_err(dstu_err)?;
    let digest = hash.finalize();
    let octets = dstu_signature_octets(&signed.signature)
        .ok_or_else(|| "DSTU 4145: the signature value is not an OCTET STRING".to_owned())?;
    if public
        .verify_prehash(&digest, &octets, order(sig_le))
        .map_err(dstu_err)?
    {
        Ok(())
    } else {
        Err("bad signature".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../shared/testdata/ua-certs/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const DIIA_CA: &str = "diia-CA-05E19E2CD92EA2990100000001000000E1000000.cer";

    #[test]
    fn the_diia_ca_key_verifies_the_real_diia_certificates() -> Result<(), String> {
        let ca = ua(DIIA_CA);
        for leaf in ["diia-test-sign-7775603.cer", "diia-test-kep-7775604.cer"] {
            let signed = crate::cert::issued_cert(&ua(leaf))
                .map_err(|e| e.to_string())?
                .signed;
            verify(&signed, &ca).map_err(|e| format!("{leaf}: {e}"))?;
        }
        Ok(())
    }

    #[test]
    fn a_flipped_byte_fails_dstu_verification() -> Result<(), String> {
        let ca = ua(DIIA_CA);
        let good = crate::cert::issued_cert(&ua("diia-test-sign-7775603.cer"))
            .map_err(|e| e.to_string())?
            .signed;
        // A byte of the signed content (the subject), then a byte of the signature.
        let mut tbs = good.clone();
        let i = tbs.tbs.len() / 2;
        tbs.tbs[i] ^= 0x01;
        assert!(verify(&tbs, &ca).is_err());
        let mut sig = good.clone();
        let last = sig.signature.len() - 1;
        sig.signature[last] ^= 0x01;
        assert!(verify(&sig, &ca).is_err());
        // Another CA's DSTU key does not verify it either.
        assert!(verify(&good, &ua("CA-Justice.cer")).is_err());
        verify(&good, &ca)
    }
}
