//! CSV import of a paper journal: parsing, then the import into a journal (refused as a
//! whole, or recorded). The journal is started afresh every 512 inputs so that it stays
//! small.
#![no_main]

use std::sync::{Mutex, OnceLock};

use custody_core::journal::Journal;
use libfuzzer_sys::fuzz_target;

struct State {
    dir: std::path::PathBuf,
    journal: Option<Journal>,
    runs: u32,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(|| {
        Mutex::new(State {
            dir: custody_fuzz::scratch("csv_import"),
            journal: None,
            runs: 0,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(rows) = custody_agent::cli::import::parse(data) else {
        return;
    };
    let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
    let s = &mut *guard;
    s.runs += 1;
    if s.runs % 512 == 0 || s.journal.is_none() {
        s.journal = None;
        let path = s.dir.join("journal.db");
        for suffix in ["", "-wal", "-shm", ".key"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        s.journal = Some(Journal::open(&path).unwrap_or_else(|e| panic!("{e}")));
    }
    let Some(journal) = s.journal.as_mut() else {
        return;
    };
    let _ = journal.import(
        &rows,
        "fuzz.csv",
        &custody_fuzz::actor(),
        custody_fuzz::now(),
    );
});
