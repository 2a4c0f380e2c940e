//! Running custody through the fault-injecting PKCS#11 module (`fault-pkcs11/`), which
//! forwards every call to SoftHSM2 and fails, rewrites or hides what a [`FaultPlan`] says.
//!
//! ```no_run
//! use custody_tests::{FaultModule, FaultPlan};
//! # fn main() -> anyhow::Result<()> {
//! # let dir = std::path::Path::new("target/tmp/x");
//! let fault = FaultModule::new(dir, &FaultPlan::new().fail_at(17, "CKR_DEVICE_REMOVED"))?;
//! // Give a child `fault.module()` as its PKCS#11 module and `fault.env()` in its environment;
//! // afterwards `fault.calls()?` lists every call it made.
//! # Ok(())
//! # }
//! ```
//!
//! The module is built once per test process with `cargo build -p custody-fault-pkcs11` (a
//! no-op when `tests/run.sh` built it already); `CUSTODY_FAULT_MODULE` names a ready one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, ensure, Context as _};
use serde_json::{json, Value};

use crate::softhsm::write_atomic;
use crate::{Profile, Spec, TokenSpec};

/// User PIN of both tokens of [`pair_spec`].
pub const PAIR_USER_PIN: &str = "fault-user-4711";
/// SO PIN of both tokens of [`pair_spec`].
pub const PAIR_SO_PIN: &str = "fault-so-4711";

/// The small set fault tests run on: tokens `fault-a` and `fault-b`, each with an EC key pair
/// (CKA_ID 01) and its certificate, PINs [`PAIR_USER_PIN`] / [`PAIR_SO_PIN`].
pub fn pair_spec() -> Spec {
    let token = |label: &str| {
        TokenSpec::new(label)
            .pins(PAIR_USER_PIN, PAIR_SO_PIN)
            .ec_key_cert("01", label, Profile::plain(&format!("{label} (fixture)")))
    };
    Spec::new()
        .named("fault-pair")
        .token(token("fault-a"))
        .token(token("fault-b"))
}

/// A fault plan (the JSON the module reads; see `fault-pkcs11/src/lib.rs` for every field).
#[derive(Debug, Clone)]
pub struct FaultPlan {
    value: Value,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultPlan {
    /// The empty plan: every call is forwarded unchanged.
    pub fn new() -> Self {
        Self { value: json!({}) }
    }

    /// A plan written as JSON.
    pub fn from_json(value: Value) -> Self {
        Self { value }
    }

    /// The plan as JSON.
    pub fn json(&self) -> &Value {
        &self.value
    }

    fn push(mut self, list: &str, item: Value) -> Self {
        if let Some(object) = self.value.as_object_mut() {
            let entry = object.entry(list).or_insert_with(|| json!([]));
            if let Some(items) = entry.as_array_mut() {
                items.push(item);
            }
        }
        self
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        if let Some(object) = self.value.as_object_mut() {
            object.insert(key.to_owned(), value);
        }
        self
    }

    /// Adds a fault rule as JSON (`{"function": …, "nth": …, "rv": …}`).
    pub fn fault(self, rule: Value) -> Self {
        self.push("faults", rule)
    }

    /// The call with process-wide index `index` (as in the call log) returns `rv`.
    pub fn fail_at(self, index: u64, rv: &str) -> Self {
        self.fault(json!({"at": index, "rv": rv}))
    }

    /// Every call from process-wide index `index` on returns `rv`.
    pub fn fail_from(self, index: u64, rv: &str) -> Self {
        self.fault(json!({"from": index, "rv": rv}))
    }

    /// The `nth` call of `function` returns `rv`.
    pub fn fail_nth(self, function: &str, nth: u64, rv: &str) -> Self {
        self.fault(json!({"function": function, "nth": nth, "rv": rv}))
    }

    /// Every call of `function` returns `rv`.
    pub fn fail_every(self, function: &str, rv: &str) -> Self {
        self.fault(json!({"function": function, "rv": rv}))
    }

    /// C_GetSlotList answers CKR_OK with no slots from its `nth` call on.
    pub fn empty_slot_list_from(self, nth: u64) -> Self {
        self.fault(json!({"function": "C_GetSlotList", "from_nth": nth, "empty": true}))
    }

    /// The token with this real serial looks pulled out.
    pub fn hide(self, serial: &str) -> Self {
        self.push("hidden", json!(serial))
    }

    /// C_GetTokenInfo of the token with real serial `serial` (or `*`) reports `report`
    /// (`{"serial": …, "model": …, "manufacturer": …, "label": …, "set_flags": […],
    /// "clear_flags": […]}`; text may hold `\u0000`, `{"hex": …}` gives raw bytes).
    pub fn token(self, serial: &str, report: Value) -> Self {
        self.push("tokens", json!({"serial": serial, "report": report}))
    }

    /// The private key with CKA_ID `id_hex` reads as CKK_DSTU4145.
    pub fn dstu_key(self, id_hex: &str) -> Self {
        self.push("keys", json!({"id": id_hex, "key_type": "CKK_DSTU4145"}))
    }

    /// Every successful C_InitToken gives the token a new serial.
    pub fn reinit_changes_serial(self) -> Self {
        self.set("reinit_changes_serial", json!(true))
    }

    /// C_GetInfo reports this library manufacturer.
    pub fn library_manufacturer(self, manufacturer: &str) -> Self {
        self.set("library", json!({"manufacturer": manufacturer}))
    }
}

/// One call in the module's call log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The calling process.
    pub pid: u32,
    /// Process-wide call index; `None` for C_WaitForSlotEvent (it has its own counter).
    pub index: Option<u64>,
    /// `C_GetTokenInfo`, …
    pub function: String,
    /// The return value's name (`CKR_OK`).
    pub rv: String,
    /// `real`, `fault` (the plan failed it) or `hidden` (the plan hides the token).
    pub origin: String,
}

/// The fault module set up for one test: its plan file, call log and state file live in the
/// test's directory.
#[derive(Debug, Clone)]
pub struct FaultModule {
    library: PathBuf,
    target: PathBuf,
    plan: PathBuf,
    log: PathBuf,
    state: PathBuf,
}

impl FaultModule {
    /// The module in front of SoftHSM2 with `plan`, its files in `dir` (created if missing).
    pub fn new(dir: &Path, plan: &FaultPlan) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let module = Self {
            library: fault_library()?,
            target: crate::softhsm_module(),
            plan: dir.join("fault-plan.json"),
            log: dir.join("fault-calls.log"),
            state: dir.join("fault-state.json"),
        };
        module.set_plan(plan)?;
        Ok(module)
    }

    /// The module's path: give it to custody as `--module`.
    pub fn module(&self) -> &Path {
        &self.library
    }

    /// The real module behind it.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The variables a child needs (besides SoftHSM2's SOFTHSM2_CONF).
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        [
            ("CUSTODY_FAULT_TARGET", &self.target),
            ("CUSTODY_FAULT_PLAN_FILE", &self.plan),
            ("CUSTODY_FAULT_LOG", &self.log),
            ("CUSTODY_FAULT_STATE", &self.state),
        ]
        .into_iter()
        .map(|(k, v)| (OsString::from(k), v.clone().into_os_string()))
        .collect()
    }

    /// The call log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Adds [`Self::env`] to a command and removes an inline plan it might inherit.
    pub fn apply(&self, command: &mut Command) {
        command.envs(self.env()).env_remove("CUSTODY_FAULT_PLAN");
    }

    /// Replaces the plan (atomically: a running process re-reads it at its next call).
    pub fn set_plan(&self, plan: &FaultPlan) -> anyhow::Result<()> {
        write_atomic(&self.plan, serde_json::to_string(plan.json())?.as_bytes())
    }

    /// Empties the call log.
    pub fn clear_log(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.log) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.log.display())),
        }
    }

    /// Every call logged since the last [`Self::clear_log`], in log order. Fails when the
    /// log names a plan problem, so a plan that did not parse cannot pass unnoticed.
    pub fn calls(&self) -> anyhow::Result<Vec<Call>> {
        let text = match std::fs::read_to_string(&self.log) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.log.display())),
        };
        parse_log(&text)
    }
}

/// Parses call log lines (`PID INDEX FUNCTION RV ORIGIN`, tab-separated).
pub fn parse_log(text: &str) -> anyhow::Result<Vec<Call>> {
    let mut calls = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.get(2) == Some(&"plan") {
            bail!("the fault module reported a plan problem: {line}");
        }
        ensure!(fields.len() == 5, "bad call log line {line:?}");
        calls.push(Call {
            pid: fields[0].parse().context("pid")?,
            index: if fields[1].starts_with('w') {
                None
            } else {
                Some(fields[1].parse().context("call index")?)
            },
            function: fields[2].to_owned(),
            rv: fields[3].to_owned(),
            origin: fields[4].to_owned(),
        });
    }
    Ok(calls)
}

/// The fault module's shared library, built once per process.
pub fn fault_library() -> anyhow::Result<PathBuf> {
    static LIBRARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| build_library().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_library() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CUSTODY_FAULT_MODULE").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        ensure!(
            path.is_file(),
            "CUSTODY_FAULT_MODULE={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--quiet", "-p", "custody-fault-pkcs11"])
        .arg("--message-format=json-render-diagnostics");
    if built_in_release() {
        command.arg("--release");
    }
    let out = command
        .output()
        .context("running cargo build -p custody-fault-pkcs11")?;
    ensure!(
        out.status.success(),
        "cargo build -p custody-fault-pkcs11 failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "custody_fault_pkcs11"
        {
            let found = message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|f| f.ends_with(".so"));
            if let Some(found) = found {
                return Ok(PathBuf::from(found));
            }
        }
    }
    bail!("cargo build -p custody-fault-pkcs11 named no shared library")
}

/// Whether this test binary is a release build (target/release/deps/…).
fn built_in_release() -> bool {
    std::env::current_exe().is_ok_and(|exe| {
        exe.parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|name| name == "release")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_build_the_json_the_module_reads() {
        let plan = FaultPlan::new()
            .fail_at(3, "CKR_DEVICE_REMOVED")
            .hide("abc")
            .reinit_changes_serial();
        assert_eq!(
            plan.json(),
            &json!({
                "faults": [{"at": 3, "rv": "CKR_DEVICE_REMOVED"}],
                "hidden": ["abc"],
                "reinit_changes_serial": true
            })
        );
    }

    #[test]
    fn log_lines_parse_and_plan_problems_fail() -> anyhow::Result<()> {
        let calls = parse_log("12\t1\tC_GetFunctionList\tCKR_OK\treal\n12\tw1\tC_WaitForSlotEvent\tCKR_NO_EVENT\treal\n")?;
        assert_eq!(calls[0].index, Some(1));
        assert_eq!(calls[1].index, None);
        assert!(parse_log("12\t-\tplan\tbad fault plan\n").is_err());
        Ok(())
    }
}
