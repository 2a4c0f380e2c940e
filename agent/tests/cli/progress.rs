//! Progress bars: drawn on stderr when it is a terminal (a pseudo-terminal from `script`),
//! never when stderr is piped, never with `--json`, never on stdout.

use std::path::Path;
use std::process::Command;

use crate::{custody, run, temp_dir};

/// A journal of a few hundred imported rows.
fn journal(dir: &Path) -> std::path::PathBuf {
    let csv = dir.join("paper.csv");
    let mut rows = String::new();
    for n in 1..300 {
        rows.push_str(&format!(
            "{n},2020-01-01,Алмаз-1К {n:04},2020-01-02 Особа {n},\n"
        ));
    }
    std::fs::write(&csv, rows).unwrap_or_else(|e| panic!("{e}"));
    let journal = dir.join("journal.db");
    let (code, _, err) = run(custody()
        .arg("--journal")
        .arg(&journal)
        .args(["journal", "import", "--csv"])
        .arg(&csv));
    assert_eq!(code, 0, "{err}");
    journal
}

/// `custody ARGS` on a pseudo-terminal (util-linux `script`): what the terminal showed.
fn on_a_terminal(journal: &Path, args: &str) -> String {
    let line = format!(
        "{} --journal {} {args}",
        env!("CARGO_BIN_EXE_custody"),
        journal.display()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("CUSTODY_CONFIG", "/dev/null")
        .env("CUSTODY_PROGRESS", "immediate")
        .env("TERM", "xterm")
        .env_remove("CUSTODY_LOG")
        .output()
        .unwrap_or_else(|e| panic!("script (util-linux) is needed: {e}"));
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn progress_is_drawn_on_a_terminal_and_never_into_a_pipe() {
    let dir = temp_dir("progress");
    let journal = journal(&dir);
    // Positive control: on a terminal, the bar appears (and the result follows it).
    let tty = on_a_terminal(&journal, "journal verify");
    assert!(
        tty.contains("verifying the hash chain") && tty.contains("hash chain verifies"),
        "{tty}"
    );
    // The same command and environment, piped: no bar, no terminal control sequence.
    for args in [&["journal", "verify"][..], &["--json", "journal", "verify"]] {
        let (code, out, err) = run(custody()
            .env("CUSTODY_PROGRESS", "immediate")
            .arg("--journal")
            .arg(&journal)
            .args(args));
        assert_eq!(code, 0, "{err}");
        for text in [&out, &err] {
            assert!(
                !text.contains("verifying the hash chain") && !text.contains('\u{1b}'),
                "{args:?}: {text:?}"
            );
        }
        assert!(
            out.contains("hash chain verifies") || out.contains("\"ok\""),
            "{out}"
        );
    }
    // --json on a terminal: no bar either.
    let tty = on_a_terminal(&journal, "--json journal verify");
    assert!(!tty.contains("verifying the hash chain"), "{tty}");
}
