//! The floor for custody's benchmarks: the least a program must do to make the same
//! PKCS#11 reads as `custody scan` (load and initialise the module, list slots, read each
//! initialised token's info, find its certificates and public keys and read the same
//! attributes, finalise), and nothing else: no parsing, no journal.
//!
//! Usage: `custody-floor MODULE [--poll INTERVAL_MS --for SECONDS [--reinit]]` or
//! `custody-floor MODULE --events N --commit DIR`. With `--poll` it instead repeats the
//! minimal poll of the watch service (optionally C_Finalize + C_Initialize, then the slot
//! list) every interval, as the idle-cost floor. With `--events` it is the floor of a slot
//! event's latency: N times, C_WaitForSlotEvent, C_GetSlotInfo of the slot it names, the
//! token's read (as above) when one is present, then one durable single-row SQLite commit
//! with the journal's pragmas in DIR (`custody_tests::bench::floor`); one JSON line per
//! event on stdout with the time of each step.

use std::time::{Duration, Instant};

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::slot::Slot;
use custody_tests::bench::floor::{unix_us, CommitProbe, FloorEvent};

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
    if let Some(n) = flag("--events") {
        let dir = flag("--commit").context("--events needs --commit DIR")?;
        events(&ctx, n.parse()?, Path::new(dir))?;
        ctx.finalize()?;
        return Ok(());
    }
    let (mut tokens, mut objects) = (0usize, 0usize);
    for slot in ctx.get_slots_with_token()? {
        if let Some(n) = read_token(&ctx, slot)? {
            tokens += 1;
            objects += n;
        }
    }
    ctx.finalize()?;
    println!("tokens {tokens} objects {objects}");
    Ok(())
}

/// Reads the token in `slot` as `custody scan` does (token info, certificates and public
/// keys with the same attributes, the session checked after the read); the number of objects
/// read, or `None` for a token that is not initialised.
fn read_token(ctx: &Pkcs11, slot: Slot) -> anyhow::Result<Option<usize>> {
    let info = ctx.get_token_info(slot)?;
    if !info.token_initialized() {
        return Ok(None);
    }
    let mut objects = 0;
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
    session.close()?;
    Ok(Some(objects))
}

/// `--events`: the floor of a slot event's latency (see the module documentation). A token
/// pulled during its read is not an error here: the event is reported as read.
fn events(ctx: &Pkcs11, n: u64, dir: &Path) -> anyhow::Result<()> {
    let mut probe = CommitProbe::open(dir, "floor-events.db")?;
    let mut out = std::io::stdout().lock();
    for _ in 0..n {
        let slot = ctx.wait_for_slot_event()?;
        let event_us = unix_us();
        let present = ctx.get_slot_info(slot)?.token_present();
        let known_us = unix_us();
        if present {
            if let Err(e) = read_token(ctx, slot) {
                eprintln!("custody-floor: slot {}: {e}", slot.id());
            }
        }
        let read_us = unix_us();
        probe.commit_one()?;
        let line = FloorEvent {
            slot: slot.id(),
            present,
            event_us,
            known_us,
            read_us,
            committed_us: unix_us(),
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
        out.flush()?;
    }
    Ok(())
}
