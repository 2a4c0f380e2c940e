//! What the service tests share: a command run that must succeed, bounded waits, and
//! `custody watch` as a child process whose JSON log is collected.
//!
//! Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `cmd`; a failure carries its output.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, Box<dyn std::error::Error>> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

/// Polls `f` until it gives a value or `within` has passed.
pub(crate) fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > until {
            return Err(format!("not within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `custody watch` as a child process; its stderr (JSON log) is collected.
pub(crate) struct Service {
    pub(crate) child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Service {
    pub(crate) fn spawn(mut c: Command) -> Result<Self, Box<dyn std::error::Error>> {
        let mut child = c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Ok(Self { child, lines })
    }

    pub(crate) fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether a log line's message is `message`.
    pub(crate) fn logged(&self, message: &str) -> bool {
        let needle = format!("\"message\":\"{message}\"");
        self.log().iter().any(|l| l.contains(&needle))
    }

    /// Waits for a log line whose message is `message`.
    pub(crate) fn wait_log(&self, message: &str, within: Duration) -> TestResult {
        wait_for(within, || self.logged(message).then_some(()))
            .map_err(|e| format!("log line {message:?} {e}; log: {:?}", self.log()))?;
        Ok(())
    }

    pub(crate) fn signal(&self, sig: &str) -> TestResult {
        run(Command::new("kill").args([&format!("-{sig}"), &self.pid()]))?;
        Ok(())
    }

    pub(crate) fn wait_exit(
        &mut self,
        within: Duration,
    ) -> Result<Option<i32>, Box<dyn std::error::Error>> {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > until {
                return Err(format!("custody did not exit within {within:?}").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit code.
    pub(crate) fn stop(&mut self) -> Result<Option<i32>, Box<dyn std::error::Error>> {
        self.signal("TERM")?;
        self.wait_exit(Duration::from_secs(20))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
