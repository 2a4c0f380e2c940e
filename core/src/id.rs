//! Identifiers and raw byte strings as PKCS#11 hands them out.
//!
//! Object labels and CKA_IDs are raw bytes: they are kept losslessly ([`RawBytes`], stored
//! and serialised as hex) and shown escaped, so a hostile label can never break a table, a
//! terminal or a JSON document.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Raw bytes of a PKCS#11 attribute (CKA_ID, CKA_LABEL), kept exactly as read.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawBytes(Vec<u8>);

impl RawBytes {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// Parses lower- or upper-case hex.
    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode(text).ok().map(Self)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes as text for people: valid UTF-8 stays readable, control characters and
    /// invalid bytes become `\xNN` escapes.
    pub fn escaped(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for chunk in self.0.utf8_chunks() {
            push_escaped(&mut out, chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }
}

/// Escapes control characters (and the backslash) of a string for display.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{{{n:x}}}"));
                }
            }
            c => out.push(c),
        }
    }
}

impl fmt::Debug for RawBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawBytes({})", self.hex())
    }
}

impl fmt::Display for RawBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.escaped())
    }
}

impl Serialize for RawBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected hex bytes"))
    }
}

/// The identity of a carrier: manufacturer, model and serial as the token reports them
/// (trailing padding removed). Slot ids are never identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CarrierId {
    /// CK_TOKEN_INFO.manufacturerID.
    pub manufacturer: String,
    /// CK_TOKEN_INFO.model.
    pub model: String,
    /// CK_TOKEN_INFO.serialNumber.
    pub serial: String,
    /// For weak serials only: a digest of the label and public keys that tells apart
    /// carriers sharing a weak serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discriminator: Option<String>,
}

impl CarrierId {
    /// The key this carrier has in the journal: `manufacturer/model/serial[#discriminator]`.
    pub fn key(&self) -> String {
        let mut key = format!("{}/{}/{}", self.manufacturer, self.model, self.serial);
        if let Some(d) = &self.discriminator {
            key.push('#');
            key.push_str(d);
        }
        key
    }
}

/// True for serials that cannot tell carriers apart: empty, all one digit (`0000…`), or
/// well-known placeholders.
pub fn is_weak_serial(serial: &str) -> bool {
    let s = serial.trim();
    if s.is_empty() || s.len() < 4 {
        return true;
    }
    let mut chars = s.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return true;
    }
    matches!(s, "1234" | "12345678" | "123456789" | "0123456789")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keeps_cyrillic_and_escapes_controls_and_invalid_bytes() {
        let raw = RawBytes::new(b"\xd0\x9a\xd0\xb5\x1b[31m\n\xff\\".to_vec());
        assert_eq!(raw.escaped(), "Ке\\x1b[31m\\x0a\\xff\\\\");
        assert_eq!(raw.hex(), "d09ad0b51b5b33316d0aff5c");
    }

    #[test]
    fn raw_bytes_round_trip_through_json() {
        let raw = RawBytes::new(vec![0, 1, 0xfe]);
        let json = serde_json::to_string(&raw).unwrap_or_default();
        assert_eq!(json, "\"0001fe\"");
        let back: RawBytes = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, raw);
    }

    #[test]
    fn weak_serials() {
        for s in ["", "0000000000000000", "1234", "   ", "1111"] {
            assert!(is_weak_serial(s), "{s:?}");
        }
        for s in ["a1b2c3d4e5f60718", "2122385"] {
            assert!(!is_weak_serial(s), "{s:?}");
        }
    }
}
