//! SoftHSM2 with a private token directory (SOFTHSM2_CONF in the children's environment).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{
    package_version, run_tool, Capabilities, Carrier, Implementation, Instance, Provisioner,
    Support,
};

/// SoftHSM2.
pub(crate) struct SoftHsm;

impl Implementation for SoftHsm {
    fn name(&self) -> &'static str {
        "softhsm2"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sign: Support::Yes,
            wipe_reinit: Support::Yes,
            wipe_destroy_keys: Support::Yes,
            insert_remove: Support::Yes,
            reinit_by_tool: Support::Yes,
            new_serial_on_reinit: false,
            server: false,
        }
    }

    fn start(&self, dir: &Path) -> anyhow::Result<Box<dyn Instance>> {
        Ok(Box::new(SoftHsmInstance::start(dir)?))
    }
}

/// A private SoftHSM2 token directory: what both the local and the p11-kit-served instances
/// use.
pub(crate) struct SoftHsmInstance {
    pub(crate) module: PathBuf,
    pub(crate) conf: PathBuf,
    provisioner: Provisioner,
}

impl SoftHsmInstance {
    /// An empty token directory `<dir>/tokens` and its configuration.
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Self> {
        let module = crate::softhsm_module();
        anyhow::ensure!(
            module.exists(),
            "{} is missing (Debian package softhsm2; softhsm-fixtures/ensure-packages.sh installs it)",
            module.display()
        );
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)
            .with_context(|| format!("creating {}", tokens.display()))?;
        let conf = dir.join("softhsm2.conf");
        crate::softhsm::write_conf(&conf, &tokens)?;
        Ok(Self {
            module,
            conf,
            provisioner: Provisioner::new(dir)?,
        })
    }

    /// SOFTHSM2_CONF.
    pub(crate) fn softhsm_env(&self) -> Vec<(OsString, OsString)> {
        vec![("SOFTHSM2_CONF".into(), self.conf.clone().into())]
    }

    /// Makes a carrier through `module` (SoftHSM2 itself, or a module in front of it).
    pub(crate) fn provision(
        &self,
        module: &Path,
        env: &[(OsString, OsString)],
        label: &str,
        reinit: Option<&Carrier>,
    ) -> anyhow::Result<Carrier> {
        self.provisioner.provision(module, env, label, reinit)
    }

    /// Deletes a carrier's token with softhsm2-util.
    pub(crate) fn delete(&self, carrier: &Carrier) -> anyhow::Result<()> {
        run_tool(
            "softhsm2-util",
            &[
                OsStr::new("--delete-token"),
                OsStr::new("--serial"),
                OsStr::new(carrier.serial()),
            ],
            &self.softhsm_env(),
        )
        .map(drop)
    }

    pub(crate) fn version() -> String {
        format!("SoftHSM {}", package_version("softhsm2"))
    }
}

impl Instance for SoftHsmInstance {
    fn module(&self) -> &Path {
        &self.module
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        self.softhsm_env()
    }

    fn version(&self) -> String {
        Self::version()
    }

    fn insert(&mut self, label: &str) -> anyhow::Result<Carrier> {
        self.provision(&self.module, &self.env(), label, None)
    }

    fn remove(&mut self, carrier: &Carrier) -> anyhow::Result<()> {
        self.delete(carrier)
    }

    fn reinit_by_tool(&mut self, carrier: &Carrier, label: &str) -> anyhow::Result<Carrier> {
        self.provision(&self.module, &self.env(), label, Some(carrier))
    }
}
