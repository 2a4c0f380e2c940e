//! kryoptic, built from the crates registry by `softhsm-fixtures/kryoptic.sh` (once, kept under
//! `target/kryoptic`), with a private configuration (KRYOPTIC_CONF) of [`SLOTS`] sqlite slots.
//! A carrier is inserted by C_InitToken on a free slot, removed by deleting its database.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context as _};

use super::{Capabilities, Carrier, Implementation, Instance, Provisioner, Support};

/// Slots in the configuration (carriers at once).
const SLOTS: u64 = 4;
/// The version `kryoptic.sh` builds.
const VERSION: &str = "1.5.4";

/// kryoptic.
pub(crate) struct Kryoptic;

/// Builds (once per run; cargo locks the build directory against other processes) and
/// returns the module's path.
fn module() -> anyhow::Result<PathBuf> {
    static MODULE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm-fixtures/kryoptic.sh");
            let out = std::process::Command::new(&script)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}): {}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

impl Implementation for Kryoptic {
    fn name(&self) -> &'static str {
        "kryoptic"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sign: Support::Yes,
            wipe_reinit: Support::Yes,
            wipe_destroy_keys: Support::Yes,
            insert_remove: Support::Yes,
            reinit_by_tool: Support::Yes,
            new_serial_on_reinit: true,
            server: false,
        }
    }

    fn start(&self, dir: &Path) -> anyhow::Result<Box<dyn Instance>> {
        let module = module()?;
        let db = dir.join("db");
        std::fs::create_dir_all(&db).with_context(|| format!("creating {}", db.display()))?;
        let mut conf = String::new();
        for slot in 1..=SLOTS {
            let file = db.join(format!("slot{slot}.sql"));
            let Some(file) = file.to_str() else {
                bail!("{} is not UTF-8", file.display())
            };
            conf.push_str(&format!(
                "[[slots]]\nslot = {slot}\ndbtype = \"sqlite\"\ndbargs = {}\n",
                toml_string(file)
            ));
        }
        let conf_path = dir.join("kryoptic.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("writing {}", conf_path.display()))?;
        Ok(Box::new(KryopticInstance {
            module,
            conf: conf_path,
            db,
            provisioner: Provisioner::new(dir)?,
        }))
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

struct KryopticInstance {
    module: PathBuf,
    conf: PathBuf,
    db: PathBuf,
    provisioner: Provisioner,
}

impl Instance for KryopticInstance {
    fn module(&self) -> &Path {
        &self.module
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        vec![("KRYOPTIC_CONF".into(), self.conf.clone().into())]
    }

    fn version(&self) -> String {
        format!("kryoptic {VERSION} (features minimal, dynamic)")
    }

    fn insert(&mut self, label: &str) -> anyhow::Result<Carrier> {
        self.provisioner
            .provision(&self.module, &self.env(), label, None)
    }

    fn remove(&mut self, carrier: &Carrier) -> anyhow::Result<()> {
        let file = self.db.join(format!("slot{}.sql", carrier.slot));
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))
    }

    fn reinit_by_tool(&mut self, carrier: &Carrier, label: &str) -> anyhow::Result<Carrier> {
        self.provisioner
            .provision(&self.module, &self.env(), label, Some(carrier))
    }
}
