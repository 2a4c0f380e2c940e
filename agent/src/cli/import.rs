//! `custody journal import --csv FILE`: bring an office's existing paper journal in.
//!
//! The CSV has the five mandated columns (number; generated; carrier type and serial;
//! received; destroyed) and optionally a sixth, notes: what `custody journal export --format
//! csv` writes. A header row and a column-number row (`1,2,3,4,5`) are recognised and skipped;
//! a UTF-8 byte-order mark is dropped; the delimiter (`,` or `;`, as spreadsheets in Ukrainian
//! locales write) is detected from the first line. Any problem refuses the whole file, naming
//! the line; nothing is imported then.

use std::path::PathBuf;

use clap::Args;
use custody_core::journal::ImportRow;
use time::OffsetDateTime;

use super::issue::refused;
use super::Context;
use crate::output::json;
use crate::Exit;

/// Arguments of `custody journal import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file.
    #[arg(long = "csv", value_name = "FILE")]
    pub csv: PathBuf,
}

/// Reads a CSV file to import and parses it: the file's name and what `parse` made of it, or
/// the refusal (naming the file) when `parse` refused it. Nothing is imported either way.
pub(super) fn read_csv<T>(
    path: &std::path::Path,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> anyhow::Result<Result<(String, T), custody_core::Error>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let name = path.display().to_string();
    Ok(match parse(&bytes) {
        Ok(parsed) => Ok((name, parsed)),
        Err(msg) => Err(custody_core::Error::Refused(format!(
            "{name}, {msg}; nothing imported"
        ))),
    })
}

/// Runs `custody journal import`.
pub fn run(ctx: &Context, args: &ImportArgs) -> anyhow::Result<Exit> {
    let (name, rows) = match read_csv(&args.csv, parse)? {
        Ok(read) => read,
        Err(e) => return refused(ctx, e),
    };
    let mut journal = ctx.open_journal()?;
    let record = match journal.import(&rows, &name, &ctx.actor(), OffsetDateTime::now_utc()) {
        Ok(r) => r,
        Err(e) => return refused(ctx, e),
    };
    if ctx.global.json {
        json(&serde_json::json!({ "ok": true, "journal": journal.path(), "import": record }))?;
    } else {
        println!(
            "Imported {} row(s) from {name} into {} (events #{}..#{}); checkpoint #{} signed.",
            record.rows,
            journal.path().display(),
            record.first_seq,
            record.last_seq,
            record.checkpoint.seq
        );
    }
    Ok(Exit::Ok)
}

/// Parses the CSV; an error names the line.
pub fn parse(bytes: &[u8]) -> Result<Vec<ImportRow>, String> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |d: u8| first_line.iter().filter(|b| **b == d).count();
    let delimiter = if count(b';') > count(b',') {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(false)
        .from_reader(bytes);
    let mut rows = Vec::new();
    let mut width = None;
    for (i, record) in reader.byte_records().enumerate() {
        let record = record.map_err(|e| csv_error(&e))?;
        let line = record.position().map(|p| p.line()).unwrap_or(i as u64 + 1);
        let mut fields = Vec::with_capacity(record.len());
        for (col, f) in record.iter().enumerate() {
            let text = std::str::from_utf8(f).map_err(|_| {
                format!(
                    "line {line}, column {}: not UTF-8 text; save the file as UTF-8",
                    col + 1
                )
            })?;
            fields.push(undefuse(text.trim()).to_owned());
        }
        if fields.iter().all(String::is_empty) {
            continue;
        }
        let w = *width.get_or_insert(fields.len());
        if !(5..=6).contains(&w) {
            return Err(format!(
                "line {line}: {w} column(s); expected the 5 columns of the form (№, generated, carrier, received, destroyed) and optionally notes"
            ));
        }
        let is_number_row = fields
            .iter()
            .enumerate()
            .all(|(k, f)| *f == (k + 1).to_string());
        if is_number_row {
            continue;
        }
        let number = fields[0].trim_end_matches('.');
        let row_no: u64 = match number.parse() {
            Ok(n) => n,
            Err(_) if rows.is_empty() && line <= 2 => continue, // the header row
            Err(_) => {
                return Err(format!(
                    "line {line}: column 1 must be the row number, found {:?}",
                    fields[0]
                ))
            }
        };
        rows.push(ImportRow {
            line,
            row_no,
            generated: fields[1].clone(),
            carrier: fields[2].clone(),
            received: fields[3].clone(),
            destroyed: fields[4].clone(),
            note: strip_marker(fields.get(5).map(String::as_str).unwrap_or_default()),
        });
    }
    Ok(rows)
}

/// Drops the `'` that `journal export` puts before a cell that a spreadsheet would run as a
/// formula (see `export::defuse`).
fn undefuse(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

/// Drops the "imported from the paper journal" marker that `journal export` writes in the
/// notes of imported rows, so that an export reads back in unchanged.
fn strip_marker(note: &str) -> String {
    for marker in [
        "імпортовано з паперового журналу",
        "imported from the paper journal",
    ] {
        if let Some(rest) = note.strip_prefix(marker) {
            return rest.trim_start_matches([';', ' ']).to_owned();
        }
    }
    note.to_owned()
}

/// A CSV reader's error, naming the line.
pub(crate) fn csv_error(e: &csv::Error) -> String {
    let line = e.position().map(|p| p.line());
    let at = line
        .map(|l| format!("line {l}"))
        .unwrap_or_else(|| "a line".into());
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{at}: {len} column(s) where the rows before have {expected_len}; check the quotes and delimiters of that line"),
        csv::ErrorKind::Utf8 { .. } => format!("{at}: not UTF-8 text; save the file as UTF-8"),
        _ => format!("{at}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_number_row_bom_quotes_and_semicolons() {
        let text = "\u{feff}№ п/п;Дата;Носій;Отримав;Знищено\n1;2;3;4;5\n7;\"01.02.2020\";\"Алмаз-1К; сер. № 12\";\"03.02.2020, Коваль \"\"Мар'яна\"\"\";\n";
        let rows = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].row_no, 7);
        assert_eq!(rows[0].line, 3);
        assert_eq!(rows[0].carrier, "Алмаз-1К; сер. № 12");
        assert_eq!(rows[0].received, "03.02.2020, Коваль \"Мар'яна\"");
    }

    #[test]
    fn defused_formulas_read_back() {
        let rows =
            parse("1,'=1+2,'-x,\"'@a, b\",'plain\n".as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (rows[0].generated.as_str(), rows[0].carrier.as_str()),
            ("=1+2", "-x")
        );
        assert_eq!(rows[0].received, "@a, b");
        assert_eq!(rows[0].destroyed, "'plain");
    }

    #[test]
    fn unequal_rows_name_the_line() {
        let text = "1,a,b,c,d\n2,a,b,c\n";
        let err = parse(text.as_bytes()).err().unwrap_or_default();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn text_in_the_number_column_names_the_line() {
        let text = "1,a,b,c,d\nдва,a,b,c,d\n";
        let err = parse(text.as_bytes()).err().unwrap_or_default();
        assert!(err.starts_with("line 2: column 1"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = parse(b"1,a,b,c,d\n2,\xff,b,c,d\n")
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("line 2, column 2"), "{err}");
    }
}
