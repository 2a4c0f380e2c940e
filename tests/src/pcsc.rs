//! A smart-card reader of the test's own: pcscd with vsmartcard's virtual reader (`vpcd`),
//! and OpenSC's PKCS#11 module configured to use it.
//!
//! Everything is private to one [`Reader`] and started from scratch:
//!
//! - **pcscd** runs in the foreground on a socket in the reader's directory, handed over by
//!   `systemd-socket-activate` (pcscd 1.9 takes its socket path from socket activation only;
//!   clients find it through `PCSCLITE_CSOCK_NAME`), with a reader configuration directory of
//!   its own naming only the vpcd reader. It never touches `/run/pcscd` or the system's
//!   pcscd; it is killed by its pid when the reader is dropped.
//! - **vpcd** listens on two free TCP ports chosen at start (it opens one per virtual slot:
//!   `port` and `port + 1`); a [`VirtualCard`] connects to one to be inserted.
//! - **OpenSC** reads `OPENSC_CONF` from the reader's directory (file caching off), so the
//!   system's OpenSC configuration never matters.
//!
//! Processes that should use the reader get [`Reader::env`] in their environment; nothing
//! here changes the test process's own environment.
//!
//! One limitation: pcscd also lists the machine's USB readers (its hotplug cannot be turned
//! off), so on a machine with a real reader plugged in, its card appears too.

use std::ffi::OsString;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::smartcard::{CardImage, VirtualCard};

/// OpenSC's PKCS#11 module, where Debian and Ubuntu put it.
pub const OPENSC_MODULE_CANDIDATES: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so",
    "/usr/lib/opensc-pkcs11.so",
];
const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
const PCSCD_CANDIDATES: [&str; 2] = ["/usr/sbin/pcscd", "/sbin/pcscd"];
const SOCKET_ACTIVATE: &str = "systemd-socket-activate";
/// What to install when something is missing.
const PACKAGES: &str = "pcscd vsmartcard-vpcd opensc libpcsclite1 systemd";
/// How long [`Reader::insert`] waits for pcscd to see the slot's last card gone.
const SLOT_EMPTY_WITHIN: Duration = Duration::from_secs(20);
/// Longest unix socket path (sun_path is 108 bytes with the NUL).
const SOCKET_PATH_MAX: usize = 100;

/// OpenSC's configuration for the tests: nothing cached between reads or runs, and the
/// generic ISO 7816 driver for a card no specific driver claims (the virtual card).
const OPENSC_CONF: &str = "\
# custody tests: OpenSC reads this file only (OPENSC_CONF).
app default {
    debug = 0;
    enable_default_driver = true;
    framework pkcs15 {
        use_file_caching = no;
    }
}
";

/// OpenSC's PKCS#11 module: `$OPENSC_MODULE`, else the first of
/// [`OPENSC_MODULE_CANDIDATES`] that exists.
pub fn opensc_module() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("OPENSC_MODULE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    OPENSC_MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .with_context(|| format!("opensc-pkcs11.so not found; install {PACKAGES}"))
}

/// pcscd + vpcd + OpenSC configuration, private to one test.
#[derive(Debug)]
pub struct Reader {
    pcscd: Child,
    port: u16,
    socket: PathBuf,
    /// A short directory for the socket when `dir` is too deep for one (removed on drop).
    socket_dir: Option<PathBuf>,
    opensc_conf: PathBuf,
    log: PathBuf,
    module: PathBuf,
}

impl Reader {
    /// Starts pcscd with a vpcd reader, configured in `dir` (which must exist).
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let pcscd = PCSCD_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .with_context(|| format!("pcscd not found; install {PACKAGES}"))?;
        anyhow::ensure!(
            Path::new(VPCD_DRIVER).exists(),
            "the vpcd reader driver {VPCD_DRIVER} is missing; install {PACKAGES}"
        );
        crate::softhsm::find_program(SOCKET_ACTIVATE)
            .with_context(|| format!("{SOCKET_ACTIVATE} not found; install {PACKAGES}"))?;
        let module = opensc_module()?;
        let opensc_conf = dir.join("opensc.conf");
        std::fs::write(&opensc_conf, OPENSC_CONF)?;
        let (socket, socket_dir) = socket_path(dir)?;
        let mut last = None;
        for _ in 0..10 {
            let port = free_port_pair()?;
            match start_pcscd(&pcscd, dir, &socket, port) {
                Ok((child, log)) => {
                    return Ok(Self {
                        pcscd: child,
                        port,
                        socket,
                        socket_dir,
                        opensc_conf,
                        log,
                        module,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(d) = &socket_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("pcscd did not start")))
    }

    /// The variables a process needs to use this reader through OpenSC.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("PCSCLITE_CSOCK_NAME".into(), self.socket.clone().into()),
            ("OPENSC_CONF".into(), self.opensc_conf.clone().into()),
        ]
    }

    /// OpenSC's PKCS#11 module.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// pcscd's process id.
    pub fn pid(&self) -> u32 {
        self.pcscd.id()
    }

    /// pcscd's log (foreground, info level).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Inserts a card into the reader's first slot (see [`Self::wait_slot_empty`]).
    pub fn insert(&self, image: &CardImage) -> anyhow::Result<VirtualCard> {
        self.wait_slot_empty(0, SLOT_EMPTY_WITHIN)?;
        VirtualCard::insert(self.port, image.clone())
    }

    /// Inserts a card into the reader's second slot (see [`Self::wait_slot_empty`]).
    pub fn insert_second(&self, image: &CardImage) -> anyhow::Result<VirtualCard> {
        self.wait_slot_empty(1, SLOT_EMPTY_WITHIN)?;
        VirtualCard::insert(self.port + 1, image.clone())
    }

    /// Waits until pcscd has seen every card put into `slot` leave it (its log says `Card
    /// Removed From` as often as `Card inserted into` for that slot). vpcd takes the next
    /// card on a slot as soon as the last one's connection is gone, and pcscd notices a
    /// change only at its presence poll (every 400 ms, later on a busy machine): a card put
    /// in before that poll replaces the last one unseen, pcscd keeps the old card's state,
    /// never powers the new one up, and no client ever reads it.
    pub fn wait_slot_empty(&self, slot: u16, within: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let ends = format!(" {slot:02}");
        let count = |log: &str, what: &str| {
            log.lines()
                .map(str::trim_end)
                .filter(|l| l.contains(what) && l.ends_with(&ends))
                .count()
        };
        loop {
            let log = self.log();
            let inserted = count(&log, "Card inserted into custody virtual reader ");
            let removed = count(&log, "Card Removed From custody virtual reader ");
            if removed >= inserted {
                return Ok(());
            }
            anyhow::ensure!(
                start.elapsed() < within,
                "pcscd did not see the last card leave slot {slot} within {within:?} ({inserted} insertions, {removed} removals in its log {})",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.pcscd.kill();
        let _ = self.pcscd.wait();
        if let Some(d) = &self.socket_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The socket path: in `dir` when short enough, else in a fresh directory under /tmp.
fn socket_path(dir: &Path) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let socket = dir.join("pcscd.comm");
    if socket.as_os_str().len() <= SOCKET_PATH_MAX {
        return Ok((socket, None));
    }
    static N: AtomicU64 = AtomicU64::new(0);
    let short = std::env::temp_dir().join(format!(
        "custody-pcscd-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&short)?;
    Ok((short.join("pcscd.comm"), Some(short)))
}

/// A port `p` such that `p` and `p + 1` are both free now (vpcd binds every address).
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind(("0.0.0.0", 0)).context("binding a free port")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no two consecutive free TCP ports found")
}

/// Starts pcscd on `socket` with a vpcd reader on `port`; returns once the reader listens.
fn start_pcscd(
    pcscd: &Path,
    dir: &Path,
    socket: &Path,
    port: u16,
) -> anyhow::Result<(Child, PathBuf)> {
    let conf_dir = dir.join("reader.conf.d");
    std::fs::create_dir_all(&conf_dir)?;
    std::fs::write(
        conf_dir.join("vpcd"),
        format!(
            "FRIENDLYNAME \"custody virtual reader\"\nDEVICENAME   /dev/null:{port}\n\
             LIBPATH      {VPCD_DRIVER}\nCHANNELID    {port}\n"
        ),
    )?;
    let _ = std::fs::remove_file(socket);
    let log = dir.join(format!("pcscd-{port}.log"));
    let out = std::fs::File::create(&log)?;
    let mut child = Command::new(SOCKET_ACTIVATE)
        .arg("--listen")
        .arg(socket)
        .arg(pcscd)
        .args(["--foreground", "--info", "--config"])
        .arg(&conf_dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {SOCKET_ACTIVATE} {}", pcscd.display()))?;
    match wait_ready(&mut child, socket, &log, port) {
        Ok(()) => Ok((child, log)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Waits for the socket, starts pcscd with a first connection (socket activation starts
/// the program on the first client), then waits for its log to say the reader listens.
fn wait_ready(child: &mut Child, socket: &Path, log: &Path, port: u16) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(15);
    let mut poked = false;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "pcscd exited ({status}) while starting: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if !poked && socket.exists() {
            // Only wakes the activator; pcscd sees a client that leaves at once.
            poked = std::os::unix::net::UnixStream::connect(socket).is_ok();
        }
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(log) {
            let _ = f.read_to_string(&mut text);
        }
        if text.contains("Could not initialize connection to virtual ICC") {
            bail!("vpcd could not listen on port {port} or {}", port + 1);
        }
        if text.contains(&format!("Waiting for virtual ICC on port {}", port + 1))
            && text.contains("daemon ready")
        {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("pcscd did not become ready within 15 s: {text}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
