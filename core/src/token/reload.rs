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

use super::{map_err, Module};
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

impl Module {
    /// A handle to wait for this module's slot events on another thread. Finalising the
    /// module (drop, [`Module::reinitialize`]) ends a wait in progress with an error.
    pub fn slot_events(&self) -> Option<SlotEvents> {
        self.ctx.as_ref().map(|ctx| SlotEvents { ctx: ctx.clone() })
    }
}
