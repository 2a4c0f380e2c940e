//! The carrier a wipe acts on: looked for in every loaded module at once, so that an order
//! matching two present carriers (the same serial in two modules, or two tokens of one
//! module) is refused instead of wiping whichever module came first; and the only carrier a
//! wipe ever offers a PIN to.

use std::cell::Cell;

use secrecy::SecretString;

use crate::error::{Error, Result};
use crate::id::CarrierId;
use crate::order::{RejectCode, Rejection, Target};
use crate::token::{Module, PinSource, PinTarget, Resolution, ResolvedToken};

/// Where an order's target is among the loaded modules.
#[derive(Debug)]
pub enum Located {
    /// Exactly one present carrier matches: the module's index and the carrier.
    Found(usize, ResolvedToken),
    /// The order must be refused (absent, mismatched, ambiguous); nothing was touched.
    Refused(Rejection),
}

/// Looks for `target` in every module. One match anywhere is the target; more than one
/// (in one module or across modules) is `target_ambiguous`; a module that cannot be asked
/// may hold a second match, so it is `target_ambiguous` too.
pub fn locate(modules: &[Module], target: &Target) -> Located {
    let mut found = Vec::new();
    let mut mismatched = Vec::new();
    let mut unasked = Vec::new();
    for (index, module) in modules.iter().enumerate() {
        let path = &module.info().path;
        match module.resolve(
            &target.serial,
            target.manufacturer.as_deref(),
            target.model.as_deref(),
        ) {
            Ok(Resolution::Found(t)) => {
                found.push((index, format!("{path} slot {}", t.slot()), Some(t)))
            }
            Ok(Resolution::Ambiguous(slots)) => {
                for slot in slots {
                    found.push((index, format!("{path} slot {slot}"), None));
                }
            }
            Ok(Resolution::Mismatch(ids)) => mismatched.extend(ids),
            Ok(Resolution::Absent) => {}
            Err(e) => unasked.push(format!("{path} ({e})")),
        }
    }
    let name = describe(target);
    if !unasked.is_empty() && !found.is_empty() {
        return Located::Refused(Rejection::new(
            RejectCode::TargetAmbiguous,
            format!(
                "carrier {name} was found ({}), but module(s) {} could not be asked and may hold another carrier matching the order; nothing was touched. Fix or remove those modules and run the order again",
                found.iter().map(|f| f.1.as_str()).collect::<Vec<_>>().join(", "),
                unasked.join(", ")
            ),
        ));
    }
    if found.len() > 1 {
        return Located::Refused(Rejection::new(
            RejectCode::TargetAmbiguous,
            format!(
                "{} present carriers match the order's target {name} ({}); nothing was touched. Remove all but the one to wipe, or name the carrier fully (manufacturer, model, serial), and run the order again",
                found.len(),
                found.iter().map(|f| f.1.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if let Some((index, _, Some(t))) = found.pop() {
        return Located::Found(index, t);
    }
    if let Some(other) = mismatched.first() {
        return Located::Refused(Rejection::new(
            RejectCode::TargetMismatch,
            format!(
                "carrier {} is a {} {}, but the order names {} {}; nothing was touched",
                target.serial,
                other.manufacturer,
                other.model,
                target.manufacturer.as_deref().unwrap_or("*"),
                target.model.as_deref().unwrap_or("*"),
            ),
        ));
    }
    let modules: Vec<&str> = modules.iter().map(|m| m.info().path.as_str()).collect();
    let mut message = format!(
        "carrier {name} is not present in {}; plug it in and run the order again",
        modules.join(", ")
    );
    if !unasked.is_empty() {
        message.push_str(&format!(
            " (module(s) {} could not be asked)",
            unasked.join(", ")
        ));
    }
    Located::Refused(Rejection::new(RejectCode::TargetAbsent, message))
}

fn describe(target: &Target) -> String {
    match (&target.manufacturer, &target.model) {
        (Some(m), Some(model)) => format!("{m}/{model}/{}", target.serial),
        _ => target.serial.clone(),
    }
}

/// The PINs of one wipe: the PIN given for it (file, stdin) or the configured one, for the
/// target alone. Every other carrier is read without login; a PIN the target rejected is not
/// offered again within the wipe, and a configured one is reported to its source.
pub(super) struct TargetPins<'a> {
    target: &'a CarrierId,
    given: Option<&'a SecretString>,
    configured: &'a dyn PinSource,
    rejected: Cell<bool>,
}

impl<'a> TargetPins<'a> {
    pub(super) fn new(
        target: &'a CarrierId,
        given: Option<&'a SecretString>,
        configured: &'a dyn PinSource,
    ) -> Self {
        Self {
            target,
            given,
            configured,
            rejected: Cell::new(false),
        }
    }

    fn is_target(&self, t: &PinTarget<'_>) -> bool {
        t.carrier.manufacturer == self.target.manufacturer
            && t.carrier.model == self.target.model
            && t.carrier.serial == self.target.serial
    }
}

impl PinSource for TargetPins<'_> {
    fn user_pin(&self, t: &PinTarget<'_>) -> Result<Option<SecretString>> {
        if !self.is_target(t) || self.rejected.get() {
            return Ok(None);
        }
        match self.given {
            Some(pin) => Ok(Some(pin.clone())),
            None => self.configured.user_pin(t),
        }
    }

    fn so_pin(&self, t: &PinTarget<'_>) -> Result<Option<SecretString>> {
        if !self.is_target(t) {
            return Ok(None);
        }
        self.configured.so_pin(t)
    }

    fn login_failed(&self, t: &PinTarget<'_>, error: &Error) {
        if !self.is_target(t) {
            return;
        }
        self.rejected.set(true);
        if self.given.is_none() {
            self.configured.login_failed(t, error);
        }
    }
}
