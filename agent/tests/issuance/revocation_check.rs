//! `custody revocation check` against a real provider built here: a CA made with `openssl req`
//! and `openssl ca`, a key generated on a SoftHSM2 token with its certificate, the CA's CRL
//! served over HTTP by a small server on a loopback port chosen at run time, and
//! `openssl ocsp` answering on another free loopback port.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::common::*;

/// A CA directory for `openssl ca`.
pub(crate) struct Ca {
    pub(crate) dir: PathBuf,
}

impl Ca {
    /// A new CA (ECDSA P-256) named `/CN=Test QTSP CA/O=Test QTSP`, in `w.dir/name`.
    pub(crate) fn new(w: &World, name: &str) -> Self {
        let dir = w.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("index.txt"), "").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("crlnumber"), "01\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = CA_default\n[CA_default]\ndir = {}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir\ncertificate = $dir/ca.pem\nprivate_key = $dir/ca.key\ncrlnumber = $dir/crlnumber\ndefault_md = sha256\ndefault_crl_days = 7\nunique_subject = no\npolicy = policy_any\n[policy_any]\ncommonName = supplied\n",
                dir.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        ok(Command::new("openssl").current_dir(&dir).args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=Test QTSP CA/O=Test QTSP",
            "-days",
            "3650",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]));
        ok(Command::new("openssl")
            .current_dir(&dir)
            .args(["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]));
        Self { dir }
    }

    fn openssl_ca(&self, args: &[&str]) {
        ok(Command::new("openssl")
            .current_dir(&self.dir)
            .args(["ca", "-config", "ca.cnf", "-batch"])
            .args(args));
    }

    /// Generates a key on the token `label`, issues its certificate (serial `serial`) naming
    /// `crl_url` and `ocsp_url` (each a comma-separated list: one distribution point or
    /// responder per URL), writes it to the token and returns the certificate's PEM path.
    fn issue_on_token(
        &self,
        w: &World,
        label: &str,
        serial: &str,
        subject: &str,
        crl_url: &str,
        ocsp_url: &str,
    ) -> PathBuf {
        ok(w.tool("pkcs11-tool").args([
            "--module",
            MODULE,
            "--token-label",
            label,
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            "01",
            "--label",
            "signing key",
        ]));
        let pub_der = w.dir.join(format!("{label}-pub.der"));
        ok(w.tool("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                label,
                "--read-object",
                "--type",
                "pubkey",
                "--id",
                "01",
                "-o",
            ])
            .arg(&pub_der));
        let pub_pem = w.dir.join(format!("{label}-pub.pem"));
        ok(Command::new("openssl")
            .args(["pkey", "-pubin", "-inform", "DER", "-in"])
            .arg(&pub_der)
            .arg("-out")
            .arg(&pub_pem));
        let csr = w.dir.join(format!("{label}.csr"));
        ok(Command::new("openssl")
            .args(["req", "-new", "-utf8", "-subj", subject, "-key"])
            .arg(self.dir.join("ca.key"))
            .arg("-out")
            .arg(&csr));
        let ext = w.dir.join(format!("{label}.ext"));
        std::fs::write(
            &ext,
            format!(
                "[leaf]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,nonRepudiation\ncrlDistributionPoints = {}\nauthorityInfoAccess = {}\n",
                list("URI:", crl_url),
                list("OCSP;URI:", ocsp_url)
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let pem = w.dir.join(format!("{label}.pem"));
        self.sign_request(&csr, serial, 365, Some(&pub_pem), (&ext, "leaf"), &pem);
        let der = w.dir.join(format!("{label}.der"));
        ok(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&der));
        ok(w.tool("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                label,
                "--login",
                "--pin",
                PIN,
                "--write-object",
            ])
            .arg(&der)
            .args(["--type", "cert", "--id", "01", "--label", "signing cert"]));
        pem
    }

    /// Marks a certificate valid in the CA's database.
    /// Issues the certificate `out` (PEM) for the request `csr`, valid `days`, with the
    /// extensions of `section` in the file `ext`; with `pubkey`, for that key instead of the
    /// request's.
    pub(crate) fn sign_request(
        &self,
        csr: &Path,
        serial: &str,
        days: u32,
        pubkey: Option<&Path>,
        (ext, section): (&Path, &str),
        out: &Path,
    ) {
        let mut command = Command::new("openssl");
        command
            .args([
                "x509",
                "-req",
                "-days",
                &days.to_string(),
                "-set_serial",
                serial,
                "-in",
            ])
            .arg(csr)
            .arg("-CA")
            .arg(self.dir.join("ca.pem"))
            .arg("-CAkey")
            .arg(self.dir.join("ca.key"));
        if let Some(pubkey) = pubkey {
            command.arg("-force_pubkey").arg(pubkey);
        }
        ok(command
            .arg("-extfile")
            .arg(ext)
            .args(["-extensions", section, "-out"])
            .arg(out));
    }

    fn valid(&self, pem: &Path) {
        let pem = pem.display().to_string();
        self.openssl_ca(&["-valid", &pem]);
    }

    /// Marks a certificate revoked (keyCompromise) in the CA's database.
    pub(crate) fn revoke(&self, pem: &Path) {
        let pem = pem.display().to_string();
        self.openssl_ca(&["-revoke", &pem, "-crl_reason", "keyCompromise"]);
    }

    /// Writes the CA's current CRL, DER, to `out`; returns its SHA-256.
    pub(crate) fn crl(&self, out: &Path) -> String {
        self.openssl_ca(&["-gencrl", "-out", "crl.pem"]);
        ok(Command::new("openssl")
            .current_dir(&self.dir)
            .args(["crl", "-in", "crl.pem", "-outform", "DER", "-out"])
            .arg(out));
        hex_sha256(&std::fs::read(out).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Puts the CA certificate on a token, as providers' tokens carry it.
    fn onto_token(&self, w: &World, label: &str) {
        ok(w.tool("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                label,
                "--login",
                "--pin",
                PIN,
                "--write-object",
            ])
            .arg(self.dir.join("ca.der"))
            .args(["--type", "cert", "--id", "99", "--label", "CA"]));
    }
}

/// An OpenSSL extension value of one entry per URL of the comma-separated `urls`.
fn list(prefix: &str, urls: &str) -> String {
    urls.split(',')
        .map(|u| format!("{prefix}{u}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A free loopback port (bound, then released for the server about to use it).
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

/// An empty directory `served` in the world's, for the CRLs a test publishes.
pub(crate) fn served_dir(w: &World) -> PathBuf {
    let served = w.dir.join("served");
    std::fs::create_dir_all(&served).unwrap_or_else(|e| panic!("{e}"));
    served
}

/// [`served_dir`] served over HTTP on a loopback port chosen at run time: the directory and
/// the URL of `ca.crl` in it.
fn crl_site(w: &World) -> (PathBuf, String) {
    let served = served_dir(w);
    let port = serve(served.clone());
    (served, format!("http://127.0.0.1:{port}/ca.crl"))
}

/// Serves the files of `dir` over HTTP/1.0 GET on a loopback port chosen at run time; the
/// thread ends with the test process.
fn serve(dir: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(&dir, stream);
        }
    });
    port
}

fn answer(dir: &Path, mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let name = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    match std::fs::read(dir.join(name)) {
        Ok(body) if !name.is_empty() && !name.contains("..") => {
            write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)
        }
        _ => stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    }
}

/// A daemon a test starts (`openssl ocsp`, `openssl s_server`), ready once it has printed a
/// given line; stopped (by its pid) on drop.
pub(crate) struct Daemon {
    child: Child,
}

/// Which of its output streams a [`Daemon`] says it is ready on.
pub(crate) enum ReadyOn {
    Stdout,
    Stderr,
}

impl Daemon {
    /// Spawns `command` and waits until it prints a line containing `ready` on `on`; the rest
    /// of that stream is drained so that the daemon never blocks on a full pipe.
    pub(crate) fn start(what: &str, command: &mut Command, on: ReadyOn, ready: &str) -> Self {
        let (stdout, stderr) = match on {
            ReadyOn::Stdout => (Stdio::piped(), Stdio::null()),
            ReadyOn::Stderr => (Stdio::null(), Stdio::piped()),
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stream: Box<dyn std::io::Read + Send> = match on {
            ReadyOn::Stdout => Box::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout"))),
            ReadyOn::Stderr => Box::new(child.stderr.take().unwrap_or_else(|| panic!("no stderr"))),
        };
        let mut lines = BufReader::new(stream).lines();
        let mut said = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    said.push_str(&line);
                    said.push('\n');
                    if line.contains(ready) {
                        break;
                    }
                }
                _ => panic!("{what} did not start listening: {said}"),
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Self { child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl ocsp` answering for `ca` on a free loopback port; stopped when the returned daemon
/// is dropped.
struct Responder;

impl Responder {
    fn start(ca: &Ca, port: u16) -> Daemon {
        Self::signed_by(ca, ca, port)
    }

    /// A responder answering from `ca`'s database but signing with `signer`'s key. It serves
    /// one connection at a time, so a probe connection would hold it up: it is ready once it
    /// says it listens.
    fn signed_by(ca: &Ca, signer: &Ca, port: u16) -> Daemon {
        Daemon::start(
            &format!("openssl ocsp on port {port}"),
            Command::new("openssl")
                .current_dir(&ca.dir)
                .args(["ocsp", "-index", "index.txt", "-port"])
                .arg(port.to_string())
                .arg("-rsigner")
                .arg(signer.dir.join("ca.pem"))
                .arg("-rkey")
                .arg(signer.dir.join("ca.key"))
                .args(["-CA", "ca.pem", "-ignore_err"]),
            ReadyOn::Stderr,
            "waiting for OCSP client connections",
        )
    }
}

/// A world with one token holding a key and its certificate from `ca`, scanned into the
/// journal, its revocation requested. Returns the token serial and the certificate PEM.
pub(crate) fn requested(
    w: &World,
    ca: &Ca,
    label: &str,
    serial: &str,
    crl: &str,
    ocsp: &str,
) -> (String, PathBuf) {
    let token = w.token(label);
    let pem = ca.issue_on_token(w, label, serial, "/CN=Звільнена Особа", crl, ocsp);
    w.revocation_requested(&token, "лист № 7/1");
    (token, pem)
}

pub(crate) fn confirmed_events(w: &World) -> Vec<serde_json::Value> {
    w.open()
        .events()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|e| e.kind.as_str() == "revocation_confirmed")
        .map(|e| serde_json::to_value(&e).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

#[test]
fn a_revocation_the_crl_lists_is_confirmed_with_its_evidence() {
    let w = World::new("revcheck-crl");
    let ca = Ca::new(&w, "ca");
    let (served, crl_url) = crl_site(&w);
    let (token, pem) = requested(&w, &ca, "crl", "4097", &crl_url, "http://127.0.0.1:9/");
    ca.revoke(&pem);
    let crl_sha = ca.crl(&served.join("ca.crl"));

    // The request is unconfirmed: status lists it (exit 1 for monitoring).
    let (code, out, err) = run(w
        .custody()
        .args(["status", "--unconfirmed", "0d", "--json"]));
    assert_eq!(code, 1, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["unconfirmed"][0]["serial"], token.as_str(), "{v:#}");

    let issuer = ca.dir.join("ca.pem").display().to_string();
    let (code, out, err) = run(w.custody().args([
        "--json",
        "revocation",
        "check",
        "--via",
        "crl",
        "--issuer",
        &issuer,
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    let c = &v["checked"][0];
    assert_eq!(c["status"], "revoked", "{v:#}");
    assert_eq!(c["evidence"][0]["source"], "crl");
    assert_eq!(c["evidence"][0]["url"], crl_url.as_str());
    assert_eq!(c["evidence"][0]["crl_number"], "1");
    assert_eq!(c["evidence"][0]["sha256"], crl_sha.as_str());
    assert_eq!(c["evidence"][0]["reason"], "keyCompromise");
    let events = confirmed_events(&w);
    assert_eq!(events.len(), 1, "{events:#?}");
    let data = &events[0]["data"];
    assert_eq!(c["recorded_seq"], events[0]["seq"], "{events:#?}");
    assert_eq!(data["evidence"][0]["sha256"], crl_sha.as_str(), "{data:#}");
    assert_eq!(data["evidence"][0]["crl_number"], "1", "{data:#}");
    assert!(
        data["reference"]
            .as_str()
            .is_some_and(|r| r.contains("CRL No. 1") && r.contains(&crl_url)),
        "{data:#}"
    );
    // Confirmed now: nothing left to check, nothing unconfirmed, the chain verifies.
    let (code, out, _) = run(w
        .custody()
        .args(["revocation", "check", "--issuer", &issuer]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No revocation request is waiting"), "{out}");
    let (code, out, err) = run(w.custody().args(["status", "--unconfirmed", "0d"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(confirmed_events(&w).len(), 1);
    ok(w.custody().args(["journal", "verify"]));
}

#[test]
fn a_revocation_ocsp_reports_is_confirmed_with_the_issuer_from_the_token() {
    let w = World::new("revcheck-ocsp");
    let ca = Ca::new(&w, "ca");
    let port = free_port();
    let ocsp_url = format!("http://127.0.0.1:{port}/");
    let (token, pem) = requested(
        &w,
        &ca,
        "ocsp",
        "4098",
        "http://127.0.0.1:9/ca.crl",
        &ocsp_url,
    );
    ca.onto_token(&w, "ocsp");
    ca.revoke(&pem);
    let _responder = Responder::start(&ca, port);

    let (code, out, err) =
        run(w
            .custody()
            .args(["--json", "revocation", "check", "--via", "ocsp"]));
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    let c = &v["checked"][0];
    assert_eq!(
        c["carrier"].as_str().map(|k| k.contains(&token)),
        Some(true),
        "{v:#}"
    );
    assert_eq!(c["status"], "revoked", "{v:#}");
    assert_eq!(c["evidence"][0]["source"], "ocsp");
    assert_eq!(c["evidence"][0]["url"], ocsp_url.as_str());
    assert_eq!(c["evidence"][0]["sha256"].as_str().map(str::len), Some(64));
    assert!(c["evidence"][0]["revoked_at"].is_string(), "{v:#}");
    let events = confirmed_events(&w);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["evidence"][0]["source"], "ocsp");
}

#[test]
fn a_good_answer_records_nothing_and_says_so() {
    let w = World::new("revcheck-good");
    let ca = Ca::new(&w, "ca");
    let (served, crl_url) = crl_site(&w);
    let ocsp_port = free_port();
    let ocsp_url = format!("http://127.0.0.1:{ocsp_port}/");
    let (_, pem) = requested(&w, &ca, "good", "4099", &crl_url, &ocsp_url);
    ca.valid(&pem);
    ca.crl(&served.join("ca.crl"));
    let _responder = Responder::start(&ca, ocsp_port);
    let issuer = ca.dir.join("ca.der").display().to_string();

    let (code, out, err) = run(w
        .custody()
        .args(["revocation", "check", "--issuer", &issuer]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("the provider says good; nothing recorded"),
        "{out}"
    );
    assert!(out.contains(&format!("CRL No. 1 {crl_url}: good")), "{out}");
    assert!(out.contains(&format!("OCSP {ocsp_url}: good")), "{out}");
    assert!(confirmed_events(&w).is_empty());
    // --all asks about the same certificate once.
    let (code, out, _) = run(w.custody().args([
        "--json",
        "revocation",
        "check",
        "--all",
        "--issuer",
        &issuer,
    ]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        json(&out)["checked"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );
    assert!(confirmed_events(&w).is_empty());
}

#[test]
fn a_provider_that_cannot_be_reached_is_an_error_and_nothing_is_recorded() {
    let w = World::new("revcheck-down");
    let ca = Ca::new(&w, "ca");
    let port = free_port();
    let crl_url = format!("http://127.0.0.1:{port}/ca.crl");
    let (_, pem) = requested(&w, &ca, "down", "4100", &crl_url, "http://127.0.0.1:9/");
    ca.revoke(&pem);
    let issuer = ca.dir.join("ca.pem").display().to_string();
    let before = w.open().event_count().unwrap_or_else(|e| panic!("{e}"));

    let (code, out, err) =
        run(w
            .custody()
            .args(["revocation", "check", "--via", "crl", "--issuer", &issuer]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains(&crl_url) && out.contains("cannot be reached"),
        "{out}{err}"
    );
    assert!(out.contains("nothing was recorded"), "{out}");
    assert_eq!(
        w.open().event_count().unwrap_or_else(|e| panic!("{e}")),
        before
    );
}

#[test]
fn a_crl_signed_by_another_ca_is_refused() {
    let w = World::new("revcheck-forged");
    let ca = Ca::new(&w, "ca");
    // Same name, another key: only the signature tells them apart.
    let other = Ca::new(&w, "other");
    let (served, crl_url) = crl_site(&w);
    let (_, pem) = requested(&w, &ca, "forged", "4101", &crl_url, "http://127.0.0.1:9/");
    other.revoke(&pem);
    other.crl(&served.join("ca.crl"));
    let issuer = ca.dir.join("ca.pem").display().to_string();

    let (code, out, err) = run(w.custody().args([
        "--json",
        "revocation",
        "check",
        "--via",
        "crl",
        "--issuer",
        &issuer,
    ]));
    assert_eq!(code, 2, "{out}{err}");
    let v = json(&out);
    let e = v["checked"][0]["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(&crl_url) && e.contains("not signed by the issuer"),
        "{v:#}"
    );
    assert!(v["checked"][0]["status"].is_null(), "{v:#}");
    assert!(confirmed_events(&w).is_empty());

    // The same CRL signed by the right CA is accepted (the positive control).
    ca.revoke(&pem);
    ca.crl(&served.join("ca.crl"));
    let (code, out, err) =
        run(w
            .custody()
            .args(["revocation", "check", "--via", "crl", "--issuer", &issuer]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(confirmed_events(&w).len(), 1);
}

#[test]
fn an_ocsp_answer_signed_by_another_key_is_refused() {
    let w = World::new("revcheck-ocsp-forged");
    let ca = Ca::new(&w, "ca");
    let other = Ca::new(&w, "other");
    let port = free_port();
    let ocsp_url = format!("http://127.0.0.1:{port}/");
    let (_, pem) = requested(
        &w,
        &ca,
        "ocspforged",
        "4102",
        "http://127.0.0.1:9/ca.crl",
        &ocsp_url,
    );
    ca.revoke(&pem);
    let issuer = ca.dir.join("ca.pem").display().to_string();
    {
        let _forged = Responder::signed_by(&ca, &other, port);
        let (code, out, err) = run(w.custody().args([
            "--json",
            "revocation",
            "check",
            "--via",
            "ocsp",
            "--issuer",
            &issuer,
        ]));
        assert_eq!(code, 2, "{out}{err}");
        let v = json(&out);
        let e = v["checked"][0]["error"].as_str().unwrap_or_default();
        assert!(
            e.contains(&ocsp_url) && e.contains("not signed by the issuer"),
            "{v:#}"
        );
        assert!(confirmed_events(&w).is_empty());
    }
    // The same answer signed by the issuer is accepted (the positive control).
    let _responder = Responder::start(&ca, port);
    let (code, out, err) =
        run(w
            .custody()
            .args(["revocation", "check", "--via", "ocsp", "--issuer", &issuer]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(confirmed_events(&w).len(), 1);
}

#[test]
fn garbage_instead_of_a_crl_is_an_error_and_nothing_is_recorded() {
    let w = World::new("revcheck-garbage");
    let ca = Ca::new(&w, "ca");
    let (served, crl_url) = crl_site(&w);
    let (_, pem) = requested(&w, &ca, "garbage", "4103", &crl_url, "http://127.0.0.1:9/");
    ca.revoke(&pem);
    std::fs::write(served.join("ca.crl"), "<html>portal maintenance</html>")
        .unwrap_or_else(|e| panic!("{e}"));
    let issuer = ca.dir.join("ca.pem").display().to_string();
    let (code, out, err) =
        run(w
            .custody()
            .args(["revocation", "check", "--via", "crl", "--issuer", &issuer]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains(&crl_url) && out.contains("not a DER CRL"),
        "{out}"
    );
    assert!(confirmed_events(&w).is_empty());
    // A wrong path answers 404: an error too.
    std::fs::remove_file(served.join("ca.crl")).unwrap_or_else(|e| panic!("{e}"));
    let (code, out, _) =
        run(w
            .custody()
            .args(["revocation", "check", "--via", "crl", "--issuer", &issuer]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("answered HTTP 404"), "{out}");
    assert!(confirmed_events(&w).is_empty());
}

/// An `ldap://` distribution point is skipped, named in the output, and the certificate's
/// other distribution points and OCSP responders asked; a certificate naming nothing else is
/// reported unchecked with the reason, and the run goes on to the next one.
#[test]
fn an_ldap_distribution_point_is_skipped_and_the_other_urls_asked() {
    let w = World::new("revcheck-ldap");
    let ca = Ca::new(&w, "ca");
    let (served, crl_url) = crl_site(&w);
    let ocsp_port = free_port();
    let ldap = "ldap://dir.example.org/cn=Test%20QTSP%20CA?certificateRevocationList";
    let ocsp_url = format!("http://127.0.0.1:{ocsp_port}/");
    // Both: an ldap:// point before an http:// one, and an OCSP responder.
    let (both, both_pem) = requested(
        &w,
        &ca,
        "both",
        "4110",
        &format!("{ldap},{crl_url}"),
        &ocsp_url,
    );
    // Only ldap:// for the CRL: OCSP answers.
    let (ocsp_only, ocsp_pem) = requested(&w, &ca, "ocsponly", "4111", ldap, &ocsp_url);
    // Nothing that can be asked.
    let ldap_ocsp = "ldap://dir.example.org/ocsp";
    let (nothing, nothing_pem) = requested(&w, &ca, "nothing", "4112", ldap, ldap_ocsp);
    for pem in [&both_pem, &ocsp_pem, &nothing_pem] {
        ca.revoke(pem);
    }
    let crl_sha = ca.crl(&served.join("ca.crl"));
    let _responder = Responder::start(&ca, ocsp_port);
    let issuer = ca.dir.join("ca.pem").display().to_string();

    let (code, out, err) =
        run(w
            .custody()
            .args(["--json", "revocation", "check", "--issuer", &issuer]));
    assert_eq!(
        code, 0,
        "an unchecked certificate does not fail the run: {out}{err}"
    );
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["unchecked"], 1, "{v:#}");
    let of = |token: &str| {
        v["checked"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["carrier"].as_str().is_some_and(|k| k.ends_with(token)))
            .cloned()
            .unwrap_or_else(|| panic!("{token} not checked: {v:#}"))
    };
    let skipped_ldap = |c: &serde_json::Value, source: &str, url: &str| {
        c["skipped"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["source"] == source
                    && s["url"] == url
                    && s["reason"].as_str().is_some_and(|r| r.contains("ldap://"))
            })
        })
    };

    let c = of(&both);
    assert_eq!(c["status"], "revoked", "{c:#}");
    assert!(c["error"].is_null() && c["unchecked"].is_null(), "{c:#}");
    assert!(skipped_ldap(&c, "crl", ldap), "{c:#}");
    assert_eq!(c["skipped"].as_array().map(Vec::len), Some(1), "{c:#}");
    assert_eq!(c["evidence"][0]["source"], "crl", "{c:#}");
    assert_eq!(c["evidence"][0]["url"], crl_url.as_str(), "{c:#}");
    assert_eq!(c["evidence"][0]["sha256"], crl_sha.as_str(), "{c:#}");
    assert_eq!(c["evidence"][1]["source"], "ocsp", "{c:#}");
    assert!(c["recorded_seq"].is_u64(), "{c:#}");

    let c = of(&ocsp_only);
    assert_eq!(c["status"], "revoked", "{c:#}");
    assert!(skipped_ldap(&c, "crl", ldap), "{c:#}");
    assert_eq!(c["evidence"].as_array().map(Vec::len), Some(1), "{c:#}");
    assert_eq!(c["evidence"][0]["source"], "ocsp", "{c:#}");
    assert!(c["recorded_seq"].is_u64(), "{c:#}");

    let c = of(&nothing);
    assert!(c["status"].is_null() && c["error"].is_null(), "{c:#}");
    assert!(c["recorded_seq"].is_null(), "{c:#}");
    assert!(
        skipped_ldap(&c, "crl", ldap) && skipped_ldap(&c, "ocsp", ldap_ocsp),
        "{c:#}"
    );
    let why = c["unchecked"].as_str().unwrap_or_default();
    assert!(
        why.contains(ldap) && why.contains(ldap_ocsp) && why.contains("revocation confirmed"),
        "{c:#}"
    );
    let events = confirmed_events(&w);
    assert_eq!(
        events.len(),
        2,
        "the two certificates with an answer: {events:#?}"
    );
    assert!(
        events.iter().all(|e| e["carrier"]
            .as_str()
            .is_some_and(|k| !k.ends_with(&nothing))),
        "nothing recorded for the unchecked one: {events:#?}"
    );

    // Text: the one left unconfirmed is said to be unchecked, with the URLs skipped.
    let (code, out, err) = run(w
        .custody()
        .args(["revocation", "check", "--issuer", &issuer]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("CRL {ldap}: skipped, its scheme ldap://")),
        "{out}"
    );
    assert!(out.contains(&format!("OCSP {ldap_ocsp}: skipped")), "{out}");
    assert!(
        out.contains("UNCHECKED: no URL it names can be asked here"),
        "{out}"
    );
    assert!(!out.contains(&both) && !out.contains(&ocsp_only), "{out}");
    // --via crl: unchecked too, and no hint to try OCSP (its responder is ldap:// as well).
    let (code, out, _) =
        run(w
            .custody()
            .args(["revocation", "check", "--via", "crl", "--issuer", &issuer]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("UNCHECKED") && !out.contains("try --via"),
        "{out}"
    );
    assert_eq!(confirmed_events(&w).len(), 2);
    ok(w.custody().args(["journal", "verify"]));
}
