//! The idle cost of `custody watch` next to its floor, measured the same way on every
//! PKCS#11 implementation the test harness sets up ([`crate::implementation`]): CPU time of
//! all threads (schedstat, exact) over the same seconds, and peak RSS (VmHWM).
//!
//! The floor is `custody-floor MODULE --poll MS` (the module's own minimal poll: the slot
//! list every interval), with `--reinit` (C_Finalize + C_Initialize before it) when the
//! service re-initialises the module to see new tokens, as its state record says.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{cpu_time, peak_rss_kib, LogTail};

/// A child process killed on drop.
#[derive(Debug)]
pub struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits; returns the exit code.
    pub fn stop(mut self) -> anyhow::Result<Option<i32>> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        Ok(self.child.wait()?.code())
    }
}

/// How the service and its floor are started.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `custody` binary.
    pub custody: PathBuf,
    /// The `custody-floor` binary.
    pub floor: PathBuf,
    /// Poll interval.
    pub interval: Duration,
    /// Directory for journals and logs.
    pub dir: PathBuf,
    /// `CUSTODY_CONFIG` of the service.
    pub config: PathBuf,
    /// Another `custody` build run beside it on the same carriers (the one before a change).
    pub baseline: Option<PathBuf>,
}

/// What a module needs: its path and the environment that shows the instance.
#[derive(Debug, Clone)]
pub struct Target {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// Environment of the processes that load it.
    pub env: Vec<(OsString, OsString)>,
}

impl Setup {
    /// Starts `custody watch` on `target` with the JSON log in `<dir>/<name>.log` and the
    /// journal `<dir>/<name>.db`; `config` replaces the setup's configuration when given.
    pub fn custody(
        &self,
        target: &Target,
        name: &str,
        config: Option<&Path>,
    ) -> anyhow::Result<Running> {
        self.custody_of(&self.custody, target, name, config)
    }

    fn custody_of(
        &self,
        bin: &Path,
        target: &Target,
        name: &str,
        config: Option<&Path>,
    ) -> anyhow::Result<Running> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = Command::new(bin)
            .arg("--journal")
            .arg(self.dir.join(format!("{name}.db")))
            .arg("--module")
            .arg(&target.module)
            .args(["--log-format", "json", "watch", "--interval"])
            .arg(format!("{}ms", self.interval.as_millis()))
            .envs(target.env.iter().map(|(k, v)| (k, v)))
            .env("CUSTODY_CONFIG", config.unwrap_or(&self.config))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting custody watch")?;
        Ok(Running { child })
    }

    /// `custody-floor` polling `target` like the service, for `secs`.
    pub fn floor(&self, target: &Target, secs: u64, reinit: bool) -> anyhow::Result<Running> {
        let mut cmd = Command::new(&self.floor);
        cmd.arg(&target.module)
            .args(["--poll", &self.interval.as_millis().to_string()])
            .args(["--for", &secs.to_string()]);
        if reinit {
            cmd.arg("--reinit");
        }
        let child = cmd
            .envs(target.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.floor.display()))?;
        Ok(Running { child })
    }

    /// True when the service named `name` re-initialises its (first) module, as its state
    /// record says.
    pub fn reinitialises(&self, name: &str) -> anyhow::Result<bool> {
        let path = self.dir.join(format!("{name}.watch.json"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let state: serde_json::Value = serde_json::from_str(&text)?;
        Ok(!state["modules"][0]["reinit_period_ms"].is_null())
    }
}

/// CPU time and peak RSS of one process over the measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// CPU time of all its threads.
    pub cpu: Duration,
    /// Peak resident set (VmHWM), KiB.
    pub rss_kib: u64,
}

/// One idle measurement: the service next to its floor.
#[derive(Debug, Clone)]
pub struct Idle {
    /// The service.
    pub custody: Cost,
    /// The floor.
    pub floor: Cost,
    /// Intervals measured.
    pub polls: f64,
    /// The baseline build, when one ran beside it.
    pub baseline: Option<Cost>,
    /// The floor re-initialised the module every interval.
    pub floor_reinit: bool,
    /// The service's exit code on SIGTERM.
    pub exit: Option<i32>,
}

impl Idle {
    /// custody's CPU over the floor's.
    pub fn ratio(&self) -> f64 {
        self.custody.cpu.as_secs_f64() / self.floor.cpu.as_secs_f64().max(1e-9)
    }
}

/// CPU time of each process over `secs`.
pub fn cpu_over(pids: &[u32], secs: u64) -> anyhow::Result<(Vec<Duration>, f64)> {
    let before = pids
        .iter()
        .map(|p| cpu_time(*p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after = pids
        .iter()
        .map(|p| cpu_time(*p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let took = t0.elapsed().as_secs_f64();
    Ok((
        after.iter().zip(&before).map(|(a, b)| *a - *b).collect(),
        took,
    ))
}

/// Runs the service on `target` (whose carriers are present already) until it has enrolled
/// one, then measures it next to its floor for `secs`.
pub fn idle(setup: &Setup, target: &Target, secs: u64, name: &str) -> anyhow::Result<Idle> {
    let custody = setup.custody(target, name, None)?;
    let mut tail = LogTail::open(&setup.dir.join(format!("{name}.log")))?;
    tail.wait_recorded("carrier_enrolled", "", Duration::from_secs(60))?;
    // The floor starts two and a half intervals later (the state record then says whether
    // the service re-initialises the module: a module without slot events says so at its
    // first wait), so that the two never poll at the same moment (on a small machine
    // simultaneous wake-ups slow each other down).
    std::thread::sleep(setup.interval * 5 / 2);
    let floor_reinit = setup.reinitialises(name)?;
    let floor = setup.floor(target, secs + 60, floor_reinit)?;
    // The baseline a third of an interval after the floor.
    let baseline = match &setup.baseline {
        Some(bin) => {
            std::thread::sleep(setup.interval / 3);
            let b = setup.custody_of(bin, target, &format!("{name}-baseline"), None)?;
            let mut tail = LogTail::open(&setup.dir.join(format!("{name}-baseline.log")))?;
            tail.wait_recorded("carrier_enrolled", "", Duration::from_secs(60))?;
            Some(b)
        }
        None => None,
    };
    // Warm up: two quiet intervals.
    std::thread::sleep(setup.interval * 2);
    let mut pids = vec![custody.pid(), floor.pid()];
    pids.extend(baseline.as_ref().map(Running::pid));
    let (cpu, took) = cpu_over(&pids, secs)?;
    let custody_rss = peak_rss_kib(custody.pid())?;
    let floor_rss = peak_rss_kib(floor.pid())?;
    let baseline = match baseline {
        Some(b) => Some(Cost {
            cpu: cpu[2],
            rss_kib: peak_rss_kib(b.pid())?,
        }),
        None => None,
    };
    drop(floor);
    Ok(Idle {
        custody: Cost {
            cpu: cpu[0],
            rss_kib: custody_rss,
        },
        floor: Cost {
            cpu: cpu[1],
            rss_kib: floor_rss,
        },
        polls: took / setup.interval.as_secs_f64(),
        baseline,
        floor_reinit,
        exit: custody.stop()?,
    })
}

/// One row of the idle table: `label`, custody and floor per poll, ratio, RSS.
pub fn row(label: &str, r: &Idle) -> String {
    let cpu = |d: Duration| {
        format!(
            "{} ({:.0} µs/poll)",
            super::ms(d),
            d.as_secs_f64() * 1e6 / r.polls
        )
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut line = format!(
        "  {:<22} {:>24} {:>24} {:>6.2} {:>6}   {:>7.1} MiB {:>7.1} MiB {:>7}",
        label,
        cpu(r.custody.cpu),
        cpu(r.floor.cpu),
        r.ratio(),
        verdict(r.ratio() <= 1.15),
        r.custody.rss_kib as f64 / 1024.0,
        r.floor.rss_kib as f64 / 1024.0,
        verdict(r.custody.rss_kib <= r.floor.rss_kib + 3 * 1024),
    );
    if !r.floor_reinit {
        line.push_str("   (floor: slot list only)");
    }
    if let Some(b) = &r.baseline {
        let ratio = b.cpu.as_secs_f64() / r.floor.cpu.as_secs_f64().max(1e-9);
        line.push_str(&format!(
            "\n  {:<22} {:>24} {:>24} {:>6.2} {:>6}   {:>7.1} MiB",
            "  baseline build",
            cpu(b.cpu),
            "",
            ratio,
            verdict(ratio <= 1.15),
            b.rss_kib as f64 / 1024.0,
        ));
    }
    if r.exit != Some(0) {
        line.push_str(&format!("   (custody exited with {:?} on SIGTERM)", r.exit));
    }
    line
}

/// The header of [`row`]s.
pub fn header() -> String {
    format!(
        "  {:<22} {:>24} {:>24} {:>6} {:>6}   {:>11} {:>11} {:>7}",
        "present",
        "custody CPU",
        "floor CPU",
        "ratio",
        "≤ 1.15",
        "custody RSS",
        "floor RSS",
        "≤ +3 MiB"
    )
}
