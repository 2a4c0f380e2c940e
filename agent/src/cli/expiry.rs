//! Certificates that expire soon or have expired, for `custody status --expiring`, scan and
//! journal output, and the service's warnings. Read from the journal's current state: every
//! carrier custody knows, plugged in or not (a carrier in a drawer still holds a signer's
//! certificate).

use custody_core::journal::Journal;
use serde::Serialize;
use time::OffsetDateTime;

/// One certificate in `custody status --expiring`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expiring {
    /// Carrier key.
    pub carrier: String,
    /// Carrier serial.
    pub serial: String,
    /// Certificate SHA-256.
    pub sha256: String,
    /// Subject (holder) as the certificate names it.
    pub subject: String,
    /// End of validity (UTC, RFC 3339).
    pub not_after: String,
    /// Whole days left (negative: expired that many days ago).
    pub days_left: i64,
    /// True when already expired.
    pub expired: bool,
}

/// The certificates of every carrier in the journal that expire before `now + window_days`
/// (expired ones included), soonest first.
pub fn expiring(
    journal: &Journal,
    now: OffsetDateTime,
    window_days: i64,
) -> anyhow::Result<Vec<Expiring>> {
    let mut out = Vec::new();
    for row in journal.carriers()? {
        let Some(snapshot) = journal.snapshot(&row.carrier)? else {
            continue;
        };
        for cert in &snapshot.certificates {
            let Some(info) = &cert.info else { continue };
            let left = info.not_after - now;
            // Whole days, rounded down: expired a second ago is -1, not 0.
            let days_left = left.whole_seconds().div_euclid(86_400);
            if days_left >= window_days {
                continue;
            }
            out.push(Expiring {
                carrier: row.carrier.clone(),
                serial: row.serial.clone(),
                sha256: cert.sha256.clone(),
                subject: info.subject.clone(),
                not_after: custody_core::journal::timestamp(info.not_after),
                days_left,
                expired: left.is_negative(),
            });
        }
    }
    out.sort_by(|a, b| a.not_after.cmp(&b.not_after).then(a.sha256.cmp(&b.sha256)));
    Ok(out)
}

/// Parses a window: `30d`, `2w`, or a number of days.
pub fn parse_window(text: &str) -> anyhow::Result<i64> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--expiring {t:?}: give days like 30d, or weeks like 2w"))?;
    let days = match unit {
        "" | "d" => n,
        "w" => n * 7,
        _ => anyhow::bail!("--expiring {t:?}: give days like 30d, or weeks like 2w"),
    };
    if !(0..=3650).contains(&days) {
        anyhow::bail!("--expiring {t:?}: between 0 and 3650 days");
    }
    Ok(days)
}

/// The thresholds (days) at which the service warns once per certificate.
pub const WARN_THRESHOLDS: [i64; 4] = [30, 7, 1, 0];

/// The warning threshold (days) a certificate with `days_left` has crossed: 0 once expired,
/// else the smallest of 1, 7 and 30 days it is under; `None` beyond 30 days.
pub fn threshold(days_left: i64) -> Option<i64> {
    if days_left < 0 {
        return Some(0);
    }
    WARN_THRESHOLDS
        .into_iter()
        .filter(|&t| t > 0)
        .rev()
        .find(|&t| days_left < t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_in_days_and_weeks() {
        assert_eq!(parse_window("30d").ok(), Some(30));
        assert_eq!(parse_window("2w").ok(), Some(14));
        assert_eq!(parse_window("45").ok(), Some(45));
        assert!(parse_window("1y").is_err());
        assert!(parse_window("-3d").is_err());
    }

    #[test]
    fn thresholds_are_the_smallest_crossed() {
        assert_eq!(threshold(45), None);
        assert_eq!(threshold(29), Some(30));
        assert_eq!(threshold(6), Some(7));
        assert_eq!(threshold(0), Some(1));
        assert_eq!(threshold(-1), Some(0));
    }
}
