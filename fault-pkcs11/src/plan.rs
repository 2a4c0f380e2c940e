//! The fault plan: which calls fail, which answers are rewritten, which tokens are hidden.
//!
//! Parsed from JSON (the `CUSTODY_FAULT_PLAN` variable, or the file `CUSTODY_FAULT_PLAN_FILE`
//! names). Safe code only: this module knows names and numbers, never pointers.

use serde::Deserialize;

use crate::names;

/// Everything a plan can ask for. Every field is optional; the empty plan `{}` forwards every
/// call unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Plan {
    /// Calls that fail (the first rule that matches a call decides).
    #[serde(default)]
    pub(crate) faults: Vec<Fault>,
    /// What C_GetTokenInfo reports for some tokens.
    #[serde(default)]
    pub(crate) tokens: Vec<TokenRewrite>,
    /// Real serials of tokens that look pulled out: their slot shows no token.
    #[serde(default)]
    pub(crate) hidden: Vec<String>,
    /// Every slot reports CKF_REMOVABLE_DEVICE (also implied by `hidden`).
    #[serde(default)]
    pub(crate) removable: bool,
    /// Key objects whose CKA_KEY_TYPE is reported differently.
    #[serde(default)]
    pub(crate) keys: Vec<KeyRewrite>,
    /// Each successful C_InitToken gives the token a new serial (as kryoptic does).
    #[serde(default)]
    pub(crate) reinit_changes_serial: bool,
    /// What C_GetInfo reports about the library.
    #[serde(default)]
    pub(crate) library: LibraryRewrite,
    /// C_WaitForSlotEvent is answered here from hide/show changes (`true`, the default), or
    /// forwarded to the real module (`false`; SoftHSM2 does not support it).
    #[serde(default = "yes")]
    pub(crate) slot_events: bool,
}

fn yes() -> bool {
    true
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            faults: Vec::new(),
            tokens: Vec::new(),
            hidden: Vec::new(),
            removable: false,
            keys: Vec::new(),
            reinit_changes_serial: false,
            library: LibraryRewrite::default(),
            slot_events: true,
        }
    }
}

/// One rule that makes calls fail. At most one of `at`, `nth`, `from`, `from_nth`; none means
/// every call of `function`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fault {
    /// Only calls of this function (`C_GetTokenInfo`); absent: any function.
    #[serde(default)]
    pub(crate) function: Option<String>,
    /// The call with this process-wide index (1 = the first call, as in the call log).
    #[serde(default)]
    pub(crate) at: Option<u64>,
    /// The n-th call of `function` (1-based).
    #[serde(default)]
    pub(crate) nth: Option<u64>,
    /// Every call whose process-wide index is at least this.
    #[serde(default)]
    pub(crate) from: Option<u64>,
    /// Every call of `function` from its n-th on.
    #[serde(default)]
    pub(crate) from_nth: Option<u64>,
    /// The return value: a name (`CKR_DEVICE_REMOVED`) or a number.
    #[serde(default)]
    pub(crate) rv: Option<Rv>,
    /// C_GetSlotList answers CKR_OK with no slots instead of failing.
    #[serde(default)]
    pub(crate) empty: bool,
}

/// What a matching fault does to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Return this value without calling the real module.
    Fail(u64),
    /// C_GetSlotList: CKR_OK and no slots.
    Empty,
}

impl Fault {
    /// Whether this rule applies to the call `function` with process-wide `index`, the `nth`
    /// call of that function.
    pub(crate) fn matches(&self, function: &str, index: u64, nth: u64) -> bool {
        if self.function.as_deref().is_some_and(|f| f != function) {
            return false;
        }
        if self.empty && function != "C_GetSlotList" {
            return false;
        }
        if let Some(at) = self.at {
            return index == at;
        }
        if let Some(n) = self.nth {
            return nth == n;
        }
        if let Some(from) = self.from {
            return index >= from;
        }
        if let Some(from) = self.from_nth {
            return nth >= from;
        }
        true
    }

    pub(crate) fn action(&self) -> Action {
        match self.rv {
            Some(Rv(rv)) if !self.empty => Action::Fail(rv),
            _ => Action::Empty,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(f) = &self.function {
            if !names::FUNCTIONS.contains(&f.as_str()) {
                return Err(format!("fault: unknown function {f:?}"));
            }
        }
        let selectors = [self.at, self.nth, self.from, self.from_nth]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if selectors > 1 {
            return Err("fault: give at most one of at, nth, from, from_nth".into());
        }
        if (self.nth.is_some() || self.from_nth.is_some()) && self.function.is_none() {
            return Err("fault: nth and from_nth count calls of one function: name it".into());
        }
        match (self.rv, self.empty) {
            (Some(_), true) | (None, false) => {
                Err("fault: give exactly one of rv and empty: true".into())
            }
            (None, true) if self.function.as_deref() != Some("C_GetSlotList") => {
                Err("fault: empty: true is for function C_GetSlotList".into())
            }
            _ => Ok(()),
        }
    }
}

/// A PKCS#11 return value, written as its name or as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rv(pub(crate) u64);

impl<'de> Deserialize<'de> for Rv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Number(n) => Ok(Self(n)),
            NameOrNumber::Name(name) => names::rv_value(&name)
                .map(Self)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown return value {name}"))),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Number(u64),
    Name(String),
}

/// A token flag, written as its name (`CKF_USER_PIN_COUNT_LOW`) or as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flag(pub(crate) u64);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Number(n) => Ok(Self(n)),
            NameOrNumber::Name(name) => names::token_flag(&name)
                .map(Self)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown token flag {name}"))),
        }
    }
}

/// A key type, written as a name (`CKK_DSTU4145`, `CKK_EC`, `CKK_RSA`) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyType(pub(crate) u64);

/// CKK_DSTU4145, the Ukrainian vendor key type (CKK_VENDOR_DEFINED | 0x420131).
pub(crate) const CKK_DSTU4145: u64 = 0x8042_0131;

impl Default for KeyType {
    fn default() -> Self {
        Self(CKK_DSTU4145)
    }
}

impl<'de> Deserialize<'de> for KeyType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Number(n) => Ok(Self(n)),
            NameOrNumber::Name(name) => match name.as_str() {
                "CKK_DSTU4145" => Ok(Self(CKK_DSTU4145)),
                "CKK_RSA" => Ok(Self(cryptoki_sys::CKK_RSA)),
                "CKK_EC" => Ok(Self(cryptoki_sys::CKK_EC)),
                _ => Err(serde::de::Error::custom(format!("unknown key type {name}"))),
            },
        }
    }
}

/// The bytes of a fixed-width token field: text (may hold `\u0000`) or `{"hex": "…"}` for
/// bytes that are not UTF-8. Shorter values are padded with spaces, as PKCS#11 pads.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Field {
    /// Text, as UTF-8 bytes.
    Text(String),
    /// Raw bytes in hex.
    Hex {
        /// The bytes, hex-encoded.
        hex: String,
    },
}

impl Field {
    /// The field's bytes, space-padded to `width`; an error when longer.
    pub(crate) fn padded(&self, width: usize) -> Result<Vec<u8>, String> {
        let mut bytes = match self {
            Self::Text(text) => text.as_bytes().to_vec(),
            Self::Hex { hex } => decode_hex(hex)?,
        };
        if bytes.len() > width {
            return Err(format!(
                "{} bytes do not fit a {width}-byte token field",
                bytes.len()
            ));
        }
        bytes.resize(width, b' ');
        Ok(bytes)
    }
}

/// What C_GetTokenInfo reports for the token whose real serial is `serial` (`*`: every token).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRewrite {
    /// The real serial (trailing spaces trimmed), or `*`.
    pub(crate) serial: String,
    /// The replacement fields.
    pub(crate) report: TokenReport,
}

impl TokenRewrite {
    pub(crate) fn applies_to(&self, real_serial: &str) -> bool {
        self.serial == "*" || self.serial == real_serial
    }
}

/// Replacement CK_TOKEN_INFO fields; absent ones stay as the real module said.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenReport {
    /// serialNumber (16 bytes).
    #[serde(default)]
    pub(crate) serial: Option<Field>,
    /// model (16 bytes).
    #[serde(default)]
    pub(crate) model: Option<Field>,
    /// manufacturerID (32 bytes).
    #[serde(default)]
    pub(crate) manufacturer: Option<Field>,
    /// label (32 bytes).
    #[serde(default)]
    pub(crate) label: Option<Field>,
    /// Flags added.
    #[serde(default)]
    pub(crate) set_flags: Vec<Flag>,
    /// Flags removed.
    #[serde(default)]
    pub(crate) clear_flags: Vec<Flag>,
}

/// Which key objects report another CKA_KEY_TYPE.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRewrite {
    /// CKA_ID of the key, hex.
    pub(crate) id: String,
    /// Only on the token with this real serial; absent: any token.
    #[serde(default)]
    pub(crate) serial: Option<String>,
    /// `private` (default), `public` or `any`.
    #[serde(default)]
    pub(crate) class: KeyClass,
    /// The key type reported; default CKK_DSTU4145.
    #[serde(default)]
    pub(crate) key_type: KeyType,
}

/// Which key objects a [`KeyRewrite`] applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyClass {
    /// CKO_PRIVATE_KEY.
    #[default]
    Private,
    /// CKO_PUBLIC_KEY.
    Public,
    /// Both.
    Any,
}

impl KeyRewrite {
    /// Whether the object of class `class` with CKA_ID `id` on the token `serial` is this key.
    pub(crate) fn applies_to(&self, class: u64, id: &[u8], serial: Option<&str>) -> bool {
        let class_ok = match self.class {
            KeyClass::Private => class == cryptoki_sys::CKO_PRIVATE_KEY,
            KeyClass::Public => class == cryptoki_sys::CKO_PUBLIC_KEY,
            KeyClass::Any => {
                class == cryptoki_sys::CKO_PRIVATE_KEY || class == cryptoki_sys::CKO_PUBLIC_KEY
            }
        };
        let serial_ok = match &self.serial {
            None => true,
            Some(wanted) => serial == Some(wanted.as_str()),
        };
        class_ok && serial_ok && decode_hex(&self.id).is_ok_and(|want| want == id)
    }
}

/// Replacement CK_INFO fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LibraryRewrite {
    /// manufacturerID (32 bytes).
    #[serde(default)]
    pub(crate) manufacturer: Option<Field>,
    /// libraryDescription (32 bytes).
    #[serde(default)]
    pub(crate) description: Option<Field>,
}

impl Plan {
    /// Parses and checks a plan.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let plan: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        plan.validate()?;
        Ok(plan)
    }

    fn validate(&self) -> Result<(), String> {
        for fault in &self.faults {
            fault.validate()?;
        }
        for rewrite in &self.tokens {
            let r = &rewrite.report;
            for (field, width) in [(&r.serial, 16), (&r.model, 16)] {
                if let Some(f) = field {
                    f.padded(width)?;
                }
            }
            for field in [&r.manufacturer, &r.label].into_iter().flatten() {
                field.padded(32)?;
            }
        }
        for key in &self.keys {
            decode_hex(&key.id).map_err(|e| format!("keys: id {:?}: {e}", key.id))?;
        }
        for field in [&self.library.manufacturer, &self.library.description]
            .into_iter()
            .flatten()
        {
            field.padded(32)?;
        }
        Ok(())
    }

    /// The first fault that applies to this call.
    pub(crate) fn fault(&self, function: &str, index: u64, nth: u64) -> Option<Action> {
        self.faults
            .iter()
            .find(|f| f.matches(function, index, nth))
            .map(Fault::action)
    }

    /// Whether slots can look empty (hidden tokens), so slot answers must be filtered.
    pub(crate) fn hides(&self) -> bool {
        !self.hidden.is_empty()
    }

    /// Whether the token with this real serial is hidden.
    pub(crate) fn is_hidden(&self, real_serial: &str) -> bool {
        self.hidden.iter().any(|s| s == real_serial)
    }

    /// Whether C_GetTokenInfo answers may change.
    pub(crate) fn rewrites_tokens(&self) -> bool {
        !self.tokens.is_empty() || self.reinit_changes_serial
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text).map_err(|e| format!("{text:?} is not hex: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_plan_has_no_faults_and_emulates_slot_events() -> Result<(), String> {
        let plan = Plan::parse("{}")?;
        assert!(plan.faults.is_empty() && plan.slot_events && !plan.hides());
        assert_eq!(plan.fault("C_GetSlotList", 1, 1), None);
        Ok(())
    }

    #[test]
    fn faults_select_by_index_nth_and_from() -> Result<(), String> {
        let plan = Plan::parse(
            r#"{"faults": [
                {"at": 7, "rv": "CKR_DEVICE_REMOVED"},
                {"function": "C_FindObjects", "nth": 2, "rv": "CKR_DEVICE_ERROR"},
                {"function": "C_GetTokenInfo", "from": 30, "rv": 5},
                {"function": "C_GetSlotList", "from_nth": 3, "empty": true}
            ]}"#,
        )?;
        let removed = Some(Action::Fail(cryptoki_sys::CKR_DEVICE_REMOVED));
        assert_eq!(plan.fault("C_Login", 7, 1), removed);
        assert_eq!(plan.fault("C_Login", 8, 1), None);
        assert_eq!(
            plan.fault("C_FindObjects", 9, 2),
            Some(Action::Fail(cryptoki_sys::CKR_DEVICE_ERROR))
        );
        assert_eq!(plan.fault("C_FindObjects", 10, 3), None);
        assert_eq!(plan.fault("C_GetTokenInfo", 29, 5), None);
        assert_eq!(plan.fault("C_GetTokenInfo", 31, 6), Some(Action::Fail(5)));
        assert_eq!(plan.fault("C_GetSlotList", 40, 2), None);
        assert_eq!(plan.fault("C_GetSlotList", 41, 3), Some(Action::Empty));
        Ok(())
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        for (text, wanted) in [
            (r#"{"faults": [{"at": 1}]}"#, "exactly one of rv"),
            (
                r#"{"faults": [{"at": 1, "nth": 2, "function": "C_Login", "rv": 5}]}"#,
                "at most one",
            ),
            (r#"{"faults": [{"nth": 1, "rv": 5}]}"#, "name it"),
            (
                r#"{"faults": [{"function": "C_GetTokenInfo", "empty": true}]}"#,
                "C_GetSlotList",
            ),
            (
                r#"{"faults": [{"function": "C_Nonsense", "rv": 5}]}"#,
                "unknown function",
            ),
            (r#"{"faults": [{"rv": "CKR_NONSENSE"}]}"#, "unknown return"),
            (
                r#"{"tokens": [{"serial": "*", "report": {"serial": "12345678901234567"}}]}"#,
                "do not fit",
            ),
            (r#"{"keys": [{"id": "0g"}]}"#, "not hex"),
            (r#"{"hide": []}"#, "unknown field"),
        ] {
            match Plan::parse(text) {
                Ok(_) => panic!("{text} was accepted"),
                Err(e) => assert!(e.contains(wanted), "{text}: {e}"),
            }
        }
    }

    #[test]
    fn fields_pad_with_spaces_and_keep_nul_and_raw_bytes() -> Result<(), String> {
        let text = Field::Text("ab\0".into());
        assert_eq!(text.padded(5)?, b"ab\0  ");
        let hex = Field::Hex { hex: "ff00".into() };
        assert_eq!(hex.padded(3)?, vec![0xff, 0, b' ']);
        Ok(())
    }

    #[test]
    fn key_rewrites_match_class_id_and_serial() -> Result<(), String> {
        let plan = Plan::parse(r#"{"keys": [{"id": "01", "serial": "abc"}]}"#)?;
        let key = &plan.keys[0];
        assert_eq!(key.key_type, KeyType(CKK_DSTU4145));
        let private = cryptoki_sys::CKO_PRIVATE_KEY;
        assert!(key.applies_to(private, &[1], Some("abc")));
        assert!(!key.applies_to(private, &[1], Some("abd")));
        assert!(!key.applies_to(private, &[2], Some("abc")));
        assert!(!key.applies_to(cryptoki_sys::CKO_PUBLIC_KEY, &[1], Some("abc")));
        Ok(())
    }
}
