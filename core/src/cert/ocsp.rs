//! The signed parts of an OCSP response (RFC 6960 `BasicOCSPResponse`): the to-be-signed
//! `tbsResponseData` exactly as received, the signature algorithm and value, and the
//! certificates the responder sent along, for checking a signature that OpenSSL cannot (DSTU
//! 4145) in `crate::revocation`. The rest of the response (status, answers, dates) is read
//! with OpenSSL there.

use x509_parser::asn1_rs::{Any, Class, FromDer, Tag};

use super::revocation::Signed;
use super::{der_children, der_oid, CertError};

/// id-pkix-ocsp-basic.
const OID_OCSP_BASIC: &str = "1.3.6.1.5.5.7.48.1.1";

/// What the responder signed, and the certificates it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspSigned {
    /// `tbsResponseData`, its algorithm and signature.
    pub signed: Signed,
    /// The DER certificates of the `certs` field (a delegated responder's certificate).
    pub certs: Vec<Vec<u8>>,
}

/// The DER elements of `content` in order, each with its encoding (header included).
fn items(mut content: &[u8]) -> Option<Vec<(Any<'_>, &[u8])>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (rest, any) = Any::from_der(content).ok()?;
        out.push((any, &content[..content.len() - rest.len()]));
        content = rest;
    }
    Some(out)
}

fn context(any: &Any<'_>, n: u32) -> bool {
    any.class() == Class::ContextSpecific && any.tag() == Tag(n) && any.header.is_constructed()
}

/// Reads the signed parts of a DER `OCSPResponse` that holds a basic response.
pub fn ocsp_signed(der: &[u8]) -> Result<OcspSigned, CertError> {
    let bad = |what: &str| CertError::Malformed(format!("OCSP response: {what}"));
    let (rest, response) = Any::from_der(der).map_err(|e| bad(&e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad("bytes follow the response"));
    }
    let parts = der_children(&response, Tag::Sequence).ok_or_else(|| bad("not a SEQUENCE"))?;
    let bytes = parts
        .get(1)
        .filter(|p| context(p, 0))
        .ok_or_else(|| bad("no responseBytes"))?;
    let (_, response_bytes) = Any::from_der(bytes.data).map_err(|e| bad(&e.to_string()))?;
    let rb = der_children(&response_bytes, Tag::Sequence).ok_or_else(|| bad("responseBytes"))?;
    let [kind, octets] = rb.as_slice() else {
        return Err(bad("responseBytes"));
    };
    if der_oid(kind).as_deref() != Some(OID_OCSP_BASIC) {
        return Err(bad("not a basic OCSP response"));
    }
    if octets.class() != Class::Universal || octets.tag() != Tag::OctetString {
        return Err(bad("responseBytes"));
    }
    let (rest, basic) = Any::from_der(octets.data).map_err(|e| bad(&e.to_string()))?;
    if !rest.is_empty() || basic.tag() != Tag::Sequence || !basic.header.is_constructed() {
        return Err(bad("BasicOCSPResponse"));
    }
    let fields = items(basic.data).ok_or_else(|| bad("BasicOCSPResponse"))?;
    let (tbs, algorithm, signature) = match fields.as_slice() {
        [(tbs, tbs_raw), (alg, _), (sig, _), ..]
            if tbs.tag() == Tag::Sequence && sig.tag() == Tag::BitString =>
        {
            let alg = der_children(alg, Tag::Sequence)
                .and_then(|a| a.first().and_then(der_oid))
                .ok_or_else(|| bad("signatureAlgorithm"))?;
            (tbs_raw.to_vec(), alg, sig.data)
        }
        _ => return Err(bad("BasicOCSPResponse")),
    };
    let signature = match signature {
        [0, bits @ ..] => bits.to_vec(),
        _ => return Err(bad("the signature is not a whole number of bytes")),
    };
    let mut certs = Vec::new();
    if let Some((extra, _)) = fields.get(3) {
        if !context(extra, 0) {
            return Err(bad("certs"));
        }
        let (_, seq) = Any::from_der(extra.data).map_err(|e| bad(&e.to_string()))?;
        if seq.tag() != Tag::Sequence {
            return Err(bad("certs"));
        }
        for (_, raw) in items(seq.data).ok_or_else(|| bad("certs"))? {
            certs.push(raw.to_vec());
        }
    }
    Ok(OcspSigned {
        signed: Signed {
            tbs,
            algorithm_oid: algorithm,
            signature,
        },
        certs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_non_basic_responses_are_refused() {
        assert!(ocsp_signed(b"").is_err());
        assert!(ocsp_signed(b"<html/>").is_err());
        // OCSPResponse { unauthorized (6) }: no responseBytes.
        assert!(ocsp_signed(&[0x30, 0x03, 0x0a, 0x01, 0x06]).is_err());
    }
}
