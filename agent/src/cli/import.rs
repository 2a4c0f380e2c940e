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

/// One CSV record: the line of the file it starts on and its fields (UTF-8, trimmed).
pub(super) struct Record {
    /// The line, counted as an editor counts it (1-based; a field that spans lines counts
    /// them all, whether lines end in LF or CRLF).
    pub(super) line: u64,
    /// The fields, whitespace trimmed.
    pub(super) fields: Vec<String>,
}

/// Reads CSV bytes as spreadsheets write them: a UTF-8 byte-order mark dropped, the delimiter
/// the one of `delimiters` found most often on the first line (ties go to the one listed
/// first), LF or CRLF line ends, quoted fields that may hold delimiters and line breaks. An
/// error names the line (the csv reader's own line count is off after CRLF line ends, so lines
/// are counted here from the records' byte offsets).
pub(super) fn records(bytes: &[u8], delimiters: &[u8]) -> Result<Vec<Record>, String> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |d: u8| first_line.iter().filter(|b| **b == d).count();
    let mut delimiter = delimiters.first().copied().unwrap_or(b',');
    for d in delimiters {
        if count(*d) > count(delimiter) {
            delimiter = *d;
        }
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(false)
        .from_reader(bytes);
    let mut lines = LineCounter::new(bytes);
    let mut out = Vec::new();
    for record in reader.byte_records() {
        let record = record.map_err(|e| csv_error(&e, &mut lines))?;
        let line = lines.line_of(record.position());
        let mut fields = Vec::with_capacity(record.len());
        for (col, f) in record.iter().enumerate() {
            let text = std::str::from_utf8(f).map_err(|_| {
                format!(
                    "line {line}, column {}: not UTF-8 text; save the file as UTF-8 (\"CSV UTF-8\" in Excel)",
                    col + 1
                )
            })?;
            fields.push(text.trim().to_owned());
        }
        out.push(Record { line, fields });
    }
    Ok(out)
}

/// Turns the csv reader's byte offsets into line numbers, in one pass over the file (records
/// come in order).
struct LineCounter<'a> {
    bytes: &'a [u8],
    /// How far the line feeds have been counted, and how many there were.
    scanned: usize,
    newlines: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            scanned: 0,
            newlines: 0,
        }
    }

    /// The line a record starts on. The reader gives the offset where the previous record
    /// ended, which after CRLF is the LF (or the CR): line ends are skipped first.
    fn line_of(&mut self, position: Option<&csv::Position>) -> u64 {
        let Some(p) = position else {
            return self.newlines + 1;
        };
        let mut at = usize::try_from(p.byte())
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        while self
            .bytes
            .get(at)
            .is_some_and(|b| matches!(b, b'\r' | b'\n'))
        {
            at += 1;
        }
        if at < self.scanned {
            // Out of order (never for a record): count from the start.
            self.scanned = 0;
            self.newlines = 0;
        }
        self.newlines += self.bytes[self.scanned..at]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        self.scanned = at;
        self.newlines + 1
    }
}

/// Parses the CSV; an error names the line.
pub fn parse(bytes: &[u8]) -> Result<Vec<ImportRow>, String> {
    let mut rows = Vec::new();
    let mut width = None;
    for Record { line, fields } in records(bytes, b",;")? {
        let fields: Vec<String> = fields.iter().map(|f| undefuse(f).to_owned()).collect();
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
fn csv_error(e: &csv::Error, lines: &mut LineCounter<'_>) -> String {
    let at = match e.position() {
        Some(p) => format!("line {}", lines.line_of(Some(p))),
        None => "a line".into(),
    };
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{at}: {len} column(s) where the rows before have {expected_len}; check the quotes and delimiters of that line"),
        csv::ErrorKind::Utf8 { .. } => format!("{at}: not UTF-8 text; save the file as UTF-8 (\"CSV UTF-8\" in Excel)"),
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
    fn lines_are_counted_alike_with_lf_crlf_and_fields_that_span_lines() {
        for end in ["\n", "\r\n"] {
            // Row 1 spans lines 1-3 (a quoted field with two line breaks), a blank line, row 2
            // on line 5, and a bad number on line 6.
            let text = [
                "1,a,\"b",
                "b2",
                "b3\",c,d",
                "",
                "2,a,b,c,d",
                "x,a,b,c,d",
                "",
            ]
            .join(end);
            let rows = match parse(text.as_bytes()) {
                Err(e) => e,
                Ok(r) => format!("parsed {} rows", r.len()),
            };
            assert!(rows.starts_with("line 6: column 1"), "{end:?}: {rows}");
            let good = text.replace("x,", "3,");
            let rows = parse(good.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
            assert_eq!(lines, [1, 5, 6], "{end:?}");
            assert_eq!(rows[0].carrier, format!("b{end}b2{end}b3"));
            // The csv reader's own errors name the right line too.
            let short = good.replace("3,a,b,c,d", "3,a,b,c");
            let err = parse(short.as_bytes()).err().unwrap_or_default();
            assert!(err.starts_with("line 6: 4 column(s)"), "{end:?}: {err}");
        }
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = parse(b"1,a,b,c,d\n2,\xff,b,c,d\n")
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("line 2, column 2"), "{err}");
    }
}
