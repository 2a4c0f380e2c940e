//! `[[pin]]` rules: each names exactly one carrier by its full identity (manufacturer,
//! model, serial; label optional), so that a PIN is never offered to a carrier it does not
//! belong to. Wildcards, missing or empty identity fields and two rules for one carrier are
//! refused when the file is read, with an example of a correct rule; like every message
//! about the file, these name the line and key, never the value.

use std::path::{Path, PathBuf};

use custody_core::id::CarrierId;
use serde::Deserialize;
use toml::Spanned;

use super::{value, Problem};

/// `[[pin]]` as written: where the PINs of one carrier come from. Never a PIN itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPinRule {
    /// CK_TOKEN_INFO.manufacturerID of the carrier.
    pub manufacturer: Option<Spanned<String>>,
    /// CK_TOKEN_INFO.model of the carrier.
    pub model: Option<Spanned<String>>,
    /// CK_TOKEN_INFO.serialNumber of the carrier.
    pub serial: Option<Spanned<String>>,
    /// The token label; tells apart carriers that share manufacturer, model and serial.
    pub label: Option<String>,
    /// File holding the user PIN (mode 0600 or stricter).
    #[serde(default, deserialize_with = "value::absolute")]
    pub user_pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    #[serde(default, deserialize_with = "value::env_name")]
    pub user_pin_env: Option<String>,
    /// File holding the SO PIN.
    #[serde(default, deserialize_with = "value::absolute")]
    pub so_pin_file: Option<PathBuf>,
    /// Environment variable holding the SO PIN.
    #[serde(default, deserialize_with = "value::env_name")]
    pub so_pin_env: Option<String>,
}

/// A validated `[[pin]]` rule: names exactly one carrier by its full identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRule {
    /// CK_TOKEN_INFO.manufacturerID.
    pub manufacturer: String,
    /// CK_TOKEN_INFO.model.
    pub model: String,
    /// CK_TOKEN_INFO.serialNumber.
    pub serial: String,
    /// The token label, when the rule names one.
    pub label: Option<String>,
    /// File holding the user PIN.
    pub user_pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    pub user_pin_env: Option<String>,
    /// File holding the SO PIN.
    pub so_pin_file: Option<PathBuf>,
    /// Environment variable holding the SO PIN.
    pub so_pin_env: Option<String>,
}

impl PinRule {
    /// True when the rule names this carrier: manufacturer, model and serial equal, and the
    /// label too when the rule gives one (a carrier of unknown label never matches a rule
    /// with a label).
    pub fn matches(&self, carrier: &CarrierId, label: Option<&str>) -> bool {
        self.manufacturer == carrier.manufacturer
            && self.model == carrier.model
            && self.serial == carrier.serial
            && self.label.as_deref().is_none_or(|l| Some(l) == label)
    }

    /// The carrier the rule names, for messages about a carrier it matched (its values are
    /// then the token's own).
    pub fn describe(&self) -> String {
        let mut text = format!("{}/{}/{}", self.manufacturer, self.model, self.serial);
        if let Some(l) = &self.label {
            text.push_str(&format!(" label {l:?}"));
        }
        text
    }
}

/// How a `[[pin]]` rule is written, for the messages that refuse one.
const EXAMPLE: &str = "write each rule for one carrier, by its full identity as `custody scan` \
or `custody journal list` shows it:\n  [[pin]]\n  manufacturer = \"SoftHSM project\"\n  \
model = \"SoftHSM v2\"\n  serial = \"3c5e0a1b2d4f6789\"\n  label = \"Іваненко І.І.\"   # optional; \
needed when carriers share a serial\n  user_pin_file = \"/etc/custody/pins/3c5e0a1b2d4f6789\"";

/// Checks every rule (see the module docs); `text` is the file's text (empty when not
/// known), for line numbers.
pub(super) fn validate(
    rules: Vec<Spanned<RawPinRule>>,
    text: &str,
    file: &Path,
) -> anyhow::Result<Vec<PinRule>> {
    let mut out: Vec<(usize, PinRule)> = Vec::with_capacity(rules.len());
    for rule in rules {
        let at = rule.span().start;
        let raw = rule.into_inner();
        let refuse = |at: usize, key: Option<&str>, reason: &str| {
            let mut problem = Problem::at(text, at, reason.to_owned());
            problem.table = Some("[[pin]]".into());
            if let Some(k) = key {
                problem.key = Some(k.into());
            }
            anyhow::anyhow!("{}; {EXAMPLE}", problem.message(file))
        };
        let field = |name: &str, value: Option<Spanned<String>>| {
            match value {
            None => Err(refuse(
                at,
                None,
                &format!(
                    "the rule has no {name}: a PIN is offered only to the carrier its rule names, so a rule gives manufacturer, model and serial"
                ),
            )),
            Some(v) if v.get_ref().trim().is_empty()
                || v.get_ref().contains('*')
                || v.get_ref().contains('?') =>
            {
                Err(refuse(
                    v.span().start,
                    Some(name),
                    "a wildcard or empty value would match carriers the PIN does not belong to, and a wrong PIN counts towards locking them; wildcards are refused",
                ))
            }
            Some(v) => Ok(v.into_inner()),
        }
        };
        let rule = PinRule {
            manufacturer: field("manufacturer", raw.manufacturer)?,
            model: field("model", raw.model)?,
            serial: field("serial", raw.serial)?,
            label: raw.label,
            user_pin_file: raw.user_pin_file,
            user_pin_env: raw.user_pin_env,
            so_pin_file: raw.so_pin_file,
            so_pin_env: raw.so_pin_env,
        };
        let same = out.iter().find(|(_, p)| {
            (&p.manufacturer, &p.model, &p.serial)
                == (&rule.manufacturer, &rule.model, &rule.serial)
                && (p.label.is_none() || rule.label.is_none() || p.label == rule.label)
        });
        if let Some((first, _)) = same {
            let first = Problem::at(text, *first, String::new()).line.map_or_else(
                || "another rule".to_owned(),
                |l| format!("the rule at line {l}"),
            );
            return Err(refuse(
                at,
                None,
                &format!(
                    "this rule and {first} name the same carrier; keep one, or tell the carriers apart with a label on each"
                ),
            ));
        }
        out.push((at, rule));
    }
    Ok(out.into_iter().map(|(_, r)| r).collect())
}
