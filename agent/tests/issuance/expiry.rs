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
