//! `custody watch` and `custody status` as a user runs them: the real binary as a process,
//! real SoftHSM2 tokens made with softhsm2-util and pkcs11-tool, a real journal file.
//!
//! Every test has its own directory (its own SoftHSM2 token directory and configuration,
//! passed to child processes only) under `CARGO_TARGET_TMPDIR`. Waits are bounded polls of
//! `custody journal show --json`, never fixed sleeps standing in for a result.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

mod watch {
    mod stop;
}

#[path = "support/service.rs"]
mod service;
use service::{run, wait_for, Service, TestResult};

const CUSTODY: &str = env!("CARGO_BIN_EXE_custody");
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so";
/// PINs of throw-away test tokens.
const SO_PIN: &str = "12345678";
const USER_PIN: &str = "123456";
const INTERVAL: Duration = Duration::from_millis(200);
/// Content checks in these tests: twice per interval's worth, so changes show quickly.
const CHECK: &str = "400ms";
/// Certificates on the big token (long enough an enrollment to interrupt).
const BIG_CERTS: usize = 200;

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// A certificate and its private key (DER), made with openssl once per test run.
struct Material {
    cert: PathBuf,
    key: PathBuf,
}

fn material() -> &'static Material {
    static M: OnceLock<Material> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tmp().join(format!("watch-material-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let (pem, cert, key) = (
            dir.join("key.pem"),
            dir.join("cert.der"),
            dir.join("key.der"),
        );
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-utf8",
                "-subj",
                "/CN=Тарас Шевченко",
                "-days",
                "365",
                "-outform",
                "DER",
            ])
            .arg("-keyout")
            .arg(&pem)
            .arg("-out")
            .arg(&cert))
        .unwrap_or_else(|e| panic!("{e}"));
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&key))
        .unwrap_or_else(|e| panic!("{e}"));
        Material { cert, key }
    })
}

/// One test's world: a SoftHSM2 token directory, a configuration, a journal.
struct World {
    dir: PathBuf,
    conf: PathBuf,
    tokens: PathBuf,
    journal: PathBuf,
    config: PathBuf,
}

impl World {
    fn new(name: &str) -> Self {
        let dir = tmp().join(format!("watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap_or_else(|e| panic!("{e}"));
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = dir.join("custody.toml");
        // The spool exists: `status --running` checks it.
        let spool = dir.join("spool");
        std::fs::create_dir_all(&spool).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            &config,
            format!("[service]\nspool = \"{}\"\n", spool.display()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Self {
            journal: dir.join("journal.db"),
            dir,
            conf,
            tokens,
            config,
        }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", &self.conf)
            .env("CUSTODY_CONFIG", &self.config)
            .env_remove("CUSTODY_LOG");
        c
    }

    fn custody(&self) -> Command {
        let mut c = self.cmd(CUSTODY);
        c.arg("--journal").arg(&self.journal);
        c
    }

    /// softhsm2-util --init-token --free; returns the new token's serial.
    fn init_token(&self, label: &str) -> Result<String, Box<dyn std::error::Error>> {
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
        self.serial(label)
    }

    /// The serial of the token labelled `label`, from softhsm2-util --show-slots.
    fn serial(&self, label: &str) -> Result<String, Box<dyn std::error::Error>> {
        let out = run(self.cmd("softhsm2-util").arg("--show-slots"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut serial = None;
        for line in text.lines() {
            if let Some(s) = line.trim().strip_prefix("Serial number:") {
                serial = Some(s.trim().to_owned());
            }
            if let Some(l) = line.trim().strip_prefix("Label:") {
                if l.trim() == label {
                    return serial.ok_or_else(|| "no serial before the label".into());
                }
            }
        }
        Err(format!("no token labelled {label}").into())
    }

    /// pkcs11-tool --write-object: a certificate (or, with `key`, the private key).
    fn import(&self, label: &str, id: &str, key: bool) -> TestResult {
        let m = material();
        let (file, kind) = if key {
            (&m.key, "privkey")
        } else {
            (&m.cert, "cert")
        };
        run(self
            .cmd("pkcs11-tool")
            .args([
                "--module",
                SOFTHSM,
                "--token-label",
                label,
                "--login",
                "--pin",
                USER_PIN,
            ])
            .arg("--write-object")
            .arg(file)
            .args([
                "--type",
                kind,
                "--id",
                id,
                "--label",
                &format!("{kind} {id}"),
            ]))?;
        Ok(())
    }

    /// `custody watch` on SoftHSM2.
    fn watch(&self) -> Result<Service, Box<dyn std::error::Error>> {
        self.watch_through(SOFTHSM, &[])
    }

    /// `custody watch` on `module`, with extra environment for it.
    fn watch_through(
        &self,
        module: &str,
        env: &[(&str, &Path)],
    ) -> Result<Service, Box<dyn std::error::Error>> {
        let mut c = self.custody();
        for (k, v) in env {
            c.env(k, v);
        }
        c.args([
            "--module",
            module,
            "--log-format",
            "json",
            "watch",
            "--interval",
        ])
        .arg(format!("{}ms", INTERVAL.as_millis()))
        .args(["--check-interval", CHECK]);
        Service::spawn(c)
    }

    /// `custody watch` through pkcs11-spy logging to `log`.
    fn watch_spied(&self, log: &Path) -> Result<Service, Box<dyn std::error::Error>> {
        self.watch_through(
            SPY,
            &[("PKCS11SPY", Path::new(SOFTHSM)), ("PKCS11SPY_OUTPUT", log)],
        )
    }

    /// `custody journal show SERIAL --json`, when the carrier is in the journal.
    fn show(&self, serial: &str) -> Option<Value> {
        let out = self
            .custody()
            .args(["journal", "show", serial, "--json"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["carriers"].get(0).cloned()
    }

    /// The event kinds of a carrier, oldest first.
    fn kinds(&self, serial: &str) -> Vec<String> {
        self.show(serial)
            .and_then(|c| {
                c["events"].as_array().map(|e| {
                    e.iter()
                        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// Waits until the carrier's history holds `kind` `n` times.
    fn wait_kind(
        &self,
        serial: &str,
        kind: &str,
        n: usize,
        within: Duration,
    ) -> Result<Duration, Box<dyn std::error::Error>> {
        let start = Instant::now();
        wait_for(within, || {
            (self.kinds(serial).iter().filter(|k| *k == kind).count() >= n).then_some(())
        })
        .map_err(|_| {
            format!(
                "no {kind} ×{n} for {serial} within {within:?}: {:?}",
                self.kinds(serial)
            )
        })?;
        Ok(start.elapsed())
    }

    fn verify(&self) -> Result<Value, Box<dyn std::error::Error>> {
        let out = self
            .custody()
            .args(["journal", "verify", "--json"])
            .output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn list(&self) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
        let out = run(self.custody().args(["journal", "list", "--json"]))?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["carriers"].as_array().cloned().unwrap_or_default())
    }

    /// `custody status --running --json`: exit 1 unless the service runs.
    fn status(&self) -> Result<(Option<i32>, Value), Box<dyn std::error::Error>> {
        let out = self
            .custody()
            .args(["status", "--running", "--json"])
            .output()?;
        Ok((out.status.code(), serde_json::from_slice(&out.stdout)?))
    }

    /// Copies the big token (BIG_CERTS certificates) into this world.
    fn add_big_token(&self) -> Result<String, Box<dyn std::error::Error>> {
        let (template, serial) = big_token();
        let name = template.file_name().ok_or("token dir")?;
        copy_dir(template, &self.tokens.join(name))?;
        Ok(serial.clone())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// A token with BIG_CERTS certificates, built once per test run; copied by tests.
fn big_token() -> &'static (PathBuf, String) {
    static BIG: OnceLock<(PathBuf, String)> = OnceLock::new();
    BIG.get_or_init(|| {
        let w = World::new("big-template");
        let serial = w.init_token("big").unwrap_or_else(|e| panic!("{e}"));
        for i in 0..BIG_CERTS {
            w.import("big", &format!("{i:04x}"), false)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let keep = tmp().join(format!("watch-big-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&keep);
        let dir = std::fs::read_dir(&w.tokens)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.is_dir())
            .unwrap_or_else(|| panic!("no token directory"));
        let target = keep.join(dir.file_name().unwrap_or_default());
        copy_dir(&dir, &target).unwrap_or_else(|e| panic!("{e}"));
        (target, serial)
    })
}

fn assert_verifies(w: &World) -> TestResult {
    let v = w.verify()?;
    assert_eq!(v["ok"], true, "journal does not verify: {v}");
    Ok(())
}

#[test]
fn watch_records_insertion_change_reinitialisation_and_removal() -> TestResult {
    let w = World::new("lifecycle");
    let mut service = w.watch()?;
    service.wait_log("watching", Duration::from_secs(10))?;
    let bound = INTERVAL + Duration::from_secs(1);

    // A token created in place: enrolled within interval + 1 s; its certificate follows.
    let a = w.init_token("alpha")?;
    let took = w.wait_kind(&a, "carrier_enrolled", 1, Duration::from_secs(10))?;
    assert!(
        took <= bound,
        "enrollment took {took:?}, more than {bound:?}"
    );
    w.import("alpha", "01", false)?;
    w.wait_kind(&a, "cert_added", 1, Duration::from_secs(30))?;

    // A token prepared elsewhere with a certificate, then plugged in (its directory moved
    // in): enrolled with the certificate within interval + 1 s.
    let staging = World::new("lifecycle-staging");
    let b = staging.init_token("beta")?;
    staging.import("beta", "01", false)?;
    let dir = std::fs::read_dir(&staging.tokens)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .ok_or("no token directory")?;
    std::fs::rename(&dir, w.tokens.join(dir.file_name().ok_or("name")?))?;
    let took = w.wait_kind(&b, "cert_added", 1, Duration::from_secs(10))?;
    assert!(
        took <= bound,
        "enrollment took {took:?}, more than {bound:?}"
    );
    assert_eq!(w.kinds(&b)[..2], ["carrier_enrolled", "cert_added"]);

    // A certificate added to a present token.
    w.import("alpha", "02", false)?;
    w.wait_kind(&a, "cert_added", 2, Duration::from_secs(30))?;

    // The token re-initialised in place (same serial, same slot).
    run(w.cmd("softhsm2-util").args([
        "--init-token",
        "--token",
        "alpha",
        "--label",
        "alpha-2",
        "--so-pin",
        SO_PIN,
        "--pin",
        USER_PIN,
    ]))?;
    w.wait_kind(&a, "carrier_reinitialised", 1, Duration::from_secs(30))?;
    w.wait_kind(&a, "cert_removed", 2, Duration::from_secs(30))?;

    // Deleted.
    run(w
        .cmd("softhsm2-util")
        .args(["--delete-token", "--serial", &b]))?;
    let took = w.wait_kind(&b, "carrier_removed", 1, Duration::from_secs(10))?;
    assert!(took <= bound, "removal took {took:?}");

    assert_eq!(service.stop()?, Some(0), "log: {:?}", service.log());
    assert_verifies(&w)?;
    let history = w.kinds(&a);
    assert_eq!(
        history.iter().filter(|k| *k == "carrier_enrolled").count(),
        1,
        "{history:?}"
    );
    Ok(())
}

#[test]
fn sigterm_during_an_enrollment_finishes_it_and_exits_0() -> TestResult {
    let w = World::new("sigterm");
    let serial = w.add_big_token()?;
    let mut service = w.watch()?;
    service.wait_log("recording changes", Duration::from_secs(30))?;
    service.signal("TERM")?;
    assert_eq!(service.wait_exit(Duration::from_secs(20))?, Some(0));
    assert_verifies(&w)?;
    let kinds = w.kinds(&serial);
    assert_eq!(
        kinds.iter().filter(|k| *k == "cert_added").count(),
        BIG_CERTS,
        "{kinds:?}"
    );
    Ok(())
}

/// Kill -9 in the middle of enrolling a carrier, 20 times: the journal always verifies, and
/// the carrier is either wholly there (enrolled with every certificate) or not at all.
#[test]
fn kill_9_mid_enrollment_never_leaves_half_a_carrier() -> TestResult {
    let w = World::new("kill9");
    let serial = w.add_big_token()?;
    let mut rolled_back = 0;
    for round in 0..20 {
        let _ = std::fs::remove_file(&w.journal);
        let _ = std::fs::remove_file(w.journal.with_extension("db-wal"));
        let _ = std::fs::remove_file(w.journal.with_extension("db-shm"));
        // A new journal each round: its key goes too (a missing journal whose key exists is
        // refused, never recreated).
        let _ = std::fs::remove_file(w.journal.with_extension("db.key"));
        let mut service = w.watch()?;
        // "recording changes" is logged just before the transaction starts.
        service.wait_log("recording changes", Duration::from_secs(30))?;
        service.child.kill()?;
        service.child.wait()?;
        assert_verifies(&w)?;
        let carriers = w.list()?;
        match carriers.as_slice() {
            [] => {
                assert!(w.kinds(&serial).is_empty());
                rolled_back += 1;
            }
            [c] => {
                assert_eq!(c["certificates"], BIG_CERTS, "round {round}: {c}");
                let kinds = w.kinds(&serial);
                assert_eq!(kinds.len(), BIG_CERTS + 1, "round {round}: {kinds:?}");
            }
            more => panic!("round {round}: {} carriers", more.len()),
        }
    }
    eprintln!("{rolled_back} of 20 kills rolled an enrollment back");
    // The kills did land inside the transaction (else this test proves nothing).
    assert!(rolled_back > 0, "no kill interrupted a transaction");
    // And the service picks up after a kill.
    let mut service = w.watch()?;
    w.wait_kind(&serial, "cert_added", BIG_CERTS, Duration::from_secs(30))?;
    assert_eq!(service.stop()?, Some(0));
    assert_verifies(&w)?;
    Ok(())
}

/// pkcs11-spy between custody and SoftHSM2, logging into a FIFO that this test reads: when
/// the test stops reading, the module blocks custody's worker mid-poll.
struct SpyFifo {
    path: PathBuf,
    reading: Arc<AtomicBool>,
}

impl SpyFifo {
    fn new(w: &World) -> Result<Self, Box<dyn std::error::Error>> {
        let path = w.dir.join("spy.fifo");
        run(Command::new("mkfifo").arg(&path))?;
        let reading = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reading);
        let p = path.clone();
        std::thread::spawn(move || {
            // Opening blocks until custody loads the spy, which opens the FIFO for writing.
            let Ok(mut f) = std::fs::File::open(&p) else {
                return;
            };
            let mut buf = [0u8; 65536];
            loop {
                if flag.load(Ordering::SeqCst) {
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Ok(Self { path, reading })
    }

    fn read(&self, on: bool) {
        self.reading.store(on, Ordering::SeqCst);
    }
}

#[test]
fn first_signal_waits_for_the_poll_in_hand_second_exits_at_once() -> TestResult {
    let w = World::new("second-signal");
    w.add_big_token()?;
    let spy = SpyFifo::new(&w)?;
    let mut service = w.watch_spied(&spy.path)?;
    // The module loads (little spy output); the first poll reads 200 certificates and fills
    // the FIFO: the worker blocks inside a PKCS#11 call.
    service.wait_log("watching", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(500));
    service.signal("TERM")?;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        service.child.try_wait()?.is_none(),
        "the first signal must wait for the poll"
    );
    service.signal("TERM")?;
    // Let exit flush the spy's output.
    spy.read(true);
    assert_eq!(
        service.wait_exit(Duration::from_secs(5))?,
        Some(2),
        "log: {:?}",
        service.log()
    );
    assert_verifies(&w)?;
    Ok(())
}

#[test]
fn first_signal_finishes_a_blocked_poll_when_it_unblocks() -> TestResult {
    let w = World::new("first-signal");
    let serial = w.add_big_token()?;
    let spy = SpyFifo::new(&w)?;
    let mut service = w.watch_spied(&spy.path)?;
    service.wait_log("watching", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(500));
    service.signal("TERM")?;
    std::thread::sleep(Duration::from_millis(300));
    assert!(service.child.try_wait()?.is_none());
    spy.read(true);
    assert_eq!(
        service.wait_exit(Duration::from_secs(20))?,
        Some(0),
        "log: {:?}",
        service.log()
    );
    assert_verifies(&w)?;
    let kinds = w.kinds(&serial);
    assert_eq!(
        kinds.iter().filter(|k| *k == "cert_added").count(),
        BIG_CERTS
    );
    Ok(())
}

/// A wrong PIN is offered once, never again until the PIN file changes; then once more.
#[test]
fn a_rejected_pin_is_not_retried_until_its_source_changes() -> TestResult {
    let w = World::new("wrong-pin");
    let serial = w.init_token("gamma")?;
    w.import("gamma", "01", false)?;
    w.import("gamma", "01", true)?;
    let pin_file = w.dir.join("user.pin");
    std::fs::write(&pin_file, "999999\n")?;
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(
        &w.config,
        format!(
            "[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"{serial}\"\nuser_pin_file = \"{}\"\n",
            pin_file.display()
        ),
    )?;
    // The spy's log holds PINs: it stays in the test's directory, is never printed, and is
    // deleted with it.
    let spy_log = w.dir.join("spy.log");
    let logins = || -> usize {
        std::fs::read_to_string(&spy_log)
            .map(|t| t.lines().filter(|l| l.ends_with(" C_Login")).count())
            .unwrap_or(0)
    };
    let mut service = w.watch_spied(&spy_log)?;
    w.wait_kind(&serial, "carrier_enrolled", 1, Duration::from_secs(20))?;
    assert_eq!(logins(), 1);

    // Changes make the service read the carrier again, many content checks pass: no login.
    w.import("gamma", "02", false)?;
    w.wait_kind(&serial, "cert_added", 2, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(logins(), 1, "a rejected PIN was offered again");
    assert!(!w.kinds(&serial).iter().any(|k| k == "key_added"));

    // The PIN file is corrected: one more login, and the private key is read.
    std::fs::write(&pin_file, format!("{USER_PIN}\n"))?;
    w.wait_kind(&serial, "key_added", 1, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(logins(), 2);
    let log = service.log().join("\n");
    assert!(
        !log.contains("999999") && !log.contains(USER_PIN),
        "a PIN reached the log"
    );
    assert_eq!(service.stop()?, Some(0));
    let _ = std::fs::remove_file(&spy_log);
    Ok(())
}

#[test]
fn status_shows_the_service_and_the_carriers_present() -> TestResult {
    let w = World::new("status");
    // No journal yet: an error that says what to do.
    let out = w.custody().arg("status").output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("custody scan"));

    let serial = w.init_token("delta")?;
    w.import("delta", "01", false)?;
    let mut service = w.watch()?;
    w.wait_kind(&serial, "carrier_enrolled", 1, Duration::from_secs(20))?;
    // Whether the module is re-initialised is known once it has refused to wait for slot
    // events, which may be after the first poll.
    let (code, v) = wait_for(Duration::from_secs(10), || {
        let (code, v) = w.status().ok()?;
        (v["carriers"].as_array().map(Vec::len) == Some(1)
            && v["service"]["modules"][0]["reinit_period_ms"] == 200)
            .then_some((code, v))
    })?;
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["service"]["state"], "running");
    assert_eq!(v["carriers"][0]["serial"], serial.as_str());
    // A missing spool: running, but not as it should: exit 1, and why.
    let spool = w.dir.join("spool");
    std::fs::remove_dir(&spool)?;
    let (code, v) = w.status()?;
    assert_eq!(code, Some(1), "{v}");
    assert!(
        v["not_running"][0]
            .as_str()
            .is_some_and(|m| m.contains("spool")),
        "{v}"
    );
    std::fs::create_dir(&spool)?;
    assert_eq!(v["carriers"][0]["certificates"], 1);
    assert!(v["carriers"][0]["slot"].is_u64());
    assert!(
        v["service"]["last_poll_age_ms"]
            .as_u64()
            .unwrap_or(u64::MAX)
            < 2000,
        "{v}"
    );
    assert_eq!(v["service"]["modules"][0]["reinit_period_ms"], 200);
    let human = w.custody().arg("status").output()?;
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("Service   running") && text.contains(&serial),
        "{text}"
    );

    // A service that stops polling (SIGSTOP) is stale; after SIGCONT it runs again.
    service.signal("STOP")?;
    let stale = wait_for(Duration::from_secs(10), || {
        let (code, v) = w.status().ok()?;
        (v["service"]["state"] == "stale").then_some(code)
    })?;
    assert_eq!(stale, Some(1));
    service.signal("CONT")?;
    wait_for(Duration::from_secs(10), || {
        (w.status().ok()?.1["service"]["state"] == "running").then_some(())
    })?;

    // Stopped cleanly: the carriers as last recorded, with their last_seen; exit 1 with
    // --running, 0 without (the listing is informational).
    assert_eq!(service.stop()?, Some(0));
    let (code, v) = w.status()?;
    assert_eq!(code, Some(1));
    assert_eq!(w.custody().arg("status").output()?.status.code(), Some(0));
    assert_eq!(v["service"]["state"], "stopped");
    assert_eq!(v["carriers"][0]["serial"], serial.as_str());
    assert!(v["carriers"][0]["slot"].is_null());

    // Killed: "died".
    let mut service = w.watch()?;
    service.wait_log("watching", Duration::from_secs(10))?;
    wait_for(Duration::from_secs(10), || {
        (w.status().ok()?.1["service"]["state"] == "running").then_some(())
    })?;
    service.child.kill()?;
    service.child.wait()?;
    assert_eq!(w.status()?.1["service"]["state"], "died");
    Ok(())
}

#[test]
fn a_module_that_does_not_load_is_reported_and_the_service_keeps_running() -> TestResult {
    let w = World::new("bad-module");
    let mut c = w.custody();
    c.args([
        "--module",
        "/nonexistent/libnothing.so",
        "--log-format",
        "json",
        "watch",
    ])
    .args(["--interval", "200ms"]);
    let mut service = Service::spawn(c)?;
    service.wait_log("watching", Duration::from_secs(10))?;
    let v = wait_for(Duration::from_secs(10), || {
        let v = w.status().ok()?.1;
        (v["service"]["state"] == "running").then_some(v)
    })?;
    let m = &v["service"]["modules"][0];
    assert_eq!(m["loaded"], false, "{v}");
    assert!(
        m["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no such file"),
        "{v}"
    );
    assert_eq!(service.stop()?, Some(0));
    Ok(())
}

#[test]
fn bad_inputs_are_refused_with_exit_2_and_a_reason() -> TestResult {
    let w = World::new("bad-inputs");
    for (args, expect) in [
        (&["watch", "--interval", "0s"][..], "out of range"),
        (&["watch", "--interval", "fast"][..], "not a duration"),
        (&["watch", "--check-interval", "1y"][..], "unknown unit"),
    ] {
        let out = w.custody().args(args).output()?;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    // A file that is not a journal: refused, untouched.
    std::fs::write(&w.journal, b"not a database")?;
    let out = w.custody().args(["--module", SOFTHSM, "watch"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a custody journal"));
    assert_eq!(std::fs::read(&w.journal)?, b"not a database");
    // A configuration with an unknown reinit policy.
    std::fs::write(
        &w.config,
        "[[module]]\npath = \"/m.so\"\nreinit = \"sometimes\"\n",
    )?;
    let out = w.custody().args(["watch"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3, [[module]] reinit"), "{err}");
    assert!(!err.contains("sometimes"), "{err}");
    // A state record that is not one.
    std::fs::write(&w.config, "")?;
    std::fs::remove_file(&w.journal)?;
    run(w.custody().args(["--module", SOFTHSM, "scan"]))?;
    std::fs::write(w.journal.with_extension("watch.json"), "{")?;
    let out = w.custody().args(["status"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("remove it"));
    Ok(())
}

#[test]
fn without_slot_events_from_the_module_polling_carries_on() -> TestResult {
    // The service waits for slot events (C_WaitForSlotEvent) on a thread of its own; SoftHSM2
    // answers CKR_FUNCTION_NOT_SUPPORTED, and with re-initialisation off the poll must still
    // see every change of a present carrier.
    let w = World::new("slot-events");
    let a = w.init_token("gamma")?;
    std::fs::write(
        &w.config,
        format!("[[module]]\npath = \"{SOFTHSM}\"\nreinit = \"never\"\n"),
    )?;
    let mut c = w.custody();
    c.args(["--log-format", "json", "-v", "watch", "--interval"])
        .arg(format!("{}ms", INTERVAL.as_millis()))
        .args(["--check-interval", CHECK]);
    let mut service = Service::spawn(c)?;
    service.wait_log("no slot events from this module", Duration::from_secs(10))?;
    assert!(
        service.log().iter().any(|l| l
            .contains("C_WaitForSlotEvent is not supported by this PKCS#11 module")
            && l.contains("\"reinit\":false")),
        "{:?}",
        service.log()
    );
    w.wait_kind(&a, "carrier_enrolled", 1, Duration::from_secs(10))?;
    w.import("gamma", "01", false)?;
    w.wait_kind(&a, "cert_added", 1, Duration::from_secs(30))?;
    assert_eq!(service.stop()?, Some(0), "log: {:?}", service.log());
    assert_verifies(&w)?;
    Ok(())
}
