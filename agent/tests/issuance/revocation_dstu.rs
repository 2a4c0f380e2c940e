//! `custody revocation check` against a provider that signs with DSTU 4145, as Ukrainian
//! providers do: a CA built here (`dstu_provider`) with a DSTU 4145 key, its certificate on a
//! SoftHSM2 token, its CRL and OCSP answers served over HTTP on a loopback port chosen at run
//! time. Good answers are verified and recorded; tampered ones, and ones signed by anyone but
//! the issuer or a responder it certified for OCSP signing, are refused with nothing recorded.
//! Then the real Diia chain: its issuer is found by its DSTU 4145 signature.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::common::*;
use super::dstu_provider::{Party, Profile, Tamper};

/// What the loopback server answers (path -> body) and every request line it got.
#[derive(Clone, Default)]
struct Site {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Site {
    /// Serves GET and POST (the body read and dropped) on a free loopback port.
    fn serve(&self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let site = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = site.answer(stream);
            }
        });
        port
    }

    fn answer(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.trim().to_owned());
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        let found = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .cloned();
        match found {
            Some(body) => {
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )?;
                stream.write_all(&body)
            }
            None => stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            ),
        }
    }

    fn put(&self, name: &str, body: Vec<u8>) -> String {
        let sha = hex_sha256(&body);
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), body);
        sha
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

const SERIAL: u64 = 4099;

/// A world whose token holds a certificate the DSTU CA issued (serial [`SERIAL`], CRL and
/// OCSP on `site`), scanned, its revocation requested. The CA, and its certificate's file.
fn requested(name: &str, port: u16) -> (World, Party, PathBuf) {
    let w = World::new(name);
    let ca = Party::new("Test DSTU CA", "ca");
    let ca_file = w.dir.join("ca.der");
    std::fs::write(&ca_file, ca.issue(&ca, 1, &Profile::default_ca()))
        .unwrap_or_else(|e| panic!("{e}"));
    let holder = Party::new("Звільнена Особа", "holder");
    let leaf = ca.issue(
        &holder,
        SERIAL,
        &Profile {
            crl_url: Some(format!("http://127.0.0.1:{port}/ca.crl")),
            ocsp_url: Some(format!("http://127.0.0.1:{port}/ocsp")),
            ..Profile::default()
        },
    );
    let leaf_file = w.dir.join("leaf.der");
    std::fs::write(&leaf_file, leaf).unwrap_or_else(|e| panic!("{e}"));
    let token = w.token("dstu");
    ok(w.tool("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            "dstu",
            "--login",
            "--pin",
            PIN,
            "--write-object",
        ])
        .arg(&leaf_file)
        .args(["--type", "cert", "--id", "01"]));
    w.revocation_requested(&token, "лист № 7/4");
    (w, ca, ca_file)
}

/// `custody --json revocation check --via VIA --issuer FILE`: exit code and output.
fn check(w: &World, via: &str, issuer: &std::path::Path) -> (i32, serde_json::Value) {
    let (code, out, err) = run(w
        .custody()
        .args(["--json", "revocation", "check", "--via", via, "--issuer"])
        .arg(issuer));
    assert!(out.starts_with('{'), "{out}{err}");
    (code, json(&out))
}

fn confirmed(w: &World) -> usize {
    count_kind(&w.open(), "revocation_confirmed")
}

/// A refusal: exit 2, the error says `needle`, nothing recorded.
fn refused(w: &World, via: &str, issuer: &std::path::Path, needle: &str, what: &str) {
    let (code, v) = check(w, via, issuer);
    assert_eq!(code, 2, "{what}: {v:#}");
    let error = v["checked"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "{what}: {v:#}");
    assert_eq!(confirmed(w), 0, "{what}: nothing recorded");
}

impl Profile {
    fn default_ca() -> Self {
        Self {
            ca: true,
            ..Self::default()
        }
    }
}

#[test]
fn a_dstu_4145_crl_is_verified_and_a_tampered_or_foreign_one_refused() {
    let site = Site::default();
    let port = site.serve();
    let (w, ca, ca_file) = requested("revcheck-dstu-crl", port);

    let bad_signature = "the CRL's signature does not verify with the issuer's key";
    site.put("ca.crl", ca.crl(5, &[SERIAL], Tamper::Signature));
    refused(
        &w,
        "crl",
        &ca_file,
        bad_signature,
        "a flipped signature byte",
    );
    site.put("ca.crl", ca.crl(5, &[SERIAL], Tamper::Tbs));
    refused(
        &w,
        "crl",
        &ca_file,
        bad_signature,
        "the CRL changed after signing",
    );
    // Another key under the issuer's very name; another CA altogether.
    let impostor = Party::new("Test DSTU CA", "impostor");
    site.put("ca.crl", impostor.crl(5, &[SERIAL], Tamper::None));
    refused(&w, "crl", &ca_file, bad_signature, "signed by another key");
    let other = Party::new("Other DSTU CA", "other");
    site.put("ca.crl", other.crl(5, &[SERIAL], Tamper::None));
    refused(
        &w,
        "crl",
        &ca_file,
        "issued by another CA than the certificate's issuer",
        "another CA's CRL",
    );

    // The issuer's own CRL, not listing the certificate: good, nothing recorded.
    site.put("ca.crl", ca.crl(4, &[1, 2], Tamper::None));
    let (code, v) = check(&w, "crl", &ca_file);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["checked"][0]["status"], "good", "{v:#}");
    assert_eq!(confirmed(&w), 0);
    // Listing it: revoked, recorded with the CRL's number and hash.
    let sha = site.put("ca.crl", ca.crl(5, &[1, SERIAL], Tamper::None));
    let (code, v) = check(&w, "crl", &ca_file);
    assert_eq!(code, 0, "{v:#}");
    let c = &v["checked"][0];
    assert_eq!(c["status"], "revoked", "{v:#}");
    assert_eq!(c["evidence"][0]["crl_number"], "5", "{v:#}");
    assert_eq!(c["evidence"][0]["sha256"], sha.as_str(), "{v:#}");
    assert_eq!(c["evidence"][0]["reason"], "keyCompromise", "{v:#}");
    assert_eq!(confirmed(&w), 1);
    ok(w.custody().args(["journal", "verify"]));
}

#[test]
fn a_dstu_4145_ocsp_answer_counts_only_from_the_issuer_or_its_ocsp_signer() {
    let site = Site::default();
    let port = site.serve();
    let (w, ca, ca_file) = requested("revcheck-dstu-ocsp", port);
    let not_signed = "the OCSP response is not signed by the issuer or a responder it certified";

    site.put("ocsp", ca.ocsp(&ca, SERIAL, true, &[], Tamper::Signature));
    refused(&w, "ocsp", &ca_file, not_signed, "a flipped signature byte");
    site.put("ocsp", ca.ocsp(&ca, SERIAL, true, &[], Tamper::Tbs));
    refused(
        &w,
        "ocsp",
        &ca_file,
        not_signed,
        "the answer changed after signing",
    );
    let impostor = Party::new("Test DSTU CA", "impostor");
    site.put("ocsp", impostor.ocsp(&ca, SERIAL, true, &[], Tamper::None));
    refused(&w, "ocsp", &ca_file, not_signed, "signed by another key");

    // Delegated responders: only one the issuer certified for OCSP signing counts.
    let responder = Party::new("Test DSTU OCSP", "responder");
    let signer = Profile {
        ocsp_signing: true,
        ..Profile::default()
    };
    let no_eku = ca.issue(&responder, 7, &Profile::default());
    site.put(
        "ocsp",
        responder.ocsp(&ca, SERIAL, true, &[no_eku], Tamper::None),
    );
    refused(
        &w,
        "ocsp",
        &ca_file,
        "not for OCSP signing (no id-kp-OCSPSigning)",
        "a responder without id-kp-OCSPSigning",
    );
    for (issuer, what) in [
        (Party::new("Other DSTU CA", "other"), "another CA"),
        (impostor.clone(), "another key under the issuer's name"),
    ] {
        let cert = issuer.issue(&responder, 8, &signer);
        site.put(
            "ocsp",
            responder.ocsp(&ca, SERIAL, true, &[cert], Tamper::None),
        );
        refused(
            &w,
            "ocsp",
            &ca_file,
            "was not issued by the certificate's issuer",
            &format!("a responder certified by {what}"),
        );
    }
    let delegated = ca.issue(&responder, 9, &signer);
    site.put(
        "ocsp",
        responder.ocsp(
            &ca,
            SERIAL,
            true,
            std::slice::from_ref(&delegated),
            Tamper::Signature,
        ),
    );
    refused(
        &w,
        "ocsp",
        &ca_file,
        "the responder certificate's key",
        "the delegated responder's answer, its signature flipped",
    );
    // The issuer's delegated responder: good, nothing recorded.
    site.put(
        "ocsp",
        responder.ocsp(&ca, SERIAL, false, &[delegated], Tamper::None),
    );
    let (code, v) = check(&w, "ocsp", &ca_file);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["checked"][0]["status"], "good", "{v:#}");
    assert_eq!(confirmed(&w), 0);
    // The issuer itself: revoked, recorded with the answer's hash.
    let sha = site.put("ocsp", ca.ocsp(&ca, SERIAL, true, &[], Tamper::None));
    let (code, v) = check(&w, "ocsp", &ca_file);
    assert_eq!(code, 0, "{v:#}");
    let c = &v["checked"][0];
    assert_eq!(c["status"], "revoked", "{v:#}");
    assert_eq!(c["evidence"][0]["source"], "ocsp");
    assert_eq!(c["evidence"][0]["sha256"], sha.as_str(), "{v:#}");
    assert_eq!(c["evidence"][0]["reason"], "keyCompromise", "{v:#}");
    assert_eq!(confirmed(&w), 1);
    assert!(
        site.asked().iter().all(|l| l.starts_with("POST /ocsp ")),
        "{:?}",
        site.asked()
    );
    ok(w.custody().args(["journal", "verify"]));
}

fn ua_cert_path(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/ua-certs")
        .join(name)
}

/// `custody` whose HTTP goes to the loopback `site` as its proxy: the real certificates
/// name the provider's URLs, and no request may leave the machine.
fn through_proxy(w: &World, port: u16) -> std::process::Command {
    let mut c = w.custody();
    for var in [
        "NO_PROXY",
        "no_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    c.env("ALL_PROXY", format!("http://127.0.0.1:{port}"));
    c
}

/// The real Diia chain (DSTU 4145): the issuer is found on the token by verifying the
/// certificate's DSTU 4145 signature with each candidate's key, and the provider's OCSP
/// responder is asked (here: through a loopback proxy that refuses to connect anywhere); a
/// DSTU CA that did not issue it is refused as the issuer before any request.
#[test]
fn the_real_diia_chain_is_verified_with_dstu_4145() {
    let site = Site::default();
    let port = site.serve();
    let ocsp_url = "http://ca.informjust.ua/services/ocsp/";
    let w = World::new("revcheck-diia");
    let token = w.token("diia");
    let write = |w: &World, file: &str, id: &str| {
        ok(w.tool("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                "diia",
                "--login",
                "--pin",
                PIN,
                "--write-object",
            ])
            .arg(ua_cert_path(file))
            .args(["--type", "cert", "--id", id]));
    };
    write(&w, "diia-test-sign-7775603.cer", "01");
    write(
        &w,
        "diia-CA-05E19E2CD92EA2990100000001000000E1000000.cer",
        "99",
    );
    ok(w.custody().arg("scan"));
    let sign = hex_sha256(&ua_cert("diia-test-sign-7775603.cer"));
    ok(w.custody().args([
        "revocation",
        "requested",
        "--carrier",
        &token,
        "--cert",
        &sign[..16],
        "--ref",
        "лист № 7/2",
    ]));
    let (code, out, err) =
        run(through_proxy(&w, port).args(["--json", "revocation", "check", "--via", "ocsp"]));
    assert_eq!(code, 2, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["checked"][0]["certificate"], sign.as_str(), "{v:#}");
    let e = v["checked"][0]["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(ocsp_url) && e.contains("CONNECT proxy failed"),
        "the issuer was found by its DSTU 4145 signature, then OCSP asked: {v:#}"
    );
    assert_eq!(
        site.asked(),
        ["CONNECT ca.informjust.ua:80 HTTP/1.1"],
        "the one request went to the loopback proxy, which refused it"
    );
    assert_eq!(count_kind(&w.open(), "revocation_confirmed"), 0);

    // Only the certificate on the token: another DSTU 4145 CA given with --issuer does not
    // verify it (refused, naming --issuer, nothing asked).
    let w = World::new("revcheck-diia-issuer");
    let token = w.token("diia");
    write(&w, "diia-test-sign-7775603.cer", "01");
    w.revocation_requested(&token, "лист № 7/3");
    let (code, out, err) = run(through_proxy(&w, port)
        .args(["--json", "revocation", "check", "--via", "ocsp", "--issuer"])
        .arg(ua_cert_path("CA-Justice.cer")));
    assert_eq!(code, 2, "{out}{err}");
    let e = json(&out)["checked"][0]["error"].clone();
    assert!(
        e.as_str()
            .is_some_and(|e| e.contains("no certificate of its issuer")),
        "{out}"
    );
    assert_eq!(site.asked().len(), 1, "nothing more was asked");
    assert_eq!(count_kind(&w.open(), "revocation_confirmed"), 0);
}
