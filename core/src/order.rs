//! Destruction orders: the signed JSON documents that authorise a wipe.
//!
//! An order is a small JSON document ([`DestructionOrder`]) signed with OpenSSH's SSHSIG
//! format in the namespace [`NAMESPACE`] (`ssh-keygen -Y sign -n custody-order FILE` writes
//! `FILE.sig`). custody trusts the keys of an OpenSSH `allowed_signers` file
//! ([`AllowedSigners`]). [`check`] explains everything about an order; [`verify`] is the only
//! way to obtain a [`VerifiedOrder`], which is the only thing [`crate::wipe`] accepts.
//!
//! What verification covers: size (at most [`MAX_ORDER_BYTES`], refused before parsing),
//! well-formed JSON with exactly the known fields, field syntax, signatures (namespace, signer
//! allowed for the namespace and at this time, cryptographic validity, enough *distinct*
//! signers) and the validity window. What it does not cover, because it needs the journal or
//! the token: replay (an executed order, an id reused with other content) and the target
//! (serial, certificates) — [`crate::wipe`] checks those.
//!
//! Several signatures (the two-person rule) live in one signature file: armored
//! `SSH SIGNATURE` blocks one after the other (see [`signature`]).
//!
//! This module must not touch PKCS#11 or SQLite.

mod allowed_signers;
pub mod signature;

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::{Date, Duration, OffsetDateTime, UtcOffset};

use crate::error::{Error, Result};
pub use crate::rejection::{RejectCode, Rejection};

pub use allowed_signers::{AllowedSigner, AllowedSigners};

/// The SSHSIG namespace of destruction orders. Signatures made for any other namespace (git
/// commits, files) are refused.
pub const NAMESPACE: &str = "custody-order";
/// Largest order document accepted; larger files are refused before they are parsed.
pub const MAX_ORDER_BYTES: usize = 64 * 1024;
/// Largest signature file accepted.
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;
/// Most signature blocks read from one signature file.
pub const MAX_SIGNATURES: usize = 8;
/// Longest validity window (`not_after - issued_at`) an order may have.
pub const MAX_VALIDITY_DAYS: i64 = 31;
/// Tolerated clock difference between the signer's machine and this one for `issued_at`.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

time::serde::format_description!(iso_date, Date, "[year]-[month]-[day]");

/// A destruction order, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestructionOrder {
    /// Unique id of the order (letters, digits, `.`, `_`, `-`, `:`; at most 64 characters).
    pub id: String,
    /// When the order was issued (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// The order may not be executed after this moment (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The holder's dismissal date (`YYYY-MM-DD`); the wipe is due by the end of the next day.
    #[serde(with = "iso_date")]
    pub dismissed: Date,
    /// Full name of the dismissed holder.
    pub holder: String,
    /// The carrier to wipe.
    pub target: Target,
    /// SHA-256 fingerprints (hex) of certificates that must be on the carrier; empty: not
    /// checked.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// How to destroy the keys.
    pub method: Method,
    /// Full name of the person responsible for the destruction (journal column 5).
    pub responsible: String,
    /// Why (e.g. the dismissal order's number).
    pub reason: String,
}

/// The carrier an order is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// CK_TOKEN_INFO.serialNumber.
    pub serial: String,
    /// CK_TOKEN_INFO.manufacturerID; when given it must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// CK_TOKEN_INFO.model; when given it must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// How keys are destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// C_InitToken with the SO PIN: every object on the carrier goes.
    Reinit,
    /// User login, C_DestroyObject of every private key and the certificates and public keys
    /// sharing its CKA_ID.
    DestroyKeys,
}

impl Method {
    /// `reinit` or `destroy-keys`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reinit => "reinit",
            Self::DestroyKeys => "destroy-keys",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "reinit" => Ok(Self::Reinit),
            "destroy-keys" => Ok(Self::DestroyKeys),
            other => Err(format!(
                "unknown method {other:?}; use reinit or destroy-keys"
            )),
        }
    }
}

impl DestructionOrder {
    /// Parses and checks an order document. Documents larger than [`MAX_ORDER_BYTES`] are
    /// refused without being parsed.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, Rejection> {
        if bytes.len() > MAX_ORDER_BYTES {
            return Err(Rejection::new(
                RejectCode::Oversized,
                format!(
                    "the order is larger than {} KiB; an order is a small JSON document, this file is not one",
                    MAX_ORDER_BYTES / 1024
                ),
            ));
        }
        let order: Self = serde_json::from_slice(bytes).map_err(|e| {
            Rejection::new(
                RejectCode::Malformed,
                format!("the order is not a valid order document: {e}; create orders with `custody order create`"),
            )
        })?;
        order.validate()?;
        Ok(order)
    }

    fn validate(&self) -> std::result::Result<(), Rejection> {
        let bad = |m: String| Err(Rejection::new(RejectCode::InvalidField, m));
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '.' | '_' | '-' | ':'))
            });
        if !id_ok {
            return bad(format!(
                "id {:?} must be 1–64 letters, digits, '.', '_', '-' or ':' starting with a letter or digit",
                crate::id::escape_text(&self.id)
            ));
        }
        for (name, value, max) in [
            ("holder", &self.holder, 256),
            ("responsible", &self.responsible, 256),
            ("reason", &self.reason, 1024),
            ("target.serial", &self.target.serial, 64),
        ] {
            if value.trim().is_empty() {
                return bad(format!("{name} must not be empty"));
            }
            if value.chars().count() > max || value.chars().any(char::is_control) {
                return bad(format!(
                    "{name} must be at most {max} characters without control characters"
                ));
            }
        }
        for (name, value) in [
            ("target.manufacturer", &self.target.manufacturer),
            ("target.model", &self.target.model),
        ] {
            if let Some(v) = value {
                if v.trim().is_empty() || v.chars().count() > 64 || v.chars().any(char::is_control)
                {
                    return bad(format!(
                        "{name}, when given, must be 1–64 characters without control characters"
                    ));
                }
            }
        }
        for c in &self.certificates {
            if c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!(
                    "certificate fingerprint {:?} is not a SHA-256 in hex (64 hex digits)",
                    crate::id::escape_text(c)
                ));
            }
        }
        if self.not_after <= self.issued_at {
            return bad("not_after must be later than issued_at".into());
        }
        if self.not_after - self.issued_at > Duration::days(MAX_VALIDITY_DAYS) {
            return bad(format!(
                "the order is valid for more than {MAX_VALIDITY_DAYS} days; issue orders valid for a short time"
            ));
        }
        Ok(())
    }

    /// The certificate fingerprints in lower case.
    pub fn certificate_fingerprints(&self) -> Vec<String> {
        self.certificates
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect()
    }

    /// The moment the wipe is due: the end of the day after the dismissal date, in `zone`.
    pub fn due(&self, zone: &Zone) -> OffsetDateTime {
        due(self.dismissed, zone)
    }
}

/// The end of the day after `dismissed` (that is, the start of the day after that) in `zone`.
pub fn due(dismissed: Date, zone: &Zone) -> OffsetDateTime {
    let day = dismissed.saturating_add(Duration::days(2));
    zone.start_of_day(day)
}

/// The time zone deadlines and `allowed_signers` times without `Z` are read in: the
/// workstation's local zone (`TZ`, else `/etc/localtime`), as administrators expect.
#[derive(Debug, Clone)]
pub struct Zone(jiff::tz::TimeZone);

impl Zone {
    /// The workstation's zone: `TZ` when set (an IANA name or a POSIX TZ string), else
    /// `/etc/localtime`; UTC when neither can be read.
    pub fn system() -> Self {
        Self(jiff::tz::TimeZone::system())
    }

    /// A zone already resolved (the organisation's, from the configuration).
    pub fn from_tz(zone: jiff::tz::TimeZone) -> Self {
        Self(zone)
    }

    /// UTC.
    pub fn utc() -> Self {
        Self(jiff::tz::TimeZone::UTC)
    }

    /// An IANA zone name (`Europe/Kyiv`) or a POSIX TZ string (`EET-2EEST,M3.5.0/3,M10.5.0/4`).
    pub fn named(name: &str) -> Result<Self> {
        jiff::tz::TimeZone::get(name)
            .or_else(|_| jiff::tz::TimeZone::posix(name))
            .map(Self)
            .map_err(|e| Error::Refused(format!("unknown time zone {name:?}: {e}")))
    }

    /// The zone's name: IANA name when known, else `local`.
    pub fn name(&self) -> String {
        self.0.iana_name().unwrap_or("local").to_owned()
    }

    /// The offset from UTC at moment `t`.
    pub fn offset_at(&self, t: OffsetDateTime) -> UtcOffset {
        let secs = jiff::Timestamp::from_second(t.unix_timestamp())
            .map(|ts| self.0.to_offset(ts).seconds())
            .unwrap_or(0);
        UtcOffset::from_whole_seconds(secs).unwrap_or(UtcOffset::UTC)
    }

    /// `t` shown in this zone.
    pub fn local(&self, t: OffsetDateTime) -> OffsetDateTime {
        t.to_offset(self.offset_at(t))
    }

    /// The first moment of `date` in this zone (a day starting in a DST gap starts at the
    /// gap's end).
    pub fn start_of_day(&self, date: Date) -> OffsetDateTime {
        self.at(date, 0, 0, 0)
    }

    /// The moment of a local wall-clock time in this zone.
    pub fn at(&self, date: Date, hour: u8, minute: u8, second: u8) -> OffsetDateTime {
        let civil = jiff::civil::DateTime::new(
            date.year() as i16,
            u8::from(date.month()) as i8,
            date.day() as i8,
            hour as i8,
            minute as i8,
            second as i8,
            0,
        );
        let secs = civil
            .and_then(|dt| dt.to_zoned(self.0.clone()))
            .map(|z| z.timestamp().as_second());
        match secs {
            Ok(s) => OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH),
            Err(_) => date
                .with_hms(hour, minute, second)
                .map(|d| d.assume_utc())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        }
    }
}

/// One allowed signer whose signature counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// The principals of the allowed_signers line.
    pub principals: String,
    /// The key's fingerprint (`SHA256:…`, as ssh-keygen prints it).
    pub key_fingerprint: String,
    /// The line in allowed_signers.
    pub line: usize,
}

/// What was found about one signature block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureCheck {
    /// 1-based position in the signature file.
    pub index: usize,
    /// The signing key's fingerprint, when the block parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// The namespace it was made for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The allowed signer it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
    /// True when this signature counts.
    pub valid: bool,
    /// Why it does not count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Rejection>,
}

/// Everything [`check`] found out about an order, acceptable or not.
#[derive(Debug)]
pub struct Verification {
    /// The parsed order, when it parsed (its claims are unverified unless `result` is Ok).
    pub order: Option<DestructionOrder>,
    /// SHA-256 (hex) of the order bytes as given (of the first bytes when oversized).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// One entry per signature block.
    pub signatures: Vec<SignatureCheck>,
    /// Distinct allowed signers with a valid signature.
    pub distinct_signers: usize,
    /// Distinct signers required.
    pub required_signers: u32,
    /// The verdict.
    pub result: std::result::Result<VerifiedOrder, Rejection>,
}

/// An order whose signatures and validity window were verified. Only [`verify`] and [`check`]
/// make one; [`crate::wipe`] accepts nothing else.
#[derive(Debug, Clone)]
pub struct VerifiedOrder {
    order: DestructionOrder,
    sha256: String,
    text: String,
    signers: Vec<Signer>,
}

impl VerifiedOrder {
    /// The order.
    pub fn order(&self) -> &DestructionOrder {
        &self.order
    }

    /// SHA-256 (hex) of the signed bytes: two documents with the same id and another hash are
    /// different orders.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The signed document, exactly as signed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The allowed signers whose signatures counted.
    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }
}

/// The input of a verification: the order bytes and the signature file bytes, each read with
/// a size cap ([`read_capped`]).
#[derive(Debug, Clone)]
pub struct OrderInput {
    /// Order bytes (at most `MAX_ORDER_BYTES + 1` when read with [`read_capped`]).
    pub order: Vec<u8>,
    /// The order file's real size.
    pub order_size: u64,
    /// Signature file bytes; `None` when there is no signature file.
    pub signatures: Option<Vec<u8>>,
    /// The signature file's real size.
    pub signatures_size: u64,
}

impl OrderInput {
    /// Reads `order` and `signature` (default: `order` + `.sig`), each capped one byte past
    /// its limit so that oversized files are recognised without being read whole.
    pub fn read(order: &Path, signature: Option<&Path>) -> Result<Self> {
        let (bytes, order_size) = read_capped(order, MAX_ORDER_BYTES + 1)?;
        let sig_path = signature
            .map(Path::to_path_buf)
            .unwrap_or_else(|| signature_path(order));
        let (signatures, signatures_size) = match read_capped(&sig_path, MAX_SIGNATURE_BYTES + 1) {
            Ok((s, n)) => (Some(s), n),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                (None, 0)
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            order: bytes,
            order_size,
            signatures,
            signatures_size,
        })
    }
}

/// `FILE.sig`: where `ssh-keygen -Y sign` puts the signature of `FILE`.
pub fn signature_path(order: &Path) -> std::path::PathBuf {
    let mut name = order.as_os_str().to_owned();
    name.push(".sig");
    name.into()
}

/// Reads at most `cap` bytes of a file; returns them and the file's size.
pub fn read_capped(path: &Path, cap: usize) -> Result<(Vec<u8>, u64)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(cap.min(size as usize + 1));
    file.take(cap as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok((bytes, size))
}

/// Verifies an order: the only way to a [`VerifiedOrder`]. See [`check`] for the details of
/// a refusal.
pub fn verify(
    input: &OrderInput,
    allowed: &AllowedSigners,
    required_signers: u32,
    now: OffsetDateTime,
) -> std::result::Result<VerifiedOrder, Rejection> {
    check(input, allowed, required_signers, now).result
}

/// Examines an order and explains why it is or is not acceptable. Checks, in this order:
/// size, document, signatures, validity window.
pub fn check(
    input: &OrderInput,
    allowed: &AllowedSigners,
    required_signers: u32,
    now: OffsetDateTime,
) -> Verification {
    let bytes = &input.order;
    let sha256 = crate::cert::sha256_hex(bytes);
    let size = input.order_size.max(bytes.len() as u64);
    let required_signers = required_signers.max(1);
    let mut v = Verification {
        order: None,
        sha256,
        size,
        signatures: Vec::new(),
        distinct_signers: 0,
        required_signers,
        result: Err(Rejection::new(RejectCode::Malformed, "not checked")),
    };
    if size > MAX_ORDER_BYTES as u64 || bytes.len() > MAX_ORDER_BYTES {
        v.result = Err(Rejection::new(
            RejectCode::Oversized,
            format!(
                "the order file has {size} bytes, more than the {} KiB an order may have; it was not parsed",
                MAX_ORDER_BYTES / 1024
            ),
        ));
        return v;
    }
    let parsed = DestructionOrder::parse(bytes);
    v.order = parsed.as_ref().ok().cloned();
    let Some(sigs) = &input.signatures else {
        v.result = Err(Rejection::new(
            RejectCode::SignatureMissing,
            "the order has no signature file; sign it with `ssh-keygen -Y sign -f KEY -n custody-order FILE` (writes FILE.sig)",
        ));
        return v;
    };
    if input.signatures_size > MAX_SIGNATURE_BYTES as u64 || sigs.len() > MAX_SIGNATURE_BYTES {
        v.result = Err(Rejection::new(
            RejectCode::Oversized,
            format!(
                "the signature file is larger than {} KiB; it is not a signature file",
                MAX_SIGNATURE_BYTES / 1024
            ),
        ));
        return v;
    }
    let order = match parsed {
        Ok(o) => o,
        Err(r) => {
            v.result = Err(r);
            return v;
        }
    };
    let (checks, signers) = signature::check_all(bytes, sigs, allowed, now);
    v.signatures = checks;
    v.distinct_signers = signers.len();
    if signers.len() < required_signers as usize {
        let first_problem = v.signatures.iter().find_map(|c| c.problem.clone());
        v.result = Err(match (signers.len(), first_problem) {
            (0, Some(p)) => p,
            (0, None) => Rejection::new(
                RejectCode::SignatureMissing,
                "the signature file holds no SSH SIGNATURE block; sign the order with `ssh-keygen -Y sign -n custody-order`",
            ),
            (n, _) => Rejection::new(
                RejectCode::NotEnoughSigners,
                format!(
                    "the order has valid signatures by {n} distinct allowed signer(s), {required_signers} are required; \
                     a second person must sign it (several signatures of one key or one principal count once)"
                ),
            ),
        });
        return v;
    }
    if now + CLOCK_SKEW < order.issued_at {
        v.result = Err(Rejection::new(
            RejectCode::NotYetValid,
            format!(
                "the order was issued for {} (UTC), later than now; check the clocks or wait",
                crate::utc::timestamp(order.issued_at)
            ),
        ));
        return v;
    }
    if now > order.not_after {
        v.result = Err(Rejection::new(
            RejectCode::Expired,
            format!(
                "the order expired at {} (UTC); ask for a new signed order",
                crate::utc::timestamp(order.not_after)
            ),
        ));
        return v;
    }
    let text = String::from_utf8_lossy(bytes).into_owned();
    v.result = Ok(VerifiedOrder {
        order,
        sha256: v.sha256.clone(),
        text,
        signers,
    });
    v
}

#[cfg(test)]
mod tests;
