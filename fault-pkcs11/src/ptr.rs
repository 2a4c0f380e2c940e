//! The only raw-pointer accesses of the crate, each a small function with its contract.
//!
//! Callers are the C entry points of `ffi`, which hold pointers the application passed in.
//! Every function here tolerates null (the PKCS#11 convention for "no buffer") and does
//! nothing else: no policy, no state.

use cryptoki_sys::CK_ATTRIBUTE;

/// Reads `*ptr`, or `None` for a null pointer.
///
/// # Safety
/// `ptr` is null or valid for reads of a `T` (aligned, initialised).
pub(crate) unsafe fn read<T: Copy>(ptr: *const T) -> Option<T> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: not null, and the caller guarantees it points to a readable T.
    Some(unsafe { ptr.read() })
}

/// Writes `value` to `*ptr`; false for a null pointer.
///
/// # Safety
/// `ptr` is null or valid for writes of a `T` (aligned).
pub(crate) unsafe fn write<T: Copy>(ptr: *mut T, value: T) -> bool {
    if ptr.is_null() {
        return false;
    }
    // SAFETY: not null, and the caller guarantees it points to a writable T.
    unsafe { ptr.write(value) };
    true
}

/// The attribute template `ptr[..count]` (empty for null).
///
/// # Safety
/// `ptr` is null or points to `count` initialised attributes that nothing else accesses while
/// the slice lives.
pub(crate) unsafe fn template<'a>(ptr: *mut CK_ATTRIBUTE, count: u64) -> &'a mut [CK_ATTRIBUTE] {
    let Ok(count) = usize::try_from(count) else {
        return &mut [];
    };
    if ptr.is_null() || count == 0 {
        return &mut [];
    }
    // SAFETY: the caller guarantees `count` attributes at `ptr`, exclusively ours meanwhile.
    unsafe { std::slice::from_raw_parts_mut(ptr, count) }
}

/// Writes a CK_ULONG attribute value (CKA_KEY_TYPE, CKA_CLASS) in place; false when the
/// attribute has no buffer of that size.
///
/// # Safety
/// `attribute.pValue` is null or valid for writes of `attribute.ulValueLen` bytes.
pub(crate) unsafe fn write_ulong_value(attribute: &mut CK_ATTRIBUTE, value: u64) -> bool {
    if attribute.pValue.is_null() || attribute.ulValueLen != size_of::<u64>() as u64 {
        return false;
    }
    // SAFETY: pValue holds exactly 8 writable bytes (checked above, guaranteed by the caller);
    // write_unaligned because an application's byte buffer need not be aligned for u64.
    unsafe { attribute.pValue.cast::<u64>().write_unaligned(value) };
    true
}

/// Copies `items` into the application's buffer `list` of capacity `*count`, by the PKCS#11
/// two-call convention: a null `list` asks only for the count; a buffer too small gets
/// CKR_BUFFER_TOO_SMALL and the count needed.
///
/// # Safety
/// `count` is null or valid for reads and writes; `list` is null or valid for writes of
/// `*count` elements.
pub(crate) unsafe fn answer_list<T: Copy>(items: &[T], list: *mut T, count: *mut u64) -> u64 {
    // SAFETY: the caller's contract for `count`.
    let Some(capacity) = (unsafe { read(count) }) else {
        return cryptoki_sys::CKR_ARGUMENTS_BAD;
    };
    let needed = items.len() as u64;
    // SAFETY: the caller's contract for `count`.
    unsafe { write(count, needed) };
    if list.is_null() {
        return cryptoki_sys::CKR_OK;
    }
    if capacity < needed {
        return cryptoki_sys::CKR_BUFFER_TOO_SMALL;
    }
    // SAFETY: `list` has room for `capacity >= items.len()` elements (caller's contract), and
    // `items` is our own memory, so the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), list, items.len()) };
    cryptoki_sys::CKR_OK
}
