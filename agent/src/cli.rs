//! The command line: global options shared by every subcommand, and dispatch.

pub mod cert;
pub mod checkpoint;
pub mod export;
pub mod import;
pub mod issue;
pub mod journal;
pub mod order;
pub mod revocation;
pub mod scan;
pub mod status;
pub mod watch;
pub mod wipe;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use custody_core::journal::{Actor, Journal};

use crate::config::Config;
use crate::Exit;

/// custody keeps the custody journal of secure key carriers (smart cards, USB tokens, HSM
/// slots) holding qualified electronic signature keys.
#[derive(Debug, Parser)]
#[command(name = "custody", version, about, max_term_width = 100)]
pub struct Cli {
    /// Options every subcommand accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// PKCS#11 module to use (repeatable). Default: the config file's `[[module]]`, else the
    /// modules registered with p11-kit, else SoftHSM2.
    #[arg(long = "module", global = true, value_name = "PATH")]
    pub modules: Vec<PathBuf>,
    /// Journal file. Default: the config's [journal] path, else /var/lib/custody/journal.db
    /// for root and $XDG_DATA_HOME/custody/journal.db for others.
    #[arg(long, global = true, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// Configuration file. Default: $CUSTODY_CONFIG, else /etc/custody/custody.toml.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Operator name recorded with the events this command writes.
    #[arg(long, global = true, value_name = "NAME")]
    pub operator: Option<String>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line (journald, SIEM).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read every carrier the modules show and record what changed in the journal.
    Scan(scan::ScanArgs),
    /// Read the journal: list carriers, show one carrier's history, verify the chain.
    #[command(subcommand)]
    Journal(journal::JournalCommand),
    /// Record that a carrier and the keys on it were handed to a signer.
    Issue(issue::IssueArgs),
    /// Record the revocation steps with the qualified trust service provider.
    #[command(subcommand)]
    Revocation(revocation::RevocationCommand),
    /// Certificates: export one to a file.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Destruction orders: create, sign, verify; reconcile interrupted wipes; process the spool.
    #[command(subcommand)]
    Order(order::OrderCommand),
    /// Execute a signed destruction order: wipe the carrier and verify it in a fresh context.
    Wipe(wipe::WipeArgs),
    /// Run the background service: enroll carriers when they are inserted, record every
    /// change, process the order spool, until SIGTERM/SIGINT.
    Watch(watch::WatchArgs),
    /// The service's state, the carriers present now, open destruction orders and their
    /// deadlines (--overdue: exit 1 when any is past due; --running: exit 1 unless the
    /// service runs).
    Status(status::StatusArgs),
}

impl Command {
    /// True for the long-running service, which logs at info by default.
    pub fn is_service(&self) -> bool {
        matches!(self, Self::Watch(_))
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let config = Config::load(cli.global.config.as_deref())?;
    let ctx = Context {
        global: cli.global,
        config,
    };
    match cli.command {
        Command::Scan(args) => scan::run(&ctx, &args),
        Command::Journal(cmd) => journal::run(&ctx, &cmd),
        Command::Issue(args) => issue::run(&ctx, &args),
        Command::Revocation(cmd) => revocation::run(&ctx, &cmd),
        Command::Cert(cmd) => cert::run(&ctx, &cmd),
        Command::Order(cmd) => order::run(&ctx, &cmd),
        Command::Wipe(args) => wipe::run(&ctx, &args),
        Command::Watch(args) => watch::run(&ctx, &args),
        Command::Status(args) => status::run(&ctx, &args),
    }
}

/// What every subcommand gets: global options and the configuration.
#[derive(Debug)]
pub struct Context {
    /// Global options.
    pub global: GlobalArgs,
    /// Configuration.
    pub config: Config,
}

impl Context {
    /// The journal path in effect.
    pub fn journal_path(&self) -> PathBuf {
        self.global
            .journal
            .clone()
            .unwrap_or_else(|| self.config.journal.clone())
    }

    /// Opens (or creates) the journal.
    pub fn open_journal(&self) -> anyhow::Result<Journal> {
        let path = self.journal_path();
        Ok(Journal::open(&path)?)
    }

    /// Opens an existing journal; a missing file is an error rather than a new journal.
    pub fn open_existing_journal(&self) -> anyhow::Result<Journal> {
        let path = self.journal_path();
        if !path.exists() {
            anyhow::bail!(
                "no journal at {}; run `custody scan` first or point --journal at one",
                path.display()
            );
        }
        Ok(Journal::open(&path)?)
    }

    /// The PIN sources of the configuration, with the rejection memory of the journal in
    /// effect.
    pub fn pins(&self) -> crate::pin::Pins {
        crate::pin::Pins::new(&self.config, &self.journal_path())
    }

    /// The actor recorded with events.
    pub fn actor(&self) -> Actor {
        Actor::current(self.global.operator.clone())
    }

    /// The modules in effect: --module, else the config, else p11-kit's registered modules,
    /// else SoftHSM2's standard path.
    pub fn modules(&self) -> Vec<PathBuf> {
        if !self.global.modules.is_empty() {
            return self.global.modules.clone();
        }
        if !self.config.modules.is_empty() {
            return self.config.modules.clone();
        }
        let registered = p11kit_modules();
        if !registered.is_empty() {
            return registered;
        }
        vec![softhsm_default()]
    }
}

/// SoftHSM2's library where Debian and most distributions put it.
pub fn softhsm_default() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

/// Modules registered with p11-kit (`*.module` files with a `module:` line), except
/// p11-kit's own trust module, which holds the system's CA store and no carriers.
pub fn p11kit_modules() -> Vec<PathBuf> {
    p11kit_modules_in(&[
        Path::new("/etc/pkcs11/modules"),
        Path::new("/usr/share/p11-kit/modules"),
    ])
}

/// [`p11kit_modules`] over the given configuration directories, in order.
pub fn p11kit_modules_in(dirs: &[&Path]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "module"))
        {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            let mut module = None;
            let mut disabled = false;
            for line in text.lines() {
                let Some((key, value)) = line.split_once(':') else {
                    continue;
                };
                match key.trim() {
                    "module" => module = Some(value.trim().to_owned()),
                    "disable-in" if value.split_whitespace().any(|p| p == "custody") => {
                        disabled = true;
                    }
                    _ => {}
                }
            }
            let Some(module) = module.filter(|_| !disabled) else {
                continue;
            };
            let path = resolve_p11kit_module(&module);
            let trust = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("p11-kit-trust"));
            if !trust && !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

fn resolve_p11kit_module(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.into();
    }
    [
        "/usr/lib/x86_64-linux-gnu/pkcs11",
        "/usr/lib/aarch64-linux-gnu/pkcs11",
        "/usr/lib64/pkcs11",
        "/usr/lib/pkcs11",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|c| c.exists())
    .unwrap_or_else(|| Path::new("/usr/lib/x86_64-linux-gnu/pkcs11").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p11kit_registrations_are_read_in_order_without_the_trust_module() {
        let dir = std::env::temp_dir().join(format!("custody-p11kit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
        };
        write(
            "a-vendor.module",
            "# vendor token\nmodule: /opt/vendor/libvendor-pkcs11.so\n",
        );
        write(
            "b-trust.module",
            "module: p11-kit-trust.so\ntrust-policy: yes\n",
        );
        write(
            "c-hidden.module",
            "module: /opt/hidden.so\ndisable-in: firefox custody\n",
        );
        write("d-relative.module", "module: softhsm2-test.so\n");
        write("notes.txt", "module: /opt/ignored.so\n");
        let found = p11kit_modules_in(&[dir.as_path()]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], PathBuf::from("/opt/vendor/libvendor-pkcs11.so"));
        assert!(found[1].ends_with("softhsm2-test.so") && found[1].is_absolute());
        let _ = std::fs::remove_dir_all(dir);
    }
}
