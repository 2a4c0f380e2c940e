//! Running the real `custody` binary against a token set and a journal of the test's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{ensure, Context as _};

use crate::fault::FaultModule;
use crate::set::TokenSet;

/// The `custody` binary of this workspace (`target/<profile>/custody`, next to the test's
/// own executable). `cargo test --workspace` builds it.
pub fn custody_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CUSTODY_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/custody
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let bin = dir.join("custody");
    build_once(dir);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p custody-agent` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// Under `cargo test` (which names itself in `CARGO`), brings the binary up to date once per
/// test process: a test run of this package alone must not use a `custody` left from an older
/// build (whose journal schema, say, is older than the one these tests open). After `cargo test
/// --workspace` built it, this is a no-op.
fn build_once(dir: &Path) {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return;
        };
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "custody-agent",
            "--bin",
            "custody",
        ]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(other) => {
                build.args(["--profile", other]);
            }
            None => return,
        }
        let status = build.status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "building custody for the tests failed: {status:?}"
        );
    });
}

/// What one run of custody printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Stdout parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "stdout is not JSON: {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Fails unless the exit code is `code`.
    pub fn expect(self, code: i32) -> anyhow::Result<Self> {
        ensure!(
            self.code == code,
            "custody exited {} (expected {code})\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// custody pointed at one token set and one journal, with no system configuration.
#[derive(Debug, Clone)]
pub struct Custody {
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    module: PathBuf,
    journal: PathBuf,
    config: Option<PathBuf>,
}

impl Custody {
    /// custody for `set`, writing `journal`.
    pub fn new(set: &TokenSet, journal: &Path) -> Self {
        Self {
            env: set.env(),
            module: set.module().to_path_buf(),
            journal: journal.to_path_buf(),
            config: None,
        }
    }

    /// custody for any PKCS#11 module, with the environment the module needs (a reader's
    /// [`crate::pcsc::Reader::env`]), writing `journal`.
    pub fn for_module(
        module: &Path,
        env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
        journal: &Path,
    ) -> Self {
        Self {
            env,
            module: module.to_path_buf(),
            journal: journal.to_path_buf(),
            config: None,
        }
    }

    /// Uses a configuration file.
    pub fn with_config(mut self, config: &Path) -> Self {
        self.config = Some(config.to_path_buf());
        self
    }

    /// Runs custody's PKCS#11 calls through the fault module (in front of the set's SoftHSM2).
    pub fn through(mut self, fault: &FaultModule) -> Self {
        self.module = fault.module().to_path_buf();
        self.env.extend(fault.env());
        self
    }

    /// The PKCS#11 module custody is given.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The journal file.
    pub fn journal(&self) -> &Path {
        &self.journal
    }

    /// A command with the set's environment, `--journal` and `--module` in place.
    pub fn command(&self) -> Command {
        let mut c = Command::new(custody_bin());
        c.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("CUSTODY_LOG")
            .env_remove("CUSTODY_FAULT_PLAN")
            .env(
                "CUSTODY_CONFIG",
                self.config.as_deref().unwrap_or(Path::new("/dev/null")),
            )
            .arg("--journal")
            .arg(&self.journal)
            .arg("--module")
            .arg(&self.module);
        c
    }

    /// Runs `custody ARGS` and collects the result.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        let out = self
            .command()
            .args(args)
            .output()
            .context("running custody")?;
        Ok(out.into())
    }

    /// Runs `custody ARGS --json`, expects exit `code` and returns the JSON.
    pub fn json(&self, args: &[&str], code: i32) -> anyhow::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.push("--json");
        self.run(&all)?.expect(code)?.json()
    }
}
