//! A spool other people write to: a FIFO or a link where an order or its signature should
//! be, `rejected/` or `done/` replaced by links. Each is refused with a reason, nothing is
//! written through a link, and neither `custody order spool` nor the service ever waits.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::support::*;

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    assert!(st.success());
}

/// Waits for `child` at most `within`; kills it and fails when it is still running.
fn wait_or_kill(child: &mut Child, within: Duration, what: &str) -> Option<i32> {
    let until = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            return st.code();
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// An unsigned-looking order file (content does not matter: it is refused either way).
fn order_bytes() -> &'static str {
    "{\"id\": \"x\"}\n"
}

#[test]
fn fifos_and_links_in_the_spool_are_rejected_without_waiting() {
    let env = Env::new("hostile-fifo");
    let spool = env.path("spool");
    std::fs::create_dir_all(&spool).unwrap_or_else(|e| panic!("{e}"));
    // The order is a regular file, its signature a FIFO that no one will ever write.
    std::fs::write(spool.join("fifo-sig.json"), order_bytes()).unwrap_or_else(|e| panic!("{e}"));
    mkfifo(&spool.join("fifo-sig.json.sig"));
    // The order itself a FIFO; an order that is a link to a file outside the spool.
    mkfifo(&spool.join("fifo-order.json"));
    std::os::unix::fs::symlink("/etc/hostname", spool.join("link.json"))
        .unwrap_or_else(|e| panic!("{e}"));

    let mut child = env
        .command(MODULE)
        .args(["--json", "order", "spool"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let code = wait_or_kill(&mut child, Duration::from_secs(20), "custody order spool");
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    for (file, needle) in [
        ("fifo-sig.json", "signature file is a FIFO"),
        ("fifo-order.json", "order is a FIFO"),
        ("link.json", "order is a symbolic link"),
    ] {
        let entry = report["entries"]
            .as_array()
            .and_then(|e| e.iter().find(|x| x["file"] == file))
            .unwrap_or_else(|| panic!("no entry for {file}: {report}"));
        assert_eq!(entry["action"], "rejected", "{entry}");
        assert!(
            entry["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{entry}"
        );
        let reason = std::fs::read_to_string(spool.join(format!("rejected/{file}.reason")))
            .unwrap_or_default();
        assert!(reason.contains(needle), "{file}: {reason}");
    }
    assert!(
        std::fs::symlink_metadata(spool.join("rejected/fifo-sig.json.sig"))
            .is_ok_and(|m| m.file_type().is_fifo()),
        "the FIFO was moved aside, not opened"
    );
    assert_eq!(
        env.events_of("order_rejected").len(),
        3,
        "each refusal is journaled"
    );
    assert!(!Path::new("/etc/hostname.reason").exists());

    // The service: the same FIFO dropped in while it runs is rejected, and SIGTERM ends it
    // within 5 s.
    std::fs::write(spool.join("later.json"), order_bytes()).unwrap_or_else(|e| panic!("{e}"));
    mkfifo(&spool.join("later.json.sig"));
    let mut service = env
        .command(MODULE)
        .args(["--log-format", "json", "watch", "--interval", "200ms"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = service.stderr.take().unwrap_or_else(|| panic!("stderr"));
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    let rejected = spool.join("rejected/later.json.reason");
    let seen = wait_until(Duration::from_secs(30), || rejected.exists());
    let polled = wait_until(Duration::from_secs(10), || {
        log.lock()
            .map(|l| {
                l.iter()
                    .filter(|x| x.contains("journal transaction committed"))
                    .count()
                    >= 1
            })
            .unwrap_or(false)
    });
    let _ = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status();
    let start = Instant::now();
    let code = wait_or_kill(
        &mut service,
        Duration::from_secs(5),
        "the service after SIGTERM",
    );
    let log = log.lock().map(|l| l.join("\n")).unwrap_or_default();
    assert!(seen, "the service did not reject the order: {log}");
    assert!(polled, "{log}");
    assert_eq!(code, Some(0), "{log}");
    eprintln!("stopped {:?} after SIGTERM", start.elapsed());
}

#[test]
fn linked_rejected_and_done_directories_are_refused() {
    let env = Env::new("hostile-links");
    let spool = env.path("spool");
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir_all(&spool).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&elsewhere).unwrap_or_else(|e| panic!("{e}"));
    for dir in ["rejected", "done", "failed"] {
        std::os::unix::fs::symlink(&elsewhere, spool.join(dir)).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(spool.join("bad.json"), order_bytes()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(spool.join("bad.json.sig"), "not a signature").unwrap_or_else(|e| panic!("{e}"));
    let out = env.custody(&["--json", "order", "spool"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let entry = &report["entries"][0];
    assert_eq!(entry["file"], "bad.json", "{report}");
    assert_eq!(entry["action"], "error", "{report}");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("rejected is a symbolic link"),
        "{entry}"
    );
    assert_eq!(
        std::fs::read_dir(&elsewhere)
            .map(|d| d.count())
            .unwrap_or(1),
        0,
        "nothing was written through the link"
    );
    assert!(
        spool.join("bad.json").exists(),
        "the order stays where it was"
    );
}
