//! Test environment for orders and wipes: a SoftHSM2 token set built once per test run
//! (softhsm2-util, pkcs11-tool, openssl) and copied per test, OpenSSH signer keys, a
//! configuration, and helpers to run the real `custody` binary, under OpenSC's pkcs11-spy when
//! asked. SOFTHSM2_CONF is set only in child processes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use custody_core::journal::{EventRow, Journal};
use serde_json::Value;

pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub(crate) const SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so";
/// Distinctive PINs: the canary test looks for them everywhere.
pub(crate) const SO_PIN: &str = "so-Kq7ZpX4mRtB2w";
pub(crate) const USER_PIN: &str = "us-9vLw3NcHj8Dyq";

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The token set and keys every test starts from.
pub(crate) struct Template {
    pub(crate) dir: PathBuf,
    /// Serial of the token "alice": EC key 01 with a certificate, EC key 02 without.
    pub(crate) alice: String,
    /// Serial of the token "other": EC key 01, no certificate.
    pub(crate) other: String,
    /// SHA-256 of alice's certificate.
    pub cert_sha256: String,
}

fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

fn run_ok(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

fn write_conf(dir: &Path) -> Result<PathBuf, String> {
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            dir.join("tokens").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(conf)
}

/// Removes templates of earlier test runs (older than an hour: a run in parallel keeps its own).
fn remove_old_templates() {
    let Ok(entries) = std::fs::read_dir(tmp_root()) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if old
            && e.file_name()
                .to_string_lossy()
                .starts_with("orders-template-")
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn build_template() -> Result<Template, String> {
    remove_old_templates();
    let dir = tmp_root().join(format!("orders-template-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens")).map_err(|e| e.to_string())?;
    let conf = write_conf(&dir)?;
    let hsm = |args: &[&str]| {
        run_ok(
            Command::new("softhsm2-util")
                .args(args)
                .env("SOFTHSM2_CONF", &conf),
        )
    };
    let p11 = |args: &[&str]| {
        run_ok(
            Command::new("pkcs11-tool")
                .args(["--module", MODULE])
                .args(args)
                .env("SOFTHSM2_CONF", &conf),
        )
    };
    for label in ["alice", "other"] {
        hsm(&[
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ])?;
    }
    let login = ["--login", "--pin", USER_PIN];
    for (token, id, label) in [
        ("alice", "01", "sign"),
        ("alice", "02", "auth"),
        ("other", "01", "sign"),
    ] {
        let mut args = vec![
            "--token-label",
            token,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            id,
            "--label",
            label,
        ];
        args.extend(login);
        p11(&args)?;
    }
    let cert = dir.join("alice.der");
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=Alice Test",
                "-days",
                "30",
                "-outform",
                "DER",
                "-keyout",
            ])
            .arg(dir.join("alice.key"))
            .arg("-out")
            .arg(&cert),
    )?;
    let cert_s = cert.display().to_string();
    let mut args = vec![
        "--token-label",
        "alice",
        "--write-object",
        &cert_s,
        "--type",
        "cert",
        "--id",
        "01",
        "--label",
        "sign cert",
    ];
    args.extend(login);
    p11(&args)?;
    let der = std::fs::read(&cert).map_err(|e| e.to_string())?;
    let cert_sha256 = custody_core::cert::sha256_hex(&der);
    let shown = hsm(&["--show-slots"])?;
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    let mut serial = None;
    let mut serials = std::collections::HashMap::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix("Serial number:") {
            serial = Some(s.trim().to_owned());
        } else if let Some(label) = l.strip_prefix("Label:") {
            if let Some(s) = serial.take() {
                serials.insert(label.trim().to_owned(), s);
            }
        }
    }
    for name in ["hr", "it", "mallory"] {
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(dir.join(name)),
        )?;
    }
    Ok(Template {
        alice: serials.get("alice").cloned().ok_or("no alice serial")?,
        other: serials.get("other").cloned().ok_or("no other serial")?,
        cert_sha256,
        dir,
    })
}

/// The template, built once per test process.
pub(crate) fn template() -> &'static Template {
    static T: OnceLock<Result<Template, String>> = OnceLock::new();
    match T.get_or_init(build_template) {
        Ok(t) => t,
        Err(e) => panic!("building the SoftHSM2 template failed: {e}"),
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

/// One test's world: its own copy of the tokens, journal, configuration and spool.
pub(crate) struct Env {
    pub(crate) dir: PathBuf,
    pub(crate) conf: PathBuf,
    pub(crate) journal: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) t: &'static Template,
}

pub(crate) fn private_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// One `[[pin]]` rule per carrier of the template (alice, other), each with `sources`.
pub(crate) fn pin_rules(t: &Template, sources: &str) -> String {
    [&t.alice, &t.other]
        .iter()
        .map(|serial| {
            format!(
                "[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"{serial}\"\n{sources}"
            )
        })
        .collect()
}

impl Env {
    pub(crate) fn new(name: &str) -> Self {
        Self::with_config(name, 1, true)
    }

    /// `required` signers; `user_pin_configured`: a [[pin]] rule with the user PIN file.
    pub(crate) fn with_config(name: &str, required: u32, user_pin_configured: bool) -> Self {
        let t = template();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = tmp_root().join(format!("orders-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&t.dir.join("tokens"), &dir.join("tokens")).unwrap_or_else(|e| panic!("{e}"));
        let conf = write_conf(&dir).unwrap_or_else(|e| panic!("{e}"));
        let public = |k: &str| {
            std::fs::read_to_string(t.dir.join(format!("{k}.pub")))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        std::fs::write(
            dir.join("allowed_signers"),
            format!(
                "# HR and IT may order wipes\nhr@example.org namespaces=\"custody-order\" {}\nit@example.org {}\n",
                public("hr"),
                public("it")
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        private_file(&dir.join("so.pin"), &format!("{SO_PIN}\n"));
        private_file(&dir.join("user.pin"), &format!("{USER_PIN}\n"));
        let pin_rule = if user_pin_configured {
            pin_rules(
                t,
                &format!("user_pin_file = \"{}\"\n", dir.join("user.pin").display()),
            )
        } else {
            String::new()
        };
        let config = dir.join("custody.toml");
        std::fs::write(
            &config,
            format!(
                "[orders]\nallowed_signers = \"{}\"\nrequired_signers = {required}\n[service]\nspool = \"{}\"\n{pin_rule}",
                dir.join("allowed_signers").display(),
                dir.join("spool").display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Self {
            journal: dir.join("journal.db"),
            dir,
            conf,
            config,
            t,
        }
    }

    /// Adds the SO PIN file to the configuration's [[pin]] rule (for the spool).
    pub(crate) fn configure_so_pin(&self) {
        let text = std::fs::read_to_string(&self.config).unwrap_or_default();
        let so = format!("so_pin_file = \"{}\"\n", self.path("so.pin").display());
        let text = if text.contains("[[pin]]") {
            text.replace("[[pin]]\n", &format!("[[pin]]\n{so}"))
        } else {
            format!("{text}{}", pin_rules(self.t, &so))
        };
        std::fs::write(&self.config, text).unwrap_or_else(|e| panic!("{e}"));
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The custody command with this env's journal, module and configuration.
    pub(crate) fn command(&self, module: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_custody"));
        cmd.env("SOFTHSM2_CONF", &self.conf)
            .env_remove("CUSTODY_CONFIG")
            .env_remove("CUSTODY_LOG")
            .arg("--journal")
            .arg(&self.journal)
            .arg("--module")
            .arg(module)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null());
        cmd
    }

    pub(crate) fn custody(&self, args: &[&str]) -> Output {
        self.command(MODULE)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `custody wipe --order ORDER` with the carrier's SO PIN file (`so.pin`).
    pub(crate) fn wipe(&self, order: &Path) -> Output {
        let so = self.path("so.pin");
        self.custody(&[
            "wipe",
            "--order",
            order.to_str().unwrap_or(""),
            "--so-pin-file",
            so.to_str().unwrap_or(""),
        ])
    }

    /// Runs custody with the module behind pkcs11-spy; returns the output and the spy's
    /// counts of C_InitToken and C_DestroyObject. The spy log holds PINs: it stays in the
    /// test directory, is never printed, and is deleted.
    pub(crate) fn custody_spied(&self, args: &[&str]) -> (Output, Spy) {
        let log = self.path("spy.log");
        let _ = std::fs::remove_file(&log);
        let out = self
            .command(SPY)
            .env("PKCS11SPY", MODULE)
            .env("PKCS11SPY_OUTPUT", &log)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let spy = Spy::read(&log);
        let _ = std::fs::remove_file(&log);
        (out, spy)
    }

    /// Writes an order document with the given fields (JSON object) merged over defaults for
    /// alice's carrier.
    pub(crate) fn order(&self, name: &str, overrides: Value) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let fmt = &time::format_description::well_known::Rfc3339;
        let mut doc = serde_json::json!({
            "id": name,
            "issued_at": (now - time::Duration::hours(1)).format(fmt).unwrap_or_default(),
            "not_after": (now + time::Duration::days(2)).format(fmt).unwrap_or_default(),
            "dismissed": "2026-11-23",
            "holder": "Шевченко Тарас Григорович",
            "target": { "serial": self.t.alice, "manufacturer": "SoftHSM project", "model": "SoftHSM v2" },
            "certificates": [self.t.cert_sha256],
            "method": "reinit",
            "responsible": "Коваленко Ольга Петрівна",
            "reason": "Наказ № 17-к"
        });
        if let (Some(d), Some(o)) = (doc.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                d.insert(k.clone(), v.clone());
            }
        }
        let path = self.path(&format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// `ssh-keygen -Y sign -f KEY -n NAMESPACE FILE`, appending to FILE.sig.
    pub(crate) fn sign_ns(&self, file: &Path, key: &str, namespace: &str) {
        let out = Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", namespace, "-f"])
            .arg(self.t.dir.join(key))
            .stdin(std::fs::File::open(file).unwrap_or_else(|e| panic!("{e}")))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sig = custody_core::order::signature_path(file);
        let mut existing = std::fs::read(&sig).unwrap_or_default();
        existing.extend_from_slice(&out.stdout);
        std::fs::write(&sig, existing).unwrap_or_else(|e| panic!("{e}"));
    }

    pub(crate) fn sign(&self, file: &Path, key: &str) {
        self.sign_ns(file, key, "custody-order");
    }

    /// What pkcs11-tool shows of every token: info and objects (with login when possible).
    pub(crate) fn token_listing(&self) -> String {
        let mut out = String::new();
        for serial in [&self.t.alice, &self.t.other] {
            out.push_str(&self.listing_of(serial));
        }
        out
    }

    /// Objects on one carrier as pkcs11-tool sees them: public objects always, private ones
    /// when the user PIN is set (else the login error). SoftHSM's slot id is the low 31 bits
    /// of the serial. Panics when the carrier cannot be listed at all, so a broken listing
    /// can never make two states look equal.
    pub(crate) fn listing_of(&self, serial: &str) -> String {
        self.try_listing_of(serial)
            .unwrap_or_else(|e| panic!("pkcs11-tool cannot list carrier {serial}: {e}"))
    }

    /// Like [`Self::listing_of`], `Err` when the carrier cannot be listed.
    pub(crate) fn try_listing_of(&self, serial: &str) -> Result<String, String> {
        let slot = u64::from_str_radix(serial, 16).map_err(|e| e.to_string())? & 0x7fff_ffff;
        let p11 = |args: &[&str]| {
            Command::new("pkcs11-tool")
                .args(["--module", MODULE, "--slot"]) // never the spy here
                .arg(slot.to_string())
                .args(args)
                .env("SOFTHSM2_CONF", &self.conf)
                .output()
                .map_err(|e| e.to_string())
        };
        let public = p11(&["-O"])?;
        if !public.status.success() {
            return Err(String::from_utf8_lossy(&public.stderr).into_owned());
        }
        let private = p11(&["-O", "--login", "--pin", USER_PIN])?;
        Ok(format!(
            "{}{}{}",
            String::from_utf8_lossy(&public.stdout),
            String::from_utf8_lossy(&private.stdout),
            String::from_utf8_lossy(&private.stderr)
        ))
    }

    /// True when pkcs11-tool still finds key or certificate objects with CKA_ID 01 or 02 on
    /// alice's carrier.
    pub(crate) fn alice_has_objects(&self) -> bool {
        self.listing_of(&self.t.alice)
            .lines()
            .any(|l| l.trim() == "ID:         01" || l.trim() == "ID:         02")
    }

    /// Issues alice's carrier again after a wipe, as to a new holder: a new user PIN and a
    /// new key (CKA_ID 07, label "new holder"), made with pkcs11-tool.
    pub(crate) fn reissue_alice(&self) {
        let p11 = |args: &[&str]| {
            let out = Command::new("pkcs11-tool")
                .args(["--module", MODULE, "--slot"])
                .arg(
                    (u64::from_str_radix(&self.t.alice, 16).unwrap_or(0) & 0x7fff_ffff).to_string(),
                )
                .args(args)
                .env("SOFTHSM2_CONF", &self.conf)
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(out.status.success(), "{}", text(&out));
        };
        p11(&[
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            SO_PIN,
            "--init-pin",
            "--new-pin",
            USER_PIN,
        ]);
        p11(&[
            "--login",
            "--pin",
            USER_PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            "07",
            "--label",
            "new holder",
        ]);
    }

    /// Runs SQL on the journal with the sqlite3 command-line tool, as an attacker would.
    pub(crate) fn sqlite(&self, sql: &str) {
        let out = Command::new("sqlite3")
            .arg(&self.journal)
            .arg(sql)
            .output()
            .unwrap_or_else(|e| panic!("sqlite3: {e}"));
        assert!(out.status.success(), "sqlite3 {sql}: {}", text(&out));
    }

    /// The number a counting query of the sqlite3 tool prints.
    pub(crate) fn sqlite_count(&self, sql: &str) -> u64 {
        let out = Command::new("sqlite3")
            .arg(&self.journal)
            .arg(sql)
            .output()
            .unwrap_or_else(|e| panic!("sqlite3: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    pub(crate) fn open_journal(&self) -> Journal {
        Journal::open(&self.journal).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn events(&self) -> Vec<EventRow> {
        self.open_journal()
            .events()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn events_of(&self, kind: &str) -> Vec<EventRow> {
        self.events()
            .into_iter()
            .filter(|e| e.kind.as_str() == kind)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Counts of destructive calls in a pkcs11-spy log, and every C_Login with the slot it
/// went to and its return value (the log's PINs are never kept).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Spy {
    pub(crate) init_token: usize,
    pub(crate) destroy_object: usize,
    /// The module was actually loaded through the spy (it logged C_Initialize).
    pub(crate) saw_initialize: bool,
    /// (slot id, return value name) of each C_Login, in order.
    pub(crate) logins: Vec<(u64, String)>,
}

/// One call of a pkcs11-spy log: its name and its `[in]` / `[out]` / `Returned:` lines.
fn spy_calls(text: &str) -> Vec<(String, Vec<&str>)> {
    let mut calls: Vec<(String, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        let name = words.next().unwrap_or_default();
        if first.ends_with(':')
            && first[..first.len() - 1].chars().all(|c| c.is_ascii_digit())
            && name.starts_with("C_")
        {
            calls.push((name.to_owned(), Vec::new()));
        } else if let Some(last) = calls.last_mut() {
            last.1.push(line);
        }
    }
    calls
}

/// The value of `[in] NAME = 0x…` / `[out] NAME = 0x…` in a call's lines.
fn spy_value(lines: &[&str], name: &str) -> Option<u64> {
    lines.iter().find_map(|l| {
        let rest = l
            .strip_prefix("[in] ")
            .or_else(|| l.strip_prefix("[out] "))?;
        let value = rest
            .strip_prefix(name)?
            .trim_start()
            .strip_prefix('=')?
            .trim();
        u64::from_str_radix(value.trim_start_matches("0x"), 16).ok()
    })
}

impl Spy {
    pub(crate) fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let calls = spy_calls(&text);
        let count = |name: &str| calls.iter().filter(|c| c.0 == name).count();
        let mut sessions = std::collections::HashMap::new();
        let mut logins = Vec::new();
        for (name, lines) in &calls {
            let returned = lines
                .iter()
                .find_map(|l| l.strip_prefix("Returned:"))
                .and_then(|r| r.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_owned();
            match name.as_str() {
                "C_OpenSession" => {
                    if let (Some(slot), Some(session)) =
                        (spy_value(lines, "slotID"), spy_value(lines, "*phSession"))
                    {
                        sessions.insert(session, slot);
                    }
                }
                "C_Login" => {
                    let slot = spy_value(lines, "hSession")
                        .and_then(|h| sessions.get(&h).copied())
                        .unwrap_or(u64::MAX);
                    logins.push((slot, returned));
                }
                _ => {}
            }
        }
        Self {
            init_token: count("C_InitToken"),
            destroy_object: count("C_DestroyObject"),
            saw_initialize: count("C_Initialize") > 0,
            logins,
        }
    }

    pub(crate) fn destructive(&self) -> usize {
        self.init_token + self.destroy_object
    }

    /// C_Login calls on the carrier with `serial` (SoftHSM's slot id is the low 31 bits of
    /// the serial), and how many of them failed.
    pub(crate) fn logins_on(&self, serial: &str) -> (usize, usize) {
        let slot = u64::from_str_radix(serial, 16).unwrap_or(u64::MAX) & 0x7fff_ffff;
        let mine: Vec<_> = self.logins.iter().filter(|l| l.0 == slot).collect();
        let failed = mine.iter().filter(|l| l.1 != "CKR_OK").count();
        (mine.len(), failed)
    }
}

pub(crate) fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
