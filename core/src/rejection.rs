//! Why a destruction order was refused: a stable code and a message for people.
//!
//! Kept apart from `order` so that the error type can carry a refusal without depending on
//! order parsing and verification.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an order was refused. The code is stable (JSON, journal); the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectCode {
    /// Larger than [`crate::order::MAX_ORDER_BYTES`] (or the signature file larger than its limit).
    Oversized,
    /// Not a JSON order document (syntax, unknown or missing fields, truncated).
    Malformed,
    /// A field has a value that is not allowed.
    InvalidField,
    /// No signature file, or no signature in it.
    SignatureMissing,
    /// A signature block does not parse.
    SignatureMalformed,
    /// Signed for another namespace than [`crate::order::NAMESPACE`].
    WrongNamespace,
    /// Signed by a key that is not in allowed_signers.
    UnknownSigner,
    /// The signer's allowed_signers line does not allow this namespace or this time.
    SignerNotAllowed,
    /// The signature does not match the order (forged or altered).
    SignatureInvalid,
    /// Fewer distinct allowed signers than required.
    NotEnoughSigners,
    /// `issued_at` is in the future.
    NotYetValid,
    /// `not_after` has passed.
    Expired,
    /// This order was executed already.
    AlreadyExecuted,
    /// An order with the same id but other content is known.
    IdConflict,
    /// The target carrier is not present.
    TargetAbsent,
    /// More than one present carrier matches the target.
    TargetAmbiguous,
    /// The carrier with the serial does not match manufacturer or model.
    TargetMismatch,
    /// The carrier does not hold the certificates the order names.
    CertificateMismatch,
    /// The PIN the method needs is not available.
    PinMissing,
}

impl RejectCode {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::InvalidField => "invalid_field",
            Self::SignatureMissing => "signature_missing",
            Self::SignatureMalformed => "signature_malformed",
            Self::WrongNamespace => "wrong_namespace",
            Self::UnknownSigner => "unknown_signer",
            Self::SignerNotAllowed => "signer_not_allowed",
            Self::SignatureInvalid => "signature_invalid",
            Self::NotEnoughSigners => "not_enough_signers",
            Self::NotYetValid => "not_yet_valid",
            Self::Expired => "expired",
            Self::AlreadyExecuted => "already_executed",
            Self::IdConflict => "id_conflict",
            Self::TargetAbsent => "target_absent",
            Self::TargetAmbiguous => "target_ambiguous",
            Self::TargetMismatch => "target_mismatch",
            Self::CertificateMismatch => "certificate_mismatch",
            Self::PinMissing => "pin_missing",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: a stable code and an explanation that says what to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Stable code.
    pub code: RejectCode,
    /// Explanation for people.
    pub message: String,
}

impl Rejection {
    /// A rejection with this code and message.
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Rejection {}
