//! What one read of a module showed ([`ModuleScan`]), and whether it was complete.
//!
//! A read of a module, its slot list, a token or a token's object list either completes or
//! is partial, with the reason: the PKCS#11 call and its return value ([`CallError`]).
//! Carriers read in full go into [`ModuleScan::carriers`]; a token whose read did not finish
//! becomes a [`SlotProblem`]; a module that could not be read at all, or that answered an empty
//! slot list right after device or general errors, is unavailable
//! ([`ModuleScan::unavailability`]). Only a complete observation may remove anything: that rule
//! is applied in one place, `inventory::compare`.

use serde::{Deserialize, Serialize};

use super::snapshot::CarrierSnapshot;
use crate::error::Error;

/// What the module says about itself (C_GetInfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Path the module was loaded from.
    pub path: String,
    /// Library manufacturer.
    pub manufacturer: String,
    /// Library description.
    pub description: String,
    /// Library version `major.minor`.
    pub version: String,
}

impl ModuleInfo {
    /// A module known only by its path (it could not be loaded or asked).
    pub fn unknown(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            manufacturer: String::new(),
            description: String::new(),
            version: String::new(),
        }
    }
}

/// A PKCS#11 call that did not succeed, and what it returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    /// The function, e.g. `C_GetSlotList`.
    pub call: String,
    /// The return value (`CKR_DEVICE_ERROR`) or, when the call never reached the module,
    /// what went wrong.
    pub rv: String,
}

impl CallError {
    /// The call and return value of an error, for the observation it ends.
    pub fn of(e: &Error) -> Self {
        match e {
            Error::Pkcs11 { op, rv } => Self {
                call: (*op).to_owned(),
                rv: rv.clone(),
            },
            Error::WrongPin { .. } => Self {
                call: "C_Login".into(),
                rv: "CKR_PIN_INCORRECT".into(),
            },
            Error::PinLocked => Self {
                call: "C_Login".into(),
                rv: "CKR_PIN_LOCKED".into(),
            },
            other => Self {
                call: String::new(),
                rv: other.to_string(),
            },
        }
    }

    /// True for return values that say the module or its device is in trouble (as opposed to
    /// one token being absent or one object being odd): after one of these, an empty slot
    /// list is not believed.
    pub fn is_device_trouble(&self) -> bool {
        matches!(
            self.rv.as_str(),
            "CKR_DEVICE_ERROR"
                | "CKR_GENERAL_ERROR"
                | "CKR_FUNCTION_FAILED"
                | "CKR_DEVICE_MEMORY"
                | "CKR_CRYPTOKI_NOT_INITIALIZED"
        )
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.call.is_empty() {
            f.write_str(&self.rv)
        } else {
            write!(f, "{} returned {}", self.call, self.rv)
        }
    }
}

/// A slot whose token could not be read completely, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotProblem {
    /// The slot id.
    pub slot: u64,
    /// The carrier's journal key, when its token information was read before the read failed
    /// (a carrier pulled mid-read); `None` when not even that was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// Everything one module showed in one read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleScan {
    /// The module.
    pub module: ModuleInfo,
    /// Every initialised token that was read completely.
    pub carriers: Vec<CarrierSnapshot>,
    /// Slots with a token that could not be read completely.
    pub slot_problems: Vec<SlotProblem>,
    /// Why the module could not be read at all (load, C_Initialize or C_GetSlotList failed);
    /// `None` when its slot list was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<CallError>,
    /// Why the module was not believed when its slot list came back empty (see
    /// [`unavailable_if_empty`]): a module whose server or device died answers an empty list
    /// with CKR_OK (p11-kit's remote module does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trouble_before_empty_list: Option<CallError>,
}

impl ModuleScan {
    /// A read that ended with the slot list (or before it).
    pub fn failed(module: ModuleInfo, failure: CallError) -> Self {
        Self {
            module,
            carriers: Vec::new(),
            slot_problems: Vec::new(),
            failure: Some(failure),
            trouble_before_empty_list: None,
        }
    }

    /// A read whose slot list succeeded. `listed` is the number of slots with a token the
    /// module listed and `trouble` the device or general error it returned last (still
    /// unexplained by a non-empty list since); together they decide whether an empty list
    /// is believed (see [`Self::unavailability`]).
    pub fn read(
        module: ModuleInfo,
        carriers: Vec<CarrierSnapshot>,
        slot_problems: Vec<SlotProblem>,
        listed: usize,
        trouble: Option<CallError>,
    ) -> Self {
        Self {
            module,
            carriers,
            slot_problems,
            failure: None,
            trouble_before_empty_list: unavailable_if_empty(listed, trouble),
        }
    }

    /// Why this module counts as unavailable: it could not be read, or it answered an empty
    /// slot list right after device or general errors. `None` for a healthy module.
    pub fn unavailability(&self) -> Option<CallError> {
        if let Some(f) = &self.failure {
            return Some(f.clone());
        }
        self.trouble_before_empty_list.as_ref().map(|t| CallError {
            call: "C_GetSlotList".into(),
            rv: format!("CKR_OK with no slots, right after {t}"),
        })
    }

    /// True when every slot was read completely from a healthy module: only then may the
    /// comparison remove a carrier of this module.
    pub fn is_complete(&self) -> bool {
        self.unavailability().is_none() && self.slot_problems.is_empty()
    }
}

/// Carriers of `first` that `second` does not show identically (slot ids aside): gone, or
/// with other contents. Empty when two reads of one module agree.
pub fn disagreements<'a>(first: &'a ModuleScan, second: &ModuleScan) -> Vec<&'a CarrierSnapshot> {
    let normal = |c: &CarrierSnapshot| {
        let mut c = c.clone();
        c.slot = 0;
        c
    };
    let again: Vec<CarrierSnapshot> = second.carriers.iter().map(normal).collect();
    first
        .carriers
        .iter()
        .filter(|c| !again.contains(&normal(c)))
        .collect()
}

impl ModuleScan {
    /// The second of two reads of one module, taken because the first would remove
    /// certificates or keys: every carrier that the two reads do not show identically
    /// becomes a [`SlotProblem`] naming it, so nothing of it is removed (a card pulled while
    /// the first read was in progress shows fewer objects, then none). A weak-serial carrier
    /// among them is not named (its key needs the journal), so the whole module's removals
    /// wait for a read that agrees.
    pub fn confirmed_by(self, first: &Self) -> Self {
        let differing: Vec<CarrierSnapshot> =
            disagreements(first, &self).into_iter().cloned().collect();
        if differing.is_empty() || self.failure.is_some() {
            return self;
        }
        let mut second = self;
        for c in differing {
            let key = c.id.key();
            second.carriers.retain(|s| s.id.key() != key);
            second.slot_problems.push(SlotProblem {
                slot: c.slot,
                carrier: (!c.serial_weak).then_some(key),
                message: "its contents changed or it vanished while it was read (two reads \
                          disagree); read again later"
                    .into(),
            });
        }
        second
    }
}

/// The rule for empty slot lists: believed, unless the module was in trouble right before
/// (a device or general error, or its own word that it lost its connection): then the module
/// is unavailable, and the trouble is the reason.
pub fn unavailable_if_empty(listed: usize, trouble: Option<CallError>) -> Option<CallError> {
    trouble.filter(|_| listed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(rv: &str) -> CallError {
        CallError {
            call: "C_GetTokenInfo".into(),
            rv: rv.into(),
        }
    }

    #[test]
    fn an_empty_list_after_device_errors_is_unavailable_otherwise_believed() {
        let m = ModuleInfo::unknown("/m.so");
        let dead = ModuleScan::read(m.clone(), vec![], vec![], 0, Some(err("CKR_DEVICE_ERROR")));
        assert!(!dead.is_complete());
        let why = dead
            .unavailability()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(why.contains("CKR_DEVICE_ERROR"), "{why}");
        let empty = ModuleScan::read(m.clone(), vec![], vec![], 0, None);
        assert!(empty.is_complete());
        // What counts as trouble: device and general errors, not a token that is not there.
        assert!(err("CKR_DEVICE_ERROR").is_device_trouble());
        assert!(!err("CKR_TOKEN_NOT_PRESENT").is_device_trouble());
        let listed = ModuleScan::read(m, vec![], vec![], 2, Some(err("CKR_DEVICE_ERROR")));
        assert!(listed.unavailability().is_none());
    }
}
