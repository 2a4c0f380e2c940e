//! A tiny PKCS#11 client for the fault module's own tests: loads a module (from its first
//! argument) with the environment it is given, then answers one command per line of standard
//! input with one line of standard output, so a test can change the fault plan between two
//! calls of the same initialised module.
//!
//! Commands: `poll` (C_WaitForSlotEvent with CKF_DONT_BLOCK: a slot id or `none`), `wait`
//! (blocking: a slot id), `slots` (slots with a token, as `id:serial` or `id:-` when its token
//! cannot be read), `key-types` (CKA_KEY_TYPE of every private key on every token, hex),
//! `flags` (token flags of every token: `serial:login_required,count_low`), `quit`. Errors
//! print `error: …`.

use std::io::{BufRead as _, Write as _};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

fn main() -> anyhow::Result<()> {
    let module = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: fault-probe MODULE"))?;
    let ctx = Pkcs11::new(&module)?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        let answer = match line.trim() {
            "quit" => break,
            command => answer(&ctx, command).unwrap_or_else(|e| format!("error: {e}")),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    ctx.finalize()?;
    Ok(())
}

fn answer(ctx: &Pkcs11, command: &str) -> anyhow::Result<String> {
    Ok(match command {
        "poll" => match ctx.get_slot_event()? {
            Some(slot) => slot.id().to_string(),
            None => "none".into(),
        },
        "wait" => ctx.wait_for_slot_event()?.id().to_string(),
        "slots" => ctx
            .get_slots_with_token()?
            .into_iter()
            .map(|slot| match ctx.get_token_info(slot) {
                Ok(info) => format!("{}:{}", slot.id(), info.serial_number()),
                Err(_) => format!("{}:-", slot.id()),
            })
            .collect::<Vec<_>>()
            .join(" "),
        "key-types" => {
            let mut types = Vec::new();
            for slot in ctx.get_slots_with_token()? {
                if !ctx.get_token_info(slot)?.token_initialized() {
                    continue;
                }
                let session = ctx.open_ro_session(slot)?;
                // Private keys are visible only after login: the fixtures' user PIN.
                let pin = std::env::var("PROBE_USER_PIN").unwrap_or_default();
                if !pin.is_empty() {
                    session.login(cryptoki::session::UserType::User, Some(&pin.into()))?;
                }
                for object in session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])? {
                    for attribute in session.get_attributes(object, &[AttributeType::KeyType])? {
                        if let Attribute::KeyType(t) = attribute {
                            types.push(format!("{:#x}", u64::from(t)));
                        }
                    }
                }
            }
            types.sort();
            types.join(" ")
        }
        "flags" => ctx
            .get_slots_with_token()?
            .into_iter()
            .filter_map(|slot| ctx.get_token_info(slot).ok())
            .map(|info| {
                format!(
                    "{}:{},{}",
                    info.serial_number(),
                    info.login_required(),
                    info.user_pin_count_low()
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => anyhow::bail!("unknown command {other:?}"),
    })
}
