//! What revocation checking reads from certificates and CRLs: where the provider publishes
//! status (CRL Distribution Points, OCSP in Authority Information Access), the signed parts
//! of a certificate or CRL (to-be-signed bytes, algorithm, signature) for checking them against
//! the issuer's key, and a CRL's number, dates and revoked serials.
//!
//! Parsing only, like the rest of `cert`: signatures are checked in `crate::revocation`.

use time::OffsetDateTime;
use x509_parser::asn1_rs::FromDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::AlgorithmIdentifier;

use super::{strip_leading_zeros, CertError};

const OID_AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";

/// The signed parts of a certificate, CRL or OCSP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The to-be-signed bytes (DER).
    pub tbs: Vec<u8>,
    /// Signature algorithm OID, dotted.
    pub algorithm_oid: String,
    /// The signature (the BIT STRING's content).
    pub signature: Vec<u8>,
}

/// The fields of a certificate that tie it to its issuer and the provider's status services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// Serial number, big-endian, no leading zero bytes (zero is one `00` byte).
    pub serial: Vec<u8>,
    /// The issuer name, DER.
    pub issuer_der: Vec<u8>,
    /// The subject name, DER.
    pub subject_der: Vec<u8>,
    /// CRL Distribution Points: every URI of a full name.
    pub crl_urls: Vec<String>,
    /// OCSP responders named in Authority Information Access.
    pub ocsp_urls: Vec<String>,
    /// Extended key usage names id-kp-OCSPSigning: a delegated OCSP responder's certificate.
    pub ocsp_signing: bool,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// What the issuer signed.
    pub signed: Signed,
}

fn signed(tbs: &[u8], alg: &AlgorithmIdentifier<'_>, signature: &[u8]) -> Signed {
    Signed {
        tbs: tbs.to_vec(),
        algorithm_oid: alg.algorithm.to_id_string(),
        signature: signature.to_vec(),
    }
}

fn exactly_one<T>(
    parsed: Result<(&[u8], T), x509_parser::nom::Err<x509_parser::error::X509Error>>,
    what: &str,
) -> Result<T, CertError> {
    let (rest, value) = parsed.map_err(|e| CertError::Malformed(format!("{what}: {e}")))?;
    if !rest.is_empty() {
        return Err(CertError::Malformed(format!(
            "{} bytes follow the {what}",
            rest.len()
        )));
    }
    Ok(value)
}

/// Reads the issuer-facing fields of one DER certificate.
pub fn issued_cert(der: &[u8]) -> Result<IssuedCert, CertError> {
    let cert = exactly_one(X509Certificate::from_der(der), "certificate")?;
    let tbs = &cert.tbs_certificate;
    let (mut crl_urls, mut ocsp_urls) = (Vec::new(), Vec::new());
    let mut ocsp_signing = false;
    for ext in tbs.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(eku) => ocsp_signing = eku.ocsp_signing,
            ParsedExtension::CRLDistributionPoints(points) => {
                for p in points.iter() {
                    if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                        for n in names {
                            if let GeneralName::URI(u) = n {
                                crl_urls.push((*u).to_owned());
                            }
                        }
                    }
                }
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for d in aia.iter() {
                    if d.access_method.to_id_string() == OID_AD_OCSP {
                        if let GeneralName::URI(u) = &d.access_location {
                            ocsp_urls.push((*u).to_owned());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(IssuedCert {
        serial: strip_leading_zeros(tbs.raw_serial()).to_vec(),
        issuer_der: tbs.issuer().as_raw().to_vec(),
        subject_der: tbs.subject().as_raw().to_vec(),
        crl_urls,
        ocsp_urls,
        ocsp_signing,
        not_before: tbs.validity().not_before.to_datetime(),
        not_after: tbs.validity().not_after.to_datetime(),
        signed: signed(
            tbs.as_ref(),
            &cert.signature_algorithm,
            &cert.signature_value.data,
        ),
    })
}

/// One entry of a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Serial number, as in [`IssuedCert::serial`].
    pub serial: Vec<u8>,
    /// When the provider revoked it.
    pub date: OffsetDateTime,
    /// The reason code's name (RFC 5280: keyCompromise, certificateHold, ...), when given.
    pub reason: Option<String>,
}

/// A parsed CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// The issuer name, DER.
    pub issuer_der: Vec<u8>,
    /// The CRL number, decimal, when the CRL has one.
    pub number: Option<String>,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate, when given.
    pub next_update: Option<OffsetDateTime>,
    /// The revoked certificates.
    pub revoked: Vec<RevokedEntry>,
    /// What the issuer signed.
    pub signed: Signed,
}

impl CrlInfo {
    /// The entry of a certificate serial, if the CRL lists it.
    pub fn entry(&self, serial: &[u8]) -> Option<&RevokedEntry> {
        self.revoked.iter().find(|r| r.serial == serial)
    }
}

/// Parses one DER CRL (PEM is refused: providers publish DER).
pub fn parse_crl(der: &[u8]) -> Result<CrlInfo, CertError> {
    let crl = exactly_one(CertificateRevocationList::from_der(der), "CRL")?;
    let tbs = &crl.tbs_cert_list;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| RevokedEntry {
            serial: strip_leading_zeros(r.raw_serial()).to_vec(),
            date: r.revocation_date.to_datetime(),
            reason: r
                .reason_code()
                .map(|(_, code)| reason_name(code.0).to_owned()),
        })
        .collect();
    Ok(CrlInfo {
        issuer_der: crl.issuer().as_raw().to_vec(),
        number: crl.crl_number().map(ToString::to_string),
        this_update: crl.last_update().to_datetime(),
        next_update: crl.next_update().map(|t| t.to_datetime()),
        revoked,
        signed: signed(
            tbs.as_ref(),
            &crl.signature_algorithm,
            &crl.signature_value.data,
        ),
    })
}

/// The RFC 5280 name of a CRLReason code.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_crl() {
        assert!(parse_crl(b"<html>not found</html>").is_err());
        assert!(issued_cert(b"").is_err());
    }

    #[test]
    fn a_real_certificate_names_its_issuer_and_status_services() -> Result<(), CertError> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/ua-certs/diia-test-sign-7775603.cer"
        );
        let der = std::fs::read(path).map_err(|e| CertError::Malformed(format!("{path}: {e}")))?;
        let c = issued_cert(&der)?;
        assert!(!c.issuer_der.is_empty() && !c.serial.is_empty());
        assert!(!c.signed.tbs.is_empty() && !c.signed.signature.is_empty());
        assert!(
            c.signed
                .algorithm_oid
                .starts_with("1.2.804.2.1.1.1.1.3.1.1"),
            "{}",
            c.signed.algorithm_oid
        );
        Ok(())
    }
}
