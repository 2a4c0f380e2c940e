//! Who signed an OCSP response, checked without OpenSSL's OCSP verifier (which knows no DSTU
//! 4145): the certificate's issuer itself, or a delegated responder (RFC 6960 §4.2.2.2)
//! whose certificate the responder sent along, that the issuer issued (names match and the
//! issuer's key verifies it), that names id-kp-OCSPSigning and is valid now. Nothing else
//! counts: a response signed by any other key, a responder certificate of another CA, one
//! without id-kp-OCSPSigning, are refused.

use time::OffsetDateTime;

use crate::cert;

use super::signature;

/// `Ok` when the issuer, or a responder it certified for OCSP signing, signed the response.
pub(super) fn verify(body: &[u8], issuer_der: &[u8], now: OffsetDateTime) -> Result<(), String> {
    let basic = cert::ocsp_signed(body).map_err(|e| e.to_string())?;
    let by_issuer = match signature::verify(&basic.signed, issuer_der) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let issuer = cert::issued_cert(issuer_der).map_err(|e| e.to_string())?;
    let mut why = vec![format!("the issuer's key: {by_issuer}")];
    for der in &basic.certs {
        let responder = match cert::issued_cert(der) {
            Ok(c) => c,
            Err(e) => {
                why.push(format!("a certificate sent with it: {e}"));
                continue;
            }
        };
        if !responder.ocsp_signing {
            why.push("the responder certificate sent with it is not for OCSP signing (no id-kp-OCSPSigning)".into());
            continue;
        }
        if responder.issuer_der != issuer.subject_der
            || signature::verify(&responder.signed, issuer_der).is_err()
        {
            why.push(
                "the responder certificate sent with it was not issued by the certificate's issuer"
                    .into(),
            );
            continue;
        }
        if now < responder.not_before || now > responder.not_after {
            why.push("the responder certificate sent with it is not valid now".into());
            continue;
        }
        match signature::verify(&basic.signed, der) {
            Ok(()) => return Ok(()),
            Err(e) => why.push(format!("the responder certificate's key: {e}")),
        }
    }
    Err(format!(
        "the OCSP response is not signed by the issuer or a responder it certified for OCSP signing ({}); refused",
        why.join("; ")
    ))
}
