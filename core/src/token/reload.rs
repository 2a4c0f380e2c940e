//! How a watcher learns of tokens created or deleted by other processes: slot events.
//!
//! A module with a live slot list (OpenSC over PC/SC) reports insertions and removals through
//! `C_WaitForSlotEvent`, and `C_GetSlotList` shows the change at once. The software and remote
//! modules measured here answer `C_WaitForSlotEvent` with `CKR_FUNCTION_NOT_SUPPORTED` and
//! also keep their slot list frozen between `C_Initialize` and `C_Finalize`: SoftHSM2 2.6
//! reads its token directory only at `C_Initialize` (a deleted token stays listed, its
//! `C_GetTokenInfo` failing with `CKR_GENERAL_ERROR`), kryoptic 1.5 opens its slots' databases
//! then, tpm2-pkcs11 1.9 reads its store then, and p11-kit's client module shows the remote's
//! tokens of its last `C_Initialize`. Objects added to an existing token by another process
//! are visible without re-initialising on all of them.
//!
//! So the rule, by behaviour and not by name: a module that refuses to wait for slot events
//! ([`crate::Error::NotSupported`] from [`SlotEvents::wait`]) must be re-initialised
//! ([`Module::reinitialize`]) to see new tokens; one that waits has a live slot list. How
//! often to re-initialise is the caller's decision (its CPU budget).

use cryptoki::context::Pkcs11;
use cryptoki::slot::Slot;

use crate::id::percent_encode;
use crate::inventory::{CallError, CarrierSnapshot};

use super::{map_err, pin, Module};
use crate::error::Result;

/// Waits for slot events (C_WaitForSlotEvent) of one module, on a thread of the caller's
/// choosing: a token inserted or removed ends the wait at once instead of at the next poll.
pub struct SlotEvents {
    ctx: Pkcs11,
}

impl std::fmt::Debug for SlotEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotEvents").finish_non_exhaustive()
    }
}

impl SlotEvents {
    /// Blocks until a slot changes and returns its id. An error means waiting is over for
    /// this module: [`crate::Error::NotSupported`] when it has no slot events (SoftHSM2,
    /// kryoptic, tpm2-pkcs11, p11-kit's client), another error when it was finalised
    /// (CKR_CRYPTOKI_NOT_INITIALIZED).
    pub fn wait(&self) -> Result<u64> {
        self.ctx
            .wait_for_slot_event()
            .map(|slot| slot.id())
            .map_err(|e| map_err("C_WaitForSlotEvent", e))
    }
}

/// What a module's library description (`CK_INFO.libraryDescription`) says when it has lost
/// what it fronts: p11-kit's remote client answers "p11-kit (no connection)" and an empty slot
/// list, all with CKR_OK, once its server is gone (measured with p11-kit 0.24).
const DISCONNECTED: &[&str] = &["(no connection)"];

impl Module {
    /// When the module says it has lost its connection (asked afresh with C_GetInfo), why;
    /// an empty slot list from such a module shows nothing about the carriers.
    pub fn disconnected(&self) -> Option<CallError> {
        let ctx = self.ctx().ok()?;
        let info = ctx.get_library_info().ok()?;
        let description = info.library_description().trim_end().to_owned();
        DISCONNECTED
            .iter()
            .any(|d| description.contains(d))
            .then(|| CallError {
                call: "C_GetInfo".into(),
                rv: format!("CKR_OK, library \"{description}\""),
            })
    }

    /// Whether `slot` still shows the token last read there (`known`; `None`: a token that
    /// is not initialised), as far as C_GetTokenInfo alone tells: initialised or not, label,
    /// manufacturer, model, serial and flags. One call, compared in place: what a watcher asks
    /// of every known slot after each re-initialisation of a module whose slot ids may stay
    /// the same for another token (kryoptic initialises a new token in a slot that already
    /// existed), so nothing is built that the comparison does not need.
    pub fn token_is(&self, slot: u64, known: Option<&CarrierSnapshot>) -> Result<bool> {
        let ctx = self.ctx()?;
        let slot = Slot::try_from(slot).map_err(|e| map_err("C_GetSlotList", e))?;
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| map_err("C_GetTokenInfo", e))?;
        Ok(match known {
            None => !info.token_initialized(),
            Some(k) => {
                info.token_initialized()
                    && pin::token_flags(&info) == k.flags
                    && encodes_to(info.serial_number(), &k.id.serial)
                    && encodes_to(info.label(), &k.label)
                    && encodes_to(info.manufacturer_id(), &k.id.manufacturer)
                    && encodes_to(info.model(), &k.id.model)
            }
        })
    }

    /// A handle to wait for this module's slot events on another thread. Finalising the
    /// module (drop, [`Module::reinitialize`]) ends a wait in progress with an error.
    pub fn slot_events(&self) -> Option<SlotEvents> {
        self.ctx.as_ref().map(|ctx| SlotEvents { ctx: ctx.clone() })
    }
}

/// True when the token string `raw` (space-padded) is `stored` as `TokenStrings::of` makes
/// it; without allocating for the strings of ordinary tokens.
fn encodes_to(raw: &str, stored: &str) -> bool {
    let text = raw.trim_end();
    if text.chars().any(|c| c.is_control() || c == '%') {
        percent_encode(text) == stored
    } else {
        text == stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_strings_compare_as_they_are_stored() {
        assert!(encodes_to(
            "SoftHSM project                 ",
            "SoftHSM project"
        ));
        assert!(!encodes_to("SoftHSM project", "SoftHSM"));
        // tpm2-pkcs11's model string holds NUL bytes: stored percent-encoded.
        let model = "SW   TPM\0\0\0\0\0\0\0\0";
        assert!(encodes_to(model, &percent_encode(model.trim_end())));
        assert!(!encodes_to(model, "SW   TPM"));
        // A `%` that reads as an escape is stored escaped.
        assert!(encodes_to("50%41  ", "50%2541"));
        assert!(!encodes_to("50%41", "50%41"));
    }
}
