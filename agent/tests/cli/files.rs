//! Files custody creates, as the real binary leaves them: private modes whatever the umask,
//! a wipe lock no other user can take, no journal started in a directory that does not
//! exist, and spool files that are not regular files refused without waiting.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{run, temp_dir};

const CUSTODY: &str = env!("CARGO_BIN_EXE_custody");
/// The unprivileged user the tests act as ("nobody").
const OTHER_UID: &str = "65534";

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// `custody ARGS` run by `sh` under `umask 000`.
fn custody_umask_000(args: &str) -> (i32, String, String) {
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec \"{CUSTODY}\" {args}"))
        .env("CUSTODY_CONFIG", "/dev/null")
        .env_remove("CUSTODY_LOG"))
}

/// Tests that act as another user need root (as in CI). Elsewhere they say so and stop;
/// under CI=true they fail.
fn can_switch_user() -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test needs root to act as another user (setpriv), and CI=true"
        );
        eprintln!("NOT RUN: needs root to act as another user");
    }
    root
}

/// `PROGRAM ARGS` as uid/gid 65534.
fn as_other_user(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        OTHER_UID,
        "--regid",
        OTHER_UID,
        "--clear-groups",
        program,
    ]);
    c
}

#[test]
fn files_are_private_whatever_the_umask() {
    let dir = temp_dir("umask-000");
    let journal = dir.join("journal.db");
    let j = journal.display();
    // A journal (a scan with a module that does not load still creates it), its key (a
    // checkpoint), the wipe lock (a reconciliation), the state record (the service).
    let (code, _, err) = custody_umask_000(&format!(
        "--journal '{j}' --module /nonexistent/lib.so scan"
    ));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = custody_umask_000(&format!("--journal '{j}' journal checkpoint"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = custody_umask_000(&format!(
        "--journal '{j}' --module /nonexistent/lib.so order reconcile"
    ));
    assert!(code == 0 || code == 2, "{err}");
    let mut service = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec \"{CUSTODY}\" --journal '{j}' --module /nonexistent/lib.so watch --interval 100ms"
        ))
        .env("CUSTODY_CONFIG", "/dev/null")
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let state = journal.with_extension("watch.json");
    let until = Instant::now() + Duration::from_secs(20);
    while !state.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status();
    let _ = service.wait();
    // A backup holds the same names and tax numbers.
    let backup = dir.join("backup.db");
    let (code, _, err) = custody_umask_000(&format!(
        "--journal '{j}' journal backup '{}'",
        backup.display()
    ));
    assert_eq!(code, 0, "{err}");
    let mut files = vec![journal.clone(), state, backup];
    for suffix in ["-wal", "-shm", ".key", ".wipe-lock"] {
        files.push(with_suffix(&journal, suffix));
    }
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    // Positive control: the same umask gives a file made without care 0666.
    let (code, _, _) = run(Command::new("sh").arg("-c").arg(format!(
        "umask 000; : > '{}'",
        dir.join("control").display()
    )));
    assert_eq!(code, 0);
    assert_eq!(mode(&dir.join("control")), 0o666);
}

#[test]
fn an_old_journal_readable_by_others_is_made_private() {
    let dir = temp_dir("tighten");
    let journal = dir.join("journal.db");
    let j = journal.display();
    let (code, _, err) = custody_umask_000(&format!(
        "--journal '{j}' --module /nonexistent/lib.so scan"
    ));
    assert_eq!(code, 2, "{err}");
    for f in [journal.clone(), with_suffix(&journal, "-wal")] {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (code, _, err) = custody_umask_000(&format!(
        "--journal '{j}' --module /nonexistent/lib.so scan"
    ));
    assert_eq!(code, 2, "{err}");
    assert_eq!(mode(&journal), 0o600);
    assert_eq!(mode(&with_suffix(&journal, "-wal")), 0o600);
}

#[test]
fn a_journal_in_a_directory_that_does_not_exist_is_refused() {
    let dir = temp_dir("no-dir");
    let typo = dir.join("custdy/journal.db");
    let (code, _, err) = run(Command::new(CUSTODY)
        .env("CUSTODY_CONFIG", "/dev/null")
        .arg("--journal")
        .arg(&typo)
        .args(["--module", "/nonexistent/lib.so", "scan"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("does not exist") && err.contains("install -d -m 0700"),
        "{err}"
    );
    assert!(!dir.join("custdy").exists(), "the directory was created");
}

#[test]
fn the_default_journal_directory_is_created_private() {
    if !can_switch_user() {
        return;
    }
    // As an unprivileged user the default journal is $XDG_DATA_HOME/custody/journal.db.
    let dir = temp_dir("default-dir");
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap_or_else(|e| panic!("{e}"));
    let (code, _, _) = run(Command::new("chown")
        .arg(format!("{OTHER_UID}:{OTHER_UID}"))
        .arg(&data));
    assert_eq!(code, 0);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = run(as_other_user("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec \"{CUSTODY}\" --module /nonexistent/lib.so scan"
        ))
        .env("CUSTODY_CONFIG", "/dev/null")
        .env("XDG_DATA_HOME", &data)
        .env("HOME", &dir));
    assert_eq!(code, 2, "{err}");
    let state = data.join("custody");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("journal.db")), 0o600);
}

#[test]
fn another_user_cannot_take_the_wipe_lock() {
    if !can_switch_user() {
        return;
    }
    let dir = temp_dir("lock-other-user");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    let journal = dir.join("journal.db");
    let j = journal.display();
    let (code, _, err) = custody_umask_000(&format!(
        "--journal '{j}' --module /nonexistent/lib.so order reconcile"
    ));
    assert!(code == 0 || code == 2, "{err}");
    let lock = with_suffix(&journal, ".wipe-lock");
    assert!(lock.exists());
    // Positive control: the same user can take it.
    let (code, _, err) = run(Command::new("flock").args(["-n"]).arg(&lock).arg("true"));
    assert_eq!(code, 0, "{err}");
    // Another user cannot even open it, so cannot hold it.
    let (code, _, err) = run(as_other_user("flock").args(["-n"]).arg(&lock).arg("true"));
    assert_ne!(code, 0, "another user took the wipe lock");
    assert!(err.contains("Permission denied"), "{err}");
}

#[test]
fn a_wipe_lock_planted_by_another_user_is_refused_at_once() {
    if !can_switch_user() {
        return;
    }
    let dir = temp_dir("lock-planted");
    // A directory everyone may write to: another user creates the lock file first, 0666,
    // and holds it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))
        .unwrap_or_else(|e| panic!("{e}"));
    let journal = dir.join("journal.db");
    let lock = with_suffix(&journal, ".wipe-lock");
    let mut holder = as_other_user("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec flock '{}' sleep 60",
            lock.display()
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let until = Instant::now() + Duration::from_secs(10);
    while !lock.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let (code, out, err) = run(Command::new(CUSTODY)
        .env("CUSTODY_CONFIG", "/dev/null")
        .arg("--journal")
        .arg(&journal)
        .args(["--module", "/nonexistent/lib.so", "order", "reconcile"]));
    let took = start.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is not a file of this user"), "{err}");
    // Refused at once, not after the 30 s wait for a lock held by someone.
    assert!(took < Duration::from_secs(10), "{took:?}");
}
