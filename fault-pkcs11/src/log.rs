//! The call log: one line per call the application made, appended to the file
//! `CUSTODY_FAULT_LOG` names (no log without it).
//!
//! A line is `PID<TAB>INDEX<TAB>FUNCTION<TAB>RETURN VALUE<TAB>ORIGIN`, where INDEX is the
//! process-wide call index (`w3` for the third C_WaitForSlotEvent, which has its own counter
//! because applications call it from another thread) and ORIGIN is `real` (the real module
//! answered, perhaps rewritten), `fault` (the plan made the call fail) or `hidden` (refused
//! because the plan hides the token). Arguments are never written: no PIN can reach the log.
//! Each line is one `write`, so processes sharing a log do not interleave lines.

use std::fs::File;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::names;

/// Where a call's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The real module (possibly rewritten by the plan).
    Real,
    /// A fault of the plan.
    Fault,
    /// Refused because the plan hides the token.
    Hidden,
}

impl Origin {
    fn word(self) -> &'static str {
        match self {
            Self::Real => "real",
            Self::Fault => "fault",
            Self::Hidden => "hidden",
        }
    }
}

fn file() -> &'static Mutex<Option<File>> {
    static FILE: OnceLock<Mutex<Option<File>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let file = std::env::var_os("CUSTODY_FAULT_LOG")
            .filter(|p| !p.is_empty())
            .and_then(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        eprintln!(
                            "custody-fault-pkcs11: cannot open the call log {}: {e}",
                            std::path::Path::new(&path).display()
                        );
                    })
                    .ok()
            });
        Mutex::new(file)
    })
}

/// Appends one call to the log.
pub(crate) fn record(index: &str, function: &str, rv: u64, origin: Origin) {
    let mut guard = file().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(file) = guard.as_mut() {
        let line = format!(
            "{}\t{index}\t{function}\t{}\t{}\n",
            std::process::id(),
            names::rv_name(rv),
            origin.word()
        );
        // Best effort: a test that needs the log fails on its absence.
        let _ = file.write_all(line.as_bytes());
    }
}

/// Says something about the plan on stderr and in the log (as function `plan`).
pub(crate) fn plan_problem(message: &str) {
    eprintln!("custody-fault-pkcs11: {message}");
    let mut guard = file().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(file) = guard.as_mut() {
        let line = format!(
            "{}\t-\tplan\t{}\n",
            std::process::id(),
            message.replace(['\t', '\n'], " ")
        );
        let _ = file.write_all(line.as_bytes());
    }
}
