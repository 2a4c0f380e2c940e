//! The world every matrix runs in: the two-token set, the fault module in front of it, a
//! configuration with a PIN rule per carrier, and a baseline journal that already knows both
//! carriers (so a wrong removal has something to remove). Plus the matrix bookkeeping.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use anyhow::{ensure, Context as _};
use custody_core::journal::{EventRow, Journal};
use custody_tests::fault::Call;
use custody_tests::{pair_spec, temp_dir, Custody, FaultModule, FaultPlan, Run, TokenSet};

pub(crate) type TestResult = anyhow::Result<()>;

const FIXTURES: &str = env!("CARGO_BIN_EXE_custody-fixtures");

/// Event kinds that say something is gone.
pub(crate) const REMOVALS: [&str; 3] = ["carrier_removed", "cert_removed", "key_removed"];

/// How long an injected device removal lasts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Persistence {
    /// Only the call at the index fails.
    OneCall,
    /// The call at the index and every later one fail.
    FromThere,
    /// From the index on the module's device is gone as p11-kit's remote module shows a dead
    /// server: C_GetSlotList answers CKR_OK with no slots, every other call fails with
    /// CKR_DEVICE_ERROR (what that module returns). Not CKR_DEVICE_REMOVED: a token that
    /// answers "removed" and is then missing from a complete slot list was removed, and is
    /// recorded so.
    Gone,
}

/// The return value injected everywhere.
pub(crate) const REMOVED: &str = "CKR_DEVICE_REMOVED";
/// The return value of a module whose device or server died.
pub(crate) const DEVICE_ERROR: &str = "CKR_DEVICE_ERROR";

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fault-matrix")
}

pub(crate) struct World {
    pub(crate) dir: PathBuf,
    pub(crate) set: TokenSet,
    pub(crate) fault: FaultModule,
    pub(crate) config: PathBuf,
    /// The journal after a clean scan of both carriers.
    pub(crate) baseline: PathBuf,
    /// Events in the baseline journal.
    pub(crate) baseline_events: usize,
}

impl World {
    pub(crate) fn new(name: &str) -> anyhow::Result<Self> {
        let dir = temp_dir(&base(), name)?;
        let set = TokenSet::cached(
            Path::new(FIXTURES),
            &pair_spec(),
            &base().join("cache"),
            &dir.join("set"),
        )?;
        let fault = FaultModule::new(&dir.join("fault"), &FaultPlan::new())?;
        let config = dir.join("custody.toml");
        let mut text = String::new();
        for token in &set.manifest().tokens {
            std::fs::set_permissions(&token.user_pin_file, std::fs::Permissions::from_mode(0o600))?;
            text.push_str(&format!(
                "[[pin]]\nmanufacturer = \"{}\"\nmodel = \"{}\"\nserial = \"{}\"\nuser_pin_file = \"{}\"\n",
                token.manufacturer,
                token.model,
                token.serial,
                token.user_pin_file.display()
            ));
        }
        // An OpenSSH key whose signatures custody accepts on destruction orders.
        let signer = dir.join("hr");
        let keygen = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "hr", "-f"])
            .arg(&signer)
            .output()
            .context("running ssh-keygen (Debian package openssh-client)")?;
        ensure!(keygen.status.success(), "ssh-keygen failed");
        let public = std::fs::read_to_string(dir.join("hr.pub"))?;
        let allowed = dir.join("allowed_signers");
        std::fs::write(
            &allowed,
            format!(
                "hr@example.org namespaces=\"custody-order\" {}",
                public.trim()
            ),
        )?;
        text.push_str(&format!(
            "[orders]\nallowed_signers = \"{}\"\nrequired_signers = 1\n",
            allowed.display()
        ));
        std::fs::write(&config, text)?;
        let baseline = dir.join("baseline.db");
        let world = Self {
            dir,
            set,
            fault,
            config,
            baseline,
            baseline_events: 0,
        };
        world
            .custody(&world.set, &world.baseline)
            .json(&["scan"], 0)?;
        let baseline_events = events(&world.baseline)?.len();
        ensure!(baseline_events > 0, "the baseline scan recorded nothing");
        Ok(Self {
            baseline_events,
            ..world
        })
    }

    /// custody on `set` and `journal`, through the fault module, with the world's config.
    pub(crate) fn custody(&self, set: &TokenSet, journal: &Path) -> Custody {
        Custody::new(set, journal)
            .through(&self.fault)
            .with_config(&self.config)
    }

    /// A fresh copy of the baseline journal at `to`, with its key (a journal and its key go
    /// together: the checkpoints in the journal are signed with it).
    pub(crate) fn journal_copy(&self, to: &Path) -> anyhow::Result<()> {
        for suffix in ["", "-wal", "-shm", ".key"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
            let from = PathBuf::from(format!("{}{suffix}", self.baseline.display()));
            if from.exists() {
                std::fs::copy(&from, format!("{}{suffix}", to.display()))
                    .with_context(|| format!("copying {}", from.display()))?;
            }
        }
        Ok(())
    }

    /// The calls of one clean run of `run` (the plan empty, the log cleared first).
    pub(crate) fn clean_calls(
        &self,
        run: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<Call>> {
        self.fault.set_plan(&FaultPlan::new())?;
        self.fault.clear_log()?;
        run()?;
        let calls = self.fault.calls()?;
        ensure!(!calls.is_empty(), "the clean run made no PKCS#11 call");
        Ok(calls)
    }

    /// Lanes to run a matrix's indexes in parallel, each with its own fault module files
    /// and journal: `CUSTODY_FAULT_LANES`, default 3 (runs mostly wait for processes and
    /// poll intervals, not for a CPU).
    pub(crate) fn lanes(&self) -> anyhow::Result<Vec<Lane>> {
        let n = std::env::var("CUSTODY_FAULT_LANES")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(3);
        (0..n)
            .map(|k| {
                let dir = self.dir.join(format!("lane-{k}"));
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)?;
                }
                Ok(Lane {
                    // Its own tokens: SoftHSM2 processes sharing a token directory disturb
                    // each other's reads, which would blur what the fault did.
                    set: self.set.copy_to(&dir.join("set"))?,
                    fault: FaultModule::new(&dir.join("fault"), &FaultPlan::new())?,
                    journal: dir.join("journal.db"),
                    dir,
                })
            })
            .collect()
    }
}

/// One lane of a matrix: its own fault module files, journal and scratch directory.
pub(crate) struct Lane {
    pub(crate) dir: PathBuf,
    /// The lane's own copy of the tokens.
    pub(crate) set: TokenSet,
    pub(crate) fault: FaultModule,
    pub(crate) journal: PathBuf,
}

impl Lane {
    /// custody on `set` and this lane's journal, through this lane's fault module.
    pub(crate) fn custody(&self, w: &World, set: &TokenSet) -> Custody {
        Custody::new(set, &self.journal)
            .through(&self.fault)
            .with_config(&w.config)
    }

    /// Sets the plan for `persistence` from `index`, and clears the log.
    pub(crate) fn inject(&self, persistence: Persistence, index: u64) -> anyhow::Result<()> {
        self.fault.clear_log()?;
        let plan = match persistence {
            Persistence::OneCall => FaultPlan::new().fail_at(index, REMOVED),
            Persistence::FromThere => FaultPlan::new().fail_from(index, REMOVED),
            Persistence::Gone => FaultPlan::new()
                .fault(serde_json::json!({
                    "function": "C_GetSlotList", "from": index, "empty": true
                }))
                .fail_from(index, DEVICE_ERROR),
        };
        self.fault.set_plan(&plan)
    }

    /// Whether the fault was actually injected in the last run (the call existed).
    pub(crate) fn injected(&self) -> anyhow::Result<bool> {
        Ok(self.fault.calls()?.iter().any(|c| c.origin == "fault"))
    }
}

/// Runs `custody ARGS` with `input` on standard input.
pub(crate) fn run_with_input(custody: &Custody, args: &[&str], input: &str) -> anyhow::Result<Run> {
    let mut child = custody
        .command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running custody")?;
    if let Some(mut stdin) = child.stdin.take() {
        // custody may exit before reading (a refusal): a broken pipe is its answer, not ours.
        let _ = stdin.write_all(input.as_bytes());
    }
    Ok(child.wait_with_output()?.into())
}

/// Every event of a journal.
pub(crate) fn events(journal: &Path) -> anyhow::Result<Vec<EventRow>> {
    Ok(Journal::open(journal)?.events()?)
}

/// The kind of an event as text.
pub(crate) fn kind(event: &EventRow) -> String {
    event.kind.to_string()
}

/// `custody journal verify`: `None` when it exits 0, else what it said.
pub(crate) fn verify_problem(custody: &Custody) -> anyhow::Result<Option<String>> {
    let run = custody.run(&["journal", "verify"])?;
    Ok((run.code != 0).then(|| {
        format!(
            "journal verify exited {}: {}{}",
            run.code,
            run.stdout.trim(),
            run.stderr.trim()
        )
    }))
}

/// Collects violations over the indexes of one matrix and reports them at the end.
pub(crate) struct Matrix {
    name: &'static str,
    clean: Vec<Call>,
    started: Instant,
    runs: usize,
    lanes: usize,
    not_injected: usize,
    violations: Vec<String>,
}

impl Matrix {
    pub(crate) fn new(name: &'static str, clean: Vec<Call>) -> Self {
        Self {
            name,
            clean,
            started: Instant::now(),
            runs: 0,
            lanes: 1,
            not_injected: 0,
            violations: Vec::new(),
        }
    }

    /// The clean run's calls.
    pub(crate) fn clean(&self) -> &[Call] {
        &self.clean
    }

    /// The process-wide indexes of the clean run's calls (of its first process).
    pub(crate) fn indexes(&self) -> Vec<u64> {
        let pid = self.clean.first().map(|c| c.pid);
        self.clean
            .iter()
            .filter(|c| Some(c.pid) == pid)
            .filter_map(|c| c.index)
            .collect()
    }

    fn function_at(&self, index: u64) -> &str {
        self.clean
            .iter()
            .find(|c| c.index == Some(index))
            .map_or("?", |c| c.function.as_str())
    }

    /// Runs `run` for every index of `indexes` over the world's lanes (each index once, on
    /// whichever lane is free) and records what each run found. `run` returns whether the
    /// fault was injected and the problems.
    pub(crate) fn run(
        &mut self,
        w: &World,
        indexes: &[u64],
        run: impl Fn(&Lane, u64) -> anyhow::Result<(bool, Vec<String>)> + Sync,
    ) -> TestResult {
        let lanes = w.lanes()?;
        self.lanes = lanes.len();
        let next = AtomicUsize::new(0);
        let results = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for lane in &lanes {
                let (next, results, run) = (&next, &results, &run);
                scope.spawn(move || loop {
                    let Some(&index) = indexes.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    let outcome = run(lane, index);
                    results
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((index, outcome));
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
        results.sort_by_key(|(index, _)| *index);
        for (index, outcome) in results {
            let (injected, problems) =
                outcome.with_context(|| format!("{} matrix, index {index}", self.name))?;
            self.record(index, injected, problems);
        }
        Ok(())
    }

    /// Records one run: whether the fault was injected, and its problems.
    pub(crate) fn record(&mut self, index: u64, injected: bool, problems: Vec<String>) {
        self.runs += 1;
        if !injected {
            self.not_injected += 1;
        }
        let function = self.function_at(index).to_owned();
        for problem in problems {
            self.violations
                .push(format!("  #{index} {function}: {problem}"));
        }
    }

    /// Prints the summary; fails when any run violated a rule.
    pub(crate) fn finish(self) -> TestResult {
        let failed: std::collections::BTreeSet<&str> = self
            .violations
            .iter()
            .filter_map(|v| v.split(':').next())
            .collect();
        println!(
            "fault matrix {}: {} runs on {} lanes ({} clean calls; {} runs never reached their index) in {:.1} s; {} index(es) with violations",
            self.name,
            self.runs,
            self.lanes,
            self.indexes().len(),
            self.not_injected,
            self.started.elapsed().as_secs_f64(),
            failed.len()
        );
        for violation in &self.violations {
            println!("{violation}");
        }
        ensure!(
            self.violations.is_empty(),
            "fault matrix {}: {} violation(s) at {} index(es) (listed above)",
            self.name,
            self.violations.len(),
            failed.len()
        );
        Ok(())
    }
}

/// Removal events among `new` (events appended by the run) for carriers that are present.
pub(crate) fn removals(new: &[EventRow]) -> Vec<String> {
    new.iter()
        .filter(|e| REMOVALS.contains(&kind(e).as_str()))
        .map(|e| {
            format!(
                "{} #{} of present carrier {}",
                kind(e),
                e.seq,
                e.carrier.as_deref().unwrap_or("-")
            )
        })
        .collect()
}
