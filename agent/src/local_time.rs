//! Times for people: the journal and JSON keep UTC (RFC 3339); tables, the printed form and
//! messages show the organisation's local time (`[organisation] timezone`, else the
//! system's), always with the zone's abbreviation so that a reader knows which it is.

use jiff::tz::TimeZone;

/// Day-first (`14.03.2025 12:05 EET`, Ukrainian usage) or ISO (`2025-03-14 12:05 EET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `DD.MM.YYYY`.
    DayFirst,
    /// `YYYY-MM-DD`.
    Iso,
}

/// A journal time for people: RFC 3339 instants in `zone` with the zone's abbreviation;
/// dates (`YYYY-MM-DD`, which have no time of day) as dates; anything else as it is.
pub fn show(t: &str, zone: &TimeZone, style: Style) -> String {
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        let local = ts.to_zoned(zone.clone());
        let fmt = match style {
            Style::DayFirst => "%d.%m.%Y %H:%M %Z",
            Style::Iso => "%Y-%m-%d %H:%M %Z",
        };
        return local.strftime(fmt).to_string();
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>() {
        return match style {
            Style::DayFirst => d.strftime("%d.%m.%Y").to_string(),
            Style::Iso => d.to_string(),
        };
    }
    t.to_owned()
}

/// Now, in `zone`, for "printed on" lines.
pub fn now(zone: &TimeZone, style: Style) -> String {
    show(&jiff::Timestamp::now().to_string(), zone, style)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_move_to_the_zone_and_name_it() {
        let kyiv = TimeZone::get("Europe/Kyiv").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            show("2026-11-23T10:05:00.000Z", &kyiv, Style::DayFirst),
            "23.11.2026 12:05 EET"
        );
        assert_eq!(
            show("2026-07-01T21:30:00Z", &kyiv, Style::Iso),
            "2026-07-02 00:30 EEST"
        );
        assert_eq!(
            show("2026-07-01T21:30:00Z", &TimeZone::UTC, Style::Iso),
            "2026-07-01 21:30 UTC"
        );
    }

    #[test]
    fn dates_and_free_text_stay_as_they_are() {
        let kyiv = TimeZone::get("Europe/Kyiv").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(show("2025-03-14", &kyiv, Style::DayFirst), "14.03.2025");
        assert_eq!(show("2025-03-14", &kyiv, Style::Iso), "2025-03-14");
        assert_eq!(show("березень 2020", &kyiv, Style::Iso), "березень 2020");
    }
}
