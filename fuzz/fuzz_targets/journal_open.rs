//! Opening a journal file of arbitrary bytes. A file that is not a custody journal must be
//! refused and left byte for byte as it was; one that opens must verify without panicking.
#![no_main]

use std::sync::OnceLock;

use custody_core::journal::Journal;
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| custody_fuzz::scratch("journal_open"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().join("journal.db");
    for suffix in ["", "-wal", "-shm", ".key"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("{e}"));
    match Journal::open(&path) {
        Ok(journal) => {
            let _ = journal.verify();
            let _ = journal.verify_checkpoints(None);
            let _ = journal.carriers();
        }
        Err(_) => {
            let after = std::fs::read(&path).unwrap_or_default();
            assert!(after == data, "a refused file was modified");
        }
    }
});
