//! `custody journal export`: the journal in its mandated form, as CSV, JSON or one printable
//! HTML page (A4 landscape), in Ukrainian or English.
//!
//! Columns 1–5 are the mandated ones; a sixth, "notes", says where a row came from (imported
//! from the paper journal) and what happened with its certificates (revocation).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use custody_core::ack::AckStatus;
use custody_core::journal::{FormFilter, FormRow, GeneratedSource};
use serde::Serialize;

use super::issue::parse_date;
use super::Context;
use crate::Exit;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated values, UTF-8, a header row then one row per key set.
    Csv,
    /// One self-contained printable HTML page.
    Html,
    /// JSON: headers, and per row the column texts and the structured data.
    Json,
}

/// Language of headers and texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Ukrainian (the mandated form's language).
    Uk,
    /// English.
    En,
}

/// Arguments of `custody journal export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Html)]
    pub format: Format,
    /// Language.
    #[arg(long, value_enum, default_value_t = Lang::Uk)]
    pub lang: Lang,
    /// First day of handover to include (YYYY-MM-DD or DD.MM.YYYY).
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Last day of handover to include.
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `custody journal export`.
pub fn run(ctx: &Context, args: &ExportArgs) -> anyhow::Result<Exit> {
    let journal = ctx.open_existing_journal()?;
    let filter = FormFilter {
        from: args.from.as_deref().map(parse_date).transpose()?,
        to: args.to.as_deref().map(parse_date).transpose()?,
    };
    if let (Some(f), Some(t)) = (filter.from, filter.to) {
        if f > t {
            anyhow::bail!("--from {f} is after --to {t}");
        }
    }
    let rows = journal.form(&filter)?;
    let doc = Document {
        lang: args.lang,
        organisation: ctx.config.organisation.clone(),
        journal_id: journal.journal_id().to_owned(),
        from: args.from.clone(),
        to: args.to.clone(),
        rows,
    };
    let bytes = match args.format {
        Format::Csv => doc.csv()?,
        Format::Json => doc.json()?,
        Format::Html => doc.html().into_bytes(),
    };
    match &args.out {
        Some(path) => {
            // The form holds holders' names and tax numbers: a new file is private (0600).
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(&bytes))
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            if !ctx.global.json {
                eprintln!(
                    "Wrote {} row(s) of the journal form to {}",
                    doc.rows.len(),
                    path.display()
                );
            }
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    Ok(Exit::Ok)
}

/// Everything one export renders.
#[derive(Debug)]
pub struct Document {
    /// Language.
    pub lang: Lang,
    /// Organisation name from the configuration.
    pub organisation: Option<String>,
    /// The journal's id.
    pub journal_id: String,
    /// Range as given.
    pub from: Option<String>,
    /// Range as given.
    pub to: Option<String>,
    /// The rows.
    pub rows: Vec<FormRow>,
}

/// The column headers: the five mandated columns, then notes.
pub fn headers(lang: Lang) -> [&'static str; 6] {
    match lang {
        Lang::Uk => [
            "№ п/п",
            "Дата і час генерації ключів",
            "Тип носія ключової інформації та серійний номер",
            "Дата, П.І.Б. та підпис особи, яка отримала КЕП",
            "Дата знищення КЕП, П.І.Б. та підпис особи, відповідальної за знищення",
            "Примітки",
        ],
        Lang::En => [
            "No.",
            "Date and time the keys were generated",
            "Carrier type and serial number",
            "Date, full name and signature of the person who received the QES",
            "Date of destruction, full name and signature of the person responsible",
            "Notes",
        ],
    }
}

fn title(lang: Lang) -> &'static str {
    match lang {
        Lang::Uk => "Журнал обліку захищених носіїв особистих ключів",
        Lang::En => "Journal of secure carriers of personal keys",
    }
}

/// The texts of one row's six cells.
pub fn cells(lang: Lang, r: &FormRow) -> [String; 6] {
    let uk = lang == Lang::Uk;
    if let Some(t) = &r.imported {
        let mut note = if uk {
            "імпортовано з паперового журналу".to_owned()
        } else {
            "imported from the paper journal".to_owned()
        };
        if !t.note.is_empty() {
            note = format!("{note}; {}", t.note);
        }
        return [
            r.row_no.to_string(),
            t.generated.clone(),
            t.carrier.clone(),
            t.received.clone(),
            t.destroyed.clone(),
            note,
        ];
    }
    let generated = r
        .generated
        .as_ref()
        .map(|g| {
            let source = match (g.source, uk) {
                (GeneratedSource::KeyAttribute, true) => "атрибут ключа",
                (GeneratedSource::Certificate, true) => "сертифікат",
                (GeneratedSource::FirstSeen, true) => "перше виявлення",
                (GeneratedSource::KeyAttribute, false) => "key attribute",
                (GeneratedSource::Certificate, false) => "certificate",
                (GeneratedSource::FirstSeen, false) => "first seen",
            };
            format!("{} ({source})", when(lang, &g.at))
        })
        .unwrap_or_default();
    let carrier = format!(
        "{} {}, {} {}",
        r.manufacturer.as_deref().unwrap_or(""),
        r.model.as_deref().unwrap_or(""),
        if uk { "сер. №" } else { "serial" },
        r.serial.as_deref().unwrap_or("")
    );
    let mut received = vec![
        r.issued_on
            .as_deref()
            .map(|d| when(lang, d))
            .unwrap_or_default(),
        r.holder_name.clone().unwrap_or_default(),
    ];
    if let Some(p) = &r.holder_position {
        received.push(p.clone());
    }
    if let Some(t) = &r.holder_tax_number {
        received.push(format!("{} {t}", if uk { "РНОКПП" } else { "tax number" }));
    }
    let mut received = received.join(", ");
    if let Some(a) = &r.acknowledgement {
        let status = match (a.status, uk) {
            (AckStatus::Verified, true) => "перевірено".to_owned(),
            (AckStatus::Verified, false) => "verified".to_owned(),
            (AckStatus::NotVerified, true) => "не перевірено: алгоритм не підтримується".to_owned(),
            (AckStatus::NotVerified, false) => {
                a.reason.clone().unwrap_or_else(|| "not verified".into())
            }
        };
        received.push_str(&if uk {
            format!(
                "; підписано ключем носія ({status}, {}, запис № {})",
                a.algorithm, a.seq
            )
        } else {
            format!(
                "; signed with the carrier's key ({status}, {}, event #{})",
                a.algorithm, a.seq
            )
        });
    }
    let destroyed = r
        .destruction
        .as_ref()
        .map(|d| {
            let who = d.responsible.clone().unwrap_or_else(|| {
                if uk {
                    "відповідальну особу не зазначено"
                } else {
                    "responsible person not named"
                }
                .into()
            });
            if uk {
                format!("{}, {who} (запис журналу № {})", when(lang, &d.at), d.seq)
            } else {
                format!("{}, {who} (journal event #{})", when(lang, &d.at), d.seq)
            }
        })
        .unwrap_or_default();
    let notes: Vec<String> = r
        .revocations
        .iter()
        .map(|n| {
            let cert = if n.cert_sha256.is_empty() {
                String::new()
            } else {
                format!(" {}", &n.cert_sha256[..n.cert_sha256.len().min(16)])
            };
            let mut parts = Vec::new();
            if let (Some(on), Some(re)) = (&n.requested_on, &n.requested_ref) {
                parts.push(if uk {
                    format!("запит {} ({re})", when(lang, on))
                } else {
                    format!("requested {} (ref {re})", when(lang, on))
                });
            }
            if let (Some(on), Some(re)) = (&n.confirmed_on, &n.confirmed_ref) {
                parts.push(if uk {
                    format!("підтверджено {} ({re})", when(lang, on))
                } else {
                    format!("confirmed {} (ref {re})", when(lang, on))
                });
            }
            format!(
                "{}{cert}: {}",
                if uk {
                    "відкликання сертифіката"
                } else {
                    "certificate revocation"
                },
                parts.join(", ")
            )
        })
        .collect();
    [
        r.row_no.to_string(),
        generated,
        carrier,
        received,
        destroyed,
        notes.join("; "),
    ]
}

/// Spreadsheets run a cell that starts with `=`, `+`, `-`, `@` (or a tab or carriage return)
/// as a formula; such cells get a leading `'`, which `journal import` drops again.
pub fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    let mut chars = cell.chars();
    let risky = match chars.next() {
        Some('=' | '+' | '@' | '\t' | '\r') => true,
        Some('-') => chars.next().is_some_and(|c| !c.is_whitespace()),
        _ => false,
    };
    if risky {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// A journal time for people: `YYYY-MM-DD` → `DD.MM.YYYY` (uk) or as is (en); RFC 3339 UTC →
/// `DD.MM.YYYY HH:MM UTC` (uk) or `YYYY-MM-DD HH:MM UTC` (en). Anything else as is.
pub fn when(lang: Lang, t: &str) -> String {
    let b = t.as_bytes();
    let date_ok = b.len() >= 10 && b[4] == b'-' && b[7] == b'-';
    if !date_ok {
        return t.to_owned();
    }
    let (y, m, d) = (&t[0..4], &t[5..7], &t[8..10]);
    let date = match lang {
        Lang::Uk => format!("{d}.{m}.{y}"),
        Lang::En => format!("{y}-{m}-{d}"),
    };
    if b.len() >= 16 && b[10] == b'T' && b[13] == b':' {
        format!("{date} {} UTC", &t[11..16])
    } else {
        date
    }
}

#[derive(Serialize)]
struct JsonRow<'a> {
    row_no: u64,
    columns: [String; 6],
    data: &'a FormRow,
}

impl Document {
    /// CSV: a header row, then one row per key set (RFC 4180 quoting, UTF-8, no BOM).
    pub fn csv(&self) -> anyhow::Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(headers(self.lang))?;
        for r in &self.rows {
            w.write_record(cells(self.lang, r).iter().map(|c| defuse(c).into_owned()))?;
        }
        w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// JSON (format `custody-journal-form-v1`).
    pub fn json(&self) -> anyhow::Result<Vec<u8>> {
        let rows: Vec<JsonRow<'_>> = self
            .rows
            .iter()
            .map(|r| JsonRow {
                row_no: r.row_no,
                columns: cells(self.lang, r),
                data: r,
            })
            .collect();
        let doc = serde_json::json!({
            "format": "custody-journal-form-v1",
            "lang": self.lang,
            "title": title(self.lang),
            "organisation": self.organisation,
            "journal_id": self.journal_id,
            "from": self.from,
            "to": self.to,
            "headers": headers(self.lang),
            "rows": rows,
        });
        let mut out = serde_json::to_vec_pretty(&doc)?;
        out.push(b'\n');
        Ok(out)
    }

    /// One self-contained printable page: A4 landscape, the organisation's name, the
    /// mandated columns, and a line for a hand signature in column 4 where the holder did not
    /// sign digitally and in column 5 where a destruction is recorded.
    pub fn html(&self) -> String {
        let uk = self.lang == Lang::Uk;
        let h = headers(self.lang);
        let mut s = String::with_capacity(4096 + self.rows.len() * 600);
        s.push_str("<!DOCTYPE html>\n<html lang=\"");
        s.push_str(if uk { "uk" } else { "en" });
        s.push_str("\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
        s.push_str(&esc(title(self.lang)));
        s.push_str("</title>\n<style>\n");
        s.push_str(STYLE);
        s.push_str("</style>\n</head>\n<body>\n");
        if let Some(org) = &self.organisation {
            s.push_str(&format!("<p class=\"org\">{}</p>\n", esc(org)));
        }
        s.push_str(&format!("<h1>{}</h1>\n", esc(title(self.lang))));
        let range = match (&self.from, &self.to) {
            (None, None) => None,
            (f, t) => Some(format!(
                "{} {} {} {}",
                if uk { "з" } else { "from" },
                f.as_deref().unwrap_or("…"),
                if uk { "по" } else { "to" },
                t.as_deref().unwrap_or("…")
            )),
        };
        if let Some(r) = range {
            s.push_str(&format!("<p class=\"range\">{}</p>\n", esc(&r)));
        }
        s.push_str("<table>\n<colgroup><col class=\"c1\"><col class=\"c2\"><col class=\"c3\"><col class=\"c4\"><col class=\"c5\"><col class=\"c6\"></colgroup>\n<thead>\n<tr>");
        for title in h {
            s.push_str(&format!("<th>{}</th>", esc(title)));
        }
        s.push_str("</tr>\n<tr class=\"nums\">");
        for n in 1..=6 {
            s.push_str(&format!("<th>{n}</th>"));
        }
        s.push_str("</tr>\n</thead>\n<tbody>\n");
        let sig = if uk { "(підпис)" } else { "(signature)" };
        for r in &self.rows {
            let c = cells(self.lang, r);
            s.push_str(&format!(
                "<tr id=\"row-{}\"{}>",
                r.row_no,
                if r.imported.is_some() {
                    " class=\"imported\""
                } else {
                    ""
                }
            ));
            s.push_str(&format!("<td class=\"num\">{}</td>", esc(&c[0])));
            s.push_str(&format!("<td>{}</td>", esc(&c[1])));
            s.push_str(&format!("<td>{}</td>", esc(&c[2])));
            let hand4 = r.imported.is_none() && r.acknowledgement.is_none();
            s.push_str(&format!(
                "<td>{}{}</td>",
                esc(&c[3]),
                if hand4 {
                    format!("<div class=\"sig\">{sig}</div>")
                } else {
                    String::new()
                }
            ));
            let hand5 = r.imported.is_none() && r.destruction.is_some();
            s.push_str(&format!(
                "<td>{}{}</td>",
                esc(&c[4]),
                if hand5 {
                    format!("<div class=\"sig\">{sig}</div>")
                } else {
                    String::new()
                }
            ));
            s.push_str(&format!("<td class=\"note\">{}</td>", esc(&c[5])));
            s.push_str("</tr>\n");
        }
        if self.rows.is_empty() {
            s.push_str(&format!(
                "<tr><td colspan=\"6\" class=\"empty\">{}</td></tr>\n",
                if uk {
                    "Записів немає."
                } else {
                    "No rows."
                }
            ));
        }
        s.push_str("</tbody>\n</table>\n");
        s.push_str(&format!(
            "<p class=\"foot\">{} {}</p>\n",
            if uk {
                "Сформовано custody з журналу"
            } else {
                "Produced by custody from journal"
            },
            esc(&self.journal_id)
        ));
        s.push_str("</body>\n</html>\n");
        s
    }
}

const STYLE: &str = r#"@page { size: A4 landscape; margin: 10mm 10mm 12mm 10mm; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: "DejaVu Sans", "Liberation Sans", "Noto Sans", Arial, sans-serif; font-size: 9pt; color: #000; margin: 0; }
@media screen { body { margin: 10mm; } }
.org { text-align: center; font-weight: bold; font-size: 11pt; margin: 0 0 2mm 0; }
h1 { text-align: center; font-size: 12pt; margin: 0 0 3mm 0; }
.range { text-align: center; margin: 0 0 3mm 0; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border: 0.6pt solid #000; padding: 1.2mm 1.5mm; vertical-align: top; overflow-wrap: anywhere; }
th { font-weight: bold; text-align: center; vertical-align: middle; background: #f0f0f0; }
tr.nums th { font-weight: normal; font-size: 8pt; padding: 0.5mm; background: #fff; }
thead { display: table-header-group; }
tr { page-break-inside: avoid; break-inside: avoid; }
col.c1 { width: 6%; } col.c2 { width: 14%; } col.c3 { width: 17%; } col.c4 { width: 26%; } col.c5 { width: 22%; } col.c6 { width: 15%; }
td.num { text-align: center; }
td.note { font-size: 8pt; }
tr.imported td { background: #fafafa; }
.sig { margin-top: 7mm; border-top: 0.6pt solid #000; width: 70%; font-size: 7pt; color: #333; text-align: center; }
.empty { text-align: center; padding: 6mm; }
.foot { margin-top: 3mm; font-size: 7pt; color: #444; }
"#;

/// Escapes text for HTML; control characters are shown escaped.
fn esc(text: &str) -> String {
    let text = custody_core::id::escape_text(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_for_people() {
        assert_eq!(when(Lang::Uk, "2025-03-14"), "14.03.2025");
        assert_eq!(when(Lang::En, "2025-03-14"), "2025-03-14");
        assert_eq!(
            when(Lang::Uk, "2026-11-23T10:05:00.000Z"),
            "23.11.2026 10:05 UTC"
        );
        assert_eq!(
            when(Lang::En, "2026-11-23T10:05:00.000Z"),
            "2026-11-23 10:05 UTC"
        );
        assert_eq!(when(Lang::Uk, "березень 2020"), "березень 2020");
    }

    #[test]
    fn formulas_are_defused_for_spreadsheets() {
        assert_eq!(defuse("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(defuse("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(defuse("-2+3"), "'-2+3");
        assert_eq!(defuse("-"), "-");
        assert_eq!(defuse("- немає"), "- немає");
        assert_eq!(defuse("Іваненко"), "Іваненко");
    }

    #[test]
    fn html_text_is_escaped() {
        assert_eq!(
            esc("<b>\"Ів'ан\"&\n"),
            "&lt;b&gt;&quot;Ів&#39;ан&quot;&amp;\\x0a"
        );
    }
}
