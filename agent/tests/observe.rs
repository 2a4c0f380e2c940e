//! A journal that never records what did not happen, against real modules: SoftHSM2 behind
//! p11-kit's remote module (`p11-kit server` + `p11-kit-client.so`), whose server is killed
//! and restarted under `custody scan` and `custody watch`.
//!
//! Every test has its own directory (SoftHSM2 token directory, p11-kit socket, journal) under
//! `CARGO_TARGET_TMPDIR`. Waits are bounded polls, never fixed sleeps standing in for a result.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/service.rs"]
mod service;
use service::{run, wait_for, Service, TestResult};

const CUSTODY: &str = env!("CARGO_BIN_EXE_custody");
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const SO_PIN: &str = "12345678";
const USER_PIN: &str = "123456";

fn client_module() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let found = std::fs::read_dir("/usr/lib")?
        .filter_map(Result::ok)
        .map(|e| e.path().join("pkcs11/p11-kit-client.so"))
        .find(|p| p.exists());
    // Under CI the component must be there: a missing one fails, never skips.
    found.ok_or_else(|| {
        "p11-kit-client.so not found: install p11-kit-modules (softhsm-fixtures/ensure-packages.sh does)"
            .into()
    })
}

/// One test's world: SoftHSM2 tokens served by `p11-kit server`, and a journal.
struct World {
    dir: PathBuf,
    conf: PathBuf,
    socket: PathBuf,
    journal: PathBuf,
    client: PathBuf,
    server: Option<Child>,
}

impl World {
    fn new(name: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("observe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )?;
        std::fs::write(dir.join("custody.toml"), "")?;
        Ok(Self {
            socket: dir.join("p11-kit.sock"),
            journal: dir.join("journal.db"),
            client: client_module()?,
            dir,
            conf,
            server: None,
        })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", &self.conf)
            .env("CUSTODY_CONFIG", self.dir.join("custody.toml"))
            .env(
                "P11_KIT_SERVER_ADDRESS",
                format!("unix:path={}", self.socket.display()),
            )
            .env_remove("CUSTODY_LOG");
        c
    }

    /// `custody --journal J --module p11-kit-client.so ...`
    fn custody(&self) -> Command {
        let mut c = self.cmd(CUSTODY);
        c.arg("--journal")
            .arg(&self.journal)
            .arg("--module")
            .arg(&self.client);
        c
    }

    fn init_token(&self, label: &str) -> TestResult {
        run(self.cmd("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ]))?;
        Ok(())
    }

    /// Starts `p11-kit server` for SoftHSM2 on this world's socket and waits for it.
    fn start_server(&mut self) -> TestResult {
        let _ = std::fs::remove_file(&self.socket);
        let child = self
            .cmd("p11-kit")
            .args(["server", "-f", "--provider", SOFTHSM, "-n"])
            .arg(&self.socket)
            .arg("pkcs11:")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.server = Some(child);
        wait_for(Duration::from_secs(10), || {
            self.socket.exists().then_some(())
        })
        .map_err(|e| format!("p11-kit server socket {e}"))?;
        Ok(())
    }

    /// Kills the server we started and the `p11-kit-remote` process it forked for each
    /// connection (by their pids), as when the machine serving the module goes away.
    fn kill_server(&mut self) -> TestResult {
        if let Some(mut child) = self.server.take() {
            let mut forked = Vec::new();
            for task in std::fs::read_dir(format!("/proc/{}/task", child.id()))? {
                let children = std::fs::read_to_string(task?.path().join("children"))?;
                forked.extend(children.split_whitespace().map(str::to_owned));
            }
            child.kill()?;
            child.wait()?;
            for pid in forked {
                let _ = Command::new("kill").arg(&pid).status();
            }
        }
        Ok(())
    }

    /// One value from the journal file, through the sqlite3 shell.
    fn sql(&self, query: &str) -> Result<String, Box<dyn std::error::Error>> {
        let out = run(Command::new("sqlite3")
            .arg("-readonly")
            .arg(&self.journal)
            .arg(query))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn count(&self, kind: &str) -> usize {
        self.sql(&format!(
            "SELECT count(*) FROM events WHERE kind = '{kind}'"
        ))
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
    }

    fn present(&self) -> Result<Vec<(String, bool)>, Box<dyn std::error::Error>> {
        let out = run(self.custody().args(["journal", "list", "--json"]))?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["carriers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["label"].as_str().unwrap_or_default().to_owned(),
                    c["present"] == true,
                )
            })
            .collect())
    }

    fn verifies(&self) -> TestResult {
        let out = self
            .custody()
            .args(["journal", "verify", "--json"])
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        if v["ok"] != true {
            return Err(format!("journal does not verify: {v}").into());
        }
        Ok(())
    }

    fn delete_token(&self, label: &str) -> TestResult {
        run(self
            .cmd("softhsm2-util")
            .args(["--delete-token", "--token", label]))?;
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.kill_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn all_present(present: &[(String, bool)], labels: &[&str]) -> bool {
    labels
        .iter()
        .all(|l| present.iter().any(|(label, p)| label == l && *p))
}

#[test]
fn scan_of_a_remote_module_whose_server_died_is_partial_and_removes_nothing() -> TestResult {
    let mut w = World::new("scan-remote")?;
    w.init_token("one")?;
    w.init_token("two")?;
    w.start_server()?;
    run(w.custody().arg("scan"))?;
    assert_eq!(w.count("carrier_enrolled"), 2);

    // The server dies: the client answers C_GetSlotList with CKR_OK and no slots.
    w.kill_server()?;
    for _ in 0..2 {
        let out = w.custody().args(["scan", "--json"]).output()?;
        assert_eq!(
            out.status.code(),
            Some(2),
            "a partial scan is not a success"
        );
        let scan: Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(scan["modules"][0]["complete"], false, "{scan}");
        let human = w.custody().arg("scan").output()?;
        let text = String::from_utf8_lossy(&human.stdout);
        assert!(text.contains("partial:"), "{text}");
    }
    assert_eq!(w.count("carrier_removed"), 0, "removals from a dead module");
    assert_eq!(
        w.count("module_unavailable"),
        1,
        "one event, not one per scan"
    );
    assert!(all_present(&w.present()?, &["one", "two"]));

    // Back, with one token deleted meanwhile: recovered, then the normal comparison.
    w.delete_token("two")?;
    w.start_server()?;
    let out = w.custody().args(["scan", "--json"]).output()?;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.count("module_recovered"), 1);
    assert_eq!(w.count("carrier_removed"), 1);
    let present = w.present()?;
    assert!(all_present(&present, &["one"]));
    assert!(!all_present(&present, &["two"]));
    assert_eq!(
        w.sql("SELECT group_concat(kind, ',') FROM (SELECT kind FROM events WHERE kind <> 'checkpoint' AND seq >= (SELECT min(seq) FROM events WHERE kind = 'module_unavailable') ORDER BY seq)")?,
        "module_unavailable,module_recovered,carrier_removed"
    );
    w.verifies()
}

/// `custody watch` as a child process, its JSON log collected.
#[test]
fn watch_keeps_carriers_of_a_dead_remote_module_and_recovers_when_it_returns() -> TestResult {
    let mut w = World::new("watch-remote")?;
    w.init_token("one")?;
    w.init_token("two")?;
    w.start_server()?;
    let mut c = w.custody();
    c.args(["--log-format", "json", "watch", "--interval", "200ms"])
        .args(["--check-interval", "400ms"]);
    let mut service = Service::spawn(c)?;
    wait_for(Duration::from_secs(20), || {
        (w.count("carrier_enrolled") == 2).then_some(())
    })
    .map_err(|e| format!("enrollment {e}; log: {:?}", service.log()))?;
    let loaded = service
        .log()
        .into_iter()
        .find(|l| l.contains("\"message\":\"module loaded\""))
        .ok_or("no module loaded line")?;
    assert!(
        loaded.contains("\"reinit\":\"every poll once the module shows it has no slot events, else never (policy auto)\""),
        "the module loaded line states the effective re-init setting: {loaded}"
    );

    w.kill_server()?;
    wait_for(Duration::from_secs(20), || {
        (w.count("module_unavailable") == 1).then_some(())
    })
    .map_err(|e| format!("module_unavailable {e}; log: {:?}", service.log()))?;
    // Several retries later (1 s, 2 s, 4 s): still one event, no removal, carriers present.
    let retries_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < retries_until {
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(w.count("carrier_removed"), 0, "log: {:?}", service.log());
    }
    assert_eq!(w.count("module_unavailable"), 1);
    assert!(all_present(&w.present()?, &["one", "two"]));
    let (_, status) = {
        let out = w.custody().args(["status", "--json"]).output()?;
        (
            out.status.code(),
            serde_json::from_slice::<Value>(&out.stdout)?,
        )
    };
    assert_eq!(
        status["service"]["modules"][0]["unavailable"], true,
        "{status}"
    );

    // The server returns without token "two": recovered, then "two" removed by a complete read.
    w.delete_token("two")?;
    w.start_server()?;
    wait_for(Duration::from_secs(70), || {
        (w.count("module_recovered") == 1 && w.count("carrier_removed") == 1).then_some(())
    })
    .map_err(|e| format!("recovery {e}; log: {:?}", service.log()))?;
    assert_eq!(w.count("module_unavailable"), 1);
    let present = w.present()?;
    assert!(all_present(&present, &["one"]), "{present:?}");
    assert_eq!(service.stop()?, Some(0));
    w.verifies()
}
