//! Helpers: temp dirs, the `custody` binary, SoftHSM2 tokens built with softhsm2-util,
//! pkcs11-tool and openssl (each test in its own token directory; SOFTHSM2_CONF only in the
//! children's environment), and a journal with fixed content built through custody-core.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use custody_core::inventory::{CarrierSnapshot, KeyClass, KeyObject, Login, TokenFlags};
use custody_core::inventory::{ModuleInfo, ModuleScan};
use custody_core::journal::{
    Actor, ImportRow, IssueRequest, Journal, RevocationRequest, RevocationStep,
};
use time::macros::datetime;

pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub(crate) const ORG: &str = "Прилуцька міська рада";
/// The user PIN of every test token (distinctive, so a leak would be found).
pub(crate) const PIN: &str = "739146";

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("issuance-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// A test's own world: a directory, a SoftHSM2 token store, a config and a journal path.
pub(crate) struct World {
    pub(crate) dir: PathBuf,
    pub(crate) conf: PathBuf,
    pub(crate) journal: PathBuf,
    pub(crate) config: PathBuf,
}

impl World {
    pub(crate) fn new(name: &str) -> Self {
        let dir = temp_dir(name);
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap_or_else(|e| panic!("{e}"));
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = dir.join("custody.toml");
        std::fs::write(
            &config,
            format!("[organisation]\nname = \"{ORG}\"\ntimezone = \"Europe/Kyiv\"\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Self {
            journal: dir.join("journal.db"),
            dir,
            conf,
            config,
        }
    }

    /// `custody` with this world's journal, module, config and token store.
    pub(crate) fn custody(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_custody"));
        c.env("SOFTHSM2_CONF", &self.conf)
            .env("CUSTODY_CONFIG", &self.config)
            .env_remove("CUSTODY_LOG")
            .arg("--journal")
            .arg(&self.journal)
            .arg("--module")
            .arg(MODULE);
        c
    }

    /// A tool run with this world's SoftHSM2 configuration.
    pub(crate) fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", &self.conf).current_dir(&self.dir);
        c
    }

    /// Initialises a token; returns its serial.
    pub(crate) fn token(&self, label: &str) -> String {
        let out = ok(self.tool("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            "5678",
        ]));
        assert!(out.contains("initialized"), "{out}");
        let list = ok(self
            .tool("pkcs11-tool")
            .args(["--module", MODULE, "--list-token-slots"]));
        let mut serial = None;
        let mut this = false;
        for line in list.lines() {
            let l = line.trim();
            if let Some(v) = l.strip_prefix("token label") {
                this = v.trim_start_matches([' ', ':']).trim() == label;
            }
            if this {
                if let Some(v) = l.strip_prefix("serial num") {
                    serial = Some(v.trim_start_matches([' ', ':']).trim().to_owned());
                }
            }
        }
        serial.unwrap_or_else(|| panic!("no serial for {label} in {list}"))
    }

    /// Generates a key pair ON the token (`ec` or `rsa`) and writes a certificate for its
    /// public key, issued by a throwaway CA, with the given subject (openssl -subj syntax).
    pub(crate) fn key_with_cert(
        &self,
        label: &str,
        kind: &str,
        id: &str,
        subject: &str,
    ) -> Vec<u8> {
        self.key_with_cert_valid(label, kind, id, subject, 365)
    }

    /// [`World::key_with_cert`] with a certificate valid for `days` from now (0: it ends now,
    /// so it has expired a moment later).
    pub(crate) fn key_with_cert_valid(
        &self,
        label: &str,
        kind: &str,
        id: &str,
        subject: &str,
        days: u32,
    ) -> Vec<u8> {
        let key_type = if kind == "ec" {
            "EC:prime256v1"
        } else {
            "rsa:2048"
        };
        ok(self.tool("pkcs11-tool").args([
            "--module",
            MODULE,
            "--token-label",
            label,
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            key_type,
            "--id",
            id,
            "--label",
            "signing key",
        ]));
        let pub_der = self.dir.join(format!("{label}-{id}-pub.der"));
        ok(self
            .tool("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                label,
                "--read-object",
                "--type",
                "pubkey",
                "--id",
                id,
                "-o",
            ])
            .arg(&pub_der));
        let pub_pem = self.dir.join(format!("{label}-{id}-pub.pem"));
        ok(self
            .tool("openssl")
            .args(["pkey", "-pubin", "-inform", "DER", "-in"])
            .arg(&pub_der)
            .arg("-out")
            .arg(&pub_pem));
        let ca_key = self.dir.join("ca.key");
        let ca_pem = self.dir.join("ca.pem");
        if !ca_key.exists() {
            ok(self
                .tool("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-subj",
                    "/CN=Test QTSP CA",
                    "-days",
                    "3650",
                    "-keyout",
                ])
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca_pem));
        }
        let csr = self.dir.join(format!("{label}-{id}.csr"));
        ok(self
            .tool("openssl")
            .args(["req", "-new", "-utf8", "-subj", subject, "-key"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&csr));
        let cert = self.dir.join(format!("{label}-{id}.der"));
        ok(self
            .tool("openssl")
            .args([
                "x509",
                "-req",
                "-days",
                &days.to_string(),
                "-set_serial",
                "7",
                "-outform",
                "DER",
                "-in",
            ])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca_pem)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-force_pubkey")
            .arg(&pub_pem)
            .arg("-out")
            .arg(&cert));
        ok(self
            .tool("pkcs11-tool")
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
            .arg(&cert)
            .args(["--type", "cert", "--id", id, "--label", "signing cert"]));
        std::fs::read(&cert).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Scans the carriers into the journal and records that the revocation of the
    /// certificates on the carrier `token` (a serial) was requested, with `reference`: what
    /// every `custody revocation check` test starts from.
    pub(crate) fn revocation_requested(&self, token: &str, reference: &str) {
        ok(self.custody().arg("scan"));
        ok(self.custody().args([
            "revocation",
            "requested",
            "--carrier",
            token,
            "--ref",
            reference,
        ]));
    }

    /// Opens the journal through custody-core.
    pub(crate) fn open(&self) -> Journal {
        Journal::open(&self.journal).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn sqlite(&self, sql: &str) -> String {
        ok(Command::new("sqlite3").arg(&self.journal).arg(sql))
    }

    pub(crate) fn sqlite_json(&self, sql: &str) -> serde_json::Value {
        json(&ok(Command::new("sqlite3")
            .arg("-json")
            .arg(&self.journal)
            .arg(sql)))
    }
}

/// SHA-256 of `bytes`, lower-case hex (how custody names certificates, CRLs and answers),
/// computed here independently of custody.
pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs a command that must succeed; returns stdout + stderr.
pub(crate) fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

/// Runs a command: (exit code, stdout, stderr).
pub(crate) fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs a command with `input` on stdin.
pub(crate) fn run_with_stdin(cmd: &mut Command, input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Counts events of one kind.
pub(crate) fn count_kind(j: &Journal, kind: &str) -> usize {
    j.events()
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .filter(|e| e.kind.as_str() == kind)
        .count()
}

pub(crate) fn actor() -> Actor {
    Actor {
        os_user: "it".into(),
        operator: Some("Оператор ІТ".into()),
        host: "ws-01".into(),
    }
}

fn key(class: KeyClass, id: u8, fpr: &str, start: Option<&str>) -> KeyObject {
    KeyObject {
        class,
        id: custody_core::id::RawBytes::new(vec![id]),
        label: custody_core::id::RawBytes::new(b"key".to_vec()),
        key_type: 3,
        key_type_name: "EC".into(),
        public_key_sha256: Some(fpr.into()),
        local: Some(true),
        never_extractable: Some(true),
        always_sensitive: Some(true),
        start_date: start.map(Into::into),
    }
}

fn snapshot(serial: &str, label: &str) -> CarrierSnapshot {
    CarrierSnapshot {
        id: custody_core::id::CarrierId {
            manufacturer: "IIT".into(),
            model: "Almaz-1K".into(),
            serial: serial.into(),
            discriminator: None,
        },
        label: label.into(),
        strings_lossy: false,
        serial_weak: false,
        flags: TokenFlags {
            token_initialized: true,
            login_required: true,
            user_pin_initialized: true,
            ..TokenFlags::default()
        },
        hardware_version: "1.0".into(),
        firmware_version: "1.0".into(),
        module: "/usr/lib/fixed/libalmaz.so".into(),
        slot: 1,
        certificates: Vec::new(),
        public_keys: Vec::new(),
        private_keys: None,
        login: Login::NotAttempted,
    }
}

/// A real Ukrainian certificate from ../shared/testdata.
pub(crate) fn ua_cert(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/ua-certs")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Builds the journal of the golden files with a fixed clock and fixed actor: three paper
/// rows imported (numbers 3, 5, 9), five carriers scanned (rows 10–14, numbered when seen),
/// three of them issued (rows 10, 11, 12: generation time from a key attribute, a
/// certificate, first seen), one never issued (13), one destroyed without an issuance (14);
/// row 10 destroyed, row 11 revoked.
pub(crate) fn golden_journal(path: &Path) -> Journal {
    let _ = std::fs::remove_file(path);
    let mut j = Journal::open(path).unwrap_or_else(|e| panic!("{e}"));
    let a = actor();
    let rows = vec![
        ImportRow {
            line: 2,
            row_no: 3,
            generated: "12.01.2021".into(),
            carrier: "Алмаз-1К, сер. № 000123".into(),
            received: "15.01.2021, Коваленко Марія Іванівна, \"підпис\"".into(),
            destroyed: "20.12.2023, Шевчук Олег Петрович".into(),
            note: String::new(),
        },
        ImportRow {
            line: 3,
            row_no: 5,
            generated: "03.03.2022 10:15".into(),
            carrier: "Кристал-1, сер. № 4471".into(),
            received: "04.03.2022, Мар'яненко Ганна Олексіївна".into(),
            destroyed: String::new(),
            note: "ключі на носії \"Кристал\"".into(),
        },
        ImportRow {
            line: 4,
            row_no: 9,
            generated: "2023-06-01".into(),
            carrier: "SecureToken-338, s/n 0099".into(),
            received: "02.06.2023, Бойко Степан".into(),
            destroyed: String::new(),
            note: String::new(),
        },
    ];
    j.import(&rows, "paper.csv", &a, datetime!(2026-03-01 08:00 UTC))
        .unwrap_or_else(|e| panic!("{e}"));
    // Three carriers appear.
    let mut a_snap = snapshot("a1b2c3d4e5f60001", "Петренко");
    a_snap.public_keys = vec![key(KeyClass::Public, 1, "11aa", None)];
    a_snap.private_keys = Some(vec![key(KeyClass::Private, 1, "11aa", Some("2025-03-14"))]);
    let mut b_snap = snapshot("a1b2c3d4e5f60002", "Дія");
    let der = ua_cert("diia-test-sign-7775603.cer");
    let info = custody_core::cert::CertInfo::parse(&der).unwrap_or_else(|e| panic!("{e}"));
    b_snap.certificates = vec![custody_core::inventory::CertObject {
        id: custody_core::id::RawBytes::new(vec![2]),
        label: custody_core::id::RawBytes::new(b"sign".to_vec()),
        sha256: custody_core::cert::sha256_hex(&der),
        info: Some(info),
        parse_error: None,
        key_pairing: custody_core::inventory::KeyPairing::None,
    }];
    let mut c_snap = snapshot("a1b2c3d4e5f60003", "Token C");
    c_snap.public_keys = vec![key(KeyClass::Public, 3, "33cc", None)];
    // Never issued: columns 4 and 5 stay empty, to be signed by hand.
    let mut d_snap = snapshot("a1b2c3d4e5f60004", "spare");
    d_snap.public_keys = vec![key(KeyClass::Public, 4, "44dd", None)];
    // Destroyed without ever being issued (a key generated and never handed out).
    let mut e_snap = snapshot("a1b2c3d4e5f60005", "found");
    e_snap.public_keys = vec![key(KeyClass::Public, 5, "55ee", Some("2024-11-05"))];
    let scan = ModuleScan::read(
        ModuleInfo {
            path: "/usr/lib/fixed/libalmaz.so".into(),
            manufacturer: "IIT".into(),
            description: "fixed".into(),
            version: "1.0".into(),
        },
        vec![a_snap, b_snap, c_snap, d_snap, e_snap],
        Vec::new(),
        5,
        None,
    );
    j.record_scan(&[scan], &a, datetime!(2026-03-01 09:00 UTC))
        .unwrap_or_else(|e| panic!("{e}"));
    let issue = |j: &mut Journal, req: IssueRequest, now| {
        let plan = j.plan_issue(&req, now).unwrap_or_else(|e| panic!("{e}"));
        j.issue(&req, None, &a, now, &plan)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    issue(
        &mut j,
        IssueRequest {
            carrier: "a1b2c3d4e5f60001".into(),
            holder: Some("Петренко Петро Петрович".into()),
            position: Some("начальник відділу".into()),
            tax_number: Some("3012345678".into()),
            ..IssueRequest::default()
        },
        datetime!(2026-03-02 10:00 UTC),
    );
    issue(
        &mut j,
        IssueRequest {
            carrier: "a1b2c3d4e5f60002".into(),
            date: Some(time::macros::date!(2026 - 03 - 03)),
            certificates: vec![der],
            ..IssueRequest::default()
        },
        datetime!(2026-03-03 11:30 UTC),
    );
    issue(
        &mut j,
        IssueRequest {
            carrier: "a1b2c3d4e5f60003".into(),
            holder: Some("Smith, \"Jo\" <admin>".into()),
            ..IssueRequest::default()
        },
        datetime!(2026-03-04 12:00 UTC),
    );
    // A destruction (recorded by the wipe code as `wipe_completed`) and a revocation.
    j.write(&a, datetime!(2026-03-10 09:15 UTC), |w| {
        w.append(
            custody_core::journal::EventKind::WipeCompleted,
            Some("IIT/Almaz-1K/a1b2c3d4e5f60001"),
            &serde_json::json!({ "responsible": "Шевчук Олег Петрович", "method": "reinit" }),
        )
    })
    .unwrap_or_else(|e| panic!("{e}"));
    j.write(&a, datetime!(2026-03-10 09:40 UTC), |w| {
        w.append(
            custody_core::journal::EventKind::WipeCompleted,
            Some("IIT/Almaz-1K/a1b2c3d4e5f60005"),
            &serde_json::json!({ "responsible": "Шевчук Олег Петрович", "method": "reinit" }),
        )
    })
    .unwrap_or_else(|e| panic!("{e}"));
    j.record_revocation(
        RevocationStep::Requested,
        &RevocationRequest {
            carrier: "a1b2c3d4e5f60002".into(),
            reference: "лист № 12/3-45".into(),
            date: Some(time::macros::date!(2026 - 03 - 11)),
            ..RevocationRequest::default()
        },
        &a,
        datetime!(2026-03-11 10:00 UTC),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    j.record_revocation(
        RevocationStep::Confirmed,
        &RevocationRequest {
            carrier: "a1b2c3d4e5f60002".into(),
            reference: "QTSP-2026-0042".into(),
            date: Some(time::macros::date!(2026 - 03 - 12)),
            ..RevocationRequest::default()
        },
        &a,
        datetime!(2026-03-12 10:00 UTC),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    j
}
