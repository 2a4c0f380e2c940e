//! p11-kit's remote module: `p11-kit server` exports a private SoftHSM2 on a unix socket in
//! the test's directory; custody loads `p11-kit-client.so` with P11_KIT_SERVER_ADDRESS.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use super::softhsm::SoftHsmInstance;
use super::{package_version, Capabilities, Carrier, Implementation, Instance, Support};
use crate::daemon::{wait_until, Daemon};

/// Where Debian puts p11-kit's client module.
const CLIENT_CANDIDATES: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/pkcs11/p11-kit-client.so",
];

/// p11-kit's remote module in front of SoftHSM2.
pub(crate) struct P11KitRemote;

impl Implementation for P11KitRemote {
    fn name(&self) -> &'static str {
        "p11-kit-remote"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sign: Support::Yes,
            wipe_reinit: Support::Yes,
            wipe_destroy_keys: Support::Yes,
            insert_remove: Support::Yes,
            reinit_by_tool: Support::Yes,
            new_serial_on_reinit: false,
            server: true,
        }
    }

    fn start(&self, dir: &Path) -> anyhow::Result<Box<dyn Instance>> {
        let client = CLIENT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("p11-kit-client.so is missing (Debian package p11-kit-modules)")?;
        let softhsm = SoftHsmInstance::start(&dir.join("remote"))?;
        let runtime = dir.join("run");
        std::fs::create_dir_all(&runtime)
            .with_context(|| format!("creating {}", runtime.display()))?;
        let mut instance = P11KitInstance {
            client,
            socket: dir.join("p11-kit.sock"),
            runtime,
            log: dir.join("p11-kit-server.log"),
            softhsm,
            server: None,
        };
        instance.restart_server()?;
        Ok(Box::new(instance))
    }
}

struct P11KitInstance {
    client: PathBuf,
    socket: PathBuf,
    runtime: PathBuf,
    log: PathBuf,
    softhsm: SoftHsmInstance,
    server: Option<Daemon>,
}

impl Instance for P11KitInstance {
    fn module(&self) -> &Path {
        &self.client
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        let mut address = OsString::from("unix:path=");
        address.push(&self.socket);
        vec![("P11_KIT_SERVER_ADDRESS".into(), address)]
    }

    fn version(&self) -> String {
        format!(
            "p11-kit {} serving {}",
            package_version("p11-kit"),
            SoftHsmInstance::version()
        )
    }

    fn insert(&mut self, label: &str) -> anyhow::Result<Carrier> {
        // Through the client module, as an administrator using the remote HSM would.
        self.softhsm
            .provision(&self.client, &self.env(), label, None)
    }

    fn remove(&mut self, carrier: &Carrier) -> anyhow::Result<()> {
        self.softhsm.delete(carrier)
    }

    fn reinit_by_tool(&mut self, carrier: &Carrier, label: &str) -> anyhow::Result<Carrier> {
        self.softhsm
            .provision(&self.client, &self.env(), label, Some(carrier))
    }

    fn daemon_pids(&self) -> Vec<u32> {
        // The server forks a process per client: counted as its descendant.
        self.server.iter().map(Daemon::pid).collect()
    }

    fn kill_server(&mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(mut server) => server.kill(),
            None => Ok(()),
        }
    }

    fn restart_server(&mut self) -> anyhow::Result<()> {
        self.kill_server()?;
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", self.socket.display())),
        }
        let mut command = Command::new("p11-kit");
        command
            .arg("server")
            .arg("-f")
            .arg("--provider")
            .arg(&self.softhsm.module)
            .arg("-n")
            .arg(&self.socket)
            .arg("pkcs11:")
            .envs(self.softhsm.softhsm_env())
            .env("XDG_RUNTIME_DIR", &self.runtime);
        let mut server = Daemon::spawn("p11-kit server", &mut command, &self.log)?;
        let socket = self.socket.clone();
        wait_until("p11-kit server socket", Duration::from_secs(10), || {
            server.check_running()?;
            Ok(socket.exists())
        })?;
        self.server = Some(server);
        Ok(())
    }
}
