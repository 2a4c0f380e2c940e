//! The fault-injecting PKCS#11 module itself (`fault-pkcs11/`): it forwards faithfully with an
//! empty plan, and does exactly what a plan says: failed calls, empty slot lists, rewritten
//! token information and key types, hidden tokens with slot events, serials changed by
//! C_InitToken, a call log without PINs. Checked with independent clients: `custody scan`,
//! OpenSC's `pkcs11-tool`, and `fault-probe` (cryptoki) for slot events.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use custody_tests::{
    pair_spec, temp_dir, Custody, FaultModule, FaultPlan, Spec, TokenSet, PAIR_SO_PIN,
    PAIR_USER_PIN,
};
use serde_json::{json, Value};

type TestResult = anyhow::Result<()>;

const FIXTURES: &str = env!("CARGO_BIN_EXE_custody-fixtures");
const PROBE: &str = env!("CARGO_BIN_EXE_fault-probe");
const PIN: &str = PAIR_USER_PIN;

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fault-module")
}

fn setup(spec: &Spec, name: &str, plan: &FaultPlan) -> anyhow::Result<(TokenSet, FaultModule)> {
    let dir = temp_dir(&base(), name)?;
    let set = TokenSet::cached(
        Path::new(FIXTURES),
        spec,
        &base().join("cache"),
        &dir.join("set"),
    )?;
    let fault = FaultModule::new(&dir.join("fault"), plan)?;
    Ok((set, fault))
}

/// Runs `pkcs11-tool` through the fault module; returns its exit status, stdout and stderr.
fn pkcs11_tool(
    set: &TokenSet,
    fault: &FaultModule,
    args: &[&str],
) -> anyhow::Result<(bool, String)> {
    let mut command = set.command("pkcs11-tool");
    fault.apply(&mut command);
    let out = command
        .arg("--module")
        .arg(fault.module())
        .args(args)
        .output()
        .context("running pkcs11-tool (Debian package opensc)")?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// `fault-probe` with the module loaded and initialised, answering one line per command.
struct Probe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Probe {
    fn start(set: &TokenSet, fault: &FaultModule) -> anyhow::Result<Self> {
        let mut command = set.command(PROBE);
        fault.apply(&mut command);
        let mut child = command
            .arg(fault.module())
            .env("PROBE_USER_PIN", PIN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting fault-probe")?;
        let stdin = child.stdin.take().context("probe stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("probe stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn send(&mut self, command: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn read(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        ensure!(!line.is_empty(), "fault-probe ended");
        Ok(line.trim_end().to_owned())
    }

    fn ask(&mut self, command: &str) -> anyhow::Result<String> {
        self.send(command)?;
        self.read()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The slot id SoftHSM2 gives the token with this serial (low 31 bits of the serial).
fn slot_of(serial: &str) -> anyhow::Result<u64> {
    Ok(u64::from_str_radix(serial, 16)? & 0x7fff_ffff)
}

/// What a scan shows of the carriers, without what legitimately differs between modules.
fn carriers_of(scan: &Value) -> Vec<Value> {
    let mut carriers: Vec<Value> = scan["modules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["carriers"].as_array().cloned().unwrap_or_default())
        .collect();
    for carrier in &mut carriers {
        if let Some(object) = carrier.as_object_mut() {
            object.remove("slot");
            object.remove("module");
        }
    }
    carriers.sort_by_key(|c| c["id"]["serial"].to_string());
    carriers
}

fn events_of(scan: &Value) -> Vec<(String, String)> {
    let mut events: Vec<(String, String)> = scan["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["kind"].to_string(), e["carrier"].to_string()))
        .collect();
    events.sort();
    events
}

#[test]
fn empty_plan_scan_through_the_module_equals_the_direct_scan() -> TestResult {
    let (set, fault) = setup(&Spec::demo(), "faithful", &FaultPlan::new())?;
    let dir = set.dir().to_path_buf();
    let direct = Custody::new(&set, &dir.join("direct.db")).json(&["scan"], 0)?;
    let through = Custody::new(&set, &dir.join("through.db"))
        .through(&fault)
        .json(&["scan"], 0)?;
    assert_eq!(carriers_of(&through), carriers_of(&direct));
    assert_eq!(events_of(&through), events_of(&direct));
    assert_eq!(carriers_of(&direct).len(), set.manifest().tokens.len());
    // It really went through the module: every call logged, none altered.
    let calls = fault.calls()?;
    ensure!(calls.len() > 20, "only {} calls logged", calls.len());
    assert!(calls.iter().all(|c| c.origin == "real"), "{calls:?}");
    assert_eq!(calls[0].function, "C_GetFunctionList");
    assert!(calls.iter().any(|c| c.function == "C_FindObjects"));
    let indexes: Vec<u64> = calls.iter().filter_map(|c| c.index).collect();
    assert_eq!(indexes, (1..=indexes.len() as u64).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn a_fault_fails_exactly_the_call_it_names() -> TestResult {
    let (set, fault) = setup(&pair_spec(), "named_call", &FaultPlan::new())?;
    let (ok, _) = pkcs11_tool(&set, &fault, &["-L"])?;
    assert!(ok);
    let clean = fault.calls()?;
    let second_token_info = clean
        .iter()
        .filter(|c| c.function == "C_GetTokenInfo")
        .nth(1)
        .and_then(|c| c.index)
        .context("two C_GetTokenInfo calls")?;

    fault.clear_log()?;
    fault.set_plan(&FaultPlan::new().fail_at(second_token_info, "CKR_DEVICE_REMOVED"))?;
    let (_, text) = pkcs11_tool(&set, &fault, &["-L"])?;
    assert_eq!(text.matches("CKR_DEVICE_REMOVED").count(), 1, "{text}");
    let calls = fault.calls()?;
    let faulted: Vec<_> = calls.iter().filter(|c| c.origin == "fault").collect();
    assert_eq!(faulted.len(), 1, "{calls:?}");
    assert_eq!(faulted[0].index, Some(second_token_info));
    assert_eq!(faulted[0].rv, "CKR_DEVICE_REMOVED");
    assert_eq!(calls.len(), clean.len(), "the same calls otherwise");

    // Per function and from an index on.
    fault.clear_log()?;
    fault.set_plan(
        &FaultPlan::new()
            .fail_nth("C_GetSlotInfo", 2, "CKR_DEVICE_ERROR")
            .fail_every("C_GetTokenInfo", "CKR_GENERAL_ERROR"),
    )?;
    let (_, text) = pkcs11_tool(&set, &fault, &["-L"])?;
    assert_eq!(text.matches("CKR_DEVICE_ERROR").count(), 1, "{text}");
    assert!(!text.contains("serial num"), "{text}");
    assert!(fault
        .calls()?
        .iter()
        .all(|c| c.function != "C_GetTokenInfo" || c.origin == "fault"));
    Ok(())
}

#[test]
fn an_empty_slot_list_and_rewritten_serials_models_and_flags() -> TestResult {
    let (set, fault) = setup(
        &pair_spec(),
        "rewrites",
        &FaultPlan::new().empty_slot_list_from(1),
    )?;
    let mut probe = Probe::start(&set, &fault)?;
    assert_eq!(probe.ask("slots")?, "");
    drop(probe);

    let [a, b] = [&set.manifest().tokens[0], &set.manifest().tokens[1]];
    fault.set_plan(
        &FaultPlan::new()
            .token(&a.serial, json!({"serial": "0000000000000000"}))
            .token(&b.serial, json!({"serial": "0000000000000000"}))
            .token(
                &b.serial,
                json!({"model": "TPM\u{0}\u{0}model", "set_flags": ["CKF_USER_PIN_COUNT_LOW"]}),
            ),
    )?;
    let mut probe = Probe::start(&set, &fault)?;
    let slots = probe.ask("slots")?;
    assert_eq!(slots.matches(":0000000000000000").count(), 2, "{slots}");
    assert!(
        !slots.contains(&a.serial) && !slots.contains(&b.serial),
        "{slots}"
    );
    let flags = probe.ask("flags")?;
    assert_eq!(
        flags.split(' ').filter(|f| f.ends_with(",true")).count(),
        1,
        "{flags}"
    );
    drop(probe);
    let (_, text) = pkcs11_tool(&set, &fault, &["-L"])?;
    assert!(text.contains("token model        : TPM"), "{text}");

    // Duplicate real serials: both tokens report a's.
    fault.set_plan(&FaultPlan::new().token(&b.serial, json!({"serial": a.serial})))?;
    let slots = Probe::start(&set, &fault)?.ask("slots")?;
    assert_eq!(
        slots.matches(&format!(":{}", a.serial)).count(),
        2,
        "{slots}"
    );
    Ok(())
}

#[test]
fn a_private_key_reads_as_dstu4145() -> TestResult {
    let (set, fault) = setup(&pair_spec(), "dstu", &FaultPlan::new())?;
    let before = Probe::start(&set, &fault)?.ask("key-types")?;
    assert_eq!(before, "0x3 0x3", "two EC private keys");
    let b = &set.manifest().tokens[1];
    fault.set_plan(&FaultPlan::from_json(
        json!({"keys": [{"id": "01", "serial": b.serial, "key_type": "CKK_DSTU4145"}]}),
    ))?;
    let after = Probe::start(&set, &fault)?.ask("key-types")?;
    assert_eq!(after, "0x3 0x80420131");
    Ok(())
}

#[test]
fn hidden_tokens_leave_their_slot_and_slot_events_report_it() -> TestResult {
    let (set, fault) = setup(&pair_spec(), "hide", &FaultPlan::new())?;
    let [a, b] = [&set.manifest().tokens[0], &set.manifest().tokens[1]];
    let mut probe = Probe::start(&set, &fault)?;
    assert_eq!(probe.ask("poll")?, "none", "no event without a change");
    let both = probe.ask("slots")?;
    assert!(
        both.contains(&a.serial) && both.contains(&b.serial),
        "{both}"
    );

    fault.set_plan(&FaultPlan::new().hide(&a.serial))?;
    assert_eq!(probe.ask("poll")?, slot_of(&a.serial)?.to_string());
    assert_eq!(probe.ask("poll")?, "none", "one event per change");
    let shown = probe.ask("slots")?;
    assert!(
        !shown.contains(&a.serial) && shown.contains(&b.serial),
        "{shown}"
    );
    let (_, text) = pkcs11_tool(&set, &fault, &["-L"])?;
    assert!(
        text.contains("(empty)") && !text.contains(&a.serial),
        "{text}"
    );

    // Blocking: the wait ends when the token comes back.
    probe.send("wait")?;
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    fault.set_plan(&FaultPlan::new())?;
    assert_eq!(probe.read()?, slot_of(&a.serial)?.to_string());
    let latency = started.elapsed();
    println!("blocking C_WaitForSlotEvent returned {latency:?} after the plan changed");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert!(probe.ask("slots")?.contains(&a.serial));
    drop(probe);
    let waits = fault
        .calls()?
        .into_iter()
        .filter(|c| c.function == "C_WaitForSlotEvent")
        .collect::<Vec<_>>();
    assert_eq!(waits.len(), 4, "{waits:?}");
    assert!(waits.iter().all(|c| c.index.is_none()), "own counter");
    Ok(())
}

#[test]
fn init_token_gives_a_new_serial_that_later_processes_see() -> TestResult {
    let (set, fault) = setup(
        &pair_spec(),
        "reinit_serial",
        &FaultPlan::new().reinit_changes_serial(),
    )?;
    let a = &set.manifest().tokens[0];
    let slot = slot_of(&a.serial)?.to_string();
    let (ok, text) = pkcs11_tool(
        &set,
        &fault,
        &[
            "--slot",
            &slot,
            "--init-token",
            "--label",
            "fault-a2",
            "--so-pin",
            PAIR_SO_PIN,
        ],
    )?;
    assert!(ok, "{text}");
    let (_, listing) = pkcs11_tool(&set, &fault, &["-L"])?;
    assert!(listing.contains("fault-a2"), "{listing}");
    assert!(!listing.contains(&a.serial), "{listing}");
    let changed = format!("{}0001", &a.serial[..12]);
    assert!(listing.contains(&changed), "{listing}");
    Ok(())
}

#[test]
fn the_call_log_never_holds_a_pin() -> TestResult {
    let (set, fault) = setup(&pair_spec(), "log_canary", &FaultPlan::new())?;
    let a = &set.manifest().tokens[0];
    let slot = slot_of(&a.serial)?.to_string();
    let (ok, text) = pkcs11_tool(
        &set,
        &fault,
        &["--slot", &slot, "--login", "--pin", PIN, "-O"],
    )?;
    assert!(ok, "{text}");
    // Positive control: the login happened through the module and is in the log.
    let calls = fault.calls()?;
    assert!(
        calls
            .iter()
            .any(|c| c.function == "C_Login" && c.rv == "CKR_OK"),
        "{calls:?}"
    );
    let log = std::fs::read(fault.log())?;
    assert!(!log.windows(PIN.len()).any(|w| w == PIN.as_bytes()));
    Ok(())
}

#[test]
fn a_plan_that_does_not_parse_fails_initialisation() -> TestResult {
    let (set, fault) = setup(&pair_spec(), "bad_plan", &FaultPlan::new())?;
    fault.set_plan(&FaultPlan::from_json(
        json!({"faults": [{"at": 1, "rv": "CKR_NOPE"}]}),
    ))?;
    let (ok, text) = pkcs11_tool(&set, &fault, &["-L"])?;
    assert!(!ok, "{text}");
    assert!(text.contains("unknown return value CKR_NOPE"), "{text}");
    assert!(fault.calls().is_err(), "the log names the plan problem");
    Ok(())
}

/// Waits up to `limit` for an event of `kind` on the carrier with `serial`; returns how long
/// it took.
fn wait_for_event(
    journal: &Path,
    kind: &str,
    serial: &str,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if journal.exists() {
            let events = custody_core::journal::Journal::open(journal)?.events()?;
            if events.iter().any(|e| {
                e.kind.to_string() == kind
                    && e.carrier.as_deref().is_some_and(|c| c.ends_with(serial))
            }) {
                return Ok(started.elapsed());
            }
        }
        ensure!(
            started.elapsed() < limit,
            "no {kind} for {serial} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The slot-event path of `custody watch`, end to end: the module answers
/// C_WaitForSlotEvent, a token pulled out (hidden) and put back is recorded long before the
/// 30 s poll would have seen it. The module reports another library manufacturer, so custody
/// treats it as a live module (no re-initialisation, which would end every wait).
#[test]
fn custody_watch_records_a_pulled_token_through_slot_events() -> TestResult {
    let live = FaultPlan::new().library_manufacturer("custody fault injector");
    let (set, fault) = setup(&pair_spec(), "watch_events", &live)?;
    let a = &set.manifest().tokens[0];
    let journal = set.dir().join("journal.db");
    let custody = Custody::new(&set, &journal).through(&fault);
    let mut child = custody
        .command()
        .args(["watch", "--interval", "30s", "--check-interval", "30s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| -> TestResult {
        wait_for_event(
            &journal,
            "carrier_enrolled",
            &a.serial,
            Duration::from_secs(20),
        )?;
        // Time for the event thread to block in C_WaitForSlotEvent (logged when it returns).
        std::thread::sleep(Duration::from_millis(300));
        fault.set_plan(&live.clone().hide(&a.serial))?;
        let removed = wait_for_event(
            &journal,
            "carrier_removed",
            &a.serial,
            Duration::from_secs(5),
        )?;
        fault.set_plan(&live)?;
        let back = wait_for_event(&journal, "carrier_seen", &a.serial, Duration::from_secs(5))?;
        println!("through slot events: removal recorded after {removed:?}, return after {back:?}");
        Ok(())
    })();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    result?;
    assert!(status.success(), "custody watch exited {status}");
    let waits = fault
        .calls()?
        .into_iter()
        .filter(|c| c.function == "C_WaitForSlotEvent" && c.rv == "CKR_OK")
        .count();
    assert_eq!(waits, 2, "one event for the removal, one for the return");
    let verify = custody.run(&["journal", "verify"])?;
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    Ok(())
}

/// The `slot event handled` lines of a `custody watch` JSON log (debug level of the worker).
fn handled_events(log: &Path) -> anyhow::Result<Vec<Value>> {
    Ok(std::fs::read_to_string(log)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["fields"].clone())
        .filter(|f| f["message"] == "slot event handled")
        .collect())
}

/// A slot event is answered by reading only the slot it names: a pulled token's removal is
/// recorded from the event and one C_GetSlotInfo showing the slot empty (the module answers,
/// and knows no device trouble), with no slot list in between; its return from that call and
/// a read of the token. When that one call fails, the event falls back to a full poll at
/// once, and what the slot list shows is recorded as before.
#[test]
fn custody_watch_answers_a_slot_event_by_reading_only_its_slot() -> TestResult {
    let live = FaultPlan::new().library_manufacturer("custody fault injector");
    let (set, fault) = setup(&pair_spec(), "watch_one_slot", &live)?;
    let a = &set.manifest().tokens[0];
    let journal = set.dir().join("journal.db");
    let log = set.dir().join("watch.log");
    let custody = Custody::new(&set, &journal).through(&fault);
    let mut child = custody
        .command()
        .env("CUSTODY_LOG", "info,custody_agent::worker=debug")
        .args(["--log-format", "json", "watch", "--interval", "60s"])
        .args(["--check-interval", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let result = (|| -> TestResult {
        let limit = Duration::from_secs(20);
        wait_for_event(&journal, "carrier_enrolled", &a.serial, limit)?;
        // Time for the event thread to block in C_WaitForSlotEvent.
        std::thread::sleep(Duration::from_millis(300));
        // The running watch keeps its log open: calls from here on are the ones after this.
        let before = fault.calls()?.len();
        fault.set_plan(&live.clone().hide(&a.serial))?;
        wait_for_event(&journal, "carrier_removed", &a.serial, limit)?;
        let calls = fault.calls()?;
        let names: Vec<&str> = calls[before..]
            .iter()
            .map(|c| c.function.as_str())
            .collect();
        ensure!(
            names.contains(&"C_GetSlotInfo") && !names.contains(&"C_GetSlotList"),
            "the removal came from a full poll: {names:?}"
        );
        let handled = handled_events(&log)?;
        ensure!(
            handled.len() == 1 && handled[0]["one_slot"] == true && handled[0]["committed"] == true,
            "{handled:?}"
        );
        // The token comes back while C_GetSlotInfo fails: a full poll, at once.
        fault.set_plan(&live.clone().fail_every("C_GetSlotInfo", "CKR_DEVICE_ERROR"))?;
        let back = wait_for_event(&journal, "carrier_seen", &a.serial, Duration::from_secs(10))?;
        let handled = handled_events(&log)?;
        ensure!(
            handled.len() == 2
                && handled[1]["one_slot"] == false
                && handled[1]["committed"] == true,
            "{handled:?}"
        );
        println!("return recorded through a full poll after {back:?}");
        Ok(())
    })();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    result?;
    assert!(status.success(), "custody watch exited {status}");
    let kinds: Vec<String> = custody_core::journal::Journal::open(&journal)?
        .events()?
        .iter()
        .filter(|e| e.carrier.as_deref().is_some_and(|c| c.ends_with(&a.serial)))
        .map(|e| e.kind.to_string())
        .collect();
    ensure!(
        kinds.iter().filter(|k| *k == "carrier_removed").count() == 1
            && kinds.iter().filter(|k| *k == "carrier_seen").count() == 1,
        "{kinds:?}"
    );
    let verify = custody.run(&["journal", "verify"])?;
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    Ok(())
}
