//! tpm2-pkcs11 over a software TPM: `swtpm` on two free loopback ports, a private D-Bus
//! session bus (`dbus-daemon --session` on a socket in the test's directory, never the
//! system bus) with `tpm2-abrmd` on it, and a private store (TPM2_PKCS11_STORE). A carrier is
//! inserted by C_InitToken on the free slot and removed with `tpm2_ptool rmtoken`.
//!
//! Wrong PINs count towards the TPM's dictionary-attack lockout: nothing here ever tries one.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::{
    package_version, run_tool, Capabilities, Carrier, Implementation, Instance, Provisioner,
    Support,
};
use crate::daemon::{free_port_pair, wait_until, Daemon};

/// Where Debian puts the module.
const MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";
/// The TCTI the module and the tools use: the access broker on the session bus.
const TCTI: &str = "tabrmd:bus_type=session";

/// tpm2-pkcs11.
pub(crate) struct Tpm2;

impl Implementation for Tpm2 {
    fn name(&self) -> &'static str {
        "tpm2-pkcs11"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sign: Support::Yes,
            wipe_reinit: Support::Missing(
                "C_InitToken on an initialised token: tpm2-pkcs11 initialises only its free slot",
            ),
            wipe_destroy_keys: Support::Yes,
            insert_remove: Support::Yes,
            reinit_by_tool: Support::Missing(
                "C_InitToken on an initialised token: tpm2-pkcs11 initialises only its free slot",
            ),
            new_serial_on_reinit: false,
            server: false,
        }
    }

    fn start(&self, dir: &Path) -> anyhow::Result<Box<dyn Instance>> {
        for program in [
            "swtpm",
            "dbus-daemon",
            "tpm2-abrmd",
            "tpm2_getcap",
            "tpm2_ptool",
        ] {
            crate::softhsm::find_program(program).with_context(|| {
                format!(
                    "{program} is missing (Debian packages swtpm, dbus-daemon, tpm2-abrmd, \
                     tpm2-tools, libtpm2-pkcs11-tools; tests/run.sh installs them)"
                )
            })?;
        }
        anyhow::ensure!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing (Debian package libtpm2-pkcs11-1)"
        );
        let store = dir.join("store");
        let state = dir.join("tpm");
        for d in [&store, &state] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let (swtpm, port) = start_swtpm(dir, &state)?;
        let bus = dir.join("bus");
        let mut dbus = Daemon::spawn(
            "dbus-daemon",
            Command::new("dbus-daemon")
                .args(["--session", "--nofork", "--nopidfile"])
                .arg(format!("--address=unix:path={}", bus.display())),
            &dir.join("dbus.log"),
        )?;
        wait_until(
            "the private D-Bus session bus",
            Duration::from_secs(10),
            || {
                dbus.check_running()?;
                Ok(bus.exists())
            },
        )?;
        let mut instance = Tpm2Instance {
            module: PathBuf::from(MODULE),
            store,
            bus,
            provisioner: Provisioner::new(dir)?.with_module_usage(),
            abrmd: None,
            dbus: Some(dbus),
            swtpm: Some(swtpm),
        };
        let mut abrmd_cmd = Command::new("tpm2-abrmd");
        if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            abrmd_cmd.arg("--allow-root");
        }
        abrmd_cmd
            .args(["--session", "--flush-all"])
            .arg(format!("--tcti=swtpm:host=127.0.0.1,port={port}"))
            .envs(instance.bus_env());
        let mut abrmd = Daemon::spawn("tpm2-abrmd", &mut abrmd_cmd, &dir.join("abrmd.log"))?;
        let env = instance.env();
        wait_until("tpm2-abrmd", Duration::from_secs(20), || {
            abrmd.check_running()?;
            Ok(tpm2_getcap(&env).is_ok())
        })?;
        instance.abrmd = Some(abrmd);
        Ok(Box::new(instance))
    }
}

/// Starts swtpm on two free loopback ports (tried again when another process took them in
/// the meantime); returns it and its command port.
fn start_swtpm(dir: &Path, state: &Path) -> anyhow::Result<(Daemon, u16)> {
    let mut last = None;
    for _ in 0..5 {
        let port = free_port_pair()?;
        let mut swtpm = Daemon::spawn(
            "swtpm",
            Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", state.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"]),
            &dir.join("swtpm.log"),
        )?;
        let ready = wait_until("swtpm", Duration::from_secs(10), || {
            swtpm.check_running()?;
            Ok(std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_ok())
        });
        match ready {
            Ok(()) => return Ok((swtpm, port)),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("swtpm did not start")))
}

/// `tpm2_getcap properties-variable` through the broker.
fn tpm2_getcap(env: &[(OsString, OsString)]) -> anyhow::Result<String> {
    let mut env = env.to_vec();
    env.push(("TPM2TOOLS_TCTI".into(), TCTI.into()));
    run_tool("tpm2_getcap", &[OsStr::new("properties-variable")], &env)
}

struct Tpm2Instance {
    module: PathBuf,
    store: PathBuf,
    bus: PathBuf,
    provisioner: Provisioner,
    // Dropped in this order: broker, bus, TPM.
    abrmd: Option<Daemon>,
    dbus: Option<Daemon>,
    swtpm: Option<Daemon>,
}

impl Tpm2Instance {
    fn bus_env(&self) -> Vec<(OsString, OsString)> {
        let mut address = OsString::from("unix:path=");
        address.push(&self.bus);
        vec![("DBUS_SESSION_BUS_ADDRESS".into(), address)]
    }

    /// TPM2_PT_LOCKOUT_COUNTER: failed authorisations counted towards the lockout.
    fn read_lockout_counter(&self) -> anyhow::Result<u64> {
        let caps = tpm2_getcap(&self.env())?;
        let line = caps
            .lines()
            .find(|l| l.trim_start().starts_with("TPM2_PT_LOCKOUT_COUNTER"))
            .context("tpm2_getcap shows no TPM2_PT_LOCKOUT_COUNTER")?;
        let value = line.split(':').nth(1).unwrap_or_default().trim();
        let Some(hex) = value.strip_prefix("0x") else {
            bail!("TPM2_PT_LOCKOUT_COUNTER: {value:?}")
        };
        u64::from_str_radix(hex, 16).with_context(|| format!("TPM2_PT_LOCKOUT_COUNTER {value:?}"))
    }
}

impl Drop for Tpm2Instance {
    fn drop(&mut self) {
        drop(self.abrmd.take());
        drop(self.dbus.take());
        drop(self.swtpm.take());
    }
}

impl Instance for Tpm2Instance {
    fn daemon_pids(&self) -> Vec<u32> {
        [&self.abrmd, &self.dbus, &self.swtpm]
            .into_iter()
            .flatten()
            .map(Daemon::pid)
            .collect()
    }

    fn module(&self) -> &Path {
        &self.module
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        let mut env = self.bus_env();
        env.push(("TPM2_PKCS11_STORE".into(), self.store.clone().into()));
        env.push(("TPM2_PKCS11_TCTI".into(), TCTI.into()));
        // The module logs every CKR it returns at its default level; errors only.
        env.push(("TPM2_PKCS11_LOG_LEVEL".into(), "0".into()));
        env.push(("TSS2_LOG".into(), "all+NONE".into()));
        env
    }

    fn version(&self) -> String {
        format!(
            "tpm2-pkcs11 {} over swtpm {} with tpm2-abrmd {}",
            package_version("libtpm2-pkcs11-1"),
            package_version("swtpm"),
            package_version("tpm2-abrmd")
        )
    }

    fn insert(&mut self, label: &str) -> anyhow::Result<Carrier> {
        self.provisioner
            .provision(&self.module, &self.env(), label, None)
    }

    fn remove(&mut self, carrier: &Carrier) -> anyhow::Result<()> {
        let store = self.store.clone();
        run_tool(
            "tpm2_ptool",
            &[
                OsStr::new("rmtoken"),
                OsStr::new("--label"),
                OsStr::new(&carrier.token.label),
                OsStr::new("--path"),
                store.as_os_str(),
            ],
            &self.env(),
        )
        .map(drop)
    }

    fn lockout_counter(&self) -> anyhow::Result<Option<u64>> {
        self.read_lockout_counter().map(Some)
    }
}
