//! Output for people (aligned tables, every cell escaped) and for scripts (JSON on stdout).

use std::any::Any;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

use serde::Serialize;

/// The exit status of a program whose output pipe was closed: 128 + SIGPIPE, what the shell
/// reports for any Unix tool in `tool | head -1`.
pub const CLOSED_PIPE: u8 = 141;

/// Runs the program so that output to a closed pipe (`custody journal verify | head -1`) ends
/// it quietly with [`CLOSED_PIPE`] instead of a panic message. Rust ignores SIGPIPE, so a
/// write to a closed pipe fails with EPIPE: `println!` panics on it (caught here, its message
/// kept quiet), a `write!` returns it as an error (see [`closed_pipe`]). SIGPIPE itself stays
/// ignored, so that a PKCS#11 module writing to a dead socket cannot kill the service.
pub fn quiet_on_closed_pipe(run: impl FnOnce() -> ExitCode) -> ExitCode {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !closed_pipe_panic(info.payload()) {
            default(info);
        }
    }));
    match std::panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(code) => code,
        Err(payload) if closed_pipe_panic(payload.as_ref()) => ExitCode::from(CLOSED_PIPE),
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// True when a panic is `println!`'s or `eprintln!`'s on a closed pipe.
fn closed_pipe_panic(payload: &(dyn Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    message.starts_with("failed printing to std") && message.contains("Broken pipe")
}

/// True when an error is a write to a closed pipe.
pub fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table: a header row and data rows; cells are escaped so that control characters in
/// labels can never break the layout or the terminal.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (escaped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|c| escape_controls(c)).collect());
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders with two spaces between columns.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in row.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate().take(cols) {
                line.push_str(c);
                if i + 1 < cols {
                    let pad = width[i] - c.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints to stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// Escapes control characters only: cells often hold text that is already escaped (labels
/// from raw bytes), and a second pass must not double its backslashes.
/// `s` with control characters escaped (`\u{0}`), so that a label can never break a line
/// or the terminal.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Shortens `s` to `max` characters with an ellipsis.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_cells_cannot_break_rows() {
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["x\ny".into(), "\u{1b}[2J".into()]);
        let out = t.render();
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(!out.contains('\u{1b}'));
    }

    #[test]
    fn cyrillic_aligns_by_characters() {
        let mut t = Table::new(&["label", "n"]);
        t.row(vec!["Токен".into(), "1".into()]);
        t.row(vec!["ab".into(), "2".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1].chars().position(|c| c == '1'),
            lines[2].chars().position(|c| c == '2')
        );
    }
}
