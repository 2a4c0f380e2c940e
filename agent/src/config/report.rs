//! Messages about a configuration file that name the file, the line and the key, and never
//! a value: a PIN typed into the file by mistake must not end up in a terminal, a log or a
//! ticket. toml's own `Display` quotes the offending line and serde's messages quote the
//! value (`invalid type: string "1234"`), so neither is shown; the message is rebuilt from
//! the error's position and the parts of its text that come from custody's schema.

use std::path::Path;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// `[table]` or `[[table]]` the line belongs to, when known.
    pub table: Option<String>,
    /// The key, when it can be named (see `key_name`).
    pub key: Option<String>,
    /// What is wrong, without the value.
    pub reason: String,
}

impl Problem {
    /// The problem at byte offset `at` of `text`.
    pub fn at(text: &str, at: usize, reason: String) -> Self {
        if text.is_empty() {
            return Self {
                line: None,
                table: None,
                key: None,
                reason,
            };
        }
        let at = at.min(text.len());
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_no = text[..line_start].matches('\n').count() + 1;
        let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        let line = &text[line_start..line_end];
        let key = line
            .split_once('=')
            .filter(|(k, _)| !k.trim_start().starts_with('['))
            .and_then(|(k, _)| key_name(k.trim()));
        let table = text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .and_then(table_name);
        Self {
            line: Some(line_no),
            table,
            key,
            reason,
        }
    }

    /// The message, naming `file`.
    pub fn message(&self, file: &Path) -> String {
        let mut out = format!("configuration {}", file.display());
        if let Some(line) = self.line {
            out.push_str(&format!(", line {line}"));
        }
        match (&self.table, &self.key) {
            (Some(t), Some(k)) => out.push_str(&format!(", {t} {k}")),
            (None, Some(k)) => out.push_str(&format!(", {k}")),
            (Some(t), None) => out.push_str(&format!(", in {t}")),
            (None, None) => {}
        }
        out.push_str(&format!(
            ": {} (the value is not shown; fix the file)",
            self.reason
        ));
        out
    }
}

/// Turns a toml error into a [`Problem`], keeping nothing of the document's values.
pub(super) fn from_toml(text: &str, err: &toml::de::Error) -> Problem {
    let reason = reason(err.message());
    match err.span() {
        Some(span) => Problem::at(text, span.start, reason),
        None => Problem {
            line: None,
            table: None,
            key: None,
            reason,
        },
    }
}

/// The schema part of a toml/serde message. serde writes `invalid type: string "x",
/// expected a path` and `unknown variant `x`, expected one of ...`: the value sits between
/// the category and `expected`. The category (up to the first `:` or quote), and what was
/// expected (custody's own field and variant names, or toml's grammar), are kept; an
/// unknown key is named only when [`key_name`] accepts it.
pub(super) fn reason(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    let head = first.split(", expected").next().unwrap_or_default();
    let category_end = head.find([':', '`', '"', '\'']).unwrap_or(head.len());
    let category = head[..category_end].trim().trim_end_matches(',');
    let expected = message
        .rfind("expected ")
        .map(|i| message[i..].lines().next().unwrap_or_default().trim());
    let mut out = category.to_owned();
    if category == "unknown field" {
        let name = first
            .split('`')
            .nth(1)
            .and_then(key_name)
            .unwrap_or_else(|| "(not shown: it does not look like a key)".into());
        out = format!("unknown key {name}");
    }
    if out.is_empty() {
        out = "not valid here".into();
    }
    if let Some(expected) = expected.filter(|e| *e != first) {
        out.push_str("; ");
        out.push_str(expected);
    }
    out
}

/// A key as custody's keys are written: letters, `_` and `-`, at most 40 bytes. Anything
/// else (digits, quotes, spaces) might be a PIN typed on a line of its own, and is not named.
pub(super) fn key_name(k: &str) -> Option<String> {
    let ok = !k.is_empty()
        && k.len() <= 40
        && k.bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-');
    ok.then(|| k.to_owned())
}

/// `[name]` or `[[name]]` with a name [`key_name`] accepts (dotted parts allowed).
fn table_name(header: &str) -> Option<String> {
    let inner = header.trim_start_matches('[');
    let inner = inner.split(']').next()?.trim();
    let ok = inner.split('.').all(|p| key_name(p.trim()).is_some());
    let double = header.starts_with("[[");
    ok.then(|| {
        if double {
            format!("[[{inner}]]")
        } else {
            format!("[{inner}]")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_lose_their_values() {
        for (msg, want) in [
            (
                "invalid type: string \"7319\", expected u32",
                "invalid type; expected u32",
            ),
            (
                "unknown variant `7319`, expected one of `auto`, `always`, `never`",
                "unknown variant; expected one of `auto`, `always`, `never`",
            ),
            (
                "unknown field `colour`, expected `path`",
                "unknown key colour; expected `path`",
            ),
            (
                "unknown field `7319`, expected `path`",
                "unknown key (not shown: it does not look like a key); expected `path`",
            ),
            (
                "invalid value: integer `-7319`, expected u32",
                "invalid value; expected u32",
            ),
            (
                "key with no value, expected `=`",
                "key with no value; expected `=`",
            ),
        ] {
            assert_eq!(reason(msg), want);
        }
    }

    #[test]
    fn the_line_table_and_key_are_found_from_the_position() {
        let text = "[journal]\npath = \"/x\"\n\n[[pin]]\nserial = \"*\"\nuser_pin_env = 7319\n";
        let at = text.find("7319").unwrap_or_default();
        let p = Problem::at(text, at, "invalid type".into());
        assert_eq!(p.line, Some(6));
        assert_eq!(p.table.as_deref(), Some("[[pin]]"));
        assert_eq!(p.key.as_deref(), Some("user_pin_env"));
        let m = p.message(Path::new("/etc/custody/custody.toml"));
        assert!(!m.contains("7319"), "{m}");
        assert!(m.contains("line 6, [[pin]] user_pin_env"), "{m}");
    }
}
