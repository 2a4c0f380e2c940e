//! The printable page: A4 landscape, the five mandated columns with their headings repeated
//! on every page, the organisation's name, the title, page numbers and the print date and time
//! in the page margins, remarks as numbered footnotes under the table, and lines for hand
//! signatures in columns 4 and 5 where no digital acknowledgement exists.

use super::{headers, Document, Lang};

impl Document {
    /// One self-contained printable page (no script, no external resource).
    pub fn html(&self) -> String {
        let uk = self.lang == Lang::Uk;
        let mut s = String::with_capacity(4096 + self.rows.len() * 700);
        s.push_str("<!DOCTYPE html>\n<html lang=\"");
        s.push_str(if uk { "uk" } else { "en" });
        s.push_str("\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
        s.push_str(&esc(&self.title));
        s.push_str("</title>\n<style>\n");
        s.push_str(STYLE);
        s.push_str(&self.page_margins());
        s.push_str("</style>\n</head>\n<body>\n");
        if let Some(org) = &self.organisation {
            s.push_str(&format!("<p class=\"org\">{}</p>\n", esc(org)));
        }
        s.push_str(&format!("<h1>{}</h1>\n", esc(&self.title)));
        let mut sub = vec![if uk {
            format!("Час зазначено за часовим поясом {}", self.clock.zone_name())
        } else {
            format!("Times are in the time zone {}", self.clock.zone_name())
        }];
        if self.from.is_some() || self.to.is_some() {
            sub.insert(
                0,
                format!(
                    "{} {} {} {}",
                    if uk { "з" } else { "from" },
                    self.from
                        .as_deref()
                        .map(|d| self.clock.when(d))
                        .unwrap_or("…".into()),
                    if uk { "по" } else { "to" },
                    self.to
                        .as_deref()
                        .map(|d| self.clock.when(d))
                        .unwrap_or("…".into()),
                ),
            );
        }
        s.push_str(&format!(
            "<p class=\"range\">{}</p>\n",
            esc(&sub.join("; "))
        ));
        s.push_str("<table>\n<colgroup><col class=\"c1\"><col class=\"c2\"><col class=\"c3\"><col class=\"c4\"><col class=\"c5\"></colgroup>\n<thead>\n<tr>");
        for heading in headers(self.lang) {
            s.push_str(&format!("<th>{}</th>", esc(heading)));
        }
        s.push_str("</tr>\n<tr class=\"nums\">");
        for n in 1..=5 {
            s.push_str(&format!("<th>{n}</th>"));
        }
        s.push_str("</tr>\n</thead>\n<tbody>\n");
        let sig = if uk { "(підпис)" } else { "(signature)" };
        let mut footnotes: Vec<String> = Vec::new();
        for (r, c) in self.rows.iter().zip(self.cells()) {
            s.push_str(&format!(
                "<tr id=\"row-{}\"{}>",
                r.row_no,
                if r.imported.is_some() {
                    " class=\"imported\""
                } else {
                    ""
                }
            ));
            for (i, text) in c.columns.iter().enumerate() {
                let column = u8::try_from(i + 1).unwrap_or(u8::MAX);
                let mut cell = esc(text);
                let mut marks = Vec::new();
                for remark in c.remarks.iter().filter(|m| m.column == column) {
                    // One footnote per distinct text: sixty rows carried over from paper
                    // share one note.
                    let n = match footnotes.iter().position(|f| *f == remark.text) {
                        Some(i) => i + 1,
                        None => {
                            footnotes.push(remark.text.clone());
                            footnotes.len()
                        }
                    };
                    marks.push(n.to_string());
                }
                if !marks.is_empty() {
                    cell.push_str(&format!("<sup>{}</sup>", marks.join(",")));
                }
                let hand = r.imported.is_none()
                    && match column {
                        4 => r.acknowledgement.is_none(),
                        5 => r.destruction.is_some(),
                        _ => false,
                    };
                if hand {
                    cell.push_str(&format!("<div class=\"sig\">{sig}</div>"));
                }
                let class = if column == 1 { " class=\"num\"" } else { "" };
                s.push_str(&format!("<td{class}>{cell}</td>"));
            }
            s.push_str("</tr>\n");
        }
        if self.rows.is_empty() {
            s.push_str(&format!(
                "<tr><td colspan=\"5\" class=\"empty\">{}</td></tr>\n",
                if uk {
                    "Записів немає."
                } else {
                    "No rows."
                }
            ));
        }
        s.push_str("</tbody>\n</table>\n");
        if !footnotes.is_empty() {
            s.push_str("<ol class=\"notes\">\n");
            for note in &footnotes {
                s.push_str(&format!("<li>{}</li>\n", esc(note)));
            }
            s.push_str("</ol>\n");
        }
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

    /// Page margins of every printed page: organisation and title on top, print time and
    /// page numbers at the bottom.
    fn page_margins(&self) -> String {
        let uk = self.lang == Lang::Uk;
        let (page, of, printed) = if uk {
            ("Сторінка ", " з ", "Надруковано ")
        } else {
            ("Page ", " of ", "Printed ")
        };
        format!(
            "@page {{\n  @top-left {{ content: {org}; }}\n  @top-right {{ content: {title}; }}\n  \
             @bottom-left {{ content: {printed}; }}\n  \
             @bottom-right {{ content: {page} counter(page) {of} counter(pages); }}\n}}\n",
            org = css_string(self.organisation.as_deref().unwrap_or("")),
            title = css_string(&self.title),
            printed = css_string(&format!("{printed}{}", self.printed)),
            page = css_string(page),
            of = css_string(of),
        )
    }
}

const STYLE: &str = r#"@page { size: A4 landscape; margin: 14mm 10mm 14mm 10mm;
  @top-left { font: 8pt "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
  @top-right { font: 8pt "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
  @bottom-left { font: 8pt "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
  @bottom-right { font: 8pt "DejaVu Sans", "Liberation Sans", Arial, sans-serif; } }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: "DejaVu Sans", "Liberation Sans", "Noto Sans", Arial, sans-serif; font-size: 9pt; color: #000; margin: 0; }
@media screen { body { margin: 10mm; } }
.org { text-align: center; font-weight: bold; font-size: 11pt; margin: 0 0 2mm 0; }
h1 { text-align: center; font-size: 12pt; margin: 0 0 2mm 0; }
.range { text-align: center; margin: 0 0 3mm 0; font-size: 8pt; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border: 0.6pt solid #000; padding: 1.2mm 1.5mm; vertical-align: top; overflow-wrap: anywhere; }
th { font-weight: bold; text-align: center; vertical-align: middle; background: #f0f0f0; }
tr.nums th { font-weight: normal; font-size: 8pt; padding: 0.5mm; background: #fff; }
thead { display: table-header-group; }
tr { page-break-inside: avoid; break-inside: avoid; }
col.c1 { width: 6%; } col.c2 { width: 16%; } col.c3 { width: 20%; } col.c4 { width: 31%; } col.c5 { width: 27%; }
td.num { text-align: center; }
sup { font-size: 6.5pt; }
tr.imported td { background: #fafafa; }
.sig { margin-top: 7mm; border-top: 0.6pt solid #000; width: 70%; font-size: 7pt; color: #333; text-align: center; }
.empty { text-align: center; padding: 6mm; }
ol.notes { font-size: 7.5pt; margin: 3mm 0 0 0; padding-left: 6mm; }
.foot { margin-top: 3mm; font-size: 7pt; color: #444; }
"#;

/// A CSS string literal: every character that is not a letter, digit or space is escaped, so
/// that no text (an organisation's name) can end the string or the rule.
fn css_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        if c.is_alphanumeric() || c == ' ' {
            out.push(c);
        } else {
            out.push_str(&format!("\\{:x} ", u32::from(c)));
        }
    }
    out.push('"');
    out
}

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
    fn html_text_is_escaped() {
        assert_eq!(
            esc("<b>\"Ів'ан\"&\n"),
            "&lt;b&gt;&quot;Ів&#39;ан&quot;&amp;\\x0a"
        );
    }

    #[test]
    fn css_strings_cannot_be_ended_by_the_text() {
        assert_eq!(css_string("Рада №1"), "\"Рада \\2116 1\"");
        assert_eq!(
            css_string("a\"; } body { x"),
            "\"a\\22 \\3b  \\7d  body \\7b  x\""
        );
    }
}
