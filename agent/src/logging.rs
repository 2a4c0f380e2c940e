//! The tracing subscriber: human-readable on stderr by default, JSON lines for journald or a
//! SIEM with `--log-format json`. Level from `--verbose`, or `CUSTODY_LOG` (an env-filter).
//!
//! Logs never carry raw NUL or control bytes: token strings are percent-encoded where they
//! are read (`custody_core::id::percent_encode`), JSON escapes the rest, and the human format
//! writes through [`EscapeControls`], which turns any control byte that still reaches it
//! (from a module's error text, a file name) into `\xNN`.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

/// Installs the global subscriber. Call once, from `main`. Commands print their own
/// warnings, so they log only errors by default; the service logs at info.
pub fn init(args: &GlobalArgs, quiet_default: bool) {
    let default = match args.verbose {
        0 if quiet_default => "error",
        0 => "info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("CUSTODY_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    // Colours only on a terminal: not in files, pipes or journald.
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let result = match args.log_format {
        LogFormat::Human => builder
            .with_writer(move || EscapeControls {
                inner: std::io::stderr(),
                keep_escape: ansi,
            })
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder.with_writer(std::io::stderr).json().try_init(),
    };
    // A second init (tests calling run twice in one process) is harmless.
    drop(result);
}

/// Writes log lines with every control byte but newline and tab as `\xNN` (C1 controls as
/// `\u{NN}`); the escape byte is kept only when colours are on, for the formatter's own
/// colour codes.
#[derive(Debug)]
pub struct EscapeControls<W> {
    /// Where the escaped text goes.
    pub inner: W,
    /// Keep ESC (colour codes on a terminal).
    pub keep_escape: bool,
}

impl<W: Write> Write for EscapeControls<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            if b == 0xc2 {
                if let Some(&next) = buf.get(i + 1).filter(|n| (0x80..0xa0).contains(*n)) {
                    out.extend_from_slice(format!("\\u{{{next:x}}}").as_bytes());
                    i += 2;
                    continue;
                }
            }
            let control =
                (b < 0x20 && b != b'\n' && b != b'\t' && !(self.keep_escape && b == 0x1b))
                    || b == 0x7f;
            if control {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            } else {
                out.push(b);
            }
            i += 1;
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &[u8], keep_escape: bool) -> String {
        let mut w = EscapeControls {
            inner: Vec::new(),
            keep_escape,
        };
        let _ = w.write_all(text);
        String::from_utf8_lossy(&w.inner).into_owned()
    }

    #[test]
    fn control_bytes_never_reach_the_log() {
        let line = "model=TPM\0\0 label=\x1b[31mred\x7f \u{85}Токен\tok\n";
        let out = escaped(line.as_bytes(), false);
        assert_eq!(
            out,
            "model=TPM\\x00\\x00 label=\\x1b[31mred\\x7f \\u{85}Токен\tok\n"
        );
        assert!(!out.trim_end().chars().any(|c| c.is_control() && c != '\t'));
        // the formatter's colour codes survive on a terminal
        assert_eq!(
            escaped(b"\x1b[2mtime\x1b[0m\0", true),
            "\x1b[2mtime\x1b[0m\\x00"
        );
    }
}
