//! `custody journal export`: the journal in its mandated form, as CSV, JSON or one printable
//! HTML page (A4 landscape), in Ukrainian or English.
//!
//! Exactly the five mandated columns with the annex's headings. Remarks (where column 2's
//! time came from, the evidence behind columns 4 and 5, revocation steps, imported rows) are
//! footnotes on the printed page, bracketed text in CSV and a `remarks` list in JSON. Times
//! are shown in the organisation's time zone, with the zone named.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use custody_core::ack::AckStatus;
use custody_core::journal::{FormFilter, FormRow, GeneratedSource};
use serde::Serialize;

use super::issue::parse_date;
use super::Context;
use crate::local_time::{self, Style};
use crate::progress::Progress;
use crate::Exit;

mod html;

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
    let filter = filter_of(args)?;
    let rows = journal.form(&filter)?;
    let doc = document(ctx, args, journal.journal_id().to_owned(), rows, Vec::new());
    write(ctx, args, &doc)
}

/// Runs `custody fleet form`: the organisation's journal, every agent's rows, rendered as
/// `journal export` renders one journal's.
pub fn run_fleet(
    ctx: &Context,
    fleet: &mut custody_core::fleet::Fleet,
    args: &ExportArgs,
) -> anyhow::Result<Exit> {
    let filter = filter_of(args)?;
    let mut rows = Vec::new();
    let mut sources = Vec::new();
    let progress = Progress::spinner(ctx.global.json, "reading the organisation's journal");
    let journals = fleet.form(&filter);
    drop(progress);
    for journal in journals? {
        for row in journal.rows {
            sources.push((journal.agent.clone(), journal.journal_id.clone()));
            rows.push(row);
        }
    }
    let doc = document(ctx, args, fleet.database().to_string(), rows, sources);
    write(ctx, args, &doc)
}

fn filter_of(args: &ExportArgs) -> anyhow::Result<FormFilter> {
    let filter = FormFilter {
        from: args.from.as_deref().map(parse_date).transpose()?,
        to: args.to.as_deref().map(parse_date).transpose()?,
    };
    if let (Some(f), Some(t)) = (filter.from, filter.to) {
        if f > t {
            anyhow::bail!("--from {f} is after --to {t}");
        }
    }
    Ok(filter)
}

fn document(
    ctx: &Context,
    args: &ExportArgs,
    journal_id: String,
    rows: Vec<FormRow>,
    sources: Vec<(String, String)>,
) -> Document {
    Document {
        lang: args.lang,
        organisation: ctx.config.organisation.clone(),
        journal_id,
        from: args.from.clone(),
        to: args.to.clone(),
        rows,
        sources,
        title: title(args.lang, ctx.config.form_title.as_deref()),
        clock: Clock::new(args.lang, ctx.config.zone()),
        printed: local_time::now(
            &ctx.config.zone(),
            match args.lang {
                Lang::Uk => Style::DayFirst,
                Lang::En => Style::Iso,
            },
        ),
    }
}

fn write(ctx: &Context, args: &ExportArgs, doc: &Document) -> anyhow::Result<Exit> {
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
    /// The organisation's form (`custody fleet form`): the agent and journal of each row;
    /// column 1 then reads `AGENT/ROW` (rows are numbered per workstation journal). Empty for
    /// one workstation's journal.
    pub sources: Vec<(String, String)>,
    /// The form's title.
    pub title: String,
    /// How times are shown.
    pub clock: Clock,
    /// When it was printed (local time, for the page footer).
    pub printed: String,
}

/// The five mandated column headings, word for word as in the annex (Ukrainian), or their
/// English translation.
pub fn headers(lang: Lang) -> [&'static str; 5] {
    match lang {
        Lang::Uk => [
            "№ п/п",
            "Дата і час генерації ключів",
            "Тип носія ключової інформації та серійний номер",
            "Дата, П.І.Б. та підпис особи, яка отримала кваліфікований електронний підпис",
            "Дата знищення кваліфікованого електронного підпису, П.І.Б. та підпис особи відповідальної за знищення",
        ],
        Lang::En => [
            "No.",
            "Date and time the keys were generated",
            "Carrier type and serial number",
            "Date, full name and signature of the person who received the qualified electronic signature",
            "Date of destruction of the qualified electronic signature, full name and signature of the person responsible for the destruction",
        ],
    }
}

/// The default title of the form (the annex's).
pub const DEFAULT_TITLE_UK: &str = "Журнал обліку зберігання та знищення особистих ключів";

/// The form's title: `[organisation] title` when set (Ukrainian), else the annex's.
pub fn title(lang: Lang, configured: Option<&str>) -> String {
    match (lang, configured) {
        (Lang::Uk, Some(t)) => t.to_owned(),
        (Lang::Uk, None) => DEFAULT_TITLE_UK.to_owned(),
        (Lang::En, _) => "Journal of storage and destruction of personal keys".to_owned(),
    }
}

/// A remark on one cell (where column 2's time came from, the evidence of an
/// acknowledgement or a destruction, revocation steps, an imported row's notes): a footnote
/// on the printed form, never a sixth column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remark {
    /// The column it belongs to (1–5).
    pub column: u8,
    /// The text.
    pub text: String,
}

/// One row for people: the five cells and their remarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cells {
    /// Columns 1–5.
    pub columns: [String; 5],
    /// Remarks, in column order.
    pub remarks: Vec<Remark>,
}

/// How times are shown: the language's date style in the organisation's zone.
#[derive(Debug, Clone)]
pub struct Clock {
    lang: Lang,
    zone: jiff::tz::TimeZone,
}

impl Clock {
    /// Times in `zone`, in the style of `lang`.
    pub fn new(lang: Lang, zone: jiff::tz::TimeZone) -> Self {
        Self { lang, zone }
    }

    /// A journal time for people (see [`local_time::show`]).
    pub fn when(&self, t: &str) -> String {
        let style = match self.lang {
            Lang::Uk => Style::DayFirst,
            Lang::En => Style::Iso,
        };
        local_time::show(t, &self.zone, style)
    }

    /// The zone's name (IANA, or its abbreviation when it has none).
    pub fn zone_name(&self) -> String {
        self.zone
            .iana_name()
            .map(str::to_owned)
            .unwrap_or_else(|| local_time::now(&self.zone, Style::Iso))
    }
}

/// The texts of one row's five cells, and its remarks.
pub fn cells(clock: &Clock, r: &FormRow) -> Cells {
    let lang = clock.lang;
    let uk = lang == Lang::Uk;
    let mut remarks = Vec::new();
    let mut remark = |column: u8, text: String| remarks.push(Remark { column, text });
    if let Some(t) = &r.imported {
        remark(
            1,
            if uk {
                "рядок перенесено з паперового журналу".to_owned()
            } else {
                "row carried over from the paper journal".to_owned()
            },
        );
        if !t.note.is_empty() {
            remark(1, t.note.clone());
        }
        return Cells {
            columns: [
                r.row_no.to_string(),
                t.generated.clone(),
                t.carrier.clone(),
                t.received.clone(),
                t.destroyed.clone(),
            ],
            remarks,
        };
    }
    let generated = r
        .generated
        .as_ref()
        .map(|g| {
            remark(
                2,
                match (g.source, uk) {
                    (GeneratedSource::KeyAttribute, true) => {
                        "дата з атрибута ключа на носії (CKA_START_DATE)"
                    }
                    (GeneratedSource::Certificate, true) => {
                        "час початку дії сертифіката ключа (notBefore)"
                    }
                    (GeneratedSource::FirstSeen, true) => {
                        "носій не зберігає часу генерації: час, коли custody вперше його побачив"
                    }
                    (GeneratedSource::KeyAttribute, false) => {
                        "date of the key's attribute on the carrier (CKA_START_DATE)"
                    }
                    (GeneratedSource::Certificate, false) => {
                        "start of validity of the key's certificate (notBefore)"
                    }
                    (GeneratedSource::FirstSeen, false) => {
                        "the carrier keeps no generation time: when custody first saw it"
                    }
                }
                .to_owned(),
            );
            clock.when(&g.at)
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
            .map(|d| clock.when(d))
            .unwrap_or_default(),
        r.holder_name.clone().unwrap_or_default(),
    ];
    received.retain(|p| !p.is_empty());
    if let Some(p) = &r.holder_position {
        received.push(p.clone());
    }
    if let Some(t) = &r.holder_tax_number {
        received.push(format!("{} {t}", if uk { "РНОКПП" } else { "tax number" }));
    }
    if let Some(a) = &r.acknowledgement {
        let status = match (a.status, uk) {
            (AckStatus::Verified, true) => "підпис перевірено".to_owned(),
            (AckStatus::Verified, false) => "signature verified".to_owned(),
            (AckStatus::NotVerified, true) => {
                "підпис не перевірено: алгоритм не підтримується".to_owned()
            }
            (AckStatus::NotVerified, false) => {
                a.reason.clone().unwrap_or_else(|| "not verified".into())
            }
        };
        remark(
            4,
            if uk {
                format!(
                    "отримання підписано ключем носія ({status}, {}, запис журналу № {})",
                    a.algorithm, a.seq
                )
            } else {
                format!(
                    "receipt signed with the carrier's key ({status}, {}, journal event #{})",
                    a.algorithm, a.seq
                )
            },
        );
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
            let text = match (&d.remote, uk) {
                (Some(r), true) => Some(format!(
                    "ключ видалено в HSM надавача {} {}{}: підтвердження надавача {} (SHA-256 {}), запис журналу № {}",
                    r.provider,
                    clock.when(&r.date),
                    r.reference.as_deref().map(|x| format!(" ({x})")).unwrap_or_default(),
                    r.evidence.file,
                    &r.evidence.sha256[..r.evidence.sha256.len().min(16)],
                    d.seq
                )),
                (Some(r), false) => Some(format!(
                    "key deleted in the HSM of {} on {}{}: the provider's confirmation {} (SHA-256 {}), journal event #{}",
                    r.provider,
                    clock.when(&r.date),
                    r.reference.as_deref().map(|x| format!(" (ref {x})")).unwrap_or_default(),
                    r.evidence.file,
                    &r.evidence.sha256[..r.evidence.sha256.len().min(16)],
                    d.seq
                )),
                (None, _) => None,
            };
            remark(
                5,
                if let Some(text) = text {
                    text
                } else if uk {
                    format!(
                        "знищення перевірено повторним читанням носія: жодного знищеного об'єкта не лишилося (запис журналу № {})",
                        d.seq
                    )
                } else {
                    format!(
                        "destruction verified by reading the carrier again: none of the destroyed objects remained (journal event #{})",
                        d.seq
                    )
                },
            );
            format!("{}, {who}", clock.when(&d.at))
        })
        .unwrap_or_default();
    if let Some(v) = &r.vanished {
        let when = clock.when(&v.at);
        remark(
            5,
            match (v.kind, v.next_row, uk) {
                (custody_core::journal::EventKind::CarrierReinitialised, _, true) => format!(
                    "знищення не зареєстровано: носій переініціалізовано {when} (запис журналу № {})",
                    v.seq
                ),
                (custody_core::journal::EventKind::CarrierReinitialised, _, false) => format!(
                    "no destruction recorded: the carrier was re-initialised {when} (journal event #{})",
                    v.seq
                ),
                (_, Some(n), true) => format!(
                    "знищення не зареєстровано: на носії з'явився новий набір ключів {when}, рядок № {n} (запис журналу № {})",
                    v.seq
                ),
                (_, n, false) => format!(
                    "no destruction recorded: a new key set appeared on the carrier {when}, row {} (journal event #{})",
                    n.unwrap_or_default(),
                    v.seq
                ),
                (_, None, true) => format!(
                    "знищення не зареєстровано (запис журналу № {})",
                    v.seq
                ),
            },
        );
    }
    for n in &r.revocations {
        let cert = if n.cert_sha256.is_empty() {
            String::new()
        } else {
            format!(" {}", &n.cert_sha256[..n.cert_sha256.len().min(16)])
        };
        let mut parts = Vec::new();
        if let (Some(on), Some(re)) = (&n.requested_on, &n.requested_ref) {
            parts.push(if uk {
                format!("запит {} ({re})", clock.when(on))
            } else {
                format!("requested {} (ref {re})", clock.when(on))
            });
        }
        if let (Some(on), Some(re)) = (&n.confirmed_on, &n.confirmed_ref) {
            parts.push(if uk {
                format!("підтверджено {} ({re})", clock.when(on))
            } else {
                format!("confirmed {} (ref {re})", clock.when(on))
            });
        }
        remark(
            5,
            format!(
                "{}{cert}: {}",
                if uk {
                    "скасування сертифіката"
                } else {
                    "certificate revocation"
                },
                parts.join(", ")
            ),
        );
    }
    remarks.sort_by_key(|r| r.column);
    Cells {
        columns: [
            r.row_no.to_string(),
            generated,
            carrier,
            received.join(", "),
            destroyed,
        ],
        remarks,
    }
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

#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    journal_id: Option<&'a str>,
    row_no: u64,
    columns: [String; 5],
    remarks: Vec<Remark>,
    data: &'a FormRow,
}

impl Document {
    /// The rows' cells, in order.
    /// In the organisation's form column 1 names the agent too.
    pub fn cells(&self) -> Vec<Cells> {
        self.rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut c = cells(&self.clock, r);
                if let Some((agent, _)) = self.sources.get(i) {
                    c.columns[0] = format!("{agent}/{}", c.columns[0]);
                }
                c
            })
            .collect()
    }

    /// CSV: a header row, then one row per key set, the five mandated columns only (RFC 4180
    /// quoting, UTF-8, no BOM). A cell's remarks follow its text in square brackets, except
    /// in rows carried over from the paper journal, whose cells stay the paper's text so that
    /// `journal import` reads the file back unchanged.
    pub fn csv(&self) -> anyhow::Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(headers(self.lang))?;
        for (row, c) in self.rows.iter().zip(self.cells()) {
            let mut columns = c.columns.clone();
            let remarks = if row.imported.is_some() {
                &[][..]
            } else {
                &c.remarks[..]
            };
            for remark in remarks {
                let cell = &mut columns[usize::from(remark.column - 1)];
                if !cell.is_empty() {
                    cell.push(' ');
                }
                cell.push_str(&format!("[{}]", remark.text));
            }
            w.write_record(columns.iter().map(|c| defuse(c).into_owned()))?;
        }
        w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// JSON (format `custody-journal-form-v2`): times in the columns are local (the zone is
    /// named), the structured `data` keeps UTC.
    pub fn json(&self) -> anyhow::Result<Vec<u8>> {
        let rows: Vec<JsonRow<'_>> = self
            .rows
            .iter()
            .zip(self.cells())
            .enumerate()
            .map(|(i, (r, c))| JsonRow {
                agent: self.sources.get(i).map(|s| s.0.as_str()),
                journal_id: self.sources.get(i).map(|s| s.1.as_str()),
                row_no: r.row_no,
                columns: c.columns,
                remarks: c.remarks,
                data: r,
            })
            .collect();
        let doc = serde_json::json!({
            "format": "custody-journal-form-v2",
            "lang": self.lang,
            "title": self.title,
            "organisation": self.organisation,
            "journal_id": self.journal_id,
            "time_zone": self.clock.zone_name(),
            "from": self.from,
            "to": self.to,
            "headers": headers(self.lang),
            "rows": rows,
        });
        let mut out = serde_json::to_vec_pretty(&doc)?;
        out.push(b'\n');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_for_spreadsheets() {
        assert_eq!(defuse("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(defuse("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(defuse("-2+3"), "'-2+3");
        assert_eq!(defuse("-"), "-");
        assert_eq!(defuse("- немає"), "- немає");
        assert_eq!(defuse("Іваненко"), "Іваненко");
    }
}
