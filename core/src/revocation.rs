//! Asking the qualified provider whether a certificate is revoked: its CRL (CRL Distribution
//! Points) and its OCSP responder (Authority Information Access), over HTTP.
//!
//! Every answer is checked before it counts: the certificate must be issued by the issuer
//! given (names match and the issuer's key verifies the certificate's signature), a CRL must
//! name that issuer and carry its signature, an OCSP response must be signed by the issuer or
//! by a responder the issuer certified for OCSP signing. An answer that fails any check is an
//! error naming the URL, never a status. A URL of a scheme that is not asked (an `ldap://`
//! distribution point) is skipped, said so in the [`Outcome`], and the certificate's other
//! URLs asked; with none left the certificate is unchecked, with the reason. This module
//! records nothing: the caller writes what it returns ([`Outcome`]) to the journal.
//!
//! Parsing of certificates, CRLs and the signed part of OCSP responses is `cert`'s
//! (`x509-parser`); signatures are checked in `signature` (OpenSSL; DSTU 4145 with
//! `structured-dstu4145`); OCSP requests and answers are OpenSSL's (`ocsp`), whose verifier
//! checks who signed an answer for RSA, ECDSA and Ed25519 issuers, and `responder` does it for
//! DSTU 4145 issuers; the HTTP client is `http` (ureq).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cert::{self, IssuedCert};
use crate::error::{Error, Result};
use crate::utc::timestamp;

mod http;
mod ocsp;
mod responder;
mod signature;

/// Which of the provider's services to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// The CRL and OCSP, every URL the certificate names.
    #[default]
    Both,
    /// The CRL only.
    Crl,
    /// OCSP only.
    Ocsp,
}

/// The service an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A CRL from a CRL Distribution Point.
    Crl,
    /// An OCSP response.
    Ocsp,
}

/// What the provider says of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not revoked.
    Good,
    /// The OCSP responder does not know the certificate.
    Unknown,
    /// Suspended (CRL reason certificateHold): not a revocation.
    Hold,
    /// Revoked.
    Revoked,
}

impl Status {
    /// The word printed and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Unknown => "unknown",
            Self::Hold => "hold",
            Self::Revoked => "revoked",
        }
    }
}

/// One verified answer of the provider, as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// CRL or OCSP.
    pub source: Source,
    /// The URL asked.
    pub url: String,
    /// When the answer was received (UTC, RFC 3339).
    pub fetched_at: String,
    /// SHA-256 (hex) of the CRL or OCSP response exactly as received.
    pub sha256: String,
    /// The CRL number, for a CRL that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_number: Option<String>,
    /// thisUpdate of the CRL or of the OCSP answer (UTC, RFC 3339).
    pub this_update: String,
    /// nextUpdate, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_update: Option<String>,
    /// The answer for this certificate.
    pub status: Status,
    /// When it was revoked, as the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// The revocation reason, when given (RFC 5280 name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A URL the certificate names that is not asked (an `ldap://` distribution point): the
/// other URLs are asked instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// A CRL distribution point or an OCSP responder.
    pub source: Source,
    /// The URL as the certificate names it.
    pub url: String,
    /// Why it is not asked.
    pub reason: String,
}

/// Every answer about one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The overall answer: revoked if any service says so, then hold, unknown, good. `None`:
    /// unchecked, no URL the certificate names could be asked ([`Outcome::unchecked`] says
    /// why).
    pub status: Option<Status>,
    /// The answers, CRLs first.
    pub evidence: Vec<Evidence>,
    /// The URLs not asked, and why.
    pub skipped: Vec<Skipped>,
    /// Why the certificate is unchecked, when it is.
    pub unchecked: Option<String>,
}

/// Asks providers over HTTP; one per command.
#[derive(Debug, Clone)]
pub struct Checker {
    agent: ureq::Agent,
}

/// The largest CRL or OCSP response read (national providers' CRLs reach tens of MB).
const MAX_BODY: u64 = 256 * 1024 * 1024;

impl Checker {
    /// A checker whose every request ends after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            agent: http::agent(timeout),
        }
    }

    /// Asks the provider about `cert_der`, issued by `issuer_der`, through the services
    /// `via` selects. Refused before any request when the issuer did not issue the
    /// certificate or the certificate names no service; an error for the first service that
    /// gives no verified answer. A URL of a scheme that is not asked (an `ldap://`
    /// distribution point) is skipped and the others asked; when none is left the outcome
    /// is unchecked, with the reason, and nothing is asked.
    pub fn check(&self, cert_der: &[u8], issuer_der: &[u8], via: Via) -> Result<Outcome> {
        let cert = cert::issued_cert(cert_der)?;
        check_issued_by(&cert, issuer_der)?;
        let issuer = cert::issued_cert(issuer_der)?;
        let crl_urls: &[String] = if via == Via::Ocsp {
            &[]
        } else {
            &cert.crl_urls
        };
        let ocsp_urls: &[String] = if via == Via::Crl {
            &[]
        } else {
            &cert.ocsp_urls
        };
        if crl_urls.is_empty() && ocsp_urls.is_empty() {
            return Err(Error::Refused(format!(
                "the certificate names no {}; its status cannot be asked here: ask the provider and record the answer with `custody revocation confirmed`",
                match via {
                    Via::Both => "CRL distribution point or OCSP responder",
                    Via::Crl => "CRL distribution point (try --via ocsp)",
                    Via::Ocsp => "OCSP responder (try --via crl)",
                }
            )));
        }
        let mut skipped = Vec::new();
        let crl_urls = usable(Source::Crl, crl_urls, &mut skipped);
        let ocsp_urls = usable(Source::Ocsp, ocsp_urls, &mut skipped);
        if crl_urls.is_empty() && ocsp_urls.is_empty() {
            let others = match via {
                Via::Both => None,
                Via::Crl => Some((&cert.ocsp_urls, "ocsp")),
                Via::Ocsp => Some((&cert.crl_urls, "crl")),
            };
            let hint = others
                .filter(|(urls, _)| urls.iter().any(|u| http::unsupported(u).is_none()))
                .map(|(_, via)| format!(" (try --via {via}, or both)"))
                .unwrap_or_default();
            let urls: Vec<&str> = skipped.iter().map(|s| s.url.as_str()).collect();
            return Ok(Outcome {
                status: None,
                evidence: Vec::new(),
                unchecked: Some(format!(
                    "no URL it names can be asked here ({}: only http:// and https:// are asked){hint}; ask the provider another way and record the answer with `custody revocation confirmed`",
                    urls.join(", ")
                )),
                skipped,
            });
        }
        let mut evidence = Vec::new();
        for url in crl_urls {
            evidence.push(self.ask_crl(url, &cert, &issuer, issuer_der)?);
        }
        for url in ocsp_urls {
            evidence.push(self.ask_ocsp(url, cert_der, issuer_der)?);
        }
        let status = evidence.iter().map(|e| e.status).max();
        Ok(Outcome {
            status,
            evidence,
            skipped,
            unchecked: None,
        })
    }

    fn ask_crl(
        &self,
        url: &str,
        cert: &IssuedCert,
        issuer: &IssuedCert,
        issuer_der: &[u8],
    ) -> Result<Evidence> {
        let fail = |reason: String| Error::Provider {
            url: url.to_owned(),
            reason,
        };
        let body = http::get(&self.agent, url)?;
        let fetched_at = timestamp(OffsetDateTime::now_utc());
        let crl = cert::parse_crl(&body).map_err(|e| {
            fail(format!(
                "the answer is not a DER CRL ({e}); check the URL in the certificate's CRL distribution points"
            ))
        })?;
        if crl.issuer_der != issuer.subject_der {
            return Err(fail(
                "the CRL is issued by another CA than the certificate's issuer; refused".into(),
            ));
        }
        signature::verify(&crl.signed, issuer_der).map_err(|e| {
            fail(format!(
                "the CRL's signature does not verify with the issuer's key ({e}): it was not signed by the issuer; refused"
            ))
        })?;
        let entry = crl.entry(&cert.serial);
        let status = match entry {
            None => Status::Good,
            Some(e) if e.reason.as_deref() == Some("certificateHold") => Status::Hold,
            Some(_) => Status::Revoked,
        };
        Ok(Evidence {
            source: Source::Crl,
            url: url.to_owned(),
            fetched_at,
            sha256: cert::sha256_hex(&body),
            crl_number: crl.number.clone(),
            this_update: timestamp(crl.this_update),
            next_update: crl.next_update.map(timestamp),
            status,
            revoked_at: entry.map(|e| timestamp(e.date)),
            reason: entry.and_then(|e| e.reason.clone()),
        })
    }

    fn ask_ocsp(&self, url: &str, cert_der: &[u8], issuer_der: &[u8]) -> Result<Evidence> {
        let fail = |reason: String| Error::Provider {
            url: url.to_owned(),
            reason,
        };
        let request = ocsp::request(cert_der, issuer_der).map_err(fail)?;
        let body = http::post(&self.agent, url, &request)?;
        let fetched_at = timestamp(OffsetDateTime::now_utc());
        let answer = ocsp::answer(&body, cert_der, issuer_der).map_err(fail)?;
        Ok(Evidence {
            source: Source::Ocsp,
            url: url.to_owned(),
            fetched_at,
            sha256: cert::sha256_hex(&body),
            crl_number: None,
            this_update: answer.this_update,
            next_update: answer.next_update,
            status: answer.status,
            revoked_at: answer.revoked_at,
            reason: answer.reason,
        })
    }
}

/// The URLs of `urls` that are asked; the others are added to `skipped`.
fn usable<'u>(source: Source, urls: &'u [String], skipped: &mut Vec<Skipped>) -> Vec<&'u str> {
    let mut asked = Vec::new();
    for url in urls {
        match http::unsupported(url) {
            None => asked.push(url.as_str()),
            Some(reason) => skipped.push(Skipped {
                source,
                url: url.clone(),
                reason,
            }),
        }
    }
    asked
}

/// Whether `issuer_der` issued `cert_der`: the certificate's issuer name is the issuer's
/// subject, and the issuer's key verifies the certificate's signature.
pub fn issued_by(cert_der: &[u8], issuer_der: &[u8]) -> Result<bool> {
    let cert = cert::issued_cert(cert_der)?;
    Ok(check_issued_by(&cert, issuer_der).is_ok())
}

fn check_issued_by(cert: &IssuedCert, issuer_der: &[u8]) -> Result<()> {
    let issuer = cert::issued_cert(issuer_der)?;
    if cert.issuer_der != issuer.subject_der {
        return Err(Error::Refused(
            "the issuer certificate given is not the certificate's issuer (names differ); give the provider's CA certificate that issued it with --issuer FILE".into(),
        ));
    }
    signature::verify(&cert.signed, issuer_der).map_err(|e| {
        Error::Refused(format!(
            "the issuer certificate's key does not verify the certificate's signature ({e}); give the provider's CA certificate that issued it with --issuer FILE"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_other_schemes_are_skipped_each_with_its_reason() {
        let urls = [
            "ldap://dir.example/cn=CA?certificateRevocationList".to_owned(),
            "http://crl.example/ca.crl".to_owned(),
        ];
        let mut skipped = Vec::new();
        assert_eq!(
            usable(Source::Crl, &urls, &mut skipped),
            ["http://crl.example/ca.crl"]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].url, urls[0]);
        assert_eq!(skipped[0].source, Source::Crl);
        assert!(skipped[0].reason.contains("ldap://"), "{skipped:?}");
    }

    #[test]
    fn statuses_order_revoked_above_the_rest() {
        let mut all = [Status::Revoked, Status::Good, Status::Hold, Status::Unknown];
        all.sort();
        assert_eq!(
            all,
            [Status::Good, Status::Unknown, Status::Hold, Status::Revoked]
        );
    }

    #[test]
    fn evidence_without_optional_fields_serialises_without_them() -> serde_json::Result<()> {
        let e = Evidence {
            source: Source::Ocsp,
            url: "http://ocsp.example/".into(),
            fetched_at: "2026-12-03T10:00:00Z".into(),
            sha256: "00".into(),
            crl_number: None,
            this_update: "2026-12-03T10:00:00Z".into(),
            next_update: None,
            status: Status::Good,
            revoked_at: None,
            reason: None,
        };
        let text = serde_json::to_string(&e)?;
        assert!(
            !text.contains("crl_number") && !text.contains("null"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Evidence>(&text)?, e);
        Ok(())
    }
}
