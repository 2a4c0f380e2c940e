//! `custody scan` end to end against SoftHSM2: what it records, what a re-scan adds, what
//! each kind of change adds, and every kind of bad input. Each test works on its own copy of
//! a token set and its own journal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _};
use custody_tests::{temp_dir, Custody, Profile, Spec, TokenSet, TokenSpec};
use serde_json::Value;

type TestResult = anyhow::Result<()>;

const FIXTURES: &str = env!("CARGO_BIN_EXE_custody-fixtures");

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inventory")
}

/// A private copy of `spec` (built once per run, cached) and a fresh journal beside it.
fn setup(spec: &Spec, name: &str) -> anyhow::Result<(TokenSet, Custody)> {
    let dir = temp_dir(&base(), name)?;
    let set = TokenSet::cached(
        Path::new(FIXTURES),
        spec,
        &base().join("cache"),
        &dir.join("set"),
    )?;
    let custody = Custody::new(&set, &dir.join("journal.db"));
    Ok((set, custody))
}

fn carriers(scan: &Value) -> Vec<&Value> {
    scan["modules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["carriers"].as_array().into_iter().flatten())
        .collect()
}

fn carrier<'a>(scan: &'a Value, label: &str) -> anyhow::Result<&'a Value> {
    carriers(scan)
        .into_iter()
        .find(|c| c["label"] == label)
        .with_context(|| format!("no carrier labelled {label}"))
}

fn event_kinds(scan: &Value) -> Vec<String> {
    scan["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn tool(set: &TokenSet, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = set
        .command(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pkcs11_tool(set: &TokenSet, args: &[&str]) -> anyhow::Result<String> {
    let module = set.module().display().to_string();
    let mut all = vec!["--module", module.as_str()];
    all.extend_from_slice(args);
    tool(set, "pkcs11-tool", &all)
}

#[test]
fn scan_records_every_demo_carrier_with_parsed_certificates() -> TestResult {
    let (set, custody) = setup(&Spec::demo(), "demo")?;
    let scan = custody.json(&["scan"], 0)?;
    let m = set.manifest();
    assert_eq!(carriers(&scan).len(), m.tokens.len());
    for t in &m.tokens {
        let c = carrier(&scan, &t.label)?;
        assert_eq!(c["id"]["serial"], t.serial.as_str());
        assert_eq!(c["id"]["manufacturer"], t.manufacturer.as_str());
        assert_eq!(
            c["certificates"].as_array().map(Vec::len),
            Some(t.certificate_count())
        );
        assert_eq!(c["flags"]["token_initialized"], true);
        assert_eq!(c["flags"]["login_required"], true);
        assert_eq!(c["hardware_version"], "2.6");
        assert_eq!(c["login"]["state"], "not_attempted");
    }
    // The Ukrainian person certificate: holder, tax and organisation codes, qcStatements,
    // and its key generated on the carrier, paired by CKA_ID and public key.
    let person = carrier(&scan, "Іваненко І.І.")?;
    let cert = &person["certificates"][0];
    let info = &cert["info"];
    assert_eq!(info["holder_name"], "Іваненко Іван Іванович");
    assert_eq!(info["tax_number"]["value"], "1234567890");
    assert_eq!(info["tax_number"]["source"], "subject_directory_attributes");
    assert_eq!(info["org_code"]["value"], "12345678");
    assert_eq!(info["qc"]["compliance"], true);
    assert_eq!(info["qc"]["sscd"], true);
    assert_eq!(info["qc"]["types"][0], "esign");
    assert_eq!(info["key"]["curve"], "P-256");
    assert_eq!(cert["key_pairing"], "confirmed");
    assert_eq!(person["public_keys"][0]["local"], true);
    assert_eq!(person["public_keys"][0]["key_type_name"], "EC");
    let expected_sha = m
        .token("Іваненко І.І.")
        .and_then(|t| t.objects.iter().find_map(|o| o.cert_sha256.clone()))
        .context("manifest certificate")?;
    assert_eq!(cert["sha256"], expected_sha.as_str());
    // RSA pairs by modulus.
    let rsa = carrier(&scan, "RSA signer")?;
    assert_eq!(rsa["certificates"][0]["key_pairing"], "confirmed");
    assert_eq!(rsa["certificates"][0]["info"]["key"]["name"], "RSA");
    // The seal token holds a DSTU 4145 certificate, named as such, with no key to pair.
    let seal = carrier(&scan, "ЦНАП печатка")?;
    let dstu = seal["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["info"]["key"]["name"] == "DSTU 4145")
        .context("DSTU 4145 certificate")?;
    assert_eq!(dstu["info"]["org_code"]["value"], "12345678");
    assert_eq!(dstu["key_pairing"], "none");
    // The empty token and the Cyrillic label are carriers like any other.
    assert_eq!(
        carrier(&scan, "Empty token")?["certificates"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    carrier(&scan, "Бухгалтерія №1")?;
    // Enrollment events: one carrier_enrolled per token, one cert_added per certificate.
    let kinds = event_kinds(&scan);
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("carrier_enrolled"), m.tokens.len());
    assert_eq!(
        count("cert_added"),
        m.tokens
            .iter()
            .map(|t| t.certificate_count())
            .sum::<usize>()
    );
    custody.run(&["journal", "verify"])?.expect(0)?;
    Ok(())
}

#[test]
fn real_ukrainian_certificates_on_a_token_parse() -> TestResult {
    let Some(dir) =
        custody_tests::ua_certs_dir_for_test("real_ukrainian_certificates_on_a_token_parse")
    else {
        return Ok(());
    };
    let spec = Spec::demo_with(Some(&dir))?;
    let (_set, custody) = setup(&spec, "real-certs")?;
    let scan = custody.json(&["scan"], 0)?;
    let real = carrier(&scan, "UA real certs")?;
    let certs = real["certificates"].as_array().context("certificates")?;
    assert_eq!(certs.len(), 6);
    for c in certs {
        assert!(c["parse_error"].is_null(), "{c}");
    }
    let sfs = certs
        .iter()
        .find(|c| c["info"]["org_code"]["value"] == "39292197")
        .context("SFS certificate with EDRPOU 39292197")?;
    assert_eq!(sfs["info"]["key"]["name"], "DSTU 4145");
    assert_eq!(sfs["info"]["key"]["curve"], "DSTU 4145 m=257");
    Ok(())
}

#[test]
fn scan_agrees_with_pkcs11_tool() -> TestResult {
    let (set, custody) = setup(&Spec::demo(), "cross-check")?;
    let scan = custody.json(&["scan"], 0)?;
    // pkcs11-tool -L: serials and labels of the initialised tokens.
    let listing = pkcs11_tool(&set, &["-L"])?;
    let mut tool_tokens: BTreeMap<String, (String, String)> = BTreeMap::new(); // serial -> (label, slot)
    let mut label = String::new();
    let mut slot = String::new();
    for line in listing.lines() {
        if let Some(rest) = line.strip_prefix("Slot ") {
            slot = rest.split(['(', ')']).nth(1).unwrap_or_default().to_owned();
        } else if let Some(v) = line.trim().strip_prefix("token label        : ") {
            label = v.to_owned();
        } else if let Some(v) = line.trim().strip_prefix("serial num         : ") {
            tool_tokens.insert(v.to_owned(), (label.clone(), slot.clone()));
        }
    }
    let ours: BTreeMap<String, String> = carriers(&scan)
        .into_iter()
        .map(|c| {
            (
                c["id"]["serial"].as_str().unwrap_or_default().to_owned(),
                c["label"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ours.keys().collect::<BTreeSet<_>>(),
        tool_tokens.keys().collect::<BTreeSet<_>>()
    );
    for (serial, (label, slot)) in &tool_tokens {
        assert_eq!(ours.get(serial), Some(label), "label of {serial}");
        // pkcs11-tool -O --type cert on that slot: the same number of certificates.
        let objects = pkcs11_tool(&set, &["--slot", slot, "-O", "--type", "cert"])?;
        let tool_count = objects.matches("Certificate Object").count();
        let c = carriers(&scan)
            .into_iter()
            .find(|c| c["id"]["serial"] == serial.as_str())
            .context("carrier")?;
        assert_eq!(
            c["certificates"].as_array().map(Vec::len),
            Some(tool_count),
            "{serial}"
        );
    }
    Ok(())
}

#[test]
fn rescan_of_an_unchanged_state_adds_no_event() -> TestResult {
    let (_set, custody) = setup(&Spec::demo(), "rescan")?;
    let first = custody.json(&["scan"], 0)?;
    let before = custody.json(&["journal", "list"], 0)?;
    let second = custody.json(&["scan"], 0)?;
    assert!(!event_kinds(&first).is_empty());
    assert_eq!(event_kinds(&second), Vec::<String>::new());
    assert_eq!(second["carriers_unchanged"], second["carriers_seen"]);
    let after = custody.json(&["journal", "list"], 0)?;
    // Only last_seen moves.
    let strip = |v: &Value| {
        let mut v = v.clone();
        for c in v["carriers"].as_array_mut().into_iter().flatten() {
            c["last_seen"] = Value::Null;
        }
        v
    };
    assert_eq!(strip(&before), strip(&after));
    let verify = custody.json(&["journal", "verify"], 0)?;
    // The scanned events and the checkpoint every new journal starts with.
    assert_eq!(
        verify["events"],
        first["events"].as_array().map(Vec::len).unwrap_or(0) + 1
    );
    Ok(())
}

#[test]
fn each_change_adds_exactly_the_events_that_describe_it() -> TestResult {
    let spec = Spec::new()
        .token(TokenSpec::new("Change me").ec_key_cert("01", "first", Profile::plain("First")))
        .token(TokenSpec::new("Goes away").ec_key_cert("01", "k", Profile::plain("Leaving")));
    let (set, custody) = setup(&spec, "changes")?;
    custody.json(&["scan"], 0)?;
    let t = set.manifest().token("Change me").context("token")?.clone();
    let slot_of = |serial: &str| -> anyhow::Result<String> {
        let listing = pkcs11_tool(&set, &["-L"])?;
        let mut slot = String::new();
        for line in listing.lines() {
            if let Some(rest) = line.strip_prefix("Slot ") {
                slot = rest.split(['(', ')']).nth(1).unwrap_or_default().to_owned();
            } else if line.contains("serial num") && line.trim_end().ends_with(serial) {
                return Ok(slot);
            }
        }
        anyhow::bail!("no slot for {serial}")
    };
    // A certificate added.
    let extra = set.dir().join("certs");
    let der = std::fs::read_dir(&extra)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "der"))
        .context("a certificate file of the set")?;
    let slot = slot_of(&t.serial)?;
    let pin = t.user_pin.clone();
    pkcs11_tool(
        &set,
        &[
            "--slot",
            &slot,
            "--login",
            "--pin",
            &pin,
            "--write-object",
            der.to_str().context("utf-8")?,
            "--type",
            "cert",
            "--id",
            "77",
            "--label",
            "added",
        ],
    )?;
    let scan = custody.json(&["scan"], 0)?;
    assert_eq!(event_kinds(&scan), ["cert_added"]);
    // The same certificate removed again.
    pkcs11_tool(
        &set,
        &[
            "--slot",
            &slot,
            "--login",
            "--pin",
            &pin,
            "--delete-object",
            "--type",
            "cert",
            "--id",
            "77",
        ],
    )?;
    let scan = custody.json(&["scan"], 0)?;
    assert_eq!(event_kinds(&scan), ["cert_removed"]);
    // A token gone.
    let gone = set
        .manifest()
        .token("Goes away")
        .context("token")?
        .serial
        .clone();
    tool(
        &set,
        "softhsm2-util",
        &["--delete-token", "--serial", &gone],
    )?;
    let scan = custody.json(&["scan"], 0)?;
    assert_eq!(event_kinds(&scan), ["carrier_removed"]);
    let list = custody.json(&["journal", "list"], 0)?;
    let row = list["carriers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["serial"] == gone.as_str())
        .context("removed carrier still listed")?;
    assert_eq!(row["present"], false);
    // The token re-initialised with a new key: the old objects go, the new key comes.
    tool(
        &set,
        "softhsm2-util",
        &[
            "--init-token",
            "--token",
            "Change me",
            "--label",
            "Reissued",
            "--so-pin",
            &t.so_pin,
            "--pin",
            &pin,
        ],
    )?;
    let slot = slot_of(&t.serial)?;
    pkcs11_tool(
        &set,
        &[
            "--slot",
            &slot,
            "--login",
            "--pin",
            &pin,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            "02",
            "--label",
            "new key",
        ],
    )?;
    let scan = custody.json(&["scan"], 0)?;
    assert_eq!(
        event_kinds(&scan),
        [
            "carrier_reinitialised",
            "cert_removed",
            "key_removed",
            "key_added"
        ]
    );
    let history = custody.json(&["journal", "show", &t.serial], 0)?;
    let events = history["carriers"][0]["events"]
        .as_array()
        .context("events")?;
    assert_eq!(events[0]["kind"], "carrier_enrolled");
    custody.run(&["journal", "verify"])?.expect(0)?;
    Ok(())
}

#[test]
fn garbage_certificate_is_reported_and_everything_else_recorded() -> TestResult {
    let spec = Spec::new().token(
        TokenSpec::new("Mixed")
            .ec_key_cert("01", "good", Profile::plain("Good"))
            .raw_cert(
                "0bad",
                "broken cert",
                b"\x30\x82\x01\x00 definitely not DER",
            ),
    );
    let (_set, custody) = setup(&spec, "garbage-cert")?;
    let scan = custody.json(&["scan"], 0)?;
    let c = carrier(&scan, "Mixed")?;
    let certs = c["certificates"].as_array().context("certs")?;
    assert_eq!(certs.len(), 2);
    let bad = certs
        .iter()
        .find(|x| x["id"] == "0bad")
        .context("bad cert")?;
    assert!(bad["info"].is_null());
    assert!(bad["parse_error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(certs.iter().any(|x| x["info"]["subject"]
        .as_str()
        .is_some_and(|s| s.contains("Good"))));
    let problem = scan["problems"][0]["message"].as_str().unwrap_or_default();
    assert!(
        problem.contains("0bad") && problem.contains("broken cert"),
        "{problem}"
    );
    assert_eq!(
        event_kinds(&scan),
        ["carrier_enrolled", "cert_added", "cert_added", "key_added"]
    );
    // People see it too, on stderr, with the id and label.
    let run = custody.run(&["scan"])?.expect(0)?;
    assert!(
        run.stderr.contains("unparseable") && run.stderr.contains("0bad"),
        "{}",
        run.stderr
    );
    Ok(())
}

/// A certificate object without a value is what SoftHSM2 shows of one another program is
/// still creating (and keeps when it loses that program's second write): it is not recorded
/// as a certificate (no `cert_added` of the SHA-256 of nothing); the rest of the token is.
#[test]
fn a_certificate_object_without_a_value_is_left_out_and_the_rest_recorded() -> TestResult {
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let spec = Spec::new().token(
        TokenSpec::new("Unfinished")
            .ec_key_cert("01", "good", Profile::plain("Good"))
            .raw_cert("0e", "unfinished", b""),
    );
    let (set, custody) = setup(&spec, "unfinished-cert")?;
    // The positive control: the token does hold two certificate objects, one of them empty.
    let listed = pkcs11_tool(
        &set,
        &["--token-label", "Unfinished", "-O", "--type", "cert"],
    )?;
    ensure!(
        listed.matches("Certificate Object").count() == 2,
        "the fixture should hold two certificate objects: {listed}"
    );
    let scan = custody.json(&["scan"], 0)?;
    let c = carrier(&scan, "Unfinished")?;
    let certs = c["certificates"].as_array().context("certs")?;
    ensure!(
        certs.len() == 1 && certs[0]["id"] == "01",
        "only the finished certificate: {certs:#?}"
    );
    ensure!(
        event_kinds(&scan) == ["carrier_enrolled", "cert_added", "key_added"],
        "{scan:#}"
    );
    let journal = custody_core::journal::Journal::open(custody.journal())?;
    let events = serde_json::to_string(&journal.events()?)?;
    ensure!(
        !events.contains(EMPTY_SHA256),
        "the SHA-256 of nothing is in the journal: {events}"
    );
    // Read again: nothing changed, nothing recorded.
    let again = custody.json(&["scan"], 0)?;
    ensure!(event_kinds(&again).is_empty(), "{again:#}");
    Ok(())
}

#[test]
fn hostile_labels_are_escaped_for_people_and_kept_losslessly() -> TestResult {
    let (set, custody) = setup(&Spec::edge(), "edge")?;
    let scan = custody.json(&["scan"], 0)?; // valid JSON despite the labels
    let edge = carriers(&scan)
        .into_iter()
        .find(|c| c["label"].as_str().is_some_and(|l| l.contains('\u{fffd}')))
        .context("token with a non-UTF-8 label")?;
    assert_eq!(edge["strings_lossy"], true);
    // Object labels round-trip as hex exactly as written.
    let odd = carrier(&scan, "Edge objects")?;
    let written: BTreeSet<String> = set
        .manifest()
        .token("Edge objects")
        .context("token")?
        .objects
        .iter()
        .filter_map(|o| o.label_hex.clone())
        .collect();
    let read: BTreeSet<String> = odd["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(odd["public_keys"].as_array().into_iter().flatten())
        .map(|o| o["label"].as_str().unwrap_or_default().to_owned())
        .collect();
    for hex in &written {
        assert!(read.contains(hex), "label {hex} not kept: {read:?}");
    }
    // The table for people: no control characters, one line per carrier.
    let human = custody.run(&["scan"])?.expect(0)?;
    assert!(
        !human.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{}",
        human.stdout
    );
    let history = custody
        .run(&[
            "journal",
            "show",
            odd["id"]["serial"].as_str().unwrap_or_default(),
        ])?
        .expect(0)?;
    assert!(!history.stdout.chars().any(|c| c.is_control() && c != '\n'));
    assert!(
        history.stdout.contains("tab\\x09here\\x0anewline\\x7f")
            || history.stdout.contains("\\xff\\xfekey"),
        "{}",
        history.stdout
    );
    let list = custody.run(&["journal", "list"])?.expect(0)?;
    assert_eq!(
        list.stdout.lines().count(),
        1 + set.manifest().tokens.len(),
        "{}",
        list.stdout
    );
    Ok(())
}

#[test]
fn one_bad_module_does_not_stop_the_others() -> TestResult {
    let (set, custody) = setup(&Spec::demo(), "two-modules")?;
    let out = custody
        .command()
        .args([
            "--module",
            "/nonexistent/vendor-pkcs11.so",
            "scan",
            "--json",
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let scan: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(carriers(&scan).len(), set.manifest().tokens.len());
    let bad = scan["modules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["ok"] == false)
        .context("failed module reported")?;
    assert!(bad["error"]
        .as_str()
        .unwrap_or_default()
        .contains("vendor-pkcs11.so"));
    let list = custody.json(&["journal", "list"], 0)?;
    assert_eq!(
        list["carriers"].as_array().map(Vec::len),
        Some(set.manifest().tokens.len())
    );
    Ok(())
}

fn pin_config(dir: &Path, serial: &str, pin_file: &Path) -> anyhow::Result<PathBuf> {
    let cfg = dir.join("custody.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"{serial}\"\nuser_pin_file = \"{}\"\n",
            pin_file.display()
        ),
    )?;
    Ok(cfg)
}

#[test]
fn with_a_pin_source_private_keys_are_read() -> TestResult {
    let (set, custody) = setup(&Spec::demo(), "private-keys")?;
    let t = set.manifest().token("Іваненко І.І.").context("token")?;
    let cfg = pin_config(set.dir(), &t.serial, &t.user_pin_file)?;
    let custody = custody.with_config(&cfg);
    let scan = custody.json(&["scan"], 0)?;
    let c = carrier(&scan, "Іваненко І.І.")?;
    assert_eq!(c["login"]["state"], "logged_in");
    let keys = c["private_keys"].as_array().context("private keys read")?;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], "01");
    assert_eq!(keys[0]["local"], true);
    assert_eq!(keys[0]["never_extractable"], true);
    assert_eq!(keys[0]["always_sensitive"], true);
    assert!(
        event_kinds(&scan)
            .iter()
            .filter(|k| *k == "key_added")
            .count()
            >= 2
    );
    // Other carriers had no PIN source.
    assert_eq!(
        carrier(&scan, "RSA signer")?["login"]["state"],
        "not_attempted"
    );
    assert!(!scan.to_string().contains(&t.user_pin));
    Ok(())
}

#[test]
fn a_pin_from_an_environment_variable_named_in_the_config_works() -> TestResult {
    let (set, custody) = setup(&Spec::demo(), "pin-env")?;
    let t = set.manifest().token("RSA signer").context("token")?;
    let cfg = set.dir().join("env-pin.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[pin]]\nmanufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nserial = \"{}\"\nuser_pin_env = \"CUSTODY_TEST_PIN\"\n",
            t.serial
        ),
    )?;
    let out = custody
        .with_config(&cfg)
        .command()
        .env("CUSTODY_TEST_PIN", &t.user_pin)
        .args(["scan", "--json"])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scan: Value = serde_json::from_slice(&out.stdout)?;
    let c = carrier(&scan, "RSA signer")?;
    assert_eq!(c["login"]["state"], "logged_in");
    assert_eq!(c["private_keys"][0]["key_type_name"], "RSA");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&t.user_pin));
    Ok(())
}

#[test]
fn a_wrong_pin_is_reported_without_echo_and_tried_once() -> TestResult {
    let (set, custody) = setup(&Spec::demo(), "wrong-pin")?;
    let t = set.manifest().token("Іваненко І.І.").context("token")?;
    let pin_file = set.dir().join("wrong.pin");
    let wrong = "9713-CANARY";
    std::fs::write(&pin_file, format!("{wrong}\n"))?;
    std::fs::set_permissions(
        &pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let cfg = pin_config(set.dir(), &t.serial, &pin_file)?;
    // Run the module under OpenSC's pkcs11-spy to count C_Login calls. The spy log records
    // PINs: it stays in the test's directory and is deleted.
    let spy = Path::new("/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so");
    let spy_log = set.dir().join("spy.log");
    let mut cmd = Command::new(custody_tests::custody_bin());
    cmd.envs(set.env())
        .env("CUSTODY_CONFIG", &cfg)
        .env("PKCS11SPY", set.module())
        .env("PKCS11SPY_OUTPUT", &spy_log)
        .arg("--journal")
        .arg(custody.journal())
        .arg("--module")
        .arg(if spy.exists() { spy } else { set.module() })
        .args(["-vvv", "scan", "--json"]);
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stdout.contains(wrong) && !stderr.contains(wrong),
        "PIN echoed"
    );
    let scan: Value = serde_json::from_str(&stdout)?;
    let c = carrier(&scan, "Іваненко І.І.")?;
    assert_eq!(c["login"]["state"], "failed");
    assert!(c["login"]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("rejected the PIN"));
    assert!(c["private_keys"].is_null());
    assert_eq!(
        c["certificates"].as_array().map(Vec::len),
        Some(1),
        "public objects still read"
    );
    if spy.exists() {
        let log = std::fs::read_to_string(&spy_log)?;
        let _ = std::fs::remove_file(&spy_log);
        assert_eq!(
            log.matches("C_Login").count(),
            1,
            "the PIN was tried more than once"
        );
    }
    let journal = std::fs::read(custody.journal())?;
    assert!(!String::from_utf8_lossy(&journal).contains(wrong));
    Ok(())
}

#[test]
fn journal_verify_names_the_altered_row() -> TestResult {
    let (_set, custody) = setup(&Spec::demo(), "tamper")?;
    custody.json(&["scan"], 0)?;
    let sql = |stmt: &str| -> anyhow::Result<()> {
        let st = Command::new("sqlite3")
            .arg(custody.journal())
            .arg(stmt)
            .status()?;
        ensure!(st.success(), "sqlite3 {stmt}");
        Ok(())
    };
    // An attacker drops the append-only triggers first.
    sql("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;")?;
    sql("UPDATE events SET data = replace(data, 'Іваненко', 'Петренко') WHERE kind = 'cert_added' AND data LIKE '%Іваненко%';")?;
    let run = custody.run(&["journal", "verify", "--json"])?.expect(1)?;
    let v = run.json()?;
    assert_eq!(v["ok"], false);
    let bad = v["first_bad"]["seq"].as_u64().context("seq")?;
    // The named row is the altered one.
    let out = Command::new("sqlite3")
        .arg(custody.journal())
        .arg("SELECT seq FROM events WHERE data LIKE '%Петренко%' ORDER BY seq LIMIT 1;")
        .output()?;
    let altered: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    assert_eq!(bad, altered);
    let human = custody.run(&["journal", "verify"])?.expect(1)?;
    assert!(
        human
            .stdout
            .contains(&format!("BROKEN at event #{altered}")),
        "{}",
        human.stdout
    );
    // A deleted row is named as missing.
    sql(&format!("DELETE FROM events WHERE seq = {};", altered + 1))?;
    let v = custody
        .run(&["journal", "verify", "--json"])?
        .expect(1)?
        .json()?;
    assert_eq!(v["first_bad"]["seq"].as_u64(), Some(altered));
    Ok(())
}
