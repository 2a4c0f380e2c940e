//! Which modules learn of new tokens only at `C_Initialize`.
//!
//! The PKCS#11 slot list of a hardware module (a smart-card reader through PC/SC) is live:
//! `C_GetSlotList` shows a card as soon as it is inserted. File-backed software tokens are
//! different: SoftHSM2 reads its token directory only in `C_Initialize`, so a token created by
//! another process appears only after `C_Finalize` + `C_Initialize`, and a deleted token stays
//! listed (its `C_GetTokenInfo` fails with `CKR_GENERAL_ERROR`) until then. Objects added to an
//! existing token by another process are visible without re-initialising (measured with
//! SoftHSM 2.6.1). This module only knows which libraries behave like that; how often to
//! re-initialise is the caller's decision.

use super::Module;
use crate::inventory::{CallError, ModuleInfo};

/// Library manufacturer ids (`CK_INFO.manufacturerID`, trailing blanks trimmed) of modules
/// measured to show tokens created by other processes only after re-initialisation.
const REINIT_TO_SEE_NEW_TOKENS: &[&str] = &["SoftHSM"];

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

    /// True when this module is known to learn of tokens created or deleted by other
    /// processes only at `C_Initialize`, so that a watcher must call
    /// [`Module::reinitialize`] to notice them.
    pub fn sees_new_tokens_only_at_initialize(&self) -> bool {
        sees_new_tokens_only_at_initialize(&self.info)
    }
}

fn sees_new_tokens_only_at_initialize(info: &ModuleInfo) -> bool {
    REINIT_TO_SEE_NEW_TOKENS.contains(&info.manufacturer.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(manufacturer: &str) -> ModuleInfo {
        ModuleInfo {
            path: "/x.so".into(),
            manufacturer: manufacturer.into(),
            description: "Implementation of PKCS11".into(),
            version: "2.6".into(),
        }
    }

    #[test]
    fn softhsm_is_known_to_need_reinit_others_are_not() {
        assert!(sees_new_tokens_only_at_initialize(&info("SoftHSM")));
        assert!(!sees_new_tokens_only_at_initialize(&info("OpenSC Project")));
        assert!(!sees_new_tokens_only_at_initialize(&info("")));
    }
}
