//! `custody issue`, `custody revocation`, `custody cert export` against SoftHSM2 tokens.

use custody_core::ack::{CarrierSignature, Statement};

use super::common::*;

const HOLDER_SUBJECT: &str = "/CN=Іваненко Іван Іванович/serialNumber=TINUA-1234567890";

fn issue_json(
    w: &World,
    serial: &str,
    extra: &[&str],
    pin: Option<&str>,
) -> (i32, serde_json::Value, String) {
    let mut cmd = w.custody();
    cmd.args(["--json", "issue", "--carrier", serial])
        .args(extra);
    let (code, out, err) = match pin {
        Some(p) => run_with_stdin(&mut cmd, &format!("{p}\n")),
        None => run(&mut cmd),
    };
    let v = if out.trim().is_empty() {
        serde_json::Value::Null
    } else {
        json(&out)
    };
    (code, v, err)
}

#[test]
fn issue_with_ec_acknowledgement_takes_holder_from_certificate_and_verifies() {
    let w = World::new("issue-ec");
    let serial = w.token("Картка ЕЦП");
    w.key_with_cert("Картка ЕЦП", "ec", "01", HOLDER_SUBJECT);
    let (code, v, err) = issue_json(
        &w,
        &serial,
        &[
            "--position",
            "головний спеціаліст",
            "--ack-sign",
            "--pin-stdin",
        ],
        Some(PIN),
    );
    assert_eq!(code, 0, "{err} {v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["row_no"], 1);
    assert_eq!(v["data"]["holder"]["name"], "Іваненко Іван Іванович");
    assert_eq!(v["data"]["holder"]["name_source"], "certificate");
    assert_eq!(v["data"]["holder"]["tax_number"], "1234567890");
    assert_eq!(v["data"]["holder"]["tax_number_source"], "certificate");
    assert_eq!(v["data"]["generated"]["source"], "certificate");
    let ack = &v["data"]["acknowledgement"];
    assert_eq!(ack["status"], "verified", "{ack}");
    assert_eq!(ack["algorithm"], "ECDSA P-256 SHA-256");
    assert_eq!(ack["mechanism"], "CKM_ECDSA");
    assert!(ack["message"]
        .as_str()
        .unwrap_or_default()
        .contains("holder: Іваненко Іван Іванович\n"));
    assert!(
        v["checkpoint"]["seq"].as_u64().unwrap_or_default() > v["seq"].as_u64().unwrap_or(u64::MAX)
    );
    // The journal verifies, chain and checkpoint; the PIN is nowhere in it.
    let (code, out, err) = run(w.custody().args(["journal", "verify"]));
    assert_eq!(code, 0, "{out}{err}");
    for file in [&w.journal, &w.journal.with_extension("db-wal")] {
        let bytes = std::fs::read(file).unwrap_or_default();
        assert!(
            !bytes.windows(PIN.len()).any(|x| x == PIN.as_bytes()),
            "PIN in {}",
            file.display()
        );
    }
    // The stored signature checks out against the certificate, outside custody too: the
    // message and signature are in the journal; flip one byte and it is refused.
    let j = w.open();
    let cert = j.stored_certificates().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cert.len(), 1);
    let statement: Statement = serde_json::from_value(serde_json::json!({
        "journal_id": j.journal_id(), "row_no": 1, "carrier": v["data"]["carrier"]["key"],
        "keys": [], "certificates": [], "holder": "x", "position": null, "tax_number": null,
        "date": "2026-01-01", "at": "2026-01-01T00:00:00.000Z"
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let forged = CarrierSignature {
        signature: hex_decode(ack["signature"].as_str().unwrap_or_default()),
        mechanism: "CKM_ECDSA".into(),
        key_id: "01".into(),
        cert_der: cert[0].der.clone(),
    };
    let e = custody_core::ack::verify(&statement, &forged)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("does not verify"), "{e}");
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or_default())
        .collect()
}

#[test]
fn issue_with_rsa_acknowledgement_verifies() {
    let w = World::new("issue-rsa");
    let serial = w.token("RSA card");
    w.key_with_cert(
        "RSA card",
        "rsa",
        "0a",
        "/CN=Ольга Бондар/serialNumber=TINUA-2222222222",
    );
    let (code, v, err) = issue_json(&w, &serial, &["--ack-sign", "--pin-stdin"], Some(PIN));
    assert_eq!(code, 0, "{err} {v}");
    assert_eq!(v["data"]["acknowledgement"]["status"], "verified");
    assert_eq!(
        v["data"]["acknowledgement"]["algorithm"],
        "RSA PKCS#1 v1.5 SHA-256"
    );
    assert_eq!(
        v["data"]["acknowledgement"]["mechanism"],
        "CKM_SHA256_RSA_PKCS"
    );
    assert_eq!(v["data"]["holder"]["name"], "Ольга Бондар");
}

#[test]
fn wrong_pin_is_refused_and_nothing_is_recorded() {
    let w = World::new("issue-wrong-pin");
    let serial = w.token("card");
    w.key_with_cert("card", "ec", "01", HOLDER_SUBJECT);
    let (code, v, err) = issue_json(&w, &serial, &["--ack-sign", "--pin-stdin"], Some("9999"));
    assert_eq!(code, 1, "{err} {v}");
    let msg = v["refused"].as_str().unwrap_or_default();
    assert!(
        msg.contains("PIN") && msg.contains("nothing was recorded"),
        "{msg}"
    );
    assert!(!msg.contains("9999") && !err.contains("9999"));
    assert_eq!(count_kind(&w.open(), "issued"), 0);
}

#[test]
fn refusals_unknown_other_person_tax_mismatch_absent_and_destroyed() {
    let w = World::new("issue-refusals");
    let serial = w.token("card");
    w.key_with_cert("card", "ec", "01", HOLDER_SUBJECT);
    // Unknown carrier.
    let (code, v, _) = issue_json(&w, "ffffffffffffffff", &["--holder", "X Y"], None);
    assert_eq!(code, 1);
    assert!(
        v["refused"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown carrier"),
        "{v}"
    );
    // A tax number that is not the certificate's: another person.
    let (code, v, _) = issue_json(&w, &serial, &["--tax-number", "9999999999"], None);
    assert_eq!(code, 1);
    assert!(
        v["refused"]
            .as_str()
            .unwrap_or_default()
            .contains("forbidden"),
        "{v}"
    );
    // Issued (holder from the certificate), then the same person again: idempotent.
    let (code, v, err) = issue_json(&w, &serial, &[], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["already_issued"], false);
    let (code, v2, _) = issue_json(&w, &serial, &["--holder", "ІВАНЕНКО  Іван Іванович"], None);
    assert_eq!(code, 0);
    assert_eq!(v2["already_issued"], true);
    assert_eq!(v2["row_no"], v["row_no"]);
    assert_eq!(count_kind(&w.open(), "issued"), 1);
    // The same person signs the acknowledgement later: added to the same row.
    let (code, v3, err) = issue_json(&w, &serial, &["--ack-sign", "--pin-stdin"], Some(PIN));
    assert_eq!(code, 0, "{err} {v3}");
    assert_eq!(v3["row_no"], v["row_no"]);
    assert!(v3["acknowledged_seq"].as_u64().is_some(), "{v3}");
    assert_eq!(count_kind(&w.open(), "issue_acknowledged"), 1);
    // Another person: forbidden.
    let (code, v, _) = issue_json(&w, &serial, &["--holder", "Петро Сидоренко"], None);
    assert_eq!(code, 1);
    let msg = v["refused"].as_str().unwrap_or_default();
    assert!(
        msg.contains("already issued to Іваненко Іван Іванович") && msg.contains("forbidden"),
        "{msg}"
    );
    // Human output of a refusal goes to stderr with exit 1.
    let (code, _, err) =
        run(w
            .custody()
            .args(["issue", "--carrier", &serial, "--holder", "Петро Сидоренко"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("refused") && err.contains("forbidden"),
        "{err}"
    );
    // Destroyed: the wipe code records `wipe_completed`.
    let mut j = w.open();
    let key = j.carriers().unwrap_or_default()[0].carrier.clone();
    j.write(&actor(), time::OffsetDateTime::now_utc(), |wr| {
        wr.append(
            custody_core::journal::EventKind::WipeCompleted,
            Some(&key),
            &serde_json::json!({"responsible": "Шевчук О. П."}),
        )
    })
    .unwrap_or_else(|e| panic!("{e}"));
    drop(j);
    let (code, v, _) = issue_json(&w, &serial, &["--holder", "Петро Сидоренко"], None);
    assert_eq!(code, 1);
    let msg = v["refused"].as_str().unwrap_or_default();
    assert!(
        msg.contains("destroyed") && msg.contains("Шевчук О. П."),
        "{msg}"
    );
    // A carrier in the journal but not plugged in.
    let serial2 = w.token("second");
    w.key_with_cert("second", "ec", "02", "/CN=Друга Особа");
    ok(w.custody().arg("scan"));
    ok(w.tool("softhsm2-util")
        .args(["--delete-token", "--serial", &serial2]));
    let (code, v, _) = issue_json(&w, &serial2, &["--holder", "Друга Особа"], None);
    assert_eq!(code, 1);
    assert!(
        v["refused"]
            .as_str()
            .unwrap_or_default()
            .contains("not plugged in"),
        "{v}"
    );
}

#[test]
fn revocation_steps_and_cert_export() {
    let w = World::new("revocation");
    let serial = w.token("card");
    let der = w.key_with_cert("card", "ec", "01", HOLDER_SUBJECT);
    let (code, _, err) = issue_json(&w, &serial, &[], None);
    assert_eq!(code, 0, "{err}");
    let fpr = custody_core::cert::sha256_hex(&der);
    // Requested, then again: refused; confirmed.
    let (code, out, err) = run(w.custody().args([
        "revocation",
        "requested",
        "--carrier",
        &serial,
        "--ref",
        "лист № 7",
        "--date",
        "05.03.2026",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ref лист № 7, 2026-03-05"), "{out}");
    let (code, _, err) = run(w.custody().args([
        "revocation",
        "requested",
        "--carrier",
        &serial,
        "--ref",
        "лист № 7",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("already recorded"), "{err}");
    let (code, _, err) = run(w.custody().args([
        "revocation",
        "confirmed",
        "--carrier",
        &serial,
        "--cert",
        "00000000",
        "--ref",
        "x",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("no certificate"), "{err}");
    let (code, out, err) = run(w.custody().args([
        "--json",
        "revocation",
        "confirmed",
        "--carrier",
        &serial,
        "--cert",
        &fpr[..12],
        "--ref",
        "QTSP-1",
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["event"]["data"]["certificates"][0], fpr.as_str());
    let (_, csv, _) = run(w
        .custody()
        .args(["journal", "export", "--format", "csv", "--lang", "en"]));
    assert!(
        csv.contains("requested 2026-03-05 (ref лист № 7), confirmed"),
        "{csv}"
    );
    // Certificate export by holder (PEM) and by fingerprint (DER), never overwriting.
    let pem = w.dir.join("holder.pem");
    let (code, out, err) = run(w
        .custody()
        .args([
            "cert",
            "export",
            "--holder",
            "іваненко іван іванович",
            "--pem",
            "--out",
        ])
        .arg(&pem));
    assert_eq!(code, 0, "{out}{err}");
    let parsed = ok(w
        .tool("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&pem));
    assert!(
        parsed.replace(':', "").to_lowercase().contains(&fpr),
        "{parsed}"
    );
    let der_out = w.dir.join("cert.der");
    ok(w.custody()
        .args(["cert", "export", "--fingerprint", &fpr[..10], "--out"])
        .arg(&der_out));
    assert_eq!(std::fs::read(&der_out).unwrap_or_default(), der);
    let (code, _, err) = run(w
        .custody()
        .args(["cert", "export", "--fingerprint", &fpr[..10], "--out"])
        .arg(&der_out));
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = run(w
        .custody()
        .args(["cert", "export", "--holder", "Nobody", "--out"])
        .arg(w.dir.join("n.der")));
    assert_eq!(code, 1);
    assert!(err.contains("no certificate matches"), "{err}");
}

#[test]
fn the_pin_is_typed_on_the_terminal_or_the_command_says_how_else() {
    let w = World::new("issue-tty");
    let serial = w.token("card");
    w.key_with_cert("card", "ec", "01", HOLDER_SUBJECT);
    // No terminal at all (a new session without a controlling tty): a clear error.
    let mut cmd = std::process::Command::new("setsid");
    cmd.arg("-w").arg(env!("CARGO_BIN_EXE_custody"));
    for (k, v) in [("SOFTHSM2_CONF", &w.conf), ("CUSTODY_CONFIG", &w.config)] {
        cmd.env(k, v);
    }
    cmd.arg("--journal").arg(&w.journal).args([
        "--module",
        MODULE,
        "issue",
        "--carrier",
        &serial,
        "--ack-sign",
    ]);
    let (code, _, err) = run_with_stdin(&mut cmd, "");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot read the PIN from a terminal") && err.contains("--pin-stdin"),
        "{err}"
    );
    assert_eq!(count_kind(&w.open(), "issued"), 0);
    // A terminal (a pseudo-terminal made by script(1)): the PIN is read from it.
    let command = format!(
        "'{}' --journal '{}' --module {MODULE} issue --carrier {serial} --ack-sign",
        env!("CARGO_BIN_EXE_custody"),
        w.journal.display()
    );
    let mut cmd = w.tool("script");
    cmd.env("CUSTODY_CONFIG", &w.config)
        .args(["-qec", &command, "/dev/null"]);
    let (code, out, err) = run_with_stdin(&mut cmd, &format!("{PIN}\n"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("type the PIN of carrier") && out.contains("verified"),
        "{out}"
    );
    assert_eq!(count_kind(&w.open(), "issued"), 1);
}
