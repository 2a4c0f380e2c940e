//! Rewriting the real module's answers as the plan asks: library and token information, and
//! the key type of chosen key objects. Works on Rust copies of the C structures; the only
//! pointer access is the attribute value write, through `ptr`.

use cryptoki_sys::{
    CKA_KEY_TYPE, CK_ATTRIBUTE, CK_INFO, CK_TOKEN_INFO, CK_UNAVAILABLE_INFORMATION,
};

use crate::plan::{Field, Plan};
use crate::{ptr, real, state};

/// CK_INFO as the plan reports it.
pub(crate) fn library(plan: &Plan, info: &mut CK_INFO) {
    put(&plan.library.manufacturer, &mut info.manufacturerID);
    put(&plan.library.description, &mut info.libraryDescription);
}

/// CK_TOKEN_INFO of `slot` as the plan reports it: a serial changed by C_InitToken, then the
/// rewrites that name the token's real serial (or `*`), in plan order.
pub(crate) fn token(plan: &Plan, slot: u64, info: &mut CK_TOKEN_INFO) {
    let real_serial = real::trimmed(&info.serialNumber);
    state::learn_serial(slot, &real_serial);
    if let Some(serial) = state::reinit_serial(&real_serial) {
        put(&Some(Field::Text(serial)), &mut info.serialNumber);
    }
    for rewrite in plan.tokens.iter().filter(|r| r.applies_to(&real_serial)) {
        let report = &rewrite.report;
        put(&report.serial, &mut info.serialNumber);
        put(&report.model, &mut info.model);
        put(&report.manufacturer, &mut info.manufacturerID);
        put(&report.label, &mut info.label);
        for flag in &report.set_flags {
            info.flags |= flag.0;
        }
        for flag in &report.clear_flags {
            info.flags &= !flag.0;
        }
    }
}

/// Overwrites CKA_KEY_TYPE in a filled template when the object is a key the plan names.
pub(crate) fn key_type(plan: &Plan, session: u64, object: u64, template: &mut [CK_ATTRIBUTE]) {
    let wanted = |a: &CK_ATTRIBUTE| {
        a.type_ == CKA_KEY_TYPE && !a.pValue.is_null() && a.ulValueLen != CK_UNAVAILABLE_INFORMATION
    };
    if !template.iter().any(wanted) {
        return;
    }
    let Some((class, id)) = real::class_and_id(session, object) else {
        return;
    };
    let serial = state::session_serial(session);
    let Some(rewrite) = plan
        .keys
        .iter()
        .find(|k| k.applies_to(class, &id, serial.as_deref()))
    else {
        return;
    };
    for attribute in template.iter_mut().filter(|a| wanted(a)) {
        // SAFETY: the application gave a buffer of ulValueLen bytes for this attribute and the
        // real module has just written the key type into it.
        unsafe { ptr::write_ulong_value(attribute, rewrite.key_type.0) };
    }
}

/// Replaces a fixed-width field with the plan's value (validated when the plan was parsed).
fn put<const N: usize>(value: &Option<Field>, field: &mut [u8; N]) {
    if let Some(bytes) = value.as_ref().and_then(|v| v.padded(N).ok()) {
        field.copy_from_slice(&bytes);
    }
}
