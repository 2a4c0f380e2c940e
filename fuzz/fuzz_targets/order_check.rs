//! Order checking against a journal: the input is an order document, signed here by a
//! trusted key (so that inputs get past the signature), then checked (size, document,
//! signature, validity window) and admitted against the journal's state (replay, id
//! conflict). The journal lives for the whole run, so later inputs meet the orders of
//! earlier ones. Property: admitting the same order twice gives the same answer.
#![no_main]

use std::sync::{Mutex, OnceLock};

use custody_core::journal::Journal;
use custody_core::order::{self, AllowedSigners, OrderInput};
use custody_core::token::NoPins;
use custody_core::wipe::{self, Env};
use libfuzzer_sys::fuzz_target;

struct State {
    journal: Journal,
    key: String,
    allowed: AllowedSigners,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(|| {
        let dir = custody_fuzz::scratch("order_check");
        let journal = Journal::open(&dir.join("journal.db")).unwrap_or_else(|e| panic!("{e}"));
        let (key, allowed) = custody_fuzz::signer();
        Mutex::new(State {
            journal,
            key,
            allowed,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
    let s = &mut *guard;
    let Ok((signature, _)) = order::signature::sign(&s.key, data) else {
        return;
    };
    let input = OrderInput {
        order: data.to_vec(),
        order_size: data.len() as u64,
        signatures_size: signature.len() as u64,
        signatures: Some(signature.into_bytes()),
    };
    let now = custody_fuzz::now();
    let v = order::check(&input, &s.allowed, 1, now);
    let Ok(verified) = v.result else {
        return;
    };
    let actor = custody_fuzz::actor();
    let clock = custody_fuzz::now;
    let env = Env {
        actor: &actor,
        clock: &clock,
        source: "fuzz",
        pins: &NoPins,
    };
    let first = wipe::admit(&mut s.journal, &env, &verified).unwrap_or_else(|e| panic!("{e}"));
    let second = wipe::admit(&mut s.journal, &env, &verified).unwrap_or_else(|e| panic!("{e}"));
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "admitting twice changed the state"),
        (Err(a), Err(b)) => assert_eq!(a.code, b.code, "admitting twice changed the refusal"),
        _ => panic!("admitting twice gave {first:?} then {second:?}"),
    }
    let row = s
        .journal
        .order(&verified.order().id)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("an admitted order is not in the journal"));
    if first.is_ok() {
        assert_eq!(row.sha256, verified.sha256());
    }
});
