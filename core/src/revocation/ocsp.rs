//! OCSP (RFC 6960) with OpenSSL: the request for one certificate, and the checks of the
//! response: successful, signed by the issuer (or by a responder the issuer certified for OCSP
//! signing), about this certificate, and current.

use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspBasicResponse, OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse,
    OcspResponseStatus, OcspRevokedStatus,
};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::X509;

use super::Status;

/// How far thisUpdate may lie in the future, and nextUpdate in the past, for clock skew.
const SKEW_SECS: u32 = 300;

/// A checked OCSP answer about one certificate.
pub(super) struct Answer {
    pub(super) status: Status,
    pub(super) this_update: String,
    pub(super) next_update: Option<String>,
    pub(super) revoked_at: Option<String>,
    pub(super) reason: Option<String>,
}

fn ssl(what: &'static str) -> impl Fn(openssl::error::ErrorStack) -> String {
    move |e| format!("{what}: {e}")
}

fn cert_id(cert: &X509, issuer: &X509) -> Result<OcspCertId, String> {
    OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer).map_err(ssl("OCSP certificate id"))
}

fn parse(cert_der: &[u8], issuer_der: &[u8]) -> Result<(X509, X509), String> {
    Ok((
        X509::from_der(cert_der).map_err(ssl("certificate"))?,
        X509::from_der(issuer_der).map_err(ssl("issuer certificate"))?,
    ))
}

/// The DER OCSP request for one certificate (SHA-1 certificate id, as responders expect).
pub(super) fn request(cert_der: &[u8], issuer_der: &[u8]) -> Result<Vec<u8>, String> {
    let (cert, issuer) = parse(cert_der, issuer_der)?;
    let mut req = OcspRequest::new().map_err(ssl("OCSP request"))?;
    req.add_id(cert_id(&cert, &issuer)?)
        .map_err(ssl("OCSP request"))?;
    req.to_der().map_err(ssl("OCSP request"))
}

/// Checks a DER OCSP response and reads the answer about the certificate.
pub(super) fn answer(body: &[u8], cert_der: &[u8], issuer_der: &[u8]) -> Result<Answer, String> {
    let (cert, issuer) = parse(cert_der, issuer_der)?;
    let response = OcspResponse::from_der(body).map_err(|e| {
        format!(
            "the answer is not a DER OCSP response ({e}); check the OCSP URL in the certificate"
        )
    })?;
    let state = response.status();
    if state != OcspResponseStatus::SUCCESSFUL {
        return Err(format!(
            "the responder refused the request (OCSP response status {}); ask the provider",
            state.as_raw()
        ));
    }
    let basic = response
        .basic()
        .map_err(|e| format!("the OCSP response holds no basic response ({e})"))?;
    if crate::cert::dstu_public_key(issuer_der)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        // OpenSSL cannot check DSTU 4145 signatures.
        super::responder::verify(body, issuer_der, time::OffsetDateTime::now_utc())?;
    } else {
        verify_with_openssl(&basic, &issuer)?;
    }
    let id = cert_id(&cert, &issuer)?;
    let found = basic.find_status(&id).ok_or_else(|| {
        "the OCSP response does not answer for this certificate; refused".to_owned()
    })?;
    found
        .check_validity(SKEW_SECS, None)
        .map_err(|e| format!("the OCSP answer is not current ({e}); refused"))?;
    let status = match found.status {
        OcspCertStatus::GOOD => Status::Good,
        OcspCertStatus::REVOKED if found.reason == OcspRevokedStatus::STATUS_CERTIFICATE_HOLD => {
            Status::Hold
        }
        OcspCertStatus::REVOKED => Status::Revoked,
        _ => Status::Unknown,
    };
    let revoked = status == Status::Revoked || status == Status::Hold;
    Ok(Answer {
        status,
        this_update: time_text(&found.this_update.to_string()),
        next_update: found.next_update().map(|t| time_text(&t.to_string())),
        revoked_at: found
            .revocation_time
            .filter(|_| revoked)
            .map(|t| time_text(&t.to_string())),
        reason: revoked
            .then(|| found.reason.as_raw())
            .filter(|r| *r >= 0)
            .map(|r| crate::cert::reason_name(u8::try_from(r).unwrap_or(u8::MAX)).to_owned()),
    })
}

/// OpenSSL's check that the issuer, or a responder it certified for OCSP signing, signed the
/// response (RSA, ECDSA, Ed25519 issuers).
fn verify_with_openssl(basic: &OcspBasicResponse, issuer: &X509) -> Result<(), String> {
    let mut store = X509StoreBuilder::new().map_err(ssl("trust store"))?;
    store.add_cert(issuer.clone()).map_err(ssl("trust store"))?;
    // The issuer may be an intermediate CA: it is the anchor, no root is needed.
    store
        .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(ssl("trust store"))?;
    let store = store.build();
    let mut certs = Stack::new().map_err(ssl("certificates"))?;
    certs.push(issuer.clone()).map_err(ssl("certificates"))?;
    basic
        .verify(&certs, &store, OcspFlag::empty())
        .map_err(|e| {
            format!(
                "the OCSP response is not signed by the issuer or a responder it certified ({e}); refused"
            )
        })?;
    Ok(())
}

/// OpenSSL prints times as `Dec  3 13:00:00 2026 GMT`; the journal writes RFC 3339.
fn time_text(printed: &str) -> String {
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT"
    );
    time::PrimitiveDateTime::parse(printed, format)
        .map(|t| crate::utc::timestamp(t.assume_utc()))
        .unwrap_or_else(|_| printed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_times_become_rfc3339() {
        assert_eq!(
            time_text("Dec  3 13:00:05 2026 GMT"),
            "2026-12-03T13:00:05.000Z"
        );
        assert_eq!(
            time_text("Jan 21 01:02:03 2027 GMT"),
            "2027-01-21T01:02:03.000Z"
        );
    }

    #[test]
    fn garbage_is_not_an_ocsp_response() {
        let der = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/ua-certs/CA-Justice-ECDSA-261217.cer"
        ))
        .unwrap_or_default();
        assert!(answer(b"<html/>", &der, &der).is_err());
    }
}
