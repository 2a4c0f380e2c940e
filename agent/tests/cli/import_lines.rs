//! `custody journal import` and `custody holder import` name the line a bad row is on as an
//! editor shows it, whether the file's lines end in LF or CRLF (as Excel writes) and when a
//! quoted field spans lines; nothing of a refused file is imported.

use std::path::Path;

use crate::{custody, run, temp_dir};

fn custody_on(journal: &Path, args: &[&str], file: &Path) -> (i32, String, String) {
    run(custody().arg("--journal").arg(journal).args(args).arg(file))
}

fn events(journal: &Path) -> u64 {
    let (code, out, err) = run(custody()
        .arg("--journal")
        .arg(journal)
        .args(["--json", "journal", "verify"]));
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["events"]
        .as_u64()
        .unwrap_or_else(|| panic!("no event count: {v}"))
}

#[test]
fn journal_import_names_the_right_line_with_lf_crlf_and_multiline_fields() {
    for (name, end) in [("lf", "\n"), ("crlf", "\r\n")] {
        let dir = temp_dir(&format!("import-lines-{name}"));
        let journal = dir.join("journal.db");
        // Header on line 1; row 4 spans lines 2-4; a blank line 5; row 5 on line 6.
        let head = [
            "№ п/п,Дата,Носій,Отримав,Знищено",
            "4,2021-01-12,\"Алмаз-1К",
            "сер. № 000123",
            "(у сейфі)\",\"2021-01-15 Коваленко\",",
            "",
            "5,2022-03-03,Кристал-1,2022-03-04 Шевчук,",
        ];
        // A bad number on line 7: refused, naming line 7, nothing imported.
        let bad = dir.join("bad.csv");
        let mut lines = head.to_vec();
        lines.extend(["п'ять,2022-03-03,Кристал-2,,", ""]);
        std::fs::write(&bad, lines.join(end)).unwrap_or_else(|e| panic!("{e}"));
        let (code, out, err) = custody_on(&journal, &["journal", "import", "--csv"], &bad);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(
            err.contains("line 7: column 1") && err.contains("nothing imported"),
            "{name}: {err}"
        );
        // A row one column short on line 7: the csv reader's error names line 7 too.
        let short = dir.join("short.csv");
        let mut lines = head.to_vec();
        lines.extend(["6,2022-03-03,Кристал-2,", ""]);
        std::fs::write(&short, lines.join(end)).unwrap_or_else(|e| panic!("{e}"));
        let (code, out, err) = custody_on(&journal, &["journal", "import", "--csv"], &short);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(err.contains("line 7: 4 column(s)"), "{name}: {err}");
        assert!(
            !journal.exists(),
            "{name}: a refused file created no journal"
        );
        // The good file imports, the carrier cell keeps its line breaks.
        let good = dir.join("good.csv");
        let mut lines = head.to_vec();
        lines.push("");
        std::fs::write(&good, lines.join(end)).unwrap_or_else(|e| panic!("{e}"));
        let (code, out, err) = custody_on(&journal, &["journal", "import", "--csv"], &good);
        assert_eq!(code, 0, "{name}: {out}{err}");
        let (code, out, err) = run(custody()
            .arg("--journal")
            .arg(&journal)
            .args(["journal", "export", "--format", "json"]));
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(
            v["rows"][0]["columns"][2],
            format!("Алмаз-1К{end}сер. № 000123{end}(у сейфі)"),
            "{name}"
        );
        let before = events(&journal);
        // Row 4 renumbered 8, row 5 again: the journal's refusal names row 5's line, 6.
        let again = dir.join("again.csv");
        let text = std::fs::read_to_string(&good).unwrap_or_default();
        std::fs::write(&again, text.replace("4,2021", "8,2021")).unwrap_or_else(|e| panic!("{e}"));
        let (code, out, err) = custody_on(&journal, &["journal", "import", "--csv"], &again);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(
            err.contains("line 6") && err.contains("already in the journal"),
            "{name}: {err}"
        );
        assert_eq!(events(&journal), before, "{name}: nothing recorded");
    }
}

#[test]
fn holder_import_names_the_right_line_with_lf_crlf_and_multiline_fields() {
    for (name, end) in [("lf", "\n"), ("crlf", "\r\n")] {
        let dir = temp_dir(&format!("holder-lines-{name}"));
        let journal = dir.join("journal.db");
        // Header line 1; a position spanning lines 2-3; line 4 good; line 5 a bad tax number.
        let text = [
            "\u{feff}ПІБ;Посада;РНОКПП",
            "Коваль Мар'яна;\"Головний спеціаліст",
            "ЦНАП\";3012345678",
            "Бондар Іван;;3012345679",
            "Шевчук Олена;;12",
            "",
        ]
        .join(end);
        let csv = dir.join("staff.csv");
        std::fs::write(&csv, &text).unwrap_or_else(|e| panic!("{e}"));
        let (code, out, err) = custody_on(&journal, &["holder", "import"], &csv);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(
            err.contains("line 5: the tax number") && err.contains("nothing imported"),
            "{name}: {err}"
        );
        let good = dir.join("good.csv");
        std::fs::write(&good, text.replace(";;12", ";;3012345670"))
            .unwrap_or_else(|e| panic!("{e}"));
        let (code, out, err) = custody_on(&journal, &["--json", "holder", "import"], &good);
        assert_eq!(code, 0, "{name}: {out}{err}");
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["import"]["added"], 3, "{name}: {v}");
    }
}
