//! DSTU 4145 public keys as certificates carry them (SubjectPublicKeyInfo with the curve,
//! named or explicit, and the GOST 34.311 substitution table, DKE), and DSTU 4145 signature
//! values, for checking signatures in `crate::revocation`.

use x509_parser::asn1_rs::{Any, Class, FromDer, Tag};
use x509_parser::certificate::X509Certificate;

use super::{der_children, der_oid, octet_string_content, CertError};
use super::{DSTU_CURVE_M, DSTU_CURVE_PREFIX, OID_DSTU4145_BE, OID_DSTU4145_LE};

/// The curve of a DSTU 4145 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DstuCurve {
    /// One of the standard's named polynomial-basis curves, by field degree.
    Named {
        /// Field degree m.
        degree: u32,
    },
    /// Explicit polynomial-basis parameters (ECBinary).
    Binary {
        /// Field degree m.
        degree: u32,
        /// Reduction exponents: one (trinomial) or three (pentanomial), ascending.
        reduction: Vec<u32>,
        /// Coefficient A (0 or 1).
        a: bool,
        /// Coefficient B, as encoded.
        b: Vec<u8>,
        /// Subgroup order, big-endian.
        order: Vec<u8>,
        /// Compressed base point, as encoded.
        base_point: Vec<u8>,
    },
}

/// A certificate's DSTU 4145 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DstuKey {
    /// Little-endian encoding (OID 1.2.804.2.1.1.1.1.3.1.1), else big-endian.
    pub little_endian: bool,
    /// The curve.
    pub curve: DstuCurve,
    /// The DKE given with the key (64 bytes), if any.
    pub dke: Option<Vec<u8>>,
    /// The compressed public point.
    pub point: Vec<u8>,
}

fn uint(any: &Any<'_>) -> Option<u32> {
    (any.class() == Class::Universal && any.tag() == Tag::Integer)
        .then(|| any.as_u32().ok())
        .flatten()
}

fn octets(any: &Any<'_>) -> Option<Vec<u8>> {
    (any.class() == Class::Universal && any.tag() == Tag::OctetString).then(|| any.data.to_vec())
}

fn binary(ecb: &Any<'_>) -> Option<DstuCurve> {
    let parts = der_children(ecb, Tag::Sequence)?;
    let [field, a, b, n, bp] = parts.as_slice() else {
        return None;
    };
    let field = der_children(field, Tag::Sequence)?;
    let degree = uint(field.first()?)?;
    let poly = field.get(1)?;
    let reduction = match uint(poly) {
        Some(k) => vec![k],
        None => der_children(poly, Tag::Sequence)?
            .iter()
            .map(uint)
            .collect::<Option<Vec<u32>>>()?,
    };
    let order = (n.tag() == Tag::Integer).then(|| {
        let mut d = n.data;
        while let [0, rest @ ..] = d {
            d = rest;
        }
        d.to_vec()
    })?;
    Some(DstuCurve::Binary {
        degree,
        reduction,
        a: uint(a)? == 1,
        b: octets(b)?,
        order,
        base_point: octets(bp)?,
    })
}

/// The DSTU 4145 key of a DER certificate; `None` when its key is of another algorithm.
pub fn dstu_public_key(der: &[u8]) -> Result<Option<DstuKey>, CertError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::Malformed(e.to_string()))?;
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    let little_endian = match oid.as_str() {
        OID_DSTU4145_LE => true,
        OID_DSTU4145_BE => false,
        _ => return Ok(None),
    };
    let bad = |what: &str| CertError::Malformed(format!("DSTU 4145 key: {what}"));
    let params = spki
        .algorithm
        .parameters
        .as_ref()
        .ok_or_else(|| bad("no parameters"))?;
    let parts = der_children(params, Tag::Sequence).ok_or_else(|| bad("parameters"))?;
    let first = parts.first().ok_or_else(|| bad("no curve"))?;
    let curve = match der_oid(first) {
        Some(named) => {
            let n = named
                .strip_prefix(DSTU_CURVE_PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| DSTU_CURVE_M.get(n))
                .ok_or_else(|| bad("unknown named curve"))?;
            DstuCurve::Named { degree: *n }
        }
        None => binary(first).ok_or_else(|| bad("explicit curve"))?,
    };
    let dke = parts.get(1).and_then(octets);
    let key_bytes: &[u8] = &spki.subject_public_key.data;
    let point = octet_string_content(key_bytes)
        .ok_or_else(|| bad("the key is not an OCTET STRING"))?
        .to_vec();
    Ok(Some(DstuKey {
        little_endian,
        curve,
        dke,
        point,
    }))
}

/// The signature octets inside a DSTU 4145 signature value (an OCTET STRING in the BIT
/// STRING of a certificate or CRL).
pub fn dstu_signature_octets(signature_value: &[u8]) -> Option<Vec<u8>> {
    octet_string_content(signature_value).map(<[u8]>::to_vec)
}
