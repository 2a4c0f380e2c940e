//! The `custody` binary's arguments, exit codes and refusals, for cases that need no token.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod cli {
    mod config_canary;
    mod files;
    mod import_lines;
    mod journal_file;
    mod pipe;
    mod progress;
}

fn custody() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_custody"));
    // Never pick up a system configuration in tests.
    c.env("CUSTODY_CONFIG", "/dev/null")
        .env_remove("CUSTODY_LOG");
    c
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn run(cmd: &mut Command) -> (i32, String, String) {
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

#[test]
fn missing_module_exits_2_with_a_clear_message() {
    let dir = temp_dir("missing-module");
    let (code, _, err) = run(custody().arg("--journal").arg(dir.join("j.db")).args([
        "--module",
        "/nonexistent/libpkcs11.so",
        "scan",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/nonexistent/libpkcs11.so") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_pkcs11_library_exits_2() {
    let dir = temp_dir("not-a-library");
    let fake = dir.join("libfake.so");
    std::fs::write(&fake, b"\x7fELF but not really").unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = run(custody()
        .arg("--journal")
        .arg(dir.join("j.db"))
        .arg("--module")
        .arg(&fake)
        .args(["scan", "--json"]));
    assert_eq!(code, 2, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["modules"][0]["ok"], false);
    assert!(v["modules"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("libfake.so"));
    assert_eq!(v["exit"], 2);
}

#[test]
fn a_foreign_sqlite_file_is_refused_and_left_untouched() {
    let dir = temp_dir("foreign-db");
    let db = dir.join("other.db");
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg("CREATE TABLE accounts (id INTEGER); INSERT INTO accounts VALUES (1);")
        .status()
        .unwrap_or_else(|e| panic!("sqlite3: {e}"));
    assert!(status.success());
    let before = std::fs::read(&db).unwrap_or_default();
    for args in [
        &["scan"][..],
        &["journal", "list"][..],
        &["journal", "verify"][..],
    ] {
        let (code, _, err) = run(custody()
            .arg("--journal")
            .arg(&db)
            .args(["--module", "/nonexistent/lib.so"])
            .args(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("is not a custody journal"), "{err}");
    }
    assert_eq!(
        std::fs::read(&db).unwrap_or_default(),
        before,
        "file was modified"
    );
    assert!(!dir.join("other.db-wal").exists());
}

#[test]
fn a_garbage_file_is_refused_and_left_untouched() {
    let dir = temp_dir("garbage-db");
    let db = dir.join("garbage.db");
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&db, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = run(custody()
        .arg("--journal")
        .arg(&db)
        .args(["journal", "list"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a custody journal"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap_or_default(), bytes);
}

#[test]
fn a_journal_from_a_newer_custody_is_refused() {
    let dir = temp_dir("newer-db");
    let db = dir.join("j.db");
    // Create a real journal, then pretend a newer custody wrote it.
    let (code, _, err) =
        run(custody()
            .arg("--journal")
            .arg(&db)
            .args(["--module", "/nonexistent/lib.so", "scan"]));
    assert_eq!(code, 2, "{err}");
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA user_version = 999;")
        .status()
        .unwrap_or_else(|e| panic!("sqlite3: {e}"));
    assert!(status.success());
    let before = std::fs::read(&db).unwrap_or_default();
    let (code, _, err) = run(custody()
        .arg("--journal")
        .arg(&db)
        .args(["journal", "list"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("schema version 999 is newer"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap_or_default(), before);
}

#[test]
fn journal_commands_on_a_missing_file_say_what_to_do() {
    let dir = temp_dir("no-journal");
    let (code, _, err) = run(custody()
        .arg("--journal")
        .arg(dir.join("absent.db"))
        .args(["journal", "verify"]));
    assert_eq!(code, 2);
    assert!(err.contains("run `custody scan` first"), "{err}");
    assert!(!dir.join("absent.db").exists());
}

#[test]
fn unknown_config_keys_are_refused_with_file_and_line() {
    let dir = temp_dir("bad-config");
    let cfg = dir.join("custody.toml");
    std::fs::write(
        &cfg,
        "[journal]\npath = \"/tmp/x.db\"\n[servce]\ninterval = \"2s\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = run(custody()
        .env("CUSTODY_CONFIG", &cfg)
        .args(["journal", "list"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("custody.toml") && err.contains("servce") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn no_pin_option_exists_on_the_command_line() {
    let (_, out, _) = run(custody().arg("--help"));
    assert!(!out.to_lowercase().contains("--pin "), "{out}");
    let (code, _, err) = run(custody().args(["scan", "--pin", "1234"]));
    assert_eq!(code, 2);
    assert!(err.contains("unexpected argument '--pin'"), "{err}");
}

#[test]
fn issue_with_a_module_that_does_not_load_names_the_module_not_an_absent_carrier() {
    let dir = temp_dir("issue-broken-module");
    let (code, _, err) = run(custody()
        .arg("--journal")
        .arg(dir.join("j.db"))
        .args(["--module", "/nonexistent/libvendor-pkcs11.so"])
        .args(["issue", "--carrier", "3c5e0a1b2d4f6789"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("module /nonexistent/libvendor-pkcs11.so failed to load")
            && err.contains("custody doctor"),
        "{err}"
    );
    assert!(!err.contains("not plugged in"), "{err}");
    // Said once: the warning line and the error, not the same error twice.
    assert_eq!(err.matches("no such file").count(), 2, "{err}");
}

#[test]
fn a_module_that_does_not_load_is_reported_once_by_scan() {
    let dir = temp_dir("scan-once");
    let (code, _, err) = run(custody().arg("--journal").arg(dir.join("j.db")).args([
        "--module",
        "/nonexistent/libvendor-pkcs11.so",
        "scan",
    ]));
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("/nonexistent/libvendor-pkcs11.so"))
            .count(),
        1,
        "{err}"
    );
}
