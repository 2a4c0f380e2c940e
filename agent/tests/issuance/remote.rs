//! Keys in a provider's HSM (remote QES): `custody carrier add --remote`, issuance, and
//! `custody carrier destroy-remote` with evidence; the form rows they get. Nothing touches
//! PKCS#11: the commands run with a module that does not exist.

use super::common::*;

#[test]
fn a_remote_key_gets_a_row_is_issued_and_destroyed_with_evidence() {
    let w = World::new("remote");
    let cert = w.dir.join("diia.cer");
    std::fs::write(&cert, ua_cert("diia-test-sign-7775603.cer")).unwrap_or_else(|e| panic!("{e}"));
    // No module is loaded: a path that does not exist would fail any PKCS#11 call.
    let remote = |args: &[&str]| {
        let mut c = w.custody();
        c.args(["--module", "/nonexistent/pkcs11.so"]).args(args);
        run(&mut c)
    };
    let (code, out, err) = remote(&[
        "--json",
        "carrier",
        "add",
        "--remote",
        "--provider",
        "ДП «Дія»",
        "--cert",
        cert.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("nonexistent"), "no module was touched: {err}");
    let v = json(&out);
    let key = v["carrier"].as_str().unwrap_or_default().to_owned();
    let row = v["row_no"].as_u64().unwrap_or(0);
    assert!(key.starts_with("ДП «Дія»/хмарний КЕП/"), "{v}");
    let serial = key.rsplit('/').next().unwrap_or_default().to_owned();
    // The same key again, a file that is no certificate, and a carrier without --remote.
    let (code, _, err) = remote(&[
        "carrier",
        "add",
        "--remote",
        "--provider",
        "ДП «Дія»",
        "--cert",
        cert.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already recorded"), "{err}");
    let junk = w.dir.join("junk.cer");
    std::fs::write(&junk, b"not a certificate").unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = remote(&[
        "carrier",
        "add",
        "--remote",
        "--provider",
        "Дія",
        "--cert",
        junk.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not an X.509 certificate"), "{err}");
    let (code, _, err) = remote(&[
        "carrier",
        "add",
        "--provider",
        "Дія",
        "--cert",
        cert.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("custody scan"), "{err}");
    // Its row: column 3 names the provider and «хмарний КЕП»; columns 4 and 5 empty.
    let form = || {
        json(&ok(w
            .custody()
            .args(["journal", "export", "--format", "json"])))
    };
    let f = form();
    let r = &f["rows"][0];
    assert_eq!(r["row_no"].as_u64(), Some(row), "{f}");
    assert_eq!(
        r["columns"][2].as_str().unwrap_or_default(),
        format!("ДП «Дія» хмарний КЕП, сер. № {serial}")
    );
    assert_eq!(
        (r["columns"][3].as_str(), r["columns"][4].as_str()),
        (Some(""), Some(""))
    );
    // Issued (signed by hand: the key signs only through the provider), same row.
    let (code, _, err) = run(w
        .custody()
        .args(["issue", "--carrier", &serial, "--ack-sign"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("signed by hand"), "{err}");
    let v = json(&ok(w.custody().args([
        "--json",
        "issue",
        "--carrier",
        &serial,
        "--holder",
        "Коваль Марія Петрівна",
    ])));
    assert_eq!(v["row_no"].as_u64(), Some(row), "{v}");
    assert_eq!(
        v["data"]["key_set"]["certificates"][0]["der"]
            .as_str()
            .map(str::len),
        Some(ua_cert("diia-test-sign-7775603.cer").len() * 2),
        "the certificate is kept for export"
    );
    // Destroyed by the provider, with its confirmation as evidence.
    let letter = w.dir.join("diia-confirmation.pdf");
    std::fs::write(&letter, b"%PDF-1.4 the provider confirms the deletion")
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = remote(&[
        "carrier",
        "destroy-remote",
        "--carrier",
        &serial,
        "--evidence",
        letter.to_str().unwrap_or_default(),
        "--responsible",
        " ",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--responsible"), "{err}");
    let (code, out, err) = remote(&[
        "--json",
        "carrier",
        "destroy-remote",
        "--carrier",
        &serial,
        "--evidence",
        letter.to_str().unwrap_or_default(),
        "--responsible",
        "Коваленко Ольга Петрівна",
        "--ref",
        "лист № 17/4",
        "--date",
        "14.03.2026",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let d = &json(&out)["destroyed"]["data"];
    assert_eq!(
        d["evidence"]["sha256"].as_str().map(str::len),
        Some(64),
        "{d}"
    );
    assert_eq!(d["provider"], "ДП «Дія»");
    let f = form();
    let r = &f["rows"][0];
    assert_eq!(r["row_no"].as_u64(), Some(row));
    assert!(
        r["columns"][3]
            .as_str()
            .unwrap_or_default()
            .contains("Коваль Марія"),
        "{r}"
    );
    assert!(
        r["columns"][4]
            .as_str()
            .unwrap_or_default()
            .contains("Коваленко Ольга Петрівна"),
        "{r}"
    );
    let remarks = r["remarks"].to_string();
    assert!(
        remarks.contains("HSM надавача ДП «Дія» 14.03.2026 (лист № 17/4)")
            && remarks.contains("diia-confirmation.pdf"),
        "{remarks}"
    );
    // Once destroyed: not again, and not issued again.
    let (code, _, err) = remote(&[
        "carrier",
        "destroy-remote",
        "--carrier",
        &serial,
        "--evidence",
        letter.to_str().unwrap_or_default(),
        "--responsible",
        "Х",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already"), "{err}");
    let (code, _, err) =
        run(w
            .custody()
            .args(["issue", "--carrier", &serial, "--holder", "Інша Особа"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("destroyed"), "{err}");
    // A scan of the real modules leaves the remote key alone; the journal verifies.
    ok(w.custody().arg("scan"));
    let (code, out, err) = run(w.custody().args(["--json", "journal", "verify"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["state"]["problems"], serde_json::json!([]));
    let events = w
        .open()
        .carrier_events(&key)
        .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "carrier_enrolled",
            "cert_added",
            "issued",
            "remote_key_destroyed"
        ],
        "a scan removes nothing"
    );
}
