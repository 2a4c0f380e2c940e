//! What the benchmark programs (`watch-bench`, `slot-event-bench`) share: exact CPU time and
//! peak memory of a process, percentiles, and reading the service's JSON log as it grows.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};

pub mod floor;
pub mod idle;

/// CPU time of a process so far: the sum over its threads of /proc/…/schedstat's first
/// field (nanoseconds on a CPU; exact, unlike the tick-based utime/stime).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // the thread ended meanwhile
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Duration::from_nanos(total))
}

/// CPU time so far of the threads of a process named `name` (their `comm`).
pub fn thread_cpu_time(pid: u32, name: &str) -> anyhow::Result<Duration> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = entry?.path();
        if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim_end() == name) {
            total += std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(Duration::from_nanos(total))
}

/// Peak resident set (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

/// The `p`-th percentile of sorted values (nearest rank); zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// A duration in milliseconds, one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Reads the service's JSON log (`--log-format json`) as it grows and finds `recorded` lines
/// (written after the journal transaction commits).
#[derive(Debug)]
pub struct LogTail {
    reader: BufReader<std::fs::File>,
    line: String,
}

impl LogTail {
    /// Starts reading `path` from its beginning.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            reader: BufReader::new(std::fs::File::open(path)?),
            line: String::new(),
        })
    }

    /// Waits until a `recorded` line of `kind` for a carrier ending in `serial` appears;
    /// returns its timestamp.
    pub fn wait_recorded(
        &mut self,
        kind: &str,
        serial: &str,
        timeout: Duration,
    ) -> anyhow::Result<SystemTime> {
        self.wait_recorded_any(&[kind], serial, timeout)
    }

    /// Waits until a `recorded` line of one of `kinds` for a carrier ending in `serial`
    /// appears; returns its timestamp.
    pub fn wait_recorded_any(
        &mut self,
        kinds: &[&str],
        serial: &str,
        timeout: Duration,
    ) -> anyhow::Result<SystemTime> {
        let until = Instant::now() + timeout;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                if Instant::now() > until {
                    bail!("no {kinds:?} of {serial} within {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.line) else {
                continue;
            };
            let f = &v["fields"];
            if f["message"] == "recorded"
                && kinds.iter().any(|k| f["kind"] == *k)
                && f["carrier"].as_str().is_some_and(|c| c.ends_with(serial))
            {
                let ts = v["timestamp"].as_str().unwrap_or_default();
                let t =
                    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                        .with_context(|| format!("log timestamp {ts}"))?;
                return Ok(SystemTime::from(t));
            }
        }
    }

    /// Waits for the next line whose message is `message` and returns its fields with its
    /// timestamp.
    pub fn wait_message(
        &mut self,
        message: &str,
        timeout: Duration,
    ) -> anyhow::Result<(serde_json::Value, SystemTime)> {
        let until = Instant::now() + timeout;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                if Instant::now() > until {
                    bail!("no `{message}` line within {timeout:?}");
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.line) else {
                continue;
            };
            if v["fields"]["message"] == message {
                let ts = v["timestamp"].as_str().unwrap_or_default();
                let t =
                    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                        .with_context(|| format!("log timestamp {ts}"))?;
                return Ok((v["fields"].clone(), SystemTime::from(t)));
            }
        }
    }
}
