//! Holders as people: `custody holder import` of HR's CSV (Excel's UTF-8 with BOM and `;`),
//! `holder list`, issuance linked to the record, `cert export --all --dir`.

use super::common::*;

const STAFF: &str = "\u{feff}ПІБ;Посада;Підрозділ;РНОКПП;Документ\r\n\
Коваль Марія Петрівна;\"Головний спеціаліст; ЦНАП\";ЦНАП;3012345678;\r\n\
Бондар Іван Олегович;Начальник відділу;Фінансовий відділ;;АА123456\r\n\
Мельник Олена;Юрист;Юридичний відділ;2987654321;001234567\r\n";

fn holders(w: &World) -> serde_json::Value {
    json(&ok(w.custody().args(["--json", "holder", "list"])))["holders"].clone()
}

#[test]
fn hr_list_is_imported_linked_at_issuance_verified_and_certificates_exported() {
    let w = World::new("holders");
    let staff = w.dir.join("staff.csv");
    std::fs::write(&staff, STAFF).unwrap_or_else(|e| panic!("{e}"));
    let v = json(&ok(w
        .custody()
        .args(["--json", "holder", "import"])
        .arg(&staff)));
    assert_eq!(
        (
            v["import"]["added"].as_u64(),
            v["import"]["unchanged"].as_u64()
        ),
        (Some(3), Some(0)),
        "{v}"
    );
    let list = holders(&w);
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    assert_eq!(list[0]["full_name"], "Бондар Іван Олегович");
    assert_eq!(list[0]["id"], "doc:АА123456");
    assert_eq!(list[1]["position"], "Головний спеціаліст; ЦНАП");
    // The same list again records nothing; a changed position records that person only.
    let v = json(&ok(w
        .custody()
        .args(["--json", "holder", "import"])
        .arg(&staff)));
    assert_eq!(v["import"]["unchanged"], 3, "{v}");
    assert_eq!(count_kind(&w.open(), "holder_recorded"), 3);
    let changed = w.dir.join("changed.csv");
    std::fs::write(&changed, STAFF.replace("Юрист", "Головний юрист"))
        .unwrap_or_else(|e| panic!("{e}"));
    let v = json(&ok(w
        .custody()
        .args(["--json", "holder", "import"])
        .arg(&changed)));
    assert_eq!(
        (
            v["import"]["updated"].as_u64(),
            v["import"]["unchanged"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(count_kind(&w.open(), "holder_recorded"), 4);
    // A bad row names its line and nothing of the file is imported.
    let bad = w.dir.join("bad.csv");
    std::fs::write(&bad, "ПІБ;РНОКПП\nНова Особа;1111111111\nЩе Одна;12-34\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = run(w.custody().args(["holder", "import"]).arg(&bad));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("line 3") && err.contains("nothing imported"),
        "{err}"
    );
    let dup = w.dir.join("dup.csv");
    std::fs::write(
        &dup,
        "full_name,tax_number\nA Б,1111111111\nВ Г,1111111111\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = run(w.custody().args(["holder", "import"]).arg(&dup));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("line 3") && err.contains("line 2"), "{err}");
    assert_eq!(count_kind(&w.open(), "holder_recorded"), 4);
    assert_eq!(holders(&w).as_array().map(Vec::len), Some(3));

    // Issuance links the record with the certificate's tax number; position and unit come
    // from HR's record.
    let koval = w.token("Коваль");
    let koval_der = w.key_with_cert(
        "Коваль",
        "ec",
        "01",
        "/CN=Коваль Марія Петрівна/serialNumber=TINUA-3012345678",
    );
    let v = json(&ok(w.custody().args([
        "--json",
        "issue",
        "--carrier",
        &koval,
    ])));
    assert_eq!(v["data"]["holder"]["record"], "tax:3012345678", "{v}");
    assert_eq!(v["data"]["holder"]["position"], "Головний спеціаліст; ЦНАП");
    assert_eq!(v["data"]["holder"]["unit"], "ЦНАП");
    let koval_row = v["row_no"].as_u64().unwrap_or(0);
    // A person without a tax number, named by the e-ID document; a hostile name given by
    // hand is recorded (with a warning) and never becomes a path.
    let bondar = w.token("Бондар");
    let bondar_der = w.key_with_cert("Бондар", "ec", "01", "/CN=Bondar");
    let v = json(&ok(w.custody().args([
        "--json",
        "issue",
        "--carrier",
        &bondar,
        "--holder-record",
        "АА123456",
        "--holder",
        "../../.evil/Бондар",
    ])));
    assert_eq!(v["data"]["holder"]["record"], "doc:АА123456", "{v}");
    assert!(
        v["data"]["warnings"].to_string().contains("HR's record"),
        "{v}"
    );
    let bondar_row = v["row_no"].as_u64().unwrap_or(0);
    let (code, _, err) = run(w.custody().args([
        "issue",
        "--carrier",
        &bondar,
        "--holder-record",
        "9999999999",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("custody holder import"), "{err}");
    let list = holders(&w);
    assert_eq!(list[1]["rows"], serde_json::json!([koval_row]), "{list}");
    assert_eq!(list[0]["rows"], serde_json::json!([bondar_row]), "{list}");
    // Holder records and the links are in the events: verify re-derives them.
    let (code, out, err) = run(w.custody().args(["--json", "journal", "verify"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["state"]["problems"], serde_json::json!([]));
    w.sqlite("UPDATE holders SET position = 'підроблено' WHERE holder_id = 'tax:2987654321'");
    let (code, out, _) = run(w.custody().args(["--json", "journal", "verify"]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("holders") && out.contains("tax:2987654321"),
        "{out}"
    );
    w.sqlite("UPDATE holders SET position = 'Головний юрист' WHERE holder_id = 'tax:2987654321'");

    // Every certificate held now, DER and PEM, names safe from the holder's name.
    let dir = w.dir.join("registry");
    let v = json(&ok(w
        .custody()
        .args(["--json", "cert", "export", "--all", "--both", "--dir"])
        .arg(&dir)));
    let files = v["files"].as_array().cloned().unwrap_or_default();
    assert_eq!(files.len(), 4, "{v}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for n in &names {
        assert!(!n.starts_with('.') && !n.contains(".."), "{n}");
    }
    let bondar_cer = names
        .iter()
        .find(|n| n.starts_with(&format!("{bondar_row:04}-evil_Бондар-")) && n.ends_with(".cer"))
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(
        std::fs::read(dir.join(bondar_cer)).unwrap_or_default(),
        bondar_der
    );
    let koval_pem = names
        .iter()
        .find(|n| {
            n.starts_with(&format!("{koval_row:04}-Коваль_Марія_Петрівна-")) && n.ends_with(".pem")
        })
        .unwrap_or_else(|| panic!("{names:?}"));
    let pem = ok(std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(dir.join(koval_pem))
        .arg("-out")
        .arg(w.dir.join("back.der")));
    assert!(pem.is_empty(), "{pem}");
    assert_eq!(
        std::fs::read(w.dir.join("back.der")).unwrap_or_default(),
        koval_der
    );
    // Run again: the files exist; refused, nothing written.
    let (code, _, err) = run(w
        .custody()
        .args(["cert", "export", "--all", "--dir"])
        .arg(&dir));
    assert_eq!(code, 1);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
}
