//! PIN canary: a wipe at trace log level with distinctive PINs; the PINs appear nowhere custody
//! writes or exposes. The same run under pkcs11-spy finds the SO PIN in the spy's log, which
//! proves the search would see a PIN that is there.

use std::io::Write;
use std::process::Stdio;

use serde_json::json;

use super::support::*;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Runs a reinit wipe with the SO PIN on stdin at trace level; returns (stdout, stderr,
/// cmdline, environ) and leaves the journal behind.
fn run(
    env: &Env,
    module: &str,
    spy_log: Option<&std::path::Path>,
) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, i32) {
    let order = env.order("ord-canary", json!({}));
    env.sign(&order, "hr");
    let mut cmd = env.command(module);
    cmd.env("CUSTODY_LOG", "trace")
        .env("RUST_BACKTRACE", "full")
        .args(["-vvv", "wipe", "--order"])
        .arg(&order)
        .arg("--pin-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(log) = spy_log {
        cmd.env("PKCS11SPY", MODULE).env("PKCS11SPY_OUTPUT", log);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    // The process is waiting for its PIN on stdin: read what it exposes.
    let pid = child.id();
    let mut cmdline = Vec::new();
    let mut environ = Vec::new();
    for _ in 0..200 {
        cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if !cmdline.is_empty() && !environ.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        !cmdline.is_empty() && !environ.is_empty(),
        "could not read /proc/{pid}"
    );
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    writeln!(stdin, "{SO_PIN}").unwrap_or_else(|e| panic!("{e}"));
    drop(stdin);
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.stdout,
        out.stderr,
        cmdline,
        environ,
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn pins_never_appear_in_logs_journal_argv_or_environment() {
    let env = Env::new("canary");
    let (stdout, stderr, cmdline, environ, code) = run(&env, MODULE, None);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&stderr));
    let log = String::from_utf8_lossy(&stderr);
    assert!(
        log.contains("DEBUG") && log.lines().count() >= 5,
        "trace logging was on: {log}"
    );
    let mut wal = env.journal.clone().into_os_string();
    wal.push("-wal");
    let journal = std::fs::read(&env.journal).unwrap_or_default();
    let wal = std::fs::read(&wal).unwrap_or_default();
    assert!(!journal.is_empty());
    for pin in [SO_PIN, USER_PIN] {
        for (what, bytes) in [
            ("stdout", &stdout),
            ("stderr (trace log)", &stderr),
            ("/proc/PID/cmdline", &cmdline),
            ("/proc/PID/environ", &environ),
            ("journal", &journal),
            ("journal -wal", &wal),
        ] {
            assert!(!contains(bytes, pin), "a PIN appears in {what}");
        }
    }
    // A refused order at trace level: the error path leaks nothing either.
    let bad = env.path("bad.json");
    std::fs::write(&bad, b"{").unwrap_or_else(|e| panic!("{e}"));
    let out = env
        .command(MODULE)
        .env("CUSTODY_LOG", "trace")
        .env("RUST_BACKTRACE", "full")
        .args(["-vvv", "wipe", "--order"])
        .arg(&bad)
        .arg("--so-pin-file")
        .arg(env.path("so.pin"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    for pin in [SO_PIN, USER_PIN] {
        assert!(!contains(&out.stderr, pin) && !contains(&out.stdout, pin));
    }
}

#[test]
fn the_same_search_finds_the_pin_in_the_spy_log() {
    let env = Env::new("canary-spy");
    let log = env.path("spy.log");
    let (_, stderr, _, _, code) = run(&env, SPY, Some(&log));
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&stderr));
    let spy = std::fs::read(&log).unwrap_or_default();
    let found = contains(&spy, SO_PIN);
    // The spy log records PINs in clear: delete it before asserting, never print it.
    let _ = std::fs::remove_file(&log);
    assert!(found, "the SO PIN is in pkcs11-spy's log (C_InitToken)");
    assert!(!contains(&stderr, SO_PIN));
}
