//! Deserializers that check a value of the configuration file as it is read, so that a
//! refused value is reported by toml with its position (and [`super::report`] names the
//! line and key). Their messages never contain the value, and say what is expected.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// The most signatures `[orders] required_signers` may ask for.
pub(super) const MAX_SIGNERS: u32 = 10;

/// An absolute path (a service's working directory is `/`, so a relative path would mean
/// something else there than in a shell; and a PIN typed into a path key is refused here).
pub(super) fn absolute<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    absolute_required(d).map(Some)
}

/// [`absolute`] for a key that must be present.
pub(super) fn absolute_required<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if !path.is_absolute() {
        return Err(D::Error::custom(
            "must be an absolute path (starting with /)",
        ));
    }
    Ok(path)
}

/// A duration such as `2s` or `500ms` (see [`super::parse_duration`]).
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    super::parse_duration(&text).map(Some).map_err(|_| {
        D::Error::custom(
            "is not a duration like \"2s\", \"500ms\" or \"1m\" (more than 0, at most 24h)",
        )
    })
}

/// `required_signers`: 1 to [`MAX_SIGNERS`].
pub(super) fn required_signers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = i64::deserialize(d)?;
    match u32::try_from(n) {
        Ok(n) if (1..=MAX_SIGNERS).contains(&n) => Ok(Some(n)),
        _ => Err(D::Error::custom(format!(
            "must be a number from 1 to {MAX_SIGNERS}"
        ))),
    }
}

/// The name of an environment variable: a letter or `_`, then letters, digits and `_`.
pub(super) fn env_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') || name.len() > 128 {
        return Err(D::Error::custom(
            "must be the name of an environment variable (letters, digits and _, not starting with a digit), not a PIN",
        ));
    }
    Ok(Some(name))
}

/// The organisation's name, printed on the journal form: it must contain letters.
pub(super) fn timezone<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<jiff::tz::TimeZone>, D::Error> {
    let name = String::deserialize(d)?;
    jiff::tz::TimeZone::get(&name).map(Some).map_err(|_| {
        D::Error::custom("is not a time zone of the system's tz database (e.g. \"Europe/Kyiv\")")
    })
}

pub(super) fn organisation<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    if !name.chars().any(char::is_alphabetic) {
        return Err(D::Error::custom(
            "must be a name with letters (it is printed on the journal form)",
        ));
    }
    Ok(Some(name))
}
