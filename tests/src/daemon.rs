//! Daemons a test starts (swtpm, dbus-daemon, tpm2-abrmd, p11-kit server, …): child processes
//! with their output in a log file, ended by their own pid when dropped, and the loopback
//! ports they listen on, chosen free at run time.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A child process that runs until stopped; stopped (by pid) when dropped.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the daemon's log when it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            ),
            Err(err) => Err(err).with_context(|| format!("waiting for {}", self.name)),
        }
    }

    /// What the daemon wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ends the daemon at once (SIGKILL to its pid), as a crash would, and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait().ok().flatten().is_none() {
            self.child
                .kill()
                .with_context(|| format!("killing {} (pid {})", self.name, self.pid()))?;
        }
        self.child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        Ok(())
    }

    /// Asks the daemon to end (SIGTERM to its pid) and waits up to 5 s, then kills it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        // Best effort: if the signal cannot be sent, the kill below ends it.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Nothing useful to do with an error while dropping: the process is gone or ours.
        let _ = self.stop();
    }
}

/// A loopback port `p` such that `p` and `p + 1` were both free a moment ago (swtpm's TCTI
/// uses `port` for commands and `port + 1` for control).
pub fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        let port = first.local_addr().context("local address")?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", next)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no two consecutive free loopback ports in 100 tries")
}

/// Polls `ready` every 20 ms until it returns true, for at most `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) => last_error = Some(err),
        }
        if Instant::now() >= deadline {
            return match last_error {
                Some(err) => Err(err.context(format!("{what}: not ready after {timeout:?}"))),
                None => bail!("{what}: not ready after {timeout:?}"),
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
