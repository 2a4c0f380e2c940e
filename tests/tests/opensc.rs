//! custody on OpenSC's PKCS#11 module over pcscd, with a virtual smart card in vsmartcard's
//! virtual reader (vpcd): the one implementation here with real slot events and removable
//! carriers.
//!
//! Every test starts its own pcscd (private socket, private reader configuration, vpcd on
//! free ports) and OpenSC configuration ([`Reader`]), makes its own card (a key pair
//! certified by a fixture CA, [`Pkcs15Card`]) and runs the real `custody` binary. Waits are
//! bounded polls of `custody journal show --json`. A reader that cannot be started fails the
//! test (the packages are installed by `softhsm-fixtures/ensure-packages.sh`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use custody_tests::pcsc::Reader;
use custody_tests::pkcs15::{CardSpec, Pkcs15Card};
use custody_tests::smartcard::VirtualCard;
use custody_tests::{temp_dir, Custody};
use serde_json::Value;

type TestResult = anyhow::Result<()>;

const WAIT: Duration = Duration::from_secs(20);

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("opensc")
}

/// A test's reader, card and custody (journal in the test's directory).
struct World {
    dir: PathBuf,
    reader: Reader,
    card: Pkcs15Card,
    custody: Custody,
}

impl World {
    fn new(name: &str) -> anyhow::Result<Self> {
        let dir = temp_dir(&base(), name)?;
        let reader = Reader::start(&dir).context("starting pcscd with a vpcd reader")?;
        let card = Pkcs15Card::generate(&CardSpec::new("Іваненко І.І.", name))?;
        let custody = Custody::for_module(reader.module(), reader.env(), &dir.join("journal.db"));
        Ok(Self {
            dir,
            reader,
            card,
            custody,
        })
    }

    fn serial(&self) -> String {
        self.card.spec.serial_hex()
    }

    fn insert(&self) -> anyhow::Result<VirtualCard> {
        let card = self.reader.insert(&self.card.image)?;
        card.wait_detected(WAIT)?;
        Ok(card)
    }

    /// Kinds of the card's events in the journal, in order (empty when it is unknown).
    fn kinds(&self) -> anyhow::Result<Vec<String>> {
        let run = self
            .custody
            .run(&["journal", "show", &self.serial(), "--json"])?;
        if run.code != 0 {
            return Ok(Vec::new());
        }
        let json = run.json()?;
        Ok(json["carriers"][0]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["kind"].as_str().map(str::to_owned))
            .collect())
    }

    fn count(&self, kind: &str) -> anyhow::Result<usize> {
        Ok(self.kinds()?.iter().filter(|k| *k == kind).count())
    }

    /// Waits until the journal holds `n` events of `kind` for the card.
    fn wait_count(&self, kind: &str, n: usize) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let have = self.count(kind)?;
            if have >= n {
                return Ok(start.elapsed());
            }
            if start.elapsed() > WAIT {
                bail!(
                    "{n} `{kind}` expected within {WAIT:?}, journal has {:?}",
                    self.kinds()?
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn verify(&self) -> TestResult {
        self.custody.run(&["journal", "verify"])?.expect(0)?;
        Ok(())
    }

    /// `custody watch` with a long interval: anything seen within seconds came through
    /// C_WaitForSlotEvent.
    fn watch(&self) -> anyhow::Result<Watch> {
        let log = self.dir.join("watch.log");
        let child = self
            .custody
            .command()
            .args(["--log-format", "json", "watch", "--interval", "60s"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting custody watch")?;
        let watch = Watch { child, log };
        watch.wait_log("watching")?;
        Ok(watch)
    }
}

/// A running `custody watch`, stopped by SIGTERM (or killed, on a failed test).
struct Watch {
    child: Child,
    log: PathBuf,
}

impl Watch {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, message: &str) -> TestResult {
        let start = Instant::now();
        let needle = format!("\"message\":\"{message}\"");
        while !self.log_text().contains(&needle) {
            ensure!(
                start.elapsed() < WAIT,
                "no `{message}` in the service log: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGTERM; the service must end with 0.
    fn stop(mut self) -> TestResult {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed");
        let code = self.child.wait()?.code();
        ensure!(
            code == Some(0),
            "custody watch exited {code:?}: {}",
            self.log_text()
        );
        Ok(())
    }

    /// Lines of the log whose message is `message`.
    fn lines(&self, message: &str) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Our own child, by its pid (a no-op after stop()).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn opensc_scan_reads_the_card_and_a_rescan_records_nothing() -> TestResult {
    let w = World::new("scan")?;
    let _card = w.insert()?;
    let scan = w.custody.json(&["scan"], 0)?;
    let carriers: Vec<&Value> = scan["modules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["carriers"].as_array().into_iter().flatten())
        .collect();
    ensure!(carriers.len() == 1, "one card: {scan:#}");
    let c = carriers[0];
    ensure!(c["id"]["serial"] == w.serial().as_str(), "{c:#}");
    ensure!(c["id"]["manufacturer"] == "custody test card", "{c:#}");
    ensure!(c["id"]["model"] == "PKCS#15", "{c:#}");
    ensure!(c["label"] == "Іваненко І.І.", "{c:#}");
    ensure!(c["flags"]["write_protected"] == true, "{c:#}");
    ensure!(c["flags"]["login_required"] == false, "{c:#}");
    let certs = c["certificates"].as_array().context("certificates")?;
    ensure!(certs.len() == 1, "{c:#}");
    let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&w.card.certificate));
    ensure!(certs[0]["sha256"] == fingerprint.as_str(), "{c:#}");
    ensure!(certs[0]["id"] == "4501", "{c:#}");
    ensure!(
        certs[0]["info"]["holder_name"] == "Іваненко Іван Іванович",
        "{c:#}"
    );
    ensure!(certs[0]["key_pairing"] == "confirmed", "{c:#}");
    let keys = c["public_keys"].as_array().context("public keys")?;
    ensure!(
        keys.len() == 1 && keys[0]["key_type_name"] == "EC" && keys[0]["id"] == "4501",
        "{c:#}"
    );
    ensure!(
        w.kinds()? == ["carrier_enrolled", "cert_added", "key_added"],
        "{:?}",
        w.kinds()?
    );
    // Re-scans of the unchanged card record nothing.
    for _ in 0..3 {
        let again = w.custody.json(&["scan"], 0)?;
        ensure!(
            again["events"].as_array().is_some_and(Vec::is_empty),
            "a re-scan recorded {:#}",
            again["events"]
        );
    }
    ensure!(w.kinds()?.len() == 3);
    w.verify()
}

#[test]
fn opensc_watch_sees_insertion_and_removal_through_slot_events() -> TestResult {
    let w = World::new("watch")?;
    let watch = w.watch()?;
    for round in 1..=3 {
        let card = w.insert()?;
        // The first insertion enrolls the card, later ones record it seen again.
        let took = if round == 1 {
            w.wait_count("carrier_enrolled", 1)?
        } else {
            w.wait_count("carrier_seen", round - 1)?
        };
        ensure!(
            took < Duration::from_secs(10),
            "insertion {round} recorded after {took:?} (the poll interval is 60 s)"
        );
        card.remove();
        let took = w.wait_count("carrier_removed", round)?;
        ensure!(
            took < Duration::from_secs(10),
            "removal {round} recorded after {took:?} (the poll interval is 60 s)"
        );
    }
    ensure!(
        watch
            .lines("no slot events from this module; polling only")
            .is_empty(),
        "the service fell back to polling: {}",
        watch.log_text()
    );
    ensure!(
        w.kinds()?
            == [
                "carrier_enrolled",
                "cert_added",
                "key_added",
                "carrier_removed",
                "carrier_seen",
                "carrier_removed",
                "carrier_seen",
                "carrier_removed",
            ],
        "{:?}",
        w.kinds()?
    );
    watch.stop()?;
    w.verify()
}

/// A signer key, its allowed_signers file and a configuration naming them.
fn order_setup(w: &World) -> anyhow::Result<(PathBuf, PathBuf)> {
    let key = w.dir.join("signer");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "it", "-f"])
        .arg(&key)
        .status()?;
    ensure!(status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let signers = w.dir.join("allowed_signers");
    std::fs::write(
        &signers,
        format!(
            "it@example.org namespaces=\"custody-order\" {}",
            public.trim()
        ),
    )?;
    let config = w.dir.join("custody.toml");
    std::fs::write(
        &config,
        format!(
            "[orders]\nallowed_signers = \"{}\"\n[service]\nspool = \"{}\"\n",
            signers.display(),
            w.dir.join("spool").display()
        ),
    )?;
    Ok((key, config))
}

fn pin_file(path: &Path, pin: &str) -> anyhow::Result<PathBuf> {
    std::fs::write(path, format!("{pin}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path.to_path_buf())
}

#[test]
fn opensc_wipe_of_a_read_only_card_is_refused_and_nothing_is_recorded_done() -> TestResult {
    let w = World::new("wipe")?;
    let _card = w.insert()?;
    let (key, config) = order_setup(&w)?;
    let custody = w.custody.clone().with_config(&config);
    custody.json(&["scan"], 0)?;
    let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&w.card.certificate));
    let so_pin = pin_file(&w.dir.join("so.pin"), "12345678")?;
    let user_pin = pin_file(&w.dir.join("user.pin"), "123456")?;
    for (method, pin_option, pin) in [
        ("reinit", "--so-pin-file", &so_pin),
        ("destroy-keys", "--user-pin-file", &user_pin),
    ] {
        let order = w.dir.join(format!("{method}.json"));
        let created = custody
            .run(&[
                "order",
                "create",
                "--carrier",
                &w.serial(),
                "--holder",
                "Іваненко Іван Іванович",
                "--dismissed",
                &time::OffsetDateTime::now_utc().date().to_string(),
                "--method",
                method,
                "--responsible",
                "Коваленко Ольга Петрівна",
                "--cert",
                &fingerprint,
                "--reason",
                "Наказ № 17-к",
                "--id",
                &format!("opensc-{method}"),
            ])?
            .expect(0)?;
        std::fs::write(&order, created.stdout)?;
        let key_text = key.display().to_string();
        let order_text = order.display().to_string();
        custody
            .run(&["order", "sign", &order_text, "--key", &key_text])?
            .expect(0)?;
        let pin_text = pin.display().to_string();
        let run = custody.run(&["wipe", "--order", &order_text, pin_option, &pin_text])?;
        ensure!(
            run.code == 1,
            "a wipe of a read-only card must be refused or fail (exit 1), got {}:\n{}\n{}",
            run.code,
            run.stdout,
            run.stderr
        );
        let said = format!("{}{}", run.stdout, run.stderr);
        let plain = said.to_lowercase().replace([' ', '-', '_'], "");
        ensure!(
            [
                "notsupported",
                "readonly",
                "writeprotected",
                "pinnotinitialized"
            ]
            .iter()
            .any(|why| plain.contains(why)),
            "the refusal does not say why ({method}): {said}"
        );
        ensure!(
            said.contains("nothing claims a wipe")
                || said.contains("nothing was touched")
                || said.contains("refused"),
            "the refusal does not say that nothing was done ({method}): {said}"
        );
        eprintln!("{method}: {said}");
    }
    // reinit: C_InitToken is not supported (the wipe is tried, fails, and says so);
    // destroy-keys: the card has no user PIN to log in with (refused before anything).
    let kinds = w.kinds()?;
    ensure!(
        kinds.iter().any(|k| k == "wipe_failed") && kinds.iter().any(|k| k == "order_rejected"),
        "{kinds:?}"
    );
    ensure!(
        !kinds.iter().any(|k| k == "wipe_completed"),
        "a wipe of a read-only card recorded as done: {kinds:?}"
    );
    ensure!(
        !kinds
            .iter()
            .any(|k| k == "cert_removed" || k == "key_removed"),
        "{kinds:?}"
    );
    // The card still holds its key and certificate, and a scan sees no change.
    let scan = custody.json(&["scan"], 0)?;
    ensure!(
        scan["events"].as_array().is_some_and(Vec::is_empty),
        "{:#}",
        scan["events"]
    );
    w.verify()
}

/// A `[[pin]]` rule for a card without a user PIN (a read-only PKCS#15 application) is
/// skipped with a warning, nothing is offered to the card, and the scan succeeds.
#[test]
fn opensc_a_pin_rule_for_a_card_without_a_user_pin_is_skipped() -> TestResult {
    let w = World::new("pin-rule")?;
    let _card = w.insert()?;
    let first = w.custody.json(&["scan"], 0)?;
    let id = &first["modules"][0]["carriers"][0]["id"];
    ensure!(id["serial"] == w.serial().as_str(), "{first:#}");
    let pin = pin_file(&w.dir.join("user.pin"), "123456")?;
    let config = w.dir.join("pins.toml");
    // JSON strings are TOML basic strings.
    std::fs::write(
        &config,
        format!(
            "[[pin]]\nmanufacturer = {}\nmodel = {}\nserial = {}\nuser_pin_file = \"{}\"\n",
            id["manufacturer"],
            id["model"],
            id["serial"],
            pin.display()
        ),
    )?;
    let scan = w.custody.clone().with_config(&config).json(&["scan"], 0)?;
    let c = &scan["modules"][0]["carriers"][0];
    ensure!(c["login"]["state"] == "skipped", "{c:#}");
    ensure!(
        c["login"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no user PIN")),
        "{c:#}"
    );
    let skipped = scan["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["scope"] == "login_skipped")
        .count();
    ensure!(skipped == 1, "{scan:#}");
    ensure!(
        scan["events"].as_array().is_some_and(Vec::is_empty),
        "{:#}",
        scan["events"]
    );
    w.verify()
}

/// Kinds of the events a `custody scan --json` recorded.
fn scan_kinds(scan: &Value) -> Vec<String> {
    scan["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect()
}

/// A card pulled while `custody scan` reads it, after every few commands of the read (and
/// after each of the last ones, where OpenSC reads the objects: it then shows the card with
/// some objects and not the others): nothing is removed from it, the scan says it is partial
/// (exit 2) when it saw the card at all, and when the card comes back nothing is recorded.
#[test]
fn opensc_a_card_pulled_mid_read_removes_nothing() -> TestResult {
    let w = World::new("mid-read")?;
    let card = w.insert()?;
    w.custody.json(&["scan"], 0)?;
    let total = card.timeline().commands;
    ensure!(total > 20, "the first read took {total} commands");
    drop(card);
    let mut pulls: Vec<u64> = (0..total - 15).step_by(5).collect();
    pulls.extend(total - 15..total);
    let mut outcomes = Vec::new();
    for n in pulls {
        // The card is in and recorded with its certificate and key.
        let card = w.insert()?;
        let before = w.custody.json(&["scan"], 0)?;
        ensure!(
            scan_kinds(&before).iter().all(|k| k == "carrier_seen"),
            "pull after {n}: the card back in recorded {:?}",
            scan_kinds(&before)
        );
        // The next read loses the card after n commands.
        card.restart_timeline();
        card.vanish_after(n);
        let run = w.custody.run(&["scan", "--json"])?;
        card.wait_vanished(WAIT)?;
        ensure!(
            run.code == 0 || run.code == 2,
            "pull after {n}: exit {}: {}",
            run.code,
            run.stderr
        );
        let scan = run.json()?;
        let kinds = scan_kinds(&scan);
        ensure!(
            !kinds
                .iter()
                .any(|k| k == "cert_removed" || k == "key_removed" || k == "carrier_reinitialised"),
            "pull after {n}: a card pulled mid-read lost objects: {kinds:?}\n{scan:#}"
        );
        let partial = scan["problems"].as_array().into_iter().flatten().any(|p| {
            p["scope"] == "slot"
                && p["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&w.serial()))
        });
        if partial {
            ensure!(
                run.code == 2 && kinds.is_empty(),
                "pull after {n}: {scan:#}"
            );
        } else {
            // OpenSC never showed the card: its reader is empty, and it is.
            ensure!(
                run.code == 0 && kinds == ["carrier_removed"],
                "pull after {n}: {scan:#}"
            );
        }
        outcomes.push(format!("{n}:{}", if partial { "partial" } else { "empty" }));
        // Put back at once: the reader takes the next card once pcscd has seen this one
        // gone (`Reader::insert` waits for that).
        drop(card);
    }
    eprintln!("pulled after n commands of {total}: {}", outcomes.join(" "));
    ensure!(
        outcomes.iter().any(|o| o.ends_with("partial")),
        "no pull landed while OpenSC showed the card: the test did not test the mid-read case"
    );
    // The card comes back: nothing spurious.
    let _card = w.insert()?;
    let back = w.custody.json(&["scan"], 0)?;
    let kinds = scan_kinds(&back);
    ensure!(kinds.iter().all(|k| k == "carrier_seen"), "{kinds:?}");
    let c = &back["modules"][0]["carriers"][0];
    ensure!(
        c["certificates"].as_array().map(Vec::len) == Some(1)
            && c["public_keys"].as_array().map(Vec::len) == Some(1),
        "{c:#}"
    );
    let all = w.kinds()?;
    ensure!(
        !all.iter()
            .any(|k| k == "cert_removed" || k == "key_removed"),
        "{all:?}"
    );
    ensure!(
        all.iter().filter(|k| *k == "cert_added").count() == 1
            && all.iter().filter(|k| *k == "key_added").count() == 1,
        "{all:?}"
    );
    w.verify()
}

/// The same under `custody watch`: a card put in and pulled while OpenSC reads it (in the
/// last commands of its read, where it shows the card with only some objects) changes
/// nothing in the journal; the card put back is seen again with everything it holds.
#[test]
fn opensc_watch_keeps_state_when_a_card_is_pulled_mid_read() -> TestResult {
    let w = World::new("watch-mid-read")?;
    let card = w.insert()?;
    let total = {
        w.custody.json(&["scan"], 0)?;
        card.timeline().commands
    };
    card.remove();
    let watch = w.watch()?;
    w.wait_count("carrier_removed", 1)?;
    for n in [total - 13, total - 8, total - 4, total - 1] {
        let image = w.card.image.clone().pull_after(n + 1);
        let card = w.reader.insert(&image)?;
        if let Err(e) = card.wait_vanished(WAIT) {
            bail!("pull after {n}: {e}\n{}", watch.log_text());
        }
        // The service has seen the card come and go (slot events) and read it in between.
        std::thread::sleep(Duration::from_millis(1500));
        let kinds = w.kinds()?;
        ensure!(
            kinds
                == [
                    "carrier_enrolled",
                    "cert_added",
                    "key_added",
                    "carrier_removed"
                ],
            "pull after {n} of {total} commands: {kinds:?}\n{}",
            watch.log_text()
        );
        drop(card);
    }
    let _card = w.insert()?;
    if let Err(e) = w.wait_count("carrier_seen", 1) {
        bail!("{e}\n{}", watch.log_text());
    }
    std::thread::sleep(Duration::from_millis(500));
    let kinds = w.kinds()?;
    ensure!(
        kinds
            == [
                "carrier_enrolled",
                "cert_added",
                "key_added",
                "carrier_removed",
                "carrier_seen"
            ],
        "{kinds:?}"
    );
    watch.stop()?;
    w.verify()
}
