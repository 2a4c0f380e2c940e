//! A private PostgreSQL cluster for tests: `initdb` + `pg_ctl` from Debian's `postgresql`
//! package in a temporary directory, listening on a unix socket there (and on a free loopback
//! port when asked), run as an unprivileged user (PostgreSQL refuses to run as root: under
//! root the cluster runs as `nobody`). A watcher process stops the cluster and removes its
//! directory when the test process ends, however it ends.
//!
//! One shared cluster per test binary ([`Postgres::shared`]), one database per test
//! ([`Postgres::database`]); tests that stop or kill the server start their own
//! ([`Postgres::start`]). A cluster that cannot start is an error, never a skip.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also listen on 127.0.0.1 at a free port.
    pub tcp: bool,
    /// Serve TLS with this certificate and key (PEM files), when listening on TCP; TCP then
    /// accepts TLS connections only (`hostssl`), and connections are logged.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Keep fsync on (benchmarks); tests turn it off for speed.
    pub durable: bool,
}

/// A running cluster.
#[derive(Debug)]
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    /// The loopback port, when listening on TCP.
    pub port: Option<u16>,
    user: Option<(u32, u32)>,
    pid: u32,
}

static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(dir.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).context(
        "PostgreSQL's server programs are not installed (no /usr/lib/postgresql/*/bin/initdb): \
         install Debian's `postgresql` package (softhsm-fixtures/ensure-packages.sh does)",
    )
}

/// uid and gid of `nobody`, when this process runs as root.
fn unprivileged() -> anyhow::Result<Option<(u32, u32)>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("0");
    if uid != "0" {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .context("no user `nobody` to run PostgreSQL as (it refuses to run as root)")?;
    let fields: Vec<&str> = entry.split(':').collect();
    Ok(Some((fields[2].parse()?, fields[3].parse()?)))
}

impl Postgres {
    /// The cluster shared by the tests of this process, started on first use.
    pub fn shared() -> anyhow::Result<&'static Self> {
        SHARED
            .get_or_init(|| Self::start(&Options::default()).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the test PostgreSQL cluster did not start: {e}"))
    }

    /// Starts a cluster of its own.
    pub fn start(opts: &Options) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let user = unprivileged()?;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("custody-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let mut pg = Self {
            dir,
            bin,
            port: None,
            user,
            pid: 0,
        };
        pg.watch_parent()?;
        let out = pg
            .command("initdb")
            .args([
                "-D",
                "data",
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()?;
        ensure!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut hba = "local all postgres trust\nlocal all all scram-sha-256\n".to_owned();
        let mut conf = format!(
            "unix_socket_directories = '{}'\nlisten_addresses = ''\nmax_connections = 40\nshared_buffers = 32MB\n\
             password_encryption = 'scram-sha-256'\nlog_min_messages = warning\n",
            pg.dir.display()
        );
        if !opts.durable {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        if opts.tcp {
            let port = free_port()?;
            pg.port = Some(port);
            conf.push_str(&format!("listen_addresses = '127.0.0.1'\nport = {port}\n"));
            // With TLS, only TLS connections are accepted on TCP.
            let kind = if opts.tls.is_some() {
                "hostssl"
            } else {
                "host"
            };
            hba.push_str(&format!("{kind} all all 127.0.0.1/32 scram-sha-256\n"));
        }
        if let Some((cert, key)) = &opts.tls {
            for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
                let dest = pg.dir.join("data").join(to);
                std::fs::copy(from, &dest)?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))?;
                if let Some((uid, gid)) = user {
                    std::os::unix::fs::chown(&dest, Some(uid), Some(gid))?;
                }
            }
            // Connections are logged: a test can tell whether a client got past the handshake.
            conf.push_str(
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nlog_connections = on\n",
            );
        }
        let data = pg.dir.join("data");
        let mut current = std::fs::read_to_string(data.join("postgresql.conf"))?;
        current.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), current)?;
        std::fs::write(data.join("pg_hba.conf"), hba)?;
        pg.pg_ctl_start()?;
        Ok(pg)
    }

    fn pg_ctl_start(&mut self) -> anyhow::Result<()> {
        let out = self
            .command("pg_ctl")
            .args(["-D", "data", "-l", "server.log", "-w", "-t", "60", "start"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            bail!(
                "pg_ctl start failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))?;
        self.pid = pid.lines().next().unwrap_or("0").trim().parse()?;
        Ok(())
    }

    /// A server program of this cluster, run as the cluster's user in its directory.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir).env_remove("PGDATA");
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        cmd
    }

    /// A process that stops the cluster and removes its directory once this process ends.
    fn watch_parent(&self) -> anyhow::Result<()> {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; \
             [ -f data/postmaster.pid ] && '{pg_ctl}' -D data -m immediate stop >/dev/null 2>&1; \
             cd / && rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            dir = self.dir.display()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.spawn().context("starting the cluster's watcher")?;
        Ok(())
    }

    /// The socket directory (the `host` of a unix-socket URL).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for `user` and `db` over the unix socket.
    pub fn url(&self, user: &str, db: &str) -> String {
        let host: String = self
            .dir
            .to_string_lossy()
            .replace('%', "%25")
            .replace('/', "%2F");
        // The socket's name carries the port.
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("postgresql://{user}@{host}{port}/{db}")
    }

    /// A URL for `user` and `db` over TCP (127.0.0.1), when listening there.
    pub fn tcp_url(&self, user: &str, db: &str) -> Option<String> {
        self.port
            .map(|p| format!("postgresql://{user}@127.0.0.1:{p}/{db}"))
    }

    /// A superuser client of `db`.
    pub fn client(&self, db: &str) -> anyhow::Result<postgres::Client> {
        let mut cfg = postgres::Config::new();
        cfg.host_path(&self.dir)
            .user("postgres")
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        if let Some(port) = self.port {
            cfg.port(port);
        }
        Ok(cfg.connect(postgres::NoTls)?)
    }

    /// A new, empty database (UTF8) for one test; returns its name.
    pub fn database(&self, hint: &str) -> anyhow::Result<String> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let clean: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(20)
            .collect();
        let name = format!("t{n}_{clean}");
        let mut c = self.client("postgres")?;
        c.batch_execute(&format!(
            "CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"
        ))?;
        Ok(name)
    }

    /// Stops the server (fast shutdown) and waits.
    pub fn stop(&self) -> anyhow::Result<()> {
        let out = self
            .command("pg_ctl")
            .args(["-D", "data", "-m", "fast", "-w", "stop"])
            .output()?;
        ensure!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Kills the postmaster and its backends at once (SIGKILL), as a crash would.
    pub fn kill(&self) -> anyhow::Result<()> {
        let mut pids = children(self.pid);
        pids.push(self.pid);
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        for _ in 0..200 {
            if pids
                .iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!("the killed server's processes did not end")
    }

    /// Starts the server again after [`Postgres::stop`] or [`Postgres::kill`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

/// The processes whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
