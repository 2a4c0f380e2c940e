//! Configuration canary: a PIN-like value typed into every key of custody.toml (as a string
//! and as a number, and on lines of its own) appears nowhere custody writes or exposes —
//! stdout and its JSON, stderr and the logs at trace level, the journal, its WAL and every
//! other file custody leaves. A positive control first proves that the search finds a
//! value that is there.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{custody, run, temp_dir};

/// The canary: digits, like a PIN.
const CANARY: &str = "73194628";
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every file under `dir` except the configuration, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "custody.toml") {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

/// A SoftHSM2 token directory with one token, so that scans read something real.
fn tokens(dir: &Path) -> PathBuf {
    let tokendir = dir.join("tokens");
    std::fs::create_dir_all(&tokendir).unwrap_or_else(|e| panic!("{e}"));
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokendir.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let status = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", "canary token"])
        .args(["--so-pin", "12345678", "--pin", "87654321"])
        .output()
        .unwrap_or_else(|e| panic!("softhsm2-util (softhsm2 must be installed): {e}"));
    assert!(status.status.success(), "{status:?}");
    conf
}

/// What one configuration produced: every output channel and every file.
struct Seen {
    outputs: Vec<(String, i32, String, String)>,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Seen {
    /// Where `needle` appears.
    fn find(&self, needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (what, _, out, err) in &self.outputs {
            if out.contains(needle) {
                found.push(format!("stdout of {what}"));
            }
            if err.contains(needle) {
                found.push(format!("stderr of {what}"));
            }
        }
        for (path, bytes) in &self.files {
            if contains(bytes, needle) {
                found.push(path.display().to_string());
            }
        }
        found
    }
}

/// Runs the commands that read the configuration (scan, status, journal, export, spool, a
/// short service run) with `config` and logging at trace level.
fn exercise(name: &str, config: &str) -> Seen {
    let dir = temp_dir(&format!("canary-{name}"));
    let conf = tokens(&dir);
    let cfg = dir.join("custody.toml");
    let config = config.replace("@DIR@", &dir.display().to_string());
    std::fs::write(&cfg, &config).unwrap_or_else(|e| panic!("{e}"));
    let journal = dir.join("journal.db");
    let command = |args: &[&str]| {
        let mut c = custody();
        c.env("CUSTODY_CONFIG", &cfg)
            .env("CUSTODY_LOG", "trace")
            .env("SOFTHSM2_CONF", &conf)
            .arg("--journal")
            .arg(&journal)
            .args(["--module", MODULE, "-vvv"])
            .args(args);
        c
    };
    let mut outputs = Vec::new();
    let (code, out, err) = run(&mut command(&["--json", "scan"]));
    let refused = code == 2 && err.contains("custody.toml, line");
    outputs.push(("--json scan".into(), code, out, err));
    if refused {
        // Every command reads the configuration first: one more is enough.
        let (code, out, err) = run(&mut command(&["--json", "status"]));
        outputs.push(("--json status".into(), code, out, err));
        return Seen {
            outputs,
            files: files(&dir),
        };
    }
    for args in [
        &["scan"][..],
        &["--json", "status"][..],
        &["--json", "journal", "list"][..],
        &["--json", "journal", "verify"][..],
        &["journal", "export", "--format", "json"][..],
        &["journal", "export", "--format", "html"][..],
        &["--json", "order", "spool"][..],
    ] {
        let (code, out, err) = run(&mut command(args));
        outputs.push((args.join(" "), code, out, err));
    }
    // The service, for two polls, then SIGTERM.
    let child = command(&["--interval", "200ms", "watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(std::time::Duration::from_millis(700));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    outputs.push((
        "watch".into(),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ));
    Seen {
        outputs,
        files: files(&dir),
    }
}

/// A valid configuration, with `@DIR@` for the test's directory.
const BASE: &str = r#"[organisation]
name = "Прилуцька міська рада"
[journal]
path = "@DIR@/journal.db"
[[module]]
path = "/usr/lib/softhsm/libsofthsm2.so"
reinit = "auto"
[[pin]]
manufacturer = "SoftHSM project"
model = "SoftHSM v2"
serial = "3c5e0a1b2d4f6789"
label = "Іваненко І.І."
user_pin_file = "@DIR@/pins/user"
so_pin_file = "@DIR@/pins/so"
[service]
interval = "2s"
check_interval = "10s"
checkpoint_interval = "24h"
spool = "@DIR@/spool"
[orders]
allowed_signers = "@DIR@/allowed_signers"
required_signers = 1
"#;

/// `BASE` with the line starting with `key =` (the first one) replaced by `line`, or with
/// `line` appended when `key` is empty.
fn with_line(key: &str, line: &str) -> String {
    if key.is_empty() {
        return format!("{BASE}{line}\n");
    }
    let mut done = false;
    BASE.lines()
        .map(|l| {
            if !done && l.starts_with(&format!("{key} =")) {
                done = true;
                line.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn a_pin_typed_into_any_configuration_key_is_never_echoed() {
    // Positive control: values that custody does show (the organisation on the form, an
    // accepted journal path in an error) are found by the same search in stdout, stderr and
    // the journal's bytes.
    let control = exercise(
        "control",
        &with_line("name", &format!("name = \"Рада {CANARY}\"")),
    );
    let found = control.find(CANARY);
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("stdout of journal export")),
        "{found:?}"
    );
    let dir = temp_dir("canary-control-journal");
    let csv = dir.join("paper.csv");
    std::fs::write(
        &csv,
        format!("1,2026-01-01,SoftHSM 1234,2026-01-02 Іваненко {CANARY},\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let journal = dir.join("journal.db");
    let (code, out, err) = run(custody()
        .arg("--journal")
        .arg(&journal)
        .args(["--json", "journal", "import", "--csv"])
        .arg(&csv));
    assert_eq!(code, 0, "{out}{err}");
    let bytes: Vec<u8> = files(&dir)
        .into_iter()
        .filter(|(p, _)| p != &csv)
        .flat_map(|(_, b)| b)
        .collect();
    assert!(
        contains(&bytes, CANARY),
        "the journal's bytes hold the canary"
    );
    let (_, _, err) = run(custody()
        .arg("--journal")
        .arg(format!("/nonexistent-{CANARY}/journal.db"))
        .args(["journal", "verify"]));
    assert!(err.contains(CANARY), "{err}");

    // Every key, as a string and as a bare number; unknown keys; a line of its own.
    let mut cases: Vec<(String, String)> = Vec::new();
    for key in [
        "name",
        "path",
        "reinit",
        "manufacturer",
        "model",
        "serial",
        "label",
        "user_pin_file",
        "so_pin_file",
        "interval",
        "check_interval",
        "spool",
        "allowed_signers",
        "required_signers",
    ] {
        cases.push((
            format!("{key}-string"),
            with_line(key, &format!("{key} = \"{CANARY}\"")),
        ));
        cases.push((
            format!("{key}-number"),
            with_line(key, &format!("{key} = {CANARY}")),
        ));
    }
    for key in ["user_pin_env", "so_pin_env"] {
        let file_key = key.replace("_env", "_file");
        cases.push((
            key.into(),
            with_line(&file_key, &format!("{key} = \"{CANARY}\"")),
        ));
    }
    // The module's path (the second `path =`).
    cases.push((
        "module-path".into(),
        BASE.replace(
            "path = \"/usr/lib/softhsm/libsofthsm2.so\"",
            &format!("path = \"{CANARY}\""),
        ),
    ));
    cases.push((
        "unknown-key".into(),
        with_line(
            "",
            &format!("[[pin]]\nserial = \"*\"\nuser_pin = \"{CANARY}\""),
        ),
    ));
    cases.push(("bare-line".into(), with_line("", CANARY)));
    cases.push(("bare-key".into(), with_line("", &format!("{CANARY} = 1"))));
    cases.push(("table".into(), with_line("", &format!("[{CANARY}]"))));
    let mut accepted = 0;
    let mut leaks = Vec::new();
    for (name, config) in &cases {
        assert!(config.contains(CANARY), "{name}: the case holds the canary");
        let seen = exercise(name, config);
        let found = seen.find(CANARY);
        if !found.is_empty() {
            leaks.push(format!("{name}: {found:?}"));
        }
        let (_, code, _, err) = &seen.outputs[0];
        if *code == 2 && err.contains("custody.toml, line") {
            assert!(err.contains("the value is not shown"), "{name}: {err}");
        } else {
            accepted += 1;
        }
    }
    assert!(
        leaks.is_empty(),
        "the canary appears:\n{}",
        leaks.join("\n")
    );
    // Only the carrier identity of a PIN rule (manufacturer, model, serial, label) may be
    // digits (as a string); every other key refuses such a value.
    assert_eq!(
        accepted, 4,
        "only the identity fields of [[pin]] accept \"{CANARY}\""
    );
}
