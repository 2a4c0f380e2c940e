//! PINs at the PKCS#11 boundary: where they come from ([`PinSource`]), what a source is told
//! about the carrier asking ([`PinTarget`]), and the one gate every user C_Login passes
//! ([`login_refusal`]): a token without a user PIN, or one close to locking, is never offered
//! a PIN by custody.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use secrecy::{ExposeSecret, SecretString};

use super::{map_err, read_keys, Module};
use crate::error::{Error, Result};
use crate::id::CarrierId;
use crate::inventory::{CarrierSnapshot, KeyClass, Login, TokenFlags};

/// A token present in a module, as its token info describes it (no PIN needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// Manufacturer, model and serial (no discriminator).
    pub carrier: CarrierId,
    /// The token label.
    pub label: String,
    /// The slot it is in.
    pub slot: u64,
}

/// The carrier a PIN is asked for.
#[derive(Debug, Clone, Copy)]
pub struct PinTarget<'a> {
    /// Manufacturer, model and serial as the token reports them (no discriminator).
    pub carrier: &'a CarrierId,
    /// The token label, when known.
    pub label: Option<&'a str>,
    /// The module path.
    pub module: &'a str,
    /// The other tokens the same module shows at the time of asking, so that a source can
    /// refuse a rule that would match more than one of them.
    pub others: &'a [TokenIdentity],
}

impl<'a> PinTarget<'a> {
    /// A target known by identity alone (a wipe's resolved carrier).
    pub fn identity(carrier: &'a CarrierId, label: Option<&'a str>, module: &'a str) -> Self {
        Self {
            carrier,
            label,
            module,
            others: &[],
        }
    }
}

/// Where PINs for carriers come from. Implemented by the agent from its configuration; PINs
/// are handed over as [`SecretString`] and exposed only at the C call.
pub trait PinSource {
    /// The user PIN for this carrier, if one is configured. An error means a source exists
    /// but must not or cannot be used (unreadable, rejected before, ambiguous rule): no
    /// login is attempted.
    fn user_pin(&self, target: &PinTarget<'_>) -> Result<Option<SecretString>>;

    /// The SO PIN for this carrier, if one is configured (used only to wipe).
    fn so_pin(&self, _target: &PinTarget<'_>) -> Result<Option<SecretString>> {
        Ok(None)
    }

    /// Called when the token rejected the PIN from this source ([`Error::WrongPin`] or
    /// [`Error::PinLocked`]), so that the caller stops offering it until the source changes.
    /// The default does nothing.
    fn login_failed(&self, _target: &PinTarget<'_>, _error: &Error) {}

    /// False when no carrier can get a PIN from this source: scans then skip the work of
    /// describing neighbours.
    fn any(&self) -> bool {
        true
    }
}

/// A [`PinSource`] with no PINs: scans read only what is visible without login.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPins;

impl PinSource for NoPins {
    fn user_pin(&self, _: &PinTarget<'_>) -> Result<Option<SecretString>> {
        Ok(None)
    }

    fn any(&self) -> bool {
        false
    }
}

/// Why custody must not offer a user PIN to a token with these flags, or `None` when it
/// may: a token without a user PIN (nothing to log in to), or one whose user PIN is locked,
/// on its final try or has had failed tries (CKF_USER_PIN_COUNT_LOW: one more wrong PIN may
/// lock it). The caller warns instead of logging in.
pub fn login_refusal(flags: &TokenFlags) -> Option<&'static str> {
    if !flags.user_pin_initialized {
        Some("the token has no user PIN (user PIN not initialized: CKF_USER_PIN_INITIALIZED is clear); no PIN is offered")
    } else if !flags.login_required {
        Some("the token does not require a login (CKF_LOGIN_REQUIRED is clear); no PIN is offered")
    } else if flags.user_pin_locked {
        Some("the user PIN is locked (CKF_USER_PIN_LOCKED); no PIN was offered. Unblock it with the SO PIN")
    } else if flags.user_pin_final_try {
        Some("the user PIN has one try left (CKF_USER_PIN_FINAL_TRY); custody does not risk it. Log in once by hand with the right PIN to reset the counter")
    } else if flags.user_pin_count_low {
        Some("the token counted wrong user PINs (CKF_USER_PIN_COUNT_LOW); custody does not risk another. Log in once by hand with the right PIN to reset the counter")
    } else {
        None
    }
}

/// True when the refusal is about a PIN counter (a warning), not about a token that simply
/// has no user PIN.
pub(super) fn refusal_is_counter(flags: &TokenFlags) -> bool {
    flags.login_required
        && flags.user_pin_initialized
        && (flags.user_pin_locked || flags.user_pin_final_try || flags.user_pin_count_low)
}

/// The flags of a token info.
pub(super) fn token_flags(info: &TokenInfo) -> TokenFlags {
    TokenFlags {
        token_initialized: info.token_initialized(),
        login_required: info.login_required(),
        user_pin_initialized: info.user_pin_initialized(),
        user_pin_count_low: info.user_pin_count_low(),
        user_pin_final_try: info.user_pin_final_try(),
        user_pin_locked: info.user_pin_locked(),
        so_pin_count_low: info.so_pin_count_low(),
        so_pin_final_try: info.so_pin_final_try(),
        so_pin_locked: info.so_pin_locked(),
        write_protected: info.write_protected(),
    }
}

/// C_Login as the user on the token in `slot`, after reading its flags afresh and letting
/// [`login_refusal`] judge them.
pub(super) fn login_slot(
    ctx: &Pkcs11,
    slot: Slot,
    session: &Session,
    pin: &SecretString,
) -> Result<()> {
    let info = ctx
        .get_token_info(slot)
        .map_err(|e| map_err("C_GetTokenInfo", e))?;
    login(session, &token_flags(&info), pin)
}

/// C_Login as the user, after [`login_refusal`] allowed it for the token's current flags.
pub(super) fn login(session: &Session, flags: &TokenFlags, pin: &SecretString) -> Result<()> {
    if let Some(why) = login_refusal(flags) {
        return Err(Error::Refused(why.to_owned()));
    }
    let pin = cryptoki::types::AuthPin::from(pin.expose_secret());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(map_err("C_Login", e)),
    }
}

impl Module {
    /// Every initialised token the module shows, by token info alone (no session, no PIN).
    /// Tokens whose info cannot be read are left out.
    pub fn identities(&self) -> Result<Vec<TokenIdentity>> {
        let ctx = self.ctx()?;
        // Errors here are remembered as a read's are (`Module::trouble`): an empty slot list
        // after them must not be believed by the read that follows.
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| self.note(map_err("C_GetSlotList", e)))?;
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            let info = match ctx.get_token_info(slot) {
                Ok(info) => info,
                Err(e) => {
                    self.note(map_err("C_GetTokenInfo", e));
                    continue;
                }
            };
            if !info.token_initialized() {
                continue;
            }
            out.push(TokenIdentity {
                carrier: CarrierId {
                    manufacturer: info.manufacturer_id().trim_end().to_owned(),
                    model: info.model().trim_end().to_owned(),
                    serial: info.serial_number().trim_end().to_owned(),
                    discriminator: None,
                },
                label: info.label().trim_end().to_owned(),
                slot: slot.id(),
            });
        }
        Ok(out)
    }
}

/// The login step of a scan: asks the source for a PIN (telling it about the module's other
/// tokens), refuses tokens [`login_refusal`] names, logs in, reads the private keys, logs
/// out. A rejected PIN is reported to the source. Never fails the read of the carrier.
pub(super) fn scan_login(
    module: &Module,
    ctx: &Pkcs11,
    slot: Slot,
    session: &Session,
    snapshot: &mut CarrierSnapshot,
    pins: &dyn PinSource,
    present: Option<&[TokenIdentity]>,
) -> Result<Login> {
    if !pins.any() {
        return Ok(Login::NotAttempted);
    }
    let listed;
    let present = match present {
        Some(p) => p,
        None => match module.identities() {
            Ok(p) => {
                listed = p;
                &listed
            }
            Err(e) => {
                return Ok(Login::Failed(format!(
                    "not logged in: the module's other tokens could not be listed ({e})"
                )))
            }
        },
    };
    let others: Vec<TokenIdentity> = present
        .iter()
        .filter(|t| t.slot != slot.id())
        .cloned()
        .collect();
    let carrier = snapshot.id.clone();
    let target = PinTarget {
        carrier: &carrier,
        label: Some(&snapshot.label),
        module: &snapshot.module,
        others: &others,
    };
    let key = carrier.key();
    let pin = pins.user_pin(&target);
    if !matches!(pin, Ok(None)) {
        if let Some(why) = login_refusal(&snapshot.flags) {
            if refusal_is_counter(&snapshot.flags) {
                tracing::warn!(carrier = %key, reason = why, "PIN not offered");
            } else {
                tracing::warn!(carrier = %key, reason = why, "[[pin]] rule skipped");
            }
            return Ok(Login::Skipped(why.to_owned()));
        }
    }
    let pin = match pin {
        Ok(None) => return Ok(Login::NotAttempted),
        Ok(Some(pin)) => pin,
        Err(e) => {
            tracing::warn!(carrier = %key, cause = %e, "not logged in");
            return Ok(Login::Failed(e.to_string()));
        }
    };
    Ok(match login(session, &snapshot.flags, &pin) {
        Ok(()) => {
            let keys = read_keys(session, KeyClass::Private);
            let _ = session.logout();
            snapshot.private_keys = Some(keys?);
            Login::LoggedIn
        }
        Err(Error::WrongPin { .. }) => {
            // Re-read the counters so the message says how close the token is to locking.
            let low = ctx
                .get_token_info(slot)
                .map(|i| i.user_pin_count_low() || i.user_pin_final_try() || i.user_pin_locked());
            let e = Error::WrongPin {
                retries_low: low.unwrap_or(false),
            };
            tracing::warn!(carrier = %key, cause = %e, "login failed");
            pins.login_failed(&target, &e);
            Login::Failed(e.to_string())
        }
        Err(e @ Error::PinLocked) => {
            tracing::warn!(carrier = %key, cause = %e, "login failed");
            pins.login_failed(&target, &e);
            Login::Failed(e.to_string())
        }
        Err(e) => {
            tracing::warn!(carrier = %key, cause = %e, "login failed");
            Login::Failed(e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> TokenFlags {
        TokenFlags {
            token_initialized: true,
            login_required: true,
            user_pin_initialized: true,
            user_pin_count_low: false,
            user_pin_final_try: false,
            user_pin_locked: false,
            so_pin_count_low: false,
            so_pin_final_try: false,
            so_pin_locked: false,
            write_protected: false,
        }
    }

    #[test]
    fn a_healthy_token_may_be_offered_a_pin() {
        assert_eq!(login_refusal(&flags()), None);
        assert!(!refusal_is_counter(&flags()));
    }

    #[test]
    fn tokens_without_a_user_pin_are_skipped() {
        let mut f = flags();
        f.user_pin_initialized = false;
        assert!(login_refusal(&f).is_some_and(|w| w.contains("no user PIN")));
        assert!(!refusal_is_counter(&f));
        let mut f = flags();
        f.login_required = false;
        assert!(login_refusal(&f).is_some_and(|w| w.contains("CKF_LOGIN_REQUIRED")));
        assert!(!refusal_is_counter(&f));
    }

    #[test]
    fn tokens_close_to_locking_are_never_tried() {
        for set in [
            |f: &mut TokenFlags| f.user_pin_count_low = true,
            |f: &mut TokenFlags| f.user_pin_final_try = true,
            |f: &mut TokenFlags| f.user_pin_locked = true,
        ] {
            let mut f = flags();
            set(&mut f);
            assert!(login_refusal(&f).is_some());
            assert!(refusal_is_counter(&f));
        }
    }
}
