//! The HTTP client of revocation checks (ureq, blocking): GET a CRL, POST an OCSP request.
//! Plain `http://` only: CRLs and OCSP responses are signed, and providers publish them over
//! HTTP (RFC 5280 §4.2.1.13, RFC 6960 appendix A).

use std::time::Duration;

use crate::error::{Error, Result};

use super::MAX_BODY;

/// An agent whose requests end after `timeout`; HTTP status codes are checked here.
pub(super) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

fn plain_http(url: &str) -> Result<()> {
    if url.len() > 7 && url[..7].eq_ignore_ascii_case("http://") {
        return Ok(());
    }
    Err(Error::Provider {
        url: url.to_owned(),
        reason: "only http:// URLs are asked (CRLs and OCSP answers are signed and published over plain HTTP); ask the provider another way and record the answer with `custody revocation confirmed`".into(),
    })
}

fn read(
    url: &str,
    sent: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Vec<u8>> {
    let fail = |reason: String| Error::Provider {
        url: url.to_owned(),
        reason,
    };
    let mut response = sent.map_err(|e| {
        fail(format!(
            "cannot be reached ({e}); check the network and the provider's service, then run the check again"
        ))
    })?;
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
    plain_http(url)?;
    read(url, agent.get(url).call())
}

/// POSTs an OCSP request to `url`; the body of a 2xx answer.
pub(super) fn post(agent: &ureq::Agent, url: &str, request: &[u8]) -> Result<Vec<u8>> {
    plain_http(url)?;
    read(
        url,
        agent
            .post(url)
            .header("Content-Type", "application/ocsp-request")
            .send(request),
    )
}
