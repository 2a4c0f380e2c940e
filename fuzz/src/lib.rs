//! What the fuzz targets share: a private scratch directory per process, a fixed clock, the
//! actor recorded with events, and a signing key for orders (derived from a fixed seed, so
//! nothing secret is committed).

use std::path::PathBuf;

use custody_core::journal::Actor;
use custody_core::order::AllowedSigners;
use time::OffsetDateTime;

/// The time every target runs at: the seed orders are valid then.
pub fn now() -> OffsetDateTime {
    time::macros::datetime!(2026-11-24 12:00 UTC)
}

/// Who the targets' events are recorded as.
pub fn actor() -> Actor {
    Actor {
        os_user: "fuzz".into(),
        operator: None,
        host: "fuzz".into(),
    }
}

/// An empty directory of this process for `target`, under `$CUSTODY_FUZZ_DIR` when set
/// (fuzz/smoke.sh sets it and removes it afterwards), else in /dev/shm when there is one (the
/// journal targets write with fsync).
pub fn scratch(target: &str) -> PathBuf {
    let base = if let Some(dir) = std::env::var_os("CUSTODY_FUZZ_DIR") {
        PathBuf::from(dir)
    } else if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("custody-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// The fuzz signer: its private key (OpenSSH PEM) and the allowed_signers trusting it.
pub fn signer() -> (String, AllowedSigners) {
    let pair = ssh_key::private::Ed25519Keypair::from_seed(&[7u8; 32]);
    let key = ssh_key::PrivateKey::from(pair);
    let pem = key
        .to_openssh(ssh_key::LineEnding::LF)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let public = key
        .public_key()
        .to_openssh()
        .unwrap_or_else(|e| panic!("{e}"));
    let line = format!("fuzz@example.org namespaces=\"custody-order\" {public}\n");
    let allowed = AllowedSigners::parse(&line, "fuzz", &custody_core::order::Zone::utc())
        .unwrap_or_else(|e| panic!("{e}"));
    (pem, allowed)
}
