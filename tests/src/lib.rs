//! End-to-end test support for custody: SoftHSM2 token sets built from a [`Spec`].
//!
//! A spec lists tokens and their objects (EC/RSA key pairs generated on the token with a
//! certificate from a fixture CA, Ukrainian qualified profiles, a DSTU 4145 certificate,
//! certificates from files, raw garbage). The `custody-fixtures` binary realises it with
//! cryptoki, one worker process per token, and writes `<dir>/softhsm2.conf`, `<dir>/tokens/`,
//! `<dir>/pins/`, `<dir>/certs/`, `<dir>/ca/`, `<dir>/env` and `<dir>/manifest.json`.
//!
//! Tests run in parallel threads of one process, so nothing here sets SOFTHSM2_CONF in the
//! test process: [`TokenSet`] runs the binary as a child, and tools that should see a set get
//! [`TokenSet::env`] in their own environment.
//!
//! ```no_run
//! use std::path::Path;
//! use custody_tests::{temp_dir, Profile, Spec, TokenSet, TokenSpec};
//!
//! # fn main() -> anyhow::Result<()> {
//! let bin = Path::new("target/debug/custody-fixtures"); // env!("CARGO_BIN_EXE_custody-fixtures")
//! let base = Path::new("target/tmp"); // env!("CARGO_TARGET_TMPDIR")
//! let spec = Spec::new().token(
//!     TokenSpec::new("Іваненко І.І.").ec_key_cert("01", "signing key", Profile::ua_person()),
//! );
//! let set = TokenSet::build(bin, &spec, &temp_dir(base, "my_test")?)?;
//! let serial = &set.manifest().tokens[0].serial;
//! let output = set
//!     .command("pkcs11-tool")
//!     .arg("--module")
//!     .arg(set.module())
//!     .arg("-L")
//!     .output()?;
//! assert!(String::from_utf8_lossy(&output.stdout).contains(serial.as_str()));
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`spec`]: the spec types and the named sets (`demo`, `edge`, `bench:N:K`).
//! - [`profile`]: certificate profiles (subject names, Ukrainian extensions).
//! - `ca`: the fixture CA that issues every certificate (rcgen, and yasna for DSTU 4145).
//! - [`token`]: builds one token with cryptoki inside a worker process.
//! - [`set`]: builds, caches and copies whole sets; [`TokenSet`].
//! - [`manifest`]: the typed `manifest.json`.
//! - [`softhsm`]: module path, configuration and env files, test directories.
//! - [`postgres`]: a private PostgreSQL cluster (initdb + pg_ctl) for the fleet tests.
//! - [`custody`]: runs the real `custody` binary against a set and a journal.
//! - [`mod@bench`]: what the benchmark programs share (CPU time, percentiles, log reading).
//! - [`implementation`]: the PKCS#11 implementations the behaviour tests run on.
//! - [`daemon`]: daemons started by tests, ended by pid; free loopback ports.
//! - [`sched`]: how long processes waited for a CPU (run delay), for latency bounds.
//! - [`fault`]: the fault-injecting PKCS#11 module in front of SoftHSM2: plans, call logs.
//! - [`smartcard`]: a virtual ISO 7816-4 card for vsmartcard's vpcd reader driver.
//! - [`pkcs15`]: the PKCS#15 application on it (a key pair and its certificate).
//! - [`pcsc`]: pcscd with a vpcd reader and OpenSC's configuration, private to one test.

pub mod bench;
mod ca;
pub mod custody;
pub mod daemon;
pub mod fault;
pub mod implementation;
pub mod manifest;
pub mod pcsc;
pub mod pkcs15;
pub mod postgres;
pub mod profile;
pub mod sched;
pub mod set;
pub mod smartcard;
pub mod softhsm;
pub mod spec;
pub mod token;

pub use custody::{custody_bin, Custody, Run};
pub use fault::{fault_library, pair_spec, FaultModule, FaultPlan, PAIR_SO_PIN, PAIR_USER_PIN};
pub use manifest::{Manifest, ObjectClass, ObjectManifest, TokenManifest};
pub use profile::{Person, Profile, Seal};
pub use set::{build_set, copy_set, BuildOptions, BuildReport, TokenSet};
pub use softhsm::{softhsm_module, temp_dir};
pub use spec::{
    default_ua_certs_dir, ua_certs_dir_for_test, Bytes, Day, ObjectKind, ObjectSpec, Spec, Text,
    TokenSpec, Validity, BUILDER_VERSION,
};
