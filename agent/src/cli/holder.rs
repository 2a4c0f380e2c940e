//! `custody holder import FILE.csv`, `custody holder list`: the persons carriers are issued
//! to, from HR's list.
//!
//! The CSV is what an HR system or a spreadsheet exports: a header row naming the columns
//! (in any order; Ukrainian or English names, see [`column_of`]), then one person per line.
//! UTF-8 with or without a byte-order mark; the delimiter (`;` as Ukrainian Excel writes,
//! `,` or a tab) is detected from the header. Any problem refuses the whole file, naming
//! the line; nothing is imported then.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use custody_core::journal::{HolderLine, HolderRecord};
use time::OffsetDateTime;

use super::issue::refused;
use super::Context;
use crate::output::{escape_controls, json, Table};
use crate::Exit;

/// `custody holder …`
#[derive(Debug, Subcommand)]
pub enum HolderCommand {
    /// Import HR's list of persons (CSV): new and changed persons are recorded.
    #[command(
        after_help = "Examples:\n  # The list as Ukrainian Excel saves it (CSV UTF-8, semicolons)\n  custody holder import staff.csv\n\nColumns (header row, any order): ПІБ | Посада | Підрозділ | РНОКПП | Документ\n(or full_name, position, unit, tax_number, eid_document). A person needs a name and a\ntax number (10 digits) or an e-ID document number."
    )]
    Import(HolderImportArgs),
    /// List the holders the journal knows and the form rows issued to them.
    #[command(
        after_help = "Examples:\n  # Who is recorded, and the rows of the form issued to each\n  custody holder list\n  # For a script\n  custody holder list --json"
    )]
    List,
}

/// Arguments of `custody holder import`.
#[derive(Debug, Args)]
pub struct HolderImportArgs {
    /// The CSV file.
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
}

/// Runs `custody holder …`.
pub fn run(ctx: &Context, cmd: &HolderCommand) -> anyhow::Result<Exit> {
    match cmd {
        HolderCommand::Import(args) => import(ctx, args),
        HolderCommand::List => list(ctx),
    }
}

fn import(ctx: &Context, args: &HolderImportArgs) -> anyhow::Result<Exit> {
    let (name, lines) = match super::import::read_csv(&args.file, parse)? {
        Ok(read) => read,
        Err(e) => return refused(ctx, e),
    };
    let mut journal = ctx.open_journal()?;
    let record =
        match journal.import_holders(&lines, &name, &ctx.actor(), OffsetDateTime::now_utc()) {
            Ok(r) => r,
            Err(e) => return refused(ctx, e),
        };
    if ctx.global.json {
        json(&serde_json::json!({ "ok": true, "journal": journal.path(), "import": record }))?;
    } else {
        println!(
            "{} person(s) in {name}: {} new, {} changed, {} unchanged.",
            lines.len(),
            record.added,
            record.updated,
            record.unchanged
        );
        if let (Some(first), Some(last), Some(cp)) =
            (record.seqs.first(), record.seqs.last(), &record.checkpoint)
        {
            println!(
                "Recorded as events #{first}..#{last}; checkpoint #{} signed.",
                cp.seq
            );
        }
    }
    Ok(Exit::Ok)
}

fn list(ctx: &Context) -> anyhow::Result<Exit> {
    let journal = ctx.open_existing_journal()?;
    let holders = journal.holders()?;
    if ctx.global.json {
        json(&serde_json::json!({ "ok": true, "holders": holders }))?;
        return Ok(Exit::Ok);
    }
    if holders.is_empty() {
        println!("No holders recorded; import HR's list with `custody holder import FILE.csv`.");
        return Ok(Exit::Ok);
    }
    let mut t = Table::new(&["NAME", "POSITION", "UNIT", "TAX NUMBER", "DOCUMENT", "ROWS"]);
    for h in &holders {
        let o = |v: &Option<String>| escape_controls(v.as_deref().unwrap_or("-"));
        t.row(vec![
            escape_controls(&h.holder.full_name),
            o(&h.holder.position),
            o(&h.holder.unit),
            o(&h.holder.tax_number),
            o(&h.holder.eid_document),
            if h.rows.is_empty() {
                "-".into()
            } else {
                h.rows
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ]);
    }
    t.print();
    Ok(Exit::Ok)
}

/// The field a header names: 0 name, 1 position, 2 unit, 3 tax number, 4 document.
pub fn column_of(header: &str) -> Option<usize> {
    let h: String = header
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect();
    let is = |names: &[&str]| names.contains(&h.as_str());
    if is(&["піб", "прізвищеімяпобатькові", "fullname", "name"]) {
        Some(0)
    } else if is(&["посада", "position"]) {
        Some(1)
    } else if is(&["підрозділ", "структурнийпідрозділ", "unit", "department"])
    {
        Some(2)
    } else if is(&[
        "рнокпп",
        "іпн",
        "ідентифікаційнийномер",
        "taxnumber",
        "rnokpp",
    ]) {
        Some(3)
    } else if is(&[
        "документ",
        "eid",
        "документeid",
        "номердокумента",
        "idкартка",
        "паспорт",
        "eiddocument",
        "document",
    ]) {
        Some(4)
    } else {
        None
    }
}

/// Parses HR's CSV; an error names the line.
pub fn parse(bytes: &[u8]) -> Result<Vec<HolderLine>, String> {
    let mut map: Option<Vec<Option<usize>>> = None;
    let mut out = Vec::new();
    for super::import::Record { line, fields } in super::import::records(bytes, b";,\t")? {
        if fields.iter().all(String::is_empty) {
            continue;
        }
        let Some(columns) = &map else {
            let columns: Vec<Option<usize>> = fields.iter().map(|f| column_of(f)).collect();
            for want in [0, 3] {
                let present =
                    columns.contains(&Some(want)) || (want == 3 && columns.contains(&Some(4)));
                if !present {
                    return Err(format!(
                        "line {line}: the header names no {} column; the first line must name the columns: ПІБ; Посада; Підрозділ; РНОКПП; Документ",
                        if want == 0 { "ПІБ (full name)" } else { "РНОКПП (tax number) or Документ (e-ID document)" }
                    ));
                }
            }
            for (k, c) in columns.iter().enumerate() {
                if let Some(c) = c {
                    if columns[..k].contains(&Some(*c)) {
                        return Err(format!(
                            "line {line}: column {} ({:?}) names the same field as an earlier one",
                            k + 1,
                            fields[k]
                        ));
                    }
                }
            }
            map = Some(columns);
            continue;
        };
        let mut values: [Option<String>; 5] = Default::default();
        for (k, c) in columns.iter().enumerate() {
            if let (Some(c), Some(v)) = (c, fields.get(k)) {
                if !v.is_empty() {
                    values[*c] = Some(v.clone());
                }
            }
        }
        let [full_name, position, unit, tax_number, eid_document] = values;
        let holder = HolderRecord {
            full_name: full_name.unwrap_or_default(),
            position,
            unit,
            tax_number: tax_number.map(|t| t.chars().filter(|c| !c.is_whitespace()).collect()),
            eid_document,
        };
        custody_core::journal::check_holder(&holder).map_err(|e| format!("line {line}: {e}"))?;
        out.push(HolderLine { line, holder });
    }
    if map.is_none() {
        return Err("line 1: the file is empty".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excel_csv_with_bom_semicolons_and_quotes() {
        let text = "\u{feff}ПІБ;Посада;Підрозділ;РНОКПП;Документ\r\nКоваль Мар'яна Петрівна;\"Головний спеціаліст; ЦНАП\";ЦНАП;30123 45678;\r\nБондар Іван;;;;АА123456\r\n";
        let lines = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].line, 2);
        assert_eq!(
            lines[0].holder.position.as_deref(),
            Some("Головний спеціаліст; ЦНАП")
        );
        assert_eq!(lines[0].holder.tax_number.as_deref(), Some("3012345678"));
        assert_eq!(lines[1].holder.id().as_deref(), Some("doc:АА123456"));
    }

    #[test]
    fn a_bad_row_names_its_line() {
        let text = "full_name,tax_number\nA B,3012345678\nC D,12\n";
        let err = parse(text.as_bytes()).err().unwrap_or_default();
        assert!(err.starts_with("line 3: the tax number"), "{err}");
        let err = parse(b"name;tax_number\nA;3012345678\n\xc0\xc1;1\n")
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("line 3, column 1: not UTF-8"), "{err}");
        let err = parse("Посада;Підрозділ\nx;y\n".as_bytes())
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("line 1: the header names no ПІБ"), "{err}");
    }
}
