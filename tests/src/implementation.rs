//! The PKCS#11 implementations custody is tested on, each started from scratch in a test's
//! own directory: its own configuration, its own sockets or loopback ports, its daemons
//! ended by pid when the [`Instance`] is dropped. Never the system's tokens or daemons.
//!
//! The behaviour tests (`tests/tests/implementations.rs`) are written once against
//! [`Implementation`] and [`Instance`]; [`IMPLEMENTATIONS`] is the table they run on, so a
//! further implementation is one more entry there and one more line in the tests' list.
//!
//! # Layout
//!
//! - `softhsm`: SoftHSM2 with a private token directory.
//! - `kryoptic`: kryoptic built from the crates registry, sqlite slots.
//! - `tpm2`: tpm2-pkcs11 over swtpm, tpm2-abrmd on a private D-Bus session bus.
//! - `p11kit`: p11-kit's client module talking to `p11-kit server` exporting a private SoftHSM2.
//! - `opensc`: OpenSC over a private pcscd with virtual cards in vsmartcard's reader.

mod kryoptic;
mod opensc;
mod p11kit;
mod softhsm;
mod tpm2;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, ensure, Context as _};

use crate::ca::Ca;
use crate::manifest::TokenManifest;
use crate::profile::Profile;
use crate::spec::{Bytes, TokenSpec};
use crate::token::{Existing, ProvisionJob};

/// Whether an implementation supports what a behaviour needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// It does.
    Yes,
    /// It does not: what is missing (the PKCS#11 function, or the behaviour), as the test
    /// reports it; the test then checks that custody refuses clearly instead.
    Missing(&'static str),
}

impl Support {
    /// True when supported.
    pub fn is_yes(self) -> bool {
        self == Self::Yes
    }
}

/// What an implementation can do, as the behaviour tests need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// C_Sign with a key on the carrier (issuance with a signed acknowledgement).
    pub sign: Support,
    /// C_InitToken on an initialised token with the SO PIN (wipe method `reinit`).
    pub wipe_reinit: Support,
    /// C_Login as user and C_DestroyObject of private keys and certificates (wipe method
    /// `destroy-keys`).
    pub wipe_destroy_keys: Support,
    /// Carriers can be inserted and removed while custody runs ([`Instance::insert`] and
    /// [`Instance::remove`] after start).
    pub insert_remove: Support,
    /// Another tool can re-initialise a carrier in place while custody runs
    /// ([`Instance::reinit_by_tool`]).
    pub reinit_by_tool: Support,
    /// C_InitToken gives the token a new serial.
    pub new_serial_on_reinit: bool,
    /// A server process between custody and the tokens that can be killed and restarted
    /// ([`Instance::kill_server`], [`Instance::restart_server`]).
    pub server: bool,
}

/// One PKCS#11 implementation.
pub trait Implementation: Send + Sync {
    /// Short name printed in test output and used as the table key, e.g. `kryoptic`.
    fn name(&self) -> &'static str;
    /// What it can do.
    fn capabilities(&self) -> Capabilities;
    /// Starts a fresh instance with no carrier in `dir` (an empty directory of the test's).
    fn start(&self, dir: &Path) -> anyhow::Result<Box<dyn Instance>>;
}

/// A running implementation. Dropping it ends its daemons.
pub trait Instance: Send {
    /// The PKCS#11 module custody loads.
    fn module(&self) -> &Path;
    /// What a process needs in its environment to see this instance (and nothing else).
    fn env(&self) -> Vec<(OsString, OsString)>;
    /// The versions in use, for the test output, e.g. `SoftHSM 2.6.1`.
    fn version(&self) -> String;
    /// Inserts a new carrier labelled `label` holding one EC P-256 key pair with a
    /// certificate.
    fn insert(&mut self, label: &str) -> anyhow::Result<Carrier>;
    /// Removes a carrier, as pulling it out would.
    fn remove(&mut self, carrier: &Carrier) -> anyhow::Result<()>;
    /// Re-initialises a carrier in place with another tool (C_InitToken with its SO PIN,
    /// label `label`, then a new key and certificate); returns it as it is now.
    fn reinit_by_tool(&mut self, carrier: &Carrier, label: &str) -> anyhow::Result<Carrier> {
        let _ = (carrier, label);
        bail!("this implementation cannot re-initialise a carrier in place")
    }
    /// Kills the server process between custody and the tokens (SIGKILL).
    fn kill_server(&mut self) -> anyhow::Result<()> {
        bail!("this implementation has no server")
    }
    /// Failed authorisations the device counts towards its dictionary-attack lockout
    /// (TPM2_PT_LOCKOUT_COUNTER), where it has such a counter.
    fn lockout_counter(&self) -> anyhow::Result<Option<u64>> {
        Ok(None)
    }
    /// Starts the server again after [`Instance::kill_server`].
    fn restart_server(&mut self) -> anyhow::Result<()> {
        bail!("this implementation has no server")
    }
    /// The daemons a call into the module waits for (servers, brokers, emulators), by pid;
    /// none for a module that does all its work in the caller's process.
    fn daemon_pids(&self) -> Vec<u32> {
        Vec::new()
    }
}

/// A carrier an [`Instance`] made.
#[derive(Debug, Clone)]
pub struct Carrier {
    /// Slot id it was made in.
    pub slot: u64,
    /// What is on it, as read back from the module (serial, label, manufacturer, model,
    /// objects), with its PIN files.
    pub token: TokenManifest,
}

impl Carrier {
    /// Serial as the module reports it.
    pub fn serial(&self) -> &str {
        &self.token.serial
    }

    /// SHA-256 of the certificate, lower-case hex.
    pub fn cert_sha256(&self) -> Option<&str> {
        self.token
            .objects
            .iter()
            .find_map(|o| o.cert_sha256.as_deref())
    }
}

/// The implementations the behaviour tests run on, by [`Implementation::name`].
pub static IMPLEMENTATIONS: &[&dyn Implementation] = &[
    &softhsm::SoftHsm,
    &kryoptic::Kryoptic,
    &tpm2::Tpm2,
    &p11kit::P11KitRemote,
    &opensc::OpenSc,
];

/// The implementation named `name`.
pub fn implementation(name: &str) -> anyhow::Result<&'static dyn Implementation> {
    IMPLEMENTATIONS
        .iter()
        .copied()
        .find(|i| i.name() == name)
        .with_context(|| format!("no implementation named {name:?}"))
}

/// Starts `name` for the test `test` in a fresh directory under `base`, and prints which
/// implementation and versions the test runs on. When it cannot be set up: an error under
/// CI (`CI=true`); elsewhere a printed notice and `None` (the test passes without running).
pub fn start_for_test(
    name: &str,
    test: &str,
    base: &Path,
) -> anyhow::Result<Option<Box<dyn Instance>>> {
    let imp = implementation(name)?;
    let dir = crate::temp_dir(base, &format!("{name}-{test}"))?;
    match imp.start(&dir) {
        Ok(instance) => {
            eprintln!("[{name}] {test}: on {}", instance.version());
            Ok(Some(instance))
        }
        Err(err) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            Err(err.context(format!("{name} could not be set up (CI=true: this fails)")))
        }
        Err(err) => {
            eprintln!("[{name}] {test}: NOT RUN: {name} could not be set up: {err:#}");
            Ok(None)
        }
    }
}

/// The `custody-fixtures` binary of this workspace, next to the test's own executable.
pub fn fixtures_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CUSTODY_FIXTURES_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("custody-fixtures")
}

/// Makes carriers on an instance through `custody-fixtures provision` (a child process with
/// the instance's environment): one CA per instance, PIN files under `<dir>/pins`.
pub(crate) struct Provisioner {
    dir: PathBuf,
    spec_hash: String,
    ca_key: Vec<u8>,
    count: AtomicUsize,
    module_usage: bool,
}

impl Provisioner {
    /// A provisioner keeping its files under `dir`.
    pub(crate) fn new(dir: &Path) -> anyhow::Result<Self> {
        let spec_hash = format!("impl-{}", dir.display());
        let (ca, _, _) = Ca::generate(&spec_hash)?;
        for sub in ["pins", "certs"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            spec_hash,
            ca_key: ca.pkcs8(),
            count: AtomicUsize::new(0),
            module_usage: false,
        })
    }

    /// Leaves key usage attributes to the module (tpm2-pkcs11).
    pub(crate) fn with_module_usage(mut self) -> Self {
        self.module_usage = true;
        self
    }

    /// Initialises a token with `label`, a user PIN and one EC key with certificate: the
    /// token of `reinit` (with its SO PIN), else the first free slot's (with a new SO PIN).
    pub(crate) fn provision(
        &self,
        module: &Path,
        env: &[(OsString, OsString)],
        label: &str,
        reinit: Option<&Carrier>,
    ) -> anyhow::Result<Carrier> {
        let index = self.count.fetch_add(1, Ordering::Relaxed);
        let mut token = TokenSpec::new(label).ec_key_cert(
            "01",
            "signing key",
            Profile::plain(&format!("Holder {index}")),
        );
        // Eight digits: kryoptic's minimum PIN length.
        let user_pin = format!("4321{index:04}");
        let so_pin = reinit.map_or_else(|| format!("8765{index:04}"), |c| c.token.so_pin.clone());
        token = token.pins(&user_pin, &so_pin);
        let job = ProvisionJob {
            module: module.to_path_buf(),
            token,
            index,
            spec_hash: self.spec_hash.clone(),
            ca_key_pkcs8: Bytes(self.ca_key.clone()),
            certs_dir: self.dir.join("certs"),
            module_usage: self.module_usage,
            reinit: reinit.map(|c| Existing {
                serial: c.token.serial.clone(),
                label: c.token.label.clone(),
            }),
        };
        let mut child = Command::new(fixtures_bin())
            .arg("provision")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", fixtures_bin().display()))?;
        serde_json::to_writer(child.stdin.take().context("stdin")?, &job)
            .context("sending the job")?;
        let out = child.wait_with_output().context("waiting for provision")?;
        ensure!(
            out.status.success(),
            "provisioning {label:?} on {} failed: {}",
            module.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let reply: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("reading the provision reply")?;
        let mut token: TokenManifest =
            serde_json::from_value(reply["token"].clone()).context("the provision manifest")?;
        let pins = self.dir.join("pins");
        token.user_pin_file = pins.join(format!("{index}.user"));
        token.so_pin_file = pins.join(format!("{index}.so"));
        private_file(&token.user_pin_file, &token.user_pin)?;
        private_file(&token.so_pin_file, &token.so_pin)?;
        Ok(Carrier {
            slot: reply["slot"]
                .as_u64()
                .context("the provision reply has no slot")?,
            token,
        })
    }
}

/// Writes `text` and a newline to `path` with mode 0600.
pub(crate) fn private_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))
}

/// The installed version of a Debian package, or `?` when dpkg does not know it.
pub(crate) fn package_version(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}

/// Runs a tool with the instance's environment; fails with its output when it fails.
pub(crate) fn run_tool(
    program: &str,
    args: &[&std::ffi::OsStr],
    env: &[(OsString, OsString)],
) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
