//! Output to a closed pipe (`custody journal verify | head -1`) ends quietly with the usual
//! status of a Unix tool whose reader went away (141 = 128 + SIGPIPE), for every command.

use std::process::Stdio;

use crate::{custody, temp_dir};

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let dir = temp_dir("closed-pipe");
    let csv = dir.join("paper.csv");
    let mut rows = String::new();
    for n in 1..200 {
        rows.push_str(&format!(
            "{n},2020-01-01,Алмаз-1К {n:04},2020-01-02 Особа {n},\n"
        ));
    }
    std::fs::write(&csv, rows).unwrap_or_else(|e| panic!("{e}"));
    let journal = dir.join("journal.db");
    let st = custody()
        .arg("--journal")
        .arg(&journal)
        .args(["journal", "import", "--csv"])
        .arg(&csv)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success());
    let commands: &[&[&str]] = &[
        &["journal", "verify"],
        &["--json", "journal", "verify"],
        &["journal", "list"],
        &["journal", "export", "--format", "csv"],
        &["--json", "journal", "export"],
        &["journal", "checkpoint", "--export"],
        &["--json", "journal", "list"],
    ];
    for args in commands {
        // The reading end is closed before custody writes anything.
        let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
        drop(reader);
        let out = custody()
            .arg("--journal")
            .arg(&journal)
            .args(*args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
    }
}
