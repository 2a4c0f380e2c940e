//! `custody doctor` with the real binary against a real SoftHSM2 token, a real journal and
//! real files: a healthy deployment passes, and each kind of breakage is named with exit 1
//! (or 2 for a configuration that cannot be loaded).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn softhsm_module() -> PathBuf {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../softhsm-fixtures/module-path.sh"
    ))
    .output()
    .unwrap_or_else(|e| panic!("module-path.sh: {e}"));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A deployment in a temporary directory: one SoftHSM2 token, a configuration naming the
/// module, a PIN file for the token, a spool, an allowed_signers file and a journal.
struct Deployment {
    dir: PathBuf,
    serial: String,
}

impl Deployment {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("doctor-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tokens")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.join("softhsm2.conf"),
            format!("directories.tokendir = {}\n", dir.join("tokens").display()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let d = Self {
            dir,
            serial: String::new(),
        };
        let init = d
            .tool("softhsm2-util")
            .args(["--init-token", "--free", "--label", "doctor"])
            .args(["--so-pin", "87654321", "--pin", "12345678"])
            .output()
            .unwrap_or_else(|e| panic!("softhsm2-util: {e}"));
        assert!(init.status.success(), "{init:?}");
        let shown = d
            .tool("softhsm2-util")
            .arg("--show-slots")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&shown.stdout);
        let serial = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Serial number:"))
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("no serial in {text}"))
            .to_owned();
        let d = Self { serial, ..d };
        write_private(&d.dir.join("user.pin"), "12345678\n");
        std::fs::create_dir(d.dir.join("spool")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(d.dir.join("spool"), std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("{e}"));
        let key = d.dir.join("hr_ed25519");
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "hr", "-f"])
            .arg(&key)
            .output()
            .unwrap_or_else(|e| panic!("ssh-keygen: {e}"));
        assert!(keygen.status.success(), "{keygen:?}");
        let public =
            std::fs::read_to_string(key.with_extension("pub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            d.dir.join("allowed_signers"),
            format!("hr namespaces=\"custody-order\" {public}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        d.write_config("");
        let scan = d
            .custody()
            .arg("scan")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(scan.status.success(), "{scan:?}");
        let cp = d
            .custody()
            .args(["journal", "checkpoint"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cp.status.success(), "{cp:?}");
        d
    }

    fn write_config(&self, extra: &str) {
        let text = format!(
            "[[module]]\npath = \"{module}\"\n\n[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"{serial}\"\nuser_pin_file = \"{pin}\"\n\n\
             [service]\nspool = \"{spool}\"\n\n[orders]\nallowed_signers = \"{signers}\"\n{extra}",
            module = softhsm_module().display(),
            serial = self.serial,
            pin = self.dir.join("user.pin").display(),
            spool = self.dir.join("spool").display(),
            signers = self.dir.join("allowed_signers").display(),
        );
        write_private(&self.dir.join("custody.toml"), &text);
    }

    fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env("SOFTHSM2_CONF", self.dir.join("softhsm2.conf"));
        c
    }

    fn custody(&self) -> Command {
        let mut c = self.tool(env!("CARGO_BIN_EXE_custody"));
        c.arg("--config")
            .arg(self.dir.join("custody.toml"))
            .arg("--journal")
            .arg(self.dir.join("journal.db"))
            .env_remove("CUSTODY_CONFIG")
            .env_remove("CUSTODY_LOG");
        c
    }

    /// Runs `custody doctor --json`: exit code and the report.
    fn doctor(&self) -> (i32, Value) {
        let out = self
            .custody()
            .args(["doctor", "--json"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor --json printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The checks of one area that ended with `status`.
fn checks<'a>(report: &'a Value, area: &str, status: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {report}"))
        .iter()
        .filter(|c| c["area"] == area && c["status"] == status)
        .collect()
}

#[test]
fn a_healthy_deployment_passes_every_check() {
    let d = Deployment::new("healthy");
    let (code, report) = d.doctor();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    for area in [
        "config",
        "module",
        "pin",
        "journal",
        "spool",
        "allowed_signers",
    ] {
        assert!(
            !checks(&report, area, "ok").is_empty(),
            "no ✔ for {area}: {report:#}"
        );
        assert!(
            checks(&report, area, "fail").is_empty(),
            "✘ for {area}: {report:#}"
        );
    }
    let pin = &checks(&report, "pin", "ok")[0];
    assert!(
        pin["message"]
            .as_str()
            .is_some_and(|m| m.contains("exactly one")),
        "{pin}"
    );
    // Human output: one ✔ line per check and the summary.
    let out = d
        .custody()
        .arg("doctor")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().filter(|l| l.starts_with('✔')).count() >= 6,
        "{text}"
    );
    assert!(!text.contains('✘'), "{text}");
    // The doctor never reads a PIN: the PIN is nowhere in what it prints.
    assert!(!text.contains("12345678") && !report.to_string().contains("12345678"));
}

#[test]
fn a_configuration_that_does_not_load_exits_2() {
    let d = Deployment::new("bad-config");
    d.write_config("[service]\nfrequency = \"2s\"\n");
    let (code, report) = d.doctor();
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(checks(&report, "config", "fail").len(), 1, "{report:#}");
}

#[test]
fn a_module_that_does_not_load_is_named_with_exit_1() {
    let d = Deployment::new("bad-module");
    let text =
        std::fs::read_to_string(d.dir.join("custody.toml")).unwrap_or_else(|e| panic!("{e}"));
    write_private(
        &d.dir.join("custody.toml"),
        &format!("[[module]]\npath = \"/nonexistent/libvendor-pkcs11.so\"\n\n{text}"),
    );
    let (code, report) = d.doctor();
    assert_eq!(code, 1, "{report:#}");
    let failed = checks(&report, "module", "fail");
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["subject"], "/nonexistent/libvendor-pkcs11.so");
    assert!(failed[0]["fix"].is_string());
    // The working module is still checked.
    assert_eq!(checks(&report, "module", "ok").len(), 1, "{report:#}");
}

#[test]
fn pin_files_spool_and_signers_open_to_others_fail() {
    let d = Deployment::new("permissions");
    let loose = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(d.dir.join("user.pin"), loose).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(d.dir.join("spool"), std::fs::Permissions::from_mode(0o777))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(
        d.dir.join("allowed_signers"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (code, report) = d.doctor();
    assert_eq!(code, 1, "{report:#}");
    for area in ["pin", "spool", "allowed_signers"] {
        let failed = checks(&report, area, "fail");
        assert_eq!(failed.len(), 1, "{area}: {report:#}");
        assert!(
            failed[0]["fix"]
                .as_str()
                .is_some_and(|f| f.contains("chmod")),
            "{report:#}"
        );
    }
}

#[test]
fn a_symlinked_spool_subdirectory_fails() {
    let d = Deployment::new("spool-symlink");
    std::os::unix::fs::symlink("/tmp", d.dir.join("spool/done")).unwrap_or_else(|e| panic!("{e}"));
    let (code, report) = d.doctor();
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(checks(&report, "spool", "fail").len(), 1, "{report:#}");
}

#[test]
fn a_journal_that_is_not_one_or_is_missing_beside_its_key_fails() {
    let d = Deployment::new("bad-journal");
    let journal = d.dir.join("journal.db");
    let copy = d.dir.join("moved");
    std::fs::create_dir(&copy).unwrap_or_else(|e| panic!("{e}"));
    for name in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        if d.dir.join(name).exists() {
            std::fs::rename(d.dir.join(name), copy.join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // Missing while its key exists: lost, not "not created yet".
    let (code, report) = d.doctor();
    assert_eq!(code, 1, "{report:#}");
    let failed = checks(&report, "journal", "fail");
    assert!(
        failed
            .iter()
            .any(|c| c["message"].as_str().is_some_and(|m| m.contains("key"))),
        "{report:#}"
    );
    assert!(!journal.exists(), "the doctor created a journal");
    // Garbage in its place.
    std::fs::write(&journal, b"this is not a journal at all, just some bytes")
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, report) = d.doctor();
    assert_eq!(code, 1, "{report:#}");
    assert!(!checks(&report, "journal", "fail").is_empty(), "{report:#}");
}
