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

/// Makes a token string (CK_TOKEN_INFO label, manufacturer, model, serial) printable the one
/// way custody prints and accepts identifiers: the percent-encoding of PKCS#11 URIs (RFC 7512).
/// Control characters (C0, DEL, C1: NUL bytes in tpm2-pkcs11's model string, escape
/// sequences) become `%XX` per UTF-8 byte, and so does a `%` that would otherwise read as an
/// escape (followed by two hex digits). Everything else stays as it is, so the strings of
/// ordinary tokens, and the journal keys made of them, are unchanged. [`percent_decode`]
/// gives back the original.
pub fn percent_encode(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() || c == '%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 8);
    for (i, c) in text.char_indices() {
        let escape = c.is_control()
            || (c == '%'
                && bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit());
        if escape {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`percent_encode`]: every `%XX` becomes the byte it names; a `%` not followed by
/// two hex digits stays. Bytes that do not form UTF-8 are replaced with U+FFFD.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_pair = bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        if hex_pair {
            let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(digit(bytes[i + 1]) * 16 + digit(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    /// For weak serials only: tells apart carriers sharing a weak serial. Made from the
    /// label when the carrier is first seen ([`weak_discriminator`]) and kept from then on:
    /// content never changes it (see `inventory::identity`).
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

/// The discriminator a weak-serial carrier gets when first seen: a digest of its label (the
/// one token string that tells such tokens apart, as on tpm2-pkcs11 where every serial reads
/// `0000000000000000`). Never of its objects: adding or removing a certificate or key does
/// not make another carrier.
pub fn weak_discriminator(label: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("label\n{label}").as_bytes());
    hex::encode(&digest[..8])
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
    fn percent_encoding_makes_token_strings_printable_and_round_trips() {
        let model = "tpm2\0\0\0\0";
        let enc = percent_encode(model);
        assert_eq!(enc, "tpm2%00%00%00%00");
        assert!(!enc.chars().any(char::is_control));
        assert_eq!(percent_decode(&enc), model);
        // ordinary strings are unchanged, so existing journal keys stay what they were
        for plain in [
            "SoftHSM v2",
            "PKCS#15 emulated",
            "50%",
            "a%zz",
            "Токен",
            "%",
        ] {
            assert_eq!(percent_encode(plain), plain);
            assert_eq!(percent_decode(&percent_encode(plain)), plain);
        }
        // a literal escape-like sequence is escaped so that it decodes to itself
        assert_eq!(percent_encode("%41"), "%2541");
        assert_eq!(percent_decode("%2541"), "%41");
        for nasty in ["\x1b[31mred", "a\nb", "\u{85}x", "\u{7f}"] {
            let e = percent_encode(nasty);
            assert!(!e.chars().any(char::is_control), "{e:?}");
            assert_eq!(percent_decode(&e), nasty);
        }
    }

    #[test]
    fn weak_discriminator_depends_on_the_label_only() {
        assert_eq!(weak_discriminator("a"), weak_discriminator("a"));
        assert_ne!(weak_discriminator("a"), weak_discriminator("b"));
        assert_eq!(weak_discriminator("a").len(), 16);
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
