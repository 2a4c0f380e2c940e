//! Stopping the service: SIGTERM ends it within 5 s whatever it is doing between PKCS#11
//! calls (here: waiting up to 10 s for another process that holds the journal's write
//! lock; a FIFO in the spool: `hostile.rs`), and GNU `timeout`, which sends SIGTERM twice,
//! stops it cleanly (exit 0).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::support::*;

/// The service, its JSON log collected.
struct Service {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Service {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("stderr"));
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Self { child, log }
    }

    fn logged(&self, message: &str) -> bool {
        let needle = format!("\"message\":\"{message}\"");
        self.log
            .lock()
            .map(|l| l.iter().any(|x| x.contains(&needle)))
            .unwrap_or(false)
    }

    fn count(&self, message: &str) -> usize {
        let needle = format!("\"message\":\"{message}\"");
        self.log
            .lock()
            .map(|l| l.iter().filter(|x| x.contains(&needle)).count())
            .unwrap_or(0)
    }

    fn wait_log(&self, message: &str, within: Duration) {
        let until = Instant::now() + within;
        while !self.logged(message) {
            assert!(Instant::now() < until, "no {message:?} in {}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    fn term(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(st.success());
    }

    /// The exit code and how long it took, or a failure after `within`.
    fn wait_exit(&mut self, within: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                return (st.code(), start.elapsed());
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the service did not exit within {within:?}: {}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn watch(env: &Env) -> Command {
    let mut cmd = env.command(MODULE);
    cmd.args([
        "--log-format",
        "json",
        "-vv",
        "watch",
        "--interval",
        "200ms",
    ]);
    cmd
}

#[test]
fn sigterm_ends_the_service_within_5s_while_another_process_holds_the_journal() {
    let env = Env::new("stop-busy");
    let mut service = Service::start(watch(&env));
    service.wait_log("journal transaction committed", Duration::from_secs(30));
    // Another process takes the journal's write lock…
    let mut holder = Command::new("sqlite3")
        .arg(&env.journal)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("sqlite3: {e}"));
    let mut stdin = holder.stdin.take().unwrap_or_else(|| panic!("stdin"));
    writeln!(stdin, "BEGIN IMMEDIATE;").unwrap_or_else(|e| panic!("{e}"));
    stdin.flush().unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(300));
    // …and a carrier is pulled out: the next poll waits for the lock to record it.
    let tokens = env.path("tokens");
    let token = std::fs::read_dir(&tokens)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no token"));
    std::fs::rename(&token, env.path("unplugged")).unwrap_or_else(|e| panic!("{e}"));
    let until = Instant::now() + Duration::from_secs(20);
    while service.count("recording changes") < 2 {
        assert!(Instant::now() < until, "{}", service.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        service.child.try_wait().ok().flatten().is_none(),
        "the service is waiting for the journal"
    );
    service.term();
    let (code, took) = service.wait_exit(Duration::from_secs(5));
    drop(stdin);
    let _ = holder.kill();
    let _ = holder.wait();
    eprintln!("exit {code:?} {took:?} after SIGTERM");
    // It could not record what it saw last (the journal is held): exit 2 says so.
    assert_eq!(code, Some(2), "{}", service.text());
    assert!(service.text().contains("database is locked"));
    // Nothing was recorded half: the journal verifies.
    let v = env.custody(&["--json", "journal", "verify"]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
}

#[test]
fn gnu_timeout_stops_the_service_cleanly() {
    // GNU timeout signals the child and then its process group: two SIGTERMs at once, one
    // request (the same with the worker blocked mid-poll: `watch/stop.rs`).
    let env = Env::new("stop-timeout");
    let mut cmd = Command::new("timeout");
    cmd.args(["--preserve-status", "3"])
        .arg(env!("CARGO_BIN_EXE_custody"))
        .env("SOFTHSM2_CONF", &env.conf)
        .env_remove("CUSTODY_CONFIG")
        .env_remove("CUSTODY_LOG")
        .arg("--journal")
        .arg(&env.journal)
        .args(["--module", MODULE, "--config"])
        .arg(&env.config)
        .args([
            "--log-format",
            "json",
            "-vv",
            "watch",
            "--interval",
            "200ms",
        ]);
    let start = Instant::now();
    let mut service = Service::start(cmd);
    let (code, _) = service.wait_exit(Duration::from_secs(3 + 5));
    assert_eq!(code, Some(0), "{}", service.text());
    assert!(service.logged("stopped"), "{}", service.text());
    eprintln!("under timeout 3: exit 0 after {:?}", start.elapsed());
}
