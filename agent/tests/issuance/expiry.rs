//! Certificates that expire: `custody status --expiring`, and the marks in `scan` and
//! `journal show`, against real SoftHSM2 tokens with certificates made by openssl.

use super::common::*;

#[test]
fn status_lists_expiring_and_expired_certificates_and_exits_1() {
    let w = World::new("expiring");
    let expired = w.token("expired");
    w.key_with_cert_valid("expired", "ec", "01", "/CN=Стара Особа", 0);
    let soon = w.token("soon");
    w.key_with_cert_valid("soon", "ec", "01", "/CN=Скоро Особа", 20);
    w.token("later");
    w.key_with_cert_valid("later", "ec", "01", "/CN=Пізніше Особа", 300);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let scan = ok(w.custody().arg("scan"));
    let expired_line = scan
        .lines()
        .find(|l| l.contains(&expired))
        .unwrap_or_else(|| panic!("{scan}"));
    assert!(expired_line.contains("EXPIRED"), "{scan}");
    assert!(
        !scan
            .lines()
            .filter(|l| !l.contains(&expired))
            .any(|l| l.contains("EXPIRED")),
        "{scan}"
    );

    let (code, out, err) = run(w.custody().args(["status", "--expiring", "30d", "--json"]));
    assert_eq!(code, 1, "{out}{err}");
    let v = json(&out);
    let list = v["expiring"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 2, "{v:#}");
    assert_eq!(list[0]["serial"], expired.as_str());
    assert_eq!(list[0]["expired"], true);
    assert_eq!(list[1]["serial"], soon.as_str());
    assert_eq!(list[1]["expired"], false);
    assert!(
        list[1]["days_left"]
            .as_i64()
            .is_some_and(|d| (18..=20).contains(&d)),
        "{v:#}"
    );

    // A window that nothing falls into but the expired certificate.
    let (code, out, _) = run(w.custody().args(["status", "--expiring", "1w"]));
    assert_eq!(code, 1);
    let listed: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("DAYS LEFT"))
        .skip(1)
        .collect();
    assert_eq!(listed.len(), 1, "{out}");
    assert!(
        listed[0].contains("EXPIRED") && listed[0].contains("Стара Особа"),
        "{out}"
    );
    assert!(
        listed[0].contains(" -1 "),
        "an expired certificate has a negative count: {out}"
    );

    // `journal show` marks the expired certificate.
    let show = ok(w.custody().args(["journal", "show", &expired]));
    assert!(
        show.lines()
            .any(|l| l.starts_with("Cert") && l.contains("EXPIRED")),
        "{show}"
    );

    // Without --expiring the exit code does not depend on certificates.
    let (code, _, err) = run(w.custody().arg("status"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(w.custody().args(["status", "--expiring", "1y"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("30d"), "{err}");
}

/// `custody watch` with its JSON log collected, over this world's tokens.
fn watch(w: &World) -> super::service::Service {
    let mut c = w.custody();
    c.args(["--log-format", "json", "watch", "--interval", "200ms"]);
    super::service::Service::spawn(c).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_service_warns_once_per_certificate_and_threshold_even_across_restarts() {
    let w = World::new("expiry-warnings");
    let expired = w.token("expired");
    w.key_with_cert_valid("expired", "ec", "01", "/CN=Стара Особа", 0);
    let week = w.token("week");
    w.key_with_cert_valid("week", "ec", "01", "/CN=Тиждень Особа", 5);
    let month = w.token("month");
    w.key_with_cert_valid("month", "ec", "01", "/CN=Місяць Особа", 20);
    w.token("later");
    w.key_with_cert_valid("later", "ec", "01", "/CN=Пізніше Особа", 300);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let warnings = |s: &super::service::Service| -> Vec<(String, String)> {
        s.log()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("certificate "))
            })
            .map(|v| {
                (
                    v["fields"]["serial"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    v["fields"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    let wait = std::time::Duration::from_secs(30);
    let mut first = watch(&w);
    first
        .wait_log("expiry checked", wait)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = warnings(&first);
    got.sort();
    let mut want = vec![
        (expired.clone(), "certificate has expired".to_owned()),
        (
            week.clone(),
            "certificate expires within 7 day(s)".to_owned(),
        ),
        (
            month.clone(),
            "certificate expires within 30 day(s)".to_owned(),
        ),
    ];
    want.sort();
    assert_eq!(got, want, "{:#?}", first.log());
    assert_eq!(first.stop().ok().flatten(), Some(0));
    let record = w.dir.join("journal.db.expiry-warnings.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&record)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Restarted: the check runs, nothing is warned again.
    let mut second = watch(&w);
    second
        .wait_log("expiry checked", wait)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(warnings(&second), [], "{:#?}", second.log());
    assert_eq!(second.stop().ok().flatten(), Some(0));
    // The record is what remembers: without it, each is warned once more.
    std::fs::remove_file(&record).unwrap_or_else(|e| panic!("{e}"));
    let mut third = watch(&w);
    third
        .wait_log("expiry checked", wait)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(warnings(&third).len(), 3, "{:#?}", third.log());
    assert_eq!(third.stop().ok().flatten(), Some(0));
}
