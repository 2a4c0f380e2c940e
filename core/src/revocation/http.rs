//! The HTTP client of revocation checks (ureq, blocking): GET a CRL, POST an OCSP request.
//! Providers publish them over plain HTTP (RFC 5280 §4.2.1.13, RFC 6960 appendix A: they are
//! signed, so TLS adds nothing to their integrity), some over HTTPS: both are asked, whatever
//! the certificate names. HTTPS is OpenSSL's (native-tls), with the system's trusted CAs as
//! OpenSSL finds them (`SSL_CERT_FILE` and `SSL_CERT_DIR` name others); a server whose
//! certificate does not verify is an error, never asked again without verification.

use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig, TlsProvider};

use crate::error::{Error, Result};

use super::MAX_BODY;

/// An agent whose requests end after `timeout`; HTTP status codes are checked here.
pub(super) fn agent(timeout: Duration) -> ureq::Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::NativeTls)
        .root_certs(RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into()
}

/// Why `url` is not asked: `None` for an http:// or https:// URL, else the reason (an
/// `ldap://` distribution point, a `file://` or a name without a scheme).
pub(super) fn unsupported(url: &str) -> Option<String> {
    let scheme = |s: &str| url.len() > s.len() && url[..s.len()].eq_ignore_ascii_case(s);
    if scheme("http://") || scheme("https://") {
        return None;
    }
    let named = url.split_once(':').map(|(s, _)| s).filter(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    Some(match named {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
            "it is not a well-formed http:// or https:// URL".to_owned()
        }
        Some(s) => format!(
            "its scheme {}:// is not asked here (only http:// and https:// are)",
            s.to_ascii_lowercase()
        ),
        None => "it is not a URL with a scheme (only http:// and https:// are asked)".to_owned(),
    })
}

fn http_or_https(url: &str) -> Result<()> {
    match unsupported(url) {
        None => Ok(()),
        Some(reason) => Err(Error::Provider {
            url: url.to_owned(),
            reason: format!(
                "{reason}; ask the provider another way and record the answer with `custody revocation confirmed`"
            ),
        }),
    }
}

/// What to say of a request that got no answer: for a TLS failure, what to check.
fn unreachable(url: &str, e: &ureq::Error) -> String {
    let tls = matches!(e, ureq::Error::Tls(_) | ureq::Error::NativeTls(_));
    if tls && url.len() > 8 && url[..8].eq_ignore_ascii_case("https://") {
        format!(
            "the TLS connection failed ({e}); the server's certificate must verify with the system's trusted CAs (install the provider's CA into the system store, or point SSL_CERT_FILE at a file of trusted CAs), then run the check again"
        )
    } else {
        format!(
            "cannot be reached ({e}); check the network and the provider's service, then run the check again"
        )
    }
}

fn read(
    url: &str,
    sent: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Vec<u8>> {
    let fail = |reason: String| Error::Provider {
        url: url.to_owned(),
        reason,
    };
    let mut response = sent.map_err(|e| fail(unreachable(url, &e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!(
            "answered HTTP {status}; check the URL and run the check again later"
        )));
    }
    response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| fail(format!("the answer could not be read ({e})")))
}

/// GETs `url`; the body of a 2xx answer.
pub(super) fn get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    http_or_https(url)?;
    read(url, agent.get(url).call())
}

/// POSTs an OCSP request to `url`; the body of a 2xx answer.
pub(super) fn post(agent: &ureq::Agent, url: &str, request: &[u8]) -> Result<Vec<u8>> {
    http_or_https(url)?;
    read(
        url,
        agent
            .post(url)
            .header("Content-Type", "application/ocsp-request")
            .send(request),
    )
}

#[cfg(test)]
mod tests {
    use super::unsupported;

    #[test]
    fn only_http_and_https_are_asked_and_the_rest_named_by_scheme() {
        assert_eq!(unsupported("http://crl.example/ca.crl"), None);
        assert_eq!(unsupported("HTTPS://crl.example/ca.crl"), None);
        let ldap =
            unsupported("ldap://dir.example/cn=CA?certificateRevocationList").unwrap_or_default();
        assert!(ldap.contains("ldap://"), "{ldap}");
        assert!(unsupported("LDAP://dir.example/").is_some_and(|r| r.contains("ldap://")));
        assert!(unsupported("crl.example/ca.crl").is_some_and(|r| r.contains("not a URL")));
        assert!(unsupported("http:/x").is_some_and(|r| r.contains("well-formed")));
    }
}
