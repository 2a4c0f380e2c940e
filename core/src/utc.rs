//! UTC times as custody writes them: RFC 3339 with milliseconds, always `Z`.
//!
//! The journal hashes these strings, so there is exactly one way to write a time.

use time::OffsetDateTime;

/// UTC time in the journal's format: RFC 3339 with milliseconds.
pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
