//! The real PKCS#11 module every call is forwarded to, and the few calls this crate makes to it
//! on its own behalf (never counted, never logged, never faulted).
//!
//! Which module: `CUSTODY_FAULT_TARGET`, else `SOFTHSM2_MODULE`, else SoftHSM2's usual paths
//! (the same list as `softhsm-fixtures/module-path.sh`).

use std::path::PathBuf;
use std::sync::OnceLock;

use cryptoki_sys::{
    CKA_CLASS, CKA_ID, CKR_BUFFER_TOO_SMALL, CKR_OK, CK_ATTRIBUTE, CK_FUNCTION_LIST, CK_RV,
    CK_TOKEN_INFO,
};

/// SoftHSM2's library paths tried when no variable names the module.
const CANDIDATES: [&str; 4] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The loaded real module: its library stays loaded for the life of the process.
pub(crate) struct Real {
    _library: libloading::Library,
    /// The real module's function table.
    pub(crate) list: CK_FUNCTION_LIST,
}

static REAL: OnceLock<Result<Real, String>> = OnceLock::new();

/// The real module, loaded on first use; the error says which path failed and why.
pub(crate) fn loaded() -> Result<&'static Real, &'static str> {
    REAL.get_or_init(load).as_ref().map_err(String::as_str)
}

/// Calls function `$name` of the real module; CKR_GENERAL_ERROR when it did not load,
/// CKR_FUNCTION_NOT_SUPPORTED when its table has no such entry.
macro_rules! real {
    ($name:ident($($arg:expr),* $(,)?)) => {
        match $crate::real::loaded() {
            Ok(real) => match real.list.$name {
                // SAFETY: the same PKCS#11 function of the real module, called with the
                // arguments the application passed us (whose validity the application
                // guarantees, as for any module) or with buffers of our own sized to match.
                Some(f) => unsafe { f($($arg),*) },
                None => cryptoki_sys::CKR_FUNCTION_NOT_SUPPORTED,
            },
            Err(_) => cryptoki_sys::CKR_GENERAL_ERROR,
        }
    };
}
pub(crate) use real;

fn target() -> PathBuf {
    for var in ["CUSTODY_FAULT_TARGET", "SOFTHSM2_MODULE"] {
        if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            return path.into();
        }
    }
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(CANDIDATES[0]))
}

fn load() -> Result<Real, String> {
    let path = target();
    let shown = path.display();
    // SAFETY: loading a PKCS#11 module runs its initialisers, as any PKCS#11 application does;
    // RTLD_LOCAL keeps its symbols (and ours) from resolving each other.
    let library = unsafe {
        libloading::os::unix::Library::open(
            Some(&path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map_err(|e| format!("cannot load the real module {shown}: {e}"))?;
    let library = libloading::Library::from(library);
    type GetFunctionList = unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV;
    // SAFETY: C_GetFunctionList has this signature in every PKCS#11 module.
    let get = unsafe { library.get::<GetFunctionList>(b"C_GetFunctionList\0") }
        .map_err(|e| format!("{shown} is not a PKCS#11 module: {e}"))?;
    // The exported symbol is unique in the process: equal addresses mean the same library.
    if std::ptr::fn_addr_eq(*get, crate::ffi::C_GetFunctionList as GetFunctionList) {
        return Err(format!(
            "{shown} is the fault module itself: point CUSTODY_FAULT_TARGET at the real one"
        ));
    }
    let mut table: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
    // SAFETY: the module's own C_GetFunctionList writes one pointer to `table`, a valid local.
    let rv = unsafe { get(&mut table) };
    if rv != CKR_OK {
        return Err(format!("{shown}: C_GetFunctionList returned {rv:#x}"));
    }
    // SAFETY: on CKR_OK the module points `table` at its function list (or leaves it null,
    // which `read` refuses); the list lives as long as the library, which we keep.
    let list = unsafe { crate::ptr::read(table.cast_const()) }
        .ok_or_else(|| format!("{shown}: C_GetFunctionList gave no table"))?;
    Ok(Real {
        _library: library,
        list,
    })
}

/// The real serial of the token in `slot` (trailing spaces trimmed), if it answers.
pub(crate) fn token_serial(slot: u64) -> Option<String> {
    let mut info = CK_TOKEN_INFO::default();
    let rv = real!(C_GetTokenInfo(slot, &mut info));
    (rv == CKR_OK).then(|| trimmed(&info.serialNumber))
}

/// The real module's slot list (only slots with a token when `with_token`).
pub(crate) fn slot_list(with_token: bool) -> Result<Vec<u64>, u64> {
    let flag = u8::from(with_token);
    loop {
        let mut count: u64 = 0;
        let rv = real!(C_GetSlotList(flag, std::ptr::null_mut(), &mut count));
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut slots = vec![0u64; usize::try_from(count).unwrap_or(0)];
        let rv = real!(C_GetSlotList(flag, slots.as_mut_ptr(), &mut count));
        match rv {
            CKR_OK => {
                slots.truncate(usize::try_from(count).unwrap_or(0));
                return Ok(slots);
            }
            // A token arrived between the two calls: ask again.
            CKR_BUFFER_TOO_SMALL => continue,
            other => return Err(other),
        }
    }
}

/// CKA_CLASS and CKA_ID of an object, read through the real module.
pub(crate) fn class_and_id(session: u64, object: u64) -> Option<(u64, Vec<u8>)> {
    let mut class: u64 = 0;
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: (&mut class as *mut u64).cast(),
            ulValueLen: size_of::<u64>() as u64,
        },
        CK_ATTRIBUTE {
            type_: CKA_ID,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        },
    ];
    let rv = real!(C_GetAttributeValue(
        session,
        object,
        template.as_mut_ptr(),
        2
    ));
    if rv != CKR_OK {
        return None;
    }
    let mut id = vec![0u8; usize::try_from(template[1].ulValueLen).ok()?];
    template[1].pValue = id.as_mut_ptr().cast();
    let rv = real!(C_GetAttributeValue(
        session,
        object,
        template.as_mut_ptr(),
        2
    ));
    (rv == CKR_OK).then_some((class, id))
}

/// A space-padded PKCS#11 text field without its padding (lossily decoded).
pub(crate) fn trimmed(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_end_matches(' ')
        .to_owned()
}
