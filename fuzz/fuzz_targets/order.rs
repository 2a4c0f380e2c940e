//! Order parsing: a destruction order document as dropped into the spool.
#![no_main]

use custody_core::order::{DestructionOrder, Zone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(order) = DestructionOrder::parse(data) {
        let _ = order.due(&Zone::utc());
        let _ = order.certificate_fingerprints();
    }
});
