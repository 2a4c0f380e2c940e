//! The floor for custody's benchmarks: the least a program must do to make the same
//! PKCS#11 reads as `custody scan` (load and initialise the module, list slots, read each
//! initialised token's info, find its certificates and public keys and read the same
//! attributes, finalise), and nothing else: no parsing, no journal.
//!
//! Usage: `custody-floor MODULE [--poll INTERVAL_MS --for SECONDS [--reinit]]`. With
//! `--poll` it instead repeats the minimal poll of the watch service (optionally C_Finalize +
//! C_Initialize, then the slot list) every interval, as the idle-cost floor.

use std::time::{Duration, Instant};

use anyhow::Context;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let module = args
        .first()
        .context("usage: custody-floor MODULE [--poll MS --for S [--reinit]]")?;
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let ctx = Pkcs11::new(module).with_context(|| format!("loading {module}"))?;
    let init = |c: &Pkcs11| c.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    init(&ctx)?;
    if let Some(ms) = flag("--poll") {
        let interval = Duration::from_millis(ms.parse()?);
        let total = Duration::from_secs(flag("--for").map_or(Ok(60), |s| s.parse())?);
        let reinit = args.iter().any(|a| a == "--reinit");
        let start = Instant::now();
        let mut polls = 0u64;
        while start.elapsed() < total {
            if reinit {
                ctx.clone().finalize()?;
                init(&ctx)?;
            }
            let slots = ctx.get_slots_with_token()?;
            std::hint::black_box(slots);
            polls += 1;
            std::thread::sleep(interval);
        }
        println!("polls {polls}");
        return Ok(());
    }
    let (mut tokens, mut objects) = (0usize, 0usize);
    for slot in ctx.get_slots_with_token()? {
        let info = ctx.get_token_info(slot)?;
        if !info.token_initialized() {
            continue;
        }
        tokens += 1;
        let session = ctx.open_ro_session(slot)?;
        for handle in session.find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])? {
            let attrs = session.get_attributes(
                handle,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::Value,
                ],
            )?;
            std::hint::black_box(attrs);
            objects += 1;
        }
        for handle in session.find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])? {
            let attrs = session.get_attributes(
                handle,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::KeyType,
                    AttributeType::Local,
                    AttributeType::StartDate,
                    AttributeType::EcPoint,
                    AttributeType::Modulus,
                    AttributeType::Value,
                ],
            )?;
            std::hint::black_box(attrs);
            objects += 1;
        }
        // custody confirms the read was complete: the session still exists after it.
        std::hint::black_box(session.get_session_info()?);
    }
    ctx.finalize()?;
    println!("tokens {tokens} objects {objects}");
    Ok(())
}
