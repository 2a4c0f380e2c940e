//! allowed_signers parsing and namespace matching. The first line of the input is the
//! namespace to match, the rest the file. Each input must take well under libFuzzer's
//! timeout (the pattern matcher does not backtrack).
#![no_main]

use custody_core::order::{AllowedSigners, Zone, NAMESPACE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (namespace, file) = text.split_once('\n').unwrap_or(("", text));
    if let Ok(signers) = AllowedSigners::parse(file, "fuzz", &Zone::utc()) {
        let now = custody_fuzz::now();
        for entry in signers.entries() {
            let _ = entry.allows(namespace, now);
            let _ = entry.allows(NAMESPACE, now);
            let _ = entry.fingerprint();
        }
    }
});
