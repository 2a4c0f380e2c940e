//! The C entry points: `C_GetFunctionList` (the one exported symbol) and the function table
//! it returns, whose every entry counts the call, lets the plan fail it, forwards it to the
//! real module and lets the plan rewrite the answer.
//!
//! Only `C_GetFunctionList` is exported: exporting `C_Initialize` and the rest under their
//! PKCS#11 names could let a module loaded into the global symbol scope bind its own calls to
//! ours. Applications (cryptoki, p11-kit, OpenSC's tools) find a module through
//! `C_GetFunctionList` anyway.
//!
//! The functions keep their PKCS#11 names (hence `non_snake_case`), so the table and the call
//! log read like the standard.

#![allow(non_snake_case)]

use std::ffi::c_void;
use std::time::Duration;

use cryptoki_sys::*;

use crate::plan::Action;
use crate::ptr;
use crate::real::{self, real};
use crate::rewrite;
use crate::state::{self, Call};

/// The table handed to applications. It is never written to: PKCS#11 lets an application
/// read it only.
static FUNCTIONS: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(C_GetOperationState),
    C_SetOperationState: Some(C_SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(C_CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(C_EncryptUpdate),
    C_EncryptFinal: Some(C_EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(C_DecryptUpdate),
    C_DecryptFinal: Some(C_DecryptFinal),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(C_DigestKey),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(C_SignRecoverInit),
    C_SignRecover: Some(C_SignRecover),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
    C_VerifyRecover: Some(C_VerifyRecover),
    C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
    C_GenerateKey: Some(C_GenerateKey),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(C_WrapKey),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(C_GetFunctionStatus),
    C_CancelFunction: Some(C_CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};

/// Returns this module's function table (the real module's entries behind each).
///
/// # Safety
/// `list` is null or valid for writing one pointer, as PKCS#11 requires of the caller.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    let call = Call::begin("C_GetFunctionList");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    if let Err(e) = real::loaded() {
        eprintln!("custody-fault-pkcs11: {e}");
        return call.finish(CKR_GENERAL_ERROR);
    }
    // The table is immutable; PKCS#11's signature says `*mut` but applications only read it.
    let table = std::ptr::addr_of!(FUNCTIONS).cast_mut();
    // SAFETY: the caller's contract for `list`.
    if !unsafe { ptr::write(list, table) } {
        return call.finish(CKR_ARGUMENTS_BAD);
    }
    call.finish(CKR_OK)
}

unsafe extern "C" fn C_Initialize(args: *mut c_void) -> CK_RV {
    let call = Call::begin("C_Initialize");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    if state::plan_problem().is_some() {
        // Already on stderr and in the log: a plan that does not parse fails loudly.
        return call.finish(CKR_GENERAL_ERROR);
    }
    let rv = real!(C_Initialize(args));
    if rv == CKR_OK {
        state::initialized();
    }
    call.finish(rv)
}

unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    let call = Call::begin("C_Finalize");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    let rv = real!(C_Finalize(reserved));
    if rv == CKR_OK {
        state::finalized();
    }
    call.finish(rv)
}

unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    let call = Call::begin("C_GetInfo");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    let rv = real!(C_GetInfo(info));
    if rv == CKR_OK {
        // SAFETY: the real module just filled `*info`, so it is valid for reads and writes.
        if let Some(mut answer) = unsafe { ptr::read(info.cast_const()) } {
            rewrite::library(&call.plan, &mut answer);
            // SAFETY: as above.
            unsafe { ptr::write(info, answer) };
        }
    }
    call.finish(rv)
}

unsafe extern "C" fn C_GetSlotList(
    token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    let call = Call::begin("C_GetSlotList");
    let slots = match call.action() {
        Some(Action::Fail(rv)) => return call.finish(rv),
        Some(Action::Empty) => Vec::new(),
        None if !call.plan.hides() => {
            return call.finish(real!(C_GetSlotList(token_present, list, count)));
        }
        None => match state::slot_list(token_present != CK_FALSE) {
            Ok(slots) => slots,
            Err(rv) => return call.finish(rv),
        },
    };
    // SAFETY: `list` and `count` are the application's, with the contract C_GetSlotList has.
    call.finish(unsafe { ptr::answer_list(&slots, list, count) })
}

unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    let call = Call::begin("C_GetSlotInfo");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    let rv = real!(C_GetSlotInfo(slot, info));
    if rv == CKR_OK && (call.plan.hides() || call.plan.removable) {
        let hidden = state::slot_hidden(slot);
        // SAFETY: the real module just filled `*info`, so it is valid for reads and writes.
        if let Some(mut answer) = unsafe { ptr::read(info.cast_const()) } {
            answer.flags |= CKF_REMOVABLE_DEVICE;
            if hidden {
                answer.flags &= !CKF_TOKEN_PRESENT;
            }
            // SAFETY: as above.
            unsafe { ptr::write(info, answer) };
        }
    }
    call.finish(rv)
}

unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    let call = Call::begin("C_GetTokenInfo");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    if call.plan.hides() && state::slot_hidden(slot) {
        return call.hidden(CKR_TOKEN_NOT_PRESENT);
    }
    let rv = real!(C_GetTokenInfo(slot, info));
    if rv == CKR_OK && call.plan.rewrites_tokens() {
        // SAFETY: the real module just filled `*info`, so it is valid for reads and writes.
        if let Some(mut answer) = unsafe { ptr::read(info.cast_const()) } {
            rewrite::token(&call.plan, slot, &mut answer);
            // SAFETY: as above.
            unsafe { ptr::write(info, answer) };
        }
    }
    call.finish(rv)
}

unsafe extern "C" fn C_InitToken(
    slot: CK_SLOT_ID,
    so_pin: *mut CK_UTF8CHAR,
    so_pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    let call = Call::begin("C_InitToken");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    if call.plan.hides() && state::slot_hidden(slot) {
        return call.hidden(CKR_TOKEN_NOT_PRESENT);
    }
    let rv = real!(C_InitToken(slot, so_pin, so_pin_len, label));
    if rv == CKR_OK {
        state::token_initialised(slot);
    }
    call.finish(rv)
}

unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    application: *mut c_void,
    notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    let call = Call::begin("C_OpenSession");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    if call.plan.hides() && state::slot_hidden(slot) {
        return call.hidden(CKR_TOKEN_NOT_PRESENT);
    }
    let rv = real!(C_OpenSession(slot, flags, application, notify, session));
    if rv == CKR_OK {
        // SAFETY: the real module just wrote the new handle to `*session`.
        if let Some(handle) = unsafe { ptr::read(session.cast_const()) } {
            state::session_opened(handle, slot);
        }
    }
    call.finish(rv)
}

unsafe extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    let call = Call::begin("C_CloseSession");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    // Forwarded even for a hidden token, so the real module frees the session.
    let rv = real!(C_CloseSession(session));
    state::session_closed(session);
    call.finish(rv)
}

unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    let call = Call::begin("C_CloseAllSessions");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    let rv = real!(C_CloseAllSessions(slot));
    state::slot_sessions_closed(slot);
    call.finish(rv)
}

unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    let call = Call::begin("C_GetAttributeValue");
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    if let Some(rv) = state::session_refusal(session) {
        return call.hidden(rv);
    }
    let rv = real!(C_GetAttributeValue(session, object, template, count));
    if !call.plan.keys.is_empty() {
        // SAFETY: the application's template of `count` attributes, which the real module
        // has just filled; nothing else touches it during this call.
        let attributes = unsafe { ptr::template(template, count) };
        rewrite::key_type(&call.plan, session, object, attributes);
    }
    call.finish(rv)
}

unsafe extern "C" fn C_WaitForSlotEvent(
    flags: CK_FLAGS,
    slot: *mut CK_SLOT_ID,
    reserved: *mut c_void,
) -> CK_RV {
    let call = Call::begin_wait();
    if let Some(rv) = call.injected() {
        return call.finish(rv);
    }
    if !call.plan.slot_events {
        return call.finish(real!(C_WaitForSlotEvent(flags, slot, reserved)));
    }
    let epoch = state::epoch();
    loop {
        if !state::is_initialized() || state::epoch() != epoch {
            // C_Finalize ends every wait, as PKCS#11 requires.
            return call.finish(CKR_CRYPTOKI_NOT_INITIALIZED);
        }
        if let Some(changed) = state::next_slot_event() {
            // SAFETY: the caller's contract: `slot` is valid for writing a slot id.
            let written = unsafe { ptr::write(slot, changed) };
            return call.finish(if written { CKR_OK } else { CKR_ARGUMENTS_BAD });
        }
        if flags & CKF_DONT_BLOCK != 0 {
            return call.finish(CKR_NO_EVENT);
        }
        // The plan file is the only source of events: looking at it 50 times a second costs
        // a stat each time and keeps event latency far below any poll interval.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Entry points on a slot: refused with CKR_TOKEN_NOT_PRESENT while the plan hides its token.
macro_rules! forward_slot {
    ($($name:ident(slot $(, $arg:ident: $ty:ty)*);)*) => {$(
        unsafe extern "C" fn $name(slot: CK_SLOT_ID $(, $arg: $ty)*) -> CK_RV {
            let call = Call::begin(stringify!($name));
            if let Some(rv) = call.injected() {
                return call.finish(rv);
            }
            if call.plan.hides() && state::slot_hidden(slot) {
                return call.hidden(CKR_TOKEN_NOT_PRESENT);
            }
            call.finish(real!($name(slot $(, $arg)*)))
        }
    )*};
}

forward_slot! {
    C_GetMechanismList(slot, a2: *mut CK_MECHANISM_TYPE, a3: *mut CK_ULONG);
    C_GetMechanismInfo(slot, a2: CK_MECHANISM_TYPE, a3: *mut CK_MECHANISM_INFO);
}

/// Entry points on a session: refused while the plan hides its token (CKR_DEVICE_REMOVED)
/// and after (CKR_SESSION_HANDLE_INVALID), as when a card is pulled out.
macro_rules! forward_session {
    ($($name:ident(session $(, $arg:ident: $ty:ty)*);)*) => {$(
        unsafe extern "C" fn $name(session: CK_SESSION_HANDLE $(, $arg: $ty)*) -> CK_RV {
            let call = Call::begin(stringify!($name));
            if let Some(rv) = call.injected() {
                return call.finish(rv);
            }
            if let Some(rv) = state::session_refusal(session) {
                return call.hidden(rv);
            }
            call.finish(real!($name(session $(, $arg)*)))
        }
    )*};
}

forward_session! {
    C_InitPIN(session, a2: *mut CK_UTF8CHAR, a3: CK_ULONG);
    C_SetPIN(session, a2: *mut CK_UTF8CHAR, a3: CK_ULONG, a4: *mut CK_UTF8CHAR, a5: CK_ULONG);
    C_GetSessionInfo(session, a2: *mut CK_SESSION_INFO);
    C_GetOperationState(session, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_SetOperationState(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: CK_OBJECT_HANDLE, a5: CK_OBJECT_HANDLE);
    C_Login(session, a2: CK_USER_TYPE, a3: *mut CK_UTF8CHAR, a4: CK_ULONG);
    C_Logout(session);
    C_CreateObject(session, a2: *mut CK_ATTRIBUTE, a3: CK_ULONG, a4: *mut CK_OBJECT_HANDLE);
    C_CopyObject(session, a2: CK_OBJECT_HANDLE, a3: *mut CK_ATTRIBUTE, a4: CK_ULONG, a5: *mut CK_OBJECT_HANDLE);
    C_DestroyObject(session, a2: CK_OBJECT_HANDLE);
    C_GetObjectSize(session, a2: CK_OBJECT_HANDLE, a3: *mut CK_ULONG);
    C_SetAttributeValue(session, a2: CK_OBJECT_HANDLE, a3: *mut CK_ATTRIBUTE, a4: CK_ULONG);
    C_FindObjectsInit(session, a2: *mut CK_ATTRIBUTE, a3: CK_ULONG);
    C_FindObjects(session, a2: *mut CK_OBJECT_HANDLE, a3: CK_ULONG, a4: *mut CK_ULONG);
    C_FindObjectsFinal(session);
    C_EncryptInit(session, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_Encrypt(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_EncryptUpdate(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_EncryptFinal(session, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_DecryptInit(session, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_Decrypt(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DecryptUpdate(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DecryptFinal(session, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_DigestInit(session, a2: *mut CK_MECHANISM);
    C_Digest(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DigestUpdate(session, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_DigestKey(session, a2: CK_OBJECT_HANDLE);
    C_DigestFinal(session, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_SignInit(session, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_Sign(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_SignUpdate(session, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_SignFinal(session, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_SignRecoverInit(session, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_SignRecover(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_VerifyInit(session, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_Verify(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: CK_ULONG);
    C_VerifyUpdate(session, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_VerifyFinal(session, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_VerifyRecoverInit(session, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_VerifyRecover(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DigestEncryptUpdate(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DecryptDigestUpdate(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_SignEncryptUpdate(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DecryptVerifyUpdate(session, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_GenerateKey(session, a2: *mut CK_MECHANISM, a3: *mut CK_ATTRIBUTE, a4: CK_ULONG, a5: *mut CK_OBJECT_HANDLE);
    C_GenerateKeyPair(session, a2: *mut CK_MECHANISM, a3: *mut CK_ATTRIBUTE, a4: CK_ULONG, a5: *mut CK_ATTRIBUTE, a6: CK_ULONG, a7: *mut CK_OBJECT_HANDLE, a8: *mut CK_OBJECT_HANDLE);
    C_WrapKey(session, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE, a4: CK_OBJECT_HANDLE, a5: *mut CK_BYTE, a6: *mut CK_ULONG);
    C_UnwrapKey(session, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE, a4: *mut CK_BYTE, a5: CK_ULONG, a6: *mut CK_ATTRIBUTE, a7: CK_ULONG, a8: *mut CK_OBJECT_HANDLE);
    C_DeriveKey(session, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE, a4: *mut CK_ATTRIBUTE, a5: CK_ULONG, a6: *mut CK_OBJECT_HANDLE);
    C_SeedRandom(session, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_GenerateRandom(session, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_GetFunctionStatus(session);
    C_CancelFunction(session);
}
