//! OpenSSH `allowed_signers` files (see ssh-keygen(1), "ALLOWED SIGNERS").
//!
//! One signer per line: `principals [options] keytype base64-key [comment]`. Principals are a
//! comma-separated list (quoted when it holds spaces). Options, comma-separated:
//! `namespaces="a,b"` (patterns with `*`, `?` and `!` negation; the order namespace must
//! match), `valid-after="YYYYMMDD[HHMM[SS]][Z]"`, `valid-before="…"` (times without `Z` are the
//! workstation's local time, as in OpenSSH), `cert-authority` (SSH certificates are not
//! accepted for orders: such lines are skipped and reported). `#` comments and blank lines
//! are ignored. Any other option, or a line that does not parse, makes the whole file
//! unusable: a trust file with a typo must be fixed, not half-read.

use std::path::Path;

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};
use time::{Date, Month, OffsetDateTime};

use super::Zone;
use crate::error::{Error, Result};

/// The trusted signers.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    entries: Vec<AllowedSigner>,
    skipped: Vec<String>,
    source: String,
}

/// One line of an allowed_signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    /// The principals, as written (comma-separated).
    pub principals: String,
    /// The key.
    pub key: PublicKey,
    /// `namespaces="…"`: patterns; `None` means every namespace.
    pub namespaces: Option<Vec<String>>,
    /// `valid-after`.
    pub valid_after: Option<OffsetDateTime>,
    /// `valid-before`.
    pub valid_before: Option<OffsetDateTime>,
    /// 1-based line number.
    pub line: usize,
}

impl AllowedSigner {
    /// The key's fingerprint (`SHA256:…`).
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// Ok when this line allows signatures in `namespace` at `now`, else why not.
    pub fn allows(&self, namespace: &str, now: OffsetDateTime) -> std::result::Result<(), String> {
        if let Some(patterns) = &self.namespaces {
            if !match_pattern_list(namespace, patterns) {
                return Err(format!(
                    "namespaces=\"{}\" does not include {}",
                    clip(&patterns.join(",")),
                    clip(namespace)
                ));
            }
        }
        if let Some(after) = self.valid_after {
            if now < after {
                return Err(format!(
                    "valid-after {} has not come yet",
                    crate::utc::timestamp(after)
                ));
            }
        }
        if let Some(before) = self.valid_before {
            if now > before {
                return Err(format!(
                    "valid-before {} has passed",
                    crate::utc::timestamp(before)
                ));
            }
        }
        Ok(())
    }
}

impl AllowedSigners {
    /// Reads and parses a file.
    pub fn load(path: &Path, zone: &Zone) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string(), zone)
    }

    /// Parses the text of a file; `source` names it in messages.
    pub fn parse(text: &str, source: &str, zone: &Zone) -> Result<Self> {
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            match parse_line(l, line, zone) {
                Ok(Line::Signer(s)) => entries.push(*s),
                Ok(Line::CertAuthority) => {
                    tracing::warn!(file = %source, line, "cert-authority line skipped: orders must be signed with plain keys");
                    skipped.push(format!(
                        "line {line}: cert-authority is not accepted for orders (skipped)"
                    ));
                }
                Err(why) => {
                    return Err(Error::Refused(format!(
                        "allowed_signers {source}, line {line}: {why}; fix the file (format: principals [options] keytype key)"
                    )))
                }
            }
        }
        Ok(Self {
            entries,
            skipped,
            source: source.to_owned(),
        })
    }

    /// The signers.
    pub fn entries(&self) -> &[AllowedSigner] {
        &self.entries
    }

    /// Lines that were skipped, and why.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The file name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The lines listing this key.
    pub(super) fn for_key(&self, key: &KeyData) -> Vec<&AllowedSigner> {
        self.entries
            .iter()
            .filter(|e| e.key.key_data() == key)
            .collect()
    }
}

enum Line {
    Signer(Box<AllowedSigner>),
    CertAuthority,
}

/// Splits off the first whitespace-delimited field, keeping quoted parts together.
fn next_field(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], s[i..].trim_start()),
            _ => {}
        }
    }
    (s, "")
}

fn looks_like_key(s: &str) -> bool {
    let (kind, rest) = next_field(s);
    !rest.is_empty()
        && (kind.starts_with("ssh-")
            || kind.starts_with("ecdsa-")
            || kind.starts_with("sk-ssh-")
            || kind.starts_with("sk-ecdsa-"))
}

fn parse_line(l: &str, line: usize, zone: &Zone) -> std::result::Result<Line, String> {
    let (principals, rest) = next_field(l);
    let principals = principals.trim_matches('"').to_owned();
    if principals.is_empty() || rest.is_empty() {
        return Err("expected principals followed by a key".into());
    }
    let (options, key_text) = if looks_like_key(rest) {
        ("", rest)
    } else {
        next_field(rest)
    };
    let mut namespaces: Option<Vec<String>> = None;
    let mut valid_after = None;
    let mut valid_before = None;
    let mut cert_authority = false;
    for opt in split_options(options)? {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(unquote(v)?)),
            None => (opt.to_ascii_lowercase(), None),
        };
        // OpenSSH rejects a line that repeats an option rather than letting one win.
        let repeated = match (name.as_str(), value) {
            ("cert-authority", None) => std::mem::replace(&mut cert_authority, true),
            ("namespaces", Some(v)) => {
                let patterns: Vec<String> = v.split(',').map(str::to_owned).collect();
                if let Some(long) = patterns
                    .iter()
                    .find(|p| p.strip_prefix('!').unwrap_or(p).len() > MAX_PATTERN)
                {
                    return Err(format!(
                        "a namespaces pattern is {} bytes long; OpenSSH matches nothing longer than {MAX_PATTERN}",
                        long.len()
                    ));
                }
                namespaces.replace(patterns).is_some()
            }
            ("valid-after", Some(v)) => valid_after.replace(parse_time(&v, zone)?).is_some(),
            ("valid-before", Some(v)) => valid_before.replace(parse_time(&v, zone)?).is_some(),
            (n, _) => return Err(format!("unknown or malformed option {:?}", clip(n))),
        };
        if repeated {
            return Err(format!(
                "option {name} is given twice; OpenSSH rejects such a line, write it once"
            ));
        }
    }
    if let (Some(after), Some(before)) = (valid_after, valid_before) {
        if before <= after {
            return Err("valid-before is not after valid-after".into());
        }
    }
    let key = PublicKey::from_openssh(key_text.trim())
        .map_err(|e| format!("the key does not parse ({e})"))?;
    if cert_authority {
        return Ok(Line::CertAuthority);
    }
    Ok(Line::Signer(Box::new(AllowedSigner {
        principals,
        key,
        namespaces,
        valid_after,
        valid_before,
        line,
    })))
}

/// At most 40 characters of `s`, for messages about hostile input.
fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn split_options(s: &str) -> std::result::Result<Vec<&str>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated quote in options".into());
    }
    out.push(&s[start..]);
    if out.iter().any(|o| o.is_empty()) {
        return Err("empty option".into());
    }
    Ok(out)
}

fn unquote(v: &str) -> std::result::Result<String, String> {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) if !inner.contains('"') => Ok(inner.to_owned()),
        _ => Err(format!(
            "option value {:?} must be in double quotes",
            clip(v)
        )),
    }
}

/// `YYYYMMDD[HHMM[SS]][Z]`: `Z` means UTC, otherwise local time in `zone`.
fn parse_time(v: &str, zone: &Zone) -> std::result::Result<OffsetDateTime, String> {
    let bad = || format!("time {:?} is not YYYYMMDD[HHMM[SS]][Z]", clip(v));
    let (digits, utc) = match v.strip_suffix('Z').or_else(|| v.strip_suffix('z')) {
        Some(d) => (d, true),
        None => (v, false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u32>().ok());
    let year = num(0..4).ok_or_else(bad)? as i32;
    let month = Month::try_from(num(4..6).ok_or_else(bad)? as u8).map_err(|_| bad())?;
    let day = num(6..8).ok_or_else(bad)? as u8;
    let hour = num(8..10).unwrap_or(0) as u8;
    let minute = num(10..12).unwrap_or(0) as u8;
    let second = num(12..14).unwrap_or(0) as u8;
    let date = Date::from_calendar_date(year, month, day).map_err(|_| bad())?;
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad());
    }
    if utc {
        date.with_hms(hour, minute, second)
            .map(|d| d.assume_utc())
            .map_err(|_| bad())
    } else {
        Ok(zone.at(date, hour, minute, second))
    }
}

/// The longest sub-pattern OpenSSH's `match_pattern_list` considers (its buffer is 1024
/// bytes): a longer one makes the whole list match nothing. custody refuses such a line.
const MAX_PATTERN: usize = 1022;

/// OpenSSH's `match_pattern_list`: the patterns are tried in order, a negated pattern
/// (`!p`) that matches makes the list fail at once, otherwise any positive match succeeds.
/// Patterns are compared byte for byte, without case folding or trimming, as OpenSSH does
/// for namespaces.
pub(crate) fn match_pattern_list(s: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for p in patterns {
        if p.strip_prefix('!').unwrap_or(p).len() > MAX_PATTERN {
            return false;
        }
        if let Some(neg) = p.strip_prefix('!') {
            if glob(s.as_bytes(), neg.as_bytes()) {
                return false;
            }
        } else if glob(s.as_bytes(), p.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// OpenSSH's `match_pattern` semantics: `*` matches any run of bytes (also none), `?`
/// exactly one byte, anything else itself.
///
/// Without backtracking: the pattern is cut at its `*`s into segments; the first must match
/// at the start, the last at the end, and each one between at its leftmost place after the
/// previous one (taking the leftmost place never loses a match, because a `*` follows it).
/// The cost is at most `|s| × |p|` byte comparisons, however many `*` the pattern holds
/// (a recursive matcher is exponential in them).
pub(crate) fn glob(s: &[u8], p: &[u8]) -> bool {
    let mut segments = p.split(|&b| b == b'*');
    let first = segments.next().unwrap_or_default();
    if !p.contains(&b'*') {
        return s.len() == first.len() && segment_at(s, first);
    }
    if s.len() < first.len() || !segment_at(s, first) {
        return false;
    }
    let rest: Vec<&[u8]> = segments.collect();
    let Some((last, middle)) = rest.split_last() else {
        return true;
    };
    let mut from = first.len();
    for seg in middle.iter().filter(|seg| !seg.is_empty()) {
        match find_segment(&s[from..], seg) {
            Some(at) => from += at + seg.len(),
            None => return false,
        }
    }
    s.len() - from >= last.len() && segment_at(&s[s.len() - last.len()..], last)
}

/// True when `seg` (with `?` wildcards) matches at the start of `s`.
fn segment_at(s: &[u8], seg: &[u8]) -> bool {
    s.len() >= seg.len() && seg.iter().zip(s).all(|(&p, &c)| p == b'?' || p == c)
}

/// The first offset in `s` where `seg` (non-empty, with `?` wildcards) matches.
fn find_segment(s: &[u8], seg: &[u8]) -> Option<usize> {
    if s.len() < seg.len() {
        return None;
    }
    (0..=s.len() - seg.len()).find(|&i| segment_at(&s[i..], seg))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGUvmvdfB4dpCyVDMq5Wf5bpD8v8dSXSoIdoS5jlTWeB";

    fn parse(text: &str) -> Result<AllowedSigners> {
        AllowedSigners::parse(text, "test", &Zone::utc())
    }

    #[test]
    fn plain_line_and_comments() {
        let s = parse(&format!("# HR\n\nalice@hr.example {KEY} alice\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.entries().len(), 1);
        let e = &s.entries()[0];
        assert_eq!(e.principals, "alice@hr.example");
        assert_eq!(e.line, 3);
        assert!(e.namespaces.is_none());
        assert!(e.fingerprint().starts_with("SHA256:"));
    }

    #[test]
    fn options_namespaces_and_validity() {
        let s = parse(&format!(
            "\"alice,bob\" namespaces=\"git,custody-*\",valid-after=\"20260101\",valid-before=\"20261231235959Z\" {KEY}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let e = &s.entries()[0];
        assert_eq!(e.principals, "alice,bob");
        let mid = time::macros::datetime!(2026-06-01 00:00 UTC);
        assert!(e.allows("custody-order", mid).is_ok());
        assert!(e.allows("file", mid).is_err());
        assert!(e
            .allows(
                "custody-order",
                time::macros::datetime!(2025-12-31 23:59 UTC)
            )
            .is_err());
        assert!(e
            .allows(
                "custody-order",
                time::macros::datetime!(2027-01-01 00:00 UTC)
            )
            .is_err());
    }

    #[test]
    fn negated_namespace_wins() {
        assert!(!match_pattern_list(
            "custody-order",
            &["*".into(), "!custody-order".into()]
        ));
        assert!(match_pattern_list(
            "custody-order",
            &["git".into(), "custody-orde?".into()]
        ));
        assert!(!match_pattern_list("custody-order", &["git".into()]));
    }

    #[test]
    fn local_times_use_the_zone() {
        let kyiv = Zone::named("EET-2EEST,M3.5.0/3,M10.5.0/4").unwrap_or_else(|e| panic!("{e}"));
        let t = parse_time("20260701", &kyiv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t, time::macros::datetime!(2026-06-30 21:00 UTC));
        let t = parse_time("202601011200Z", &kyiv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t, time::macros::datetime!(2026-01-01 12:00 UTC));
        assert!(parse_time("2026011", &kyiv).is_err());
        assert!(parse_time("20261301", &kyiv).is_err());
    }

    #[test]
    fn cert_authority_lines_are_skipped_and_reported() {
        let s = parse(&format!("*@example cert-authority {KEY}\nbob {KEY}\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.entries().len(), 1);
        assert_eq!(s.skipped().len(), 1);
    }

    #[test]
    fn bad_lines_refuse_the_file_with_the_line_number() {
        for (text, needle) in [
            ("alice\n".to_owned(), "line 1"),
            (format!("alice nonsense=\"x\" {KEY}\n"), "unknown"),
            (format!("alice namespaces=git {KEY}\n"), "double quotes"),
            (
                format!("ok {KEY}\nalice ssh-ed25519 AAAAnotbase64!!\n"),
                "line 2",
            ),
            (format!("alice valid-after=\"2026\" {KEY}\n"), "YYYYMMDD"),
            (format!("alice namespaces=\"git {KEY}\n"), "line 1"),
        ] {
            let err = parse(&text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_repeated_option_refuses_the_line() {
        for opts in [
            "namespaces=\"git\",namespaces=\"custody-order\"",
            "valid-after=\"20200101\",valid-after=\"20250101\"",
            "valid-before=\"20300101\",VALID-BEFORE=\"20990101\"",
            "cert-authority,cert-authority",
        ] {
            let err = parse(&format!("alice {opts} {KEY}\n"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("line 1") && err.contains("given twice"),
                "{opts}: {err}"
            );
        }
    }

    #[test]
    fn valid_before_must_follow_valid_after() {
        let err = parse(&format!(
            "alice valid-after=\"20260101\",valid-before=\"20250101\" {KEY}\n"
        ))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("valid-before is not after"), "{err}");
    }

    #[test]
    fn namespace_patterns_are_taken_as_written() {
        // OpenSSH neither trims nor folds case: " custody-order" is another namespace.
        let s = parse(&format!(
            "alice namespaces=\"git, custody-order,CUSTODY-ORDER\" {KEY}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let now = time::macros::datetime!(2026-06-01 00:00 UTC);
        assert!(s.entries()[0].allows("custody-order", now).is_err());
    }

    #[test]
    fn patterns_longer_than_openssh_matches_are_refused() {
        let long = "a".repeat(MAX_PATTERN + 1);
        let err = parse(&format!("alice namespaces=\"{long}\" {KEY}\n"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("OpenSSH matches nothing longer"), "{err}");
        let ok = "a".repeat(MAX_PATTERN);
        assert!(parse(&format!("alice namespaces=\"{ok}\" {KEY}\n")).is_ok());
        assert!(!match_pattern_list("x", &["x".into(), format!("!{long}")]));
    }

    /// OpenSSH's semantics written the obvious (recursive, exponential) way: the oracle the
    /// linear matcher is compared with on small inputs.
    fn oracle(s: &[u8], p: &[u8]) -> bool {
        match (p.split_first(), s.split_first()) {
            (None, _) => s.is_empty(),
            (Some((b'*', rest)), _) => oracle(s, rest) || (!s.is_empty() && oracle(&s[1..], p)),
            (Some((&pc, prest)), Some((&sc, srest))) => {
                (pc == b'?' || pc == sc) && oracle(srest, prest)
            }
            (Some(_), None) => false,
        }
    }

    #[test]
    fn glob_agrees_with_openssh_semantics_on_every_small_input() {
        // Every pattern over {a, b, ?, *} up to 6 bytes against every string over {a, b}
        // up to 6 bytes.
        fn all(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
            let mut out = vec![Vec::new()];
            let mut last = vec![Vec::new()];
            for _ in 0..max {
                let next: Vec<Vec<u8>> = last
                    .iter()
                    .flat_map(|w: &Vec<u8>| {
                        alphabet.iter().map(move |&c| {
                            let mut w = w.clone();
                            w.push(c);
                            w
                        })
                    })
                    .collect();
                out.extend(next.iter().cloned());
                last = next;
            }
            out
        }
        let patterns = all(b"ab?*", 6);
        let strings = all(b"ab", 6);
        let mut checked = 0;
        for p in &patterns {
            for s in &strings {
                assert_eq!(
                    glob(s, p),
                    oracle(s, p),
                    "pattern {:?} string {:?}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(s)
                );
                checked += 1;
            }
        }
        assert!(checked > 600_000, "{checked}");
        assert!(glob("custody-order".as_bytes(), b"custody-*"));
        assert!(glob(b"", b"*"));
        assert!(!glob(b"", b"?"));
        assert!(glob("ключ".as_bytes(), "*ч".as_bytes()));
    }

    /// Lines an attacker (or a fuzzer) would write: many stars, long runs that almost match.
    fn hostile_lines() -> Vec<(String, String)> {
        let stars = |n: usize, unit: &str, tail: &str| format!("{}{tail}", unit.repeat(n));
        let mut out = Vec::new();
        for (name, pattern) in [
            ("stars", stars(500, "*", "x")),
            ("star-a", stars(300, "*c", "*z")),
            ("star-question", stars(330, "*?", "!")),
            ("almost", stars(60, "*custody-orde", "*q")),
            ("star-letter-long", stars(511, "*u", "")),
        ] {
            out.push((
                name.to_owned(),
                format!("alice namespaces=\"{pattern}\" {KEY}\n"),
            ));
        }
        // Many long patterns on one line.
        let many: Vec<String> = (0..200).map(|_| stars(200, "*?", "#")).collect();
        out.push((
            "many-patterns".into(),
            format!("alice namespaces=\"{}\" {KEY}\n", many.join(",")),
        ));
        out
    }

    #[test]
    fn hostile_patterns_parse_and_match_in_bounded_time() {
        let now = time::macros::datetime!(2026-06-01 00:00 UTC);
        let run = |text: &str| {
            let start = std::time::Instant::now();
            let signers = parse(text).unwrap_or_else(|e| panic!("{e}"));
            let allowed = signers.entries()[0].allows(super::super::NAMESPACE, now);
            (start.elapsed(), allowed.is_ok())
        };
        // Baseline, in the same run: an ordinary line of the same length.
        for (name, text) in hostile_lines() {
            let len = text.len().saturating_sub(KEY.len() + 22);
            let words: Vec<String> = (0..len / 101 + 1).map(|_| "g".repeat(100)).collect();
            let plain = format!("alice namespaces=\"{}\" {KEY}\n", words.join(","));
            let (baseline, _) = run(&plain);
            let (took, allowed) = run(&text);
            assert!(!allowed, "{name}");
            let bound = std::time::Duration::from_millis(10).max(baseline * 50);
            eprintln!(
                "{name}: {} bytes, {took:?} (baseline {baseline:?})",
                text.len()
            );
            assert!(
                took < bound,
                "{name}: {took:?} against a bound of {bound:?}"
            );
        }
        // The matcher itself on a long subject: the cost is bounded by |s| × |p|.
        let s = "a".repeat(4000);
        let p = format!("{}b", "*a".repeat(400));
        let start = std::time::Instant::now();
        assert!(!glob(s.as_bytes(), p.as_bytes()));
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_millis(500), "{took:?}");
    }
}
