//! `custody revocation check` fetches a CRL that the certificate names over HTTPS: served by
//! `openssl s_server -WWW` on a free loopback port, with a server certificate from a CA made
//! with openssl. The server is trusted only through the CA store OpenSSL is given
//! (`SSL_CERT_FILE`); without it the check fails with a clear error and nothing is recorded.

use std::process::Command;

use super::common::*;
use super::revocation_check::{
    confirmed_events, free_port, requested, served_dir, Ca, Daemon, ReadyOn,
};

/// `openssl s_server -WWW` serving the files of `dir` over HTTPS on `port` (127.0.0.1) with a
/// certificate for IP 127.0.0.1 issued by `ca`; stopped when the returned daemon is dropped.
struct HttpsServer;

impl HttpsServer {
    fn start(w: &World, ca: &Ca, dir: &std::path::Path, port: u16) -> Daemon {
        let key = w.dir.join("server.key");
        let csr = w.dir.join("server.csr");
        let pem = w.dir.join("server.pem");
        let ext = w.dir.join("server.ext");
        ok(Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        std::fs::write(
            &ext,
            "[srv]\nsubjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        ca.sign_request(&csr, "77", 30, None, (&ext, "srv"), &pem);
        Daemon::start(
            &format!("openssl s_server on port {port}"),
            Command::new("openssl")
                .current_dir(dir)
                .args(["s_server", "-WWW", "-accept"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("-cert")
                .arg(&pem)
                .arg("-key")
                .arg(&key),
            ReadyOn::Stdout,
            "ACCEPT",
        )
    }
}

#[test]
fn a_crl_named_with_https_is_fetched_over_verified_tls() {
    let w = World::new("revcheck-https");
    let ca = Ca::new(&w, "ca");
    let served = served_dir(&w);
    let port = free_port();
    let crl_url = format!("https://127.0.0.1:{port}/ca.crl");
    let (_, pem) = requested(&w, &ca, "https", "4100", &crl_url, "http://127.0.0.1:9/");
    ca.revoke(&pem);
    let crl_sha = ca.crl(&served.join("ca.crl"));
    let _server = HttpsServer::start(&w, &ca, &served, port);
    let issuer = ca.dir.join("ca.pem");
    let check = |trusted: &std::path::Path| {
        run(w
            .custody()
            .env("SSL_CERT_FILE", trusted)
            .env_remove("SSL_CERT_DIR")
            .args(["--json", "revocation", "check", "--via", "crl", "--issuer"])
            .arg(&issuer))
    };

    // A store without the server's CA: the TLS connection is refused, nothing recorded.
    let other = Ca::new(&w, "other");
    let (code, out, err) = check(&other.dir.join("ca.pem"));
    assert_eq!(code, 2, "{out}{err}");
    let v = json(&out);
    let e = v["checked"][0]["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(&crl_url) && e.contains("TLS connection failed") && e.contains("SSL_CERT_FILE"),
        "{v:#}"
    );
    assert!(confirmed_events(&w).is_empty());

    // Trusting the server's CA: fetched, verified, recorded.
    let (code, out, err) = check(&ca.dir.join("ca.pem"));
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    let c = &v["checked"][0];
    assert_eq!(c["status"], "revoked", "{v:#}");
    assert_eq!(c["evidence"][0]["url"], crl_url.as_str(), "{v:#}");
    assert_eq!(c["evidence"][0]["sha256"], crl_sha.as_str(), "{v:#}");
    assert_eq!(confirmed_events(&w).len(), 1);
}
