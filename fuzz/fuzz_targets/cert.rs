//! Certificate parsing: anything read off a carrier (CKA_VALUE) or from a file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = custody_core::cert::CertInfo::parse(data) {
        // What custody shows and stores of a certificate must be computable.
        let _ = serde_json_like(&info);
    }
    let _ = custody_core::cert::subject_public_key(data);
});

fn serde_json_like(info: &custody_core::cert::CertInfo) -> String {
    format!("{info:?}")
}
