//! The command line: global options shared by every subcommand, and dispatch.

pub mod carrier;
pub mod cert;
pub mod checkpoint;
pub mod doctor;
pub mod expiry;
pub mod export;
pub mod fleet;
pub mod holder;
pub mod import;
pub mod issue;
pub mod journal;
pub mod order;
pub mod revocation;
pub mod scan;
pub mod status;
pub mod sync;
pub mod unconfirmed;
pub mod verify;
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
#[command(next_help_heading = "Global options")]
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
    #[command(
        after_help = "Examples:\n  # Read every carrier of the configured modules into the journal\n  custody scan\n  # One module, one journal file, JSON for a script\n  custody --module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so --journal ./journal.db --json scan"
    )]
    Scan(scan::ScanArgs),
    /// Read the journal: list carriers, show one carrier's history, verify the chain.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  # Every carrier the journal knows\n  custody journal list\n  # Check the hash chain and the signed checkpoints\n  custody journal verify\n  # Print the mandated form for the inspector\n  custody journal export --format html --out journal.html"
    )]
    Journal(journal::JournalCommand),
    /// Record that a carrier and the keys on it were handed to a signer.
    #[command(
        after_help = "Examples:\n  # Hand a carrier to the holder named in its certificate; he signs with its key\n  custody issue --carrier 3c5e0a1b2d4f6789 --position \"головний спеціаліст\" --ack-sign\n  # Record a handover signed by hand on the printed form\n  custody issue --carrier 3c5e0a1b2d4f6789 --holder \"Іваненко Іван Іванович\" --date 2026-03-02"
    )]
    Issue(issue::IssueArgs),
    /// Record the revocation steps with the qualified trust service provider.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  # The provider was asked to revoke the carrier's certificates\n  custody revocation requested --carrier 3c5e0a1b2d4f6789 --ref \"лист № 12/3\"\n  # The provider confirmed\n  custody revocation confirmed --carrier 3c5e0a1b2d4f6789 --ref \"ticket 48213\"\n  # Ask the provider's CRL and OCSP; a revoked answer is recorded with its evidence\n  custody revocation check"
    )]
    Revocation(revocation::RevocationCommand),
    /// Certificates: export one to a file.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  # A holder's certificate as PEM, for the registry\n  custody cert export --holder \"Іваненко Іван Іванович\" --pem --out ivanenko.pem\n  # By fingerprint\n  custody cert export --fingerprint 9f86d081884c7d65 --out cert.der"
    )]
    Cert(cert::CertCommand),
    /// Keys held in a provider's HSM (remote QES): record one, record its destruction.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  # A Smart-Diia key, by its certificate\n  custody carrier add --remote --provider \"ДП «Дія»\" --cert koval.cer\n  # The provider deleted it\n  custody carrier destroy-remote --carrier 5d8f3a --evidence letter.pdf --responsible \"Коваленко Ольга\""
    )]
    Carrier(carrier::CarrierCommand),
    /// Holders as people: import HR's list, list them.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  # HR's list exported from Excel as CSV UTF-8 (semicolons)\n  custody holder import staff.csv\n  # Who is recorded, and the form rows issued to them\n  custody holder list --json"
    )]
    Holder(holder::HolderCommand),
    /// Destruction orders: create, sign, verify; reconcile interrupted wipes; process the spool.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  # Write an order for HR to sign\n  custody order create --carrier 3c5e0a1b2d4f6789 --holder \"Іваненко Іван Іванович\" --dismissed 2026-03-13 --method reinit --responsible \"Коваленко Ольга Петрівна\" > order.json\n  # Sign it (or: ssh-keygen -Y sign -n custody-order -f KEY order.json)\n  custody order sign --key ~/.ssh/id_ed25519 order.json\n  # Check it before the wipe\n  custody order verify order.json"
    )]
    Order(order::OrderCommand),
    /// Execute a signed destruction order: wipe the carrier and verify it in a fresh context.
    #[command(
        after_help = "Examples:\n  # Execute a signed order; the SO PIN from a file\n  custody wipe --order order.json --so-pin-file /etc/custody/pins/3c5e0a1b2d4f6789.so\n  # The PIN typed on standard input, JSON report for a script\n  custody --json wipe --order order.json --pin-stdin"
    )]
    Wipe(wipe::WipeArgs),
    /// Run the background service: enroll carriers when they are inserted, record every
    /// change, process the order spool, until SIGTERM/SIGINT.
    #[command(
        after_help = "Examples:\n  # The service as systemd runs it\n  custody --log-format json watch\n  # In a terminal, polling every second\n  custody -v watch --interval 1s"
    )]
    Watch(watch::WatchArgs),
    /// The service's state, the carriers present now, open destruction orders and their
    /// deadlines (--overdue: exit 1 when any is past due; --running: exit 1 unless the
    /// service runs).
    #[command(
        after_help = "Examples:\n  # What the service sees and the open orders\n  custody status\n  # For monitoring: exit 1 when a destruction is overdue\n  custody status --overdue\n  # For monitoring: exit 1 unless the service runs\n  custody status --running --json\n  # For monitoring: certificates that expire within 30 days, or have\n  custody status --expiring 30d"
    )]
    Status(status::StatusArgs),
    /// Check everything a deployment depends on (configuration, modules, PIN sources,
    /// journal, spool, allowed_signers) and say what to fix; exit 1 when something is broken.
    #[command(
        after_help = "Examples:\n  # After installing or changing the configuration\n  sudo custody doctor\n  # For a monitoring script\n  custody doctor --json\n  # Without touching the tokens\n  custody doctor --no-modules"
    )]
    Doctor(doctor::DoctorArgs),
    /// Push the journal's new events and checkpoints to the organisation's journal
    /// (PostgreSQL, `[fleet]` in the configuration).
    #[command(
        after_help = "Examples:\n  # Push new events with the [fleet] section that `custody fleet enroll-agent` wrote\n  custody --config /etc/custody/custody.toml sync\n  # For a script\n  custody sync --json"
    )]
    Sync(sync::SyncArgs),
    /// The organisation's journal on PostgreSQL: init, enroll agents, status, verify, form.
    #[command(
        subcommand,
        after_help = "Examples:\n  # Create the schema and roles (run by the database owner)\n  custody fleet init --database postgresql://postgres@db.example.org/fleet\n  # Credentials and configuration for one workstation\n  custody fleet enroll-agent ws-017 --database postgresql://postgres@db.example.org/fleet --output ws-017.toml\n  # Monitoring: exit 1 on any alarm or overdue destruction\n  custody fleet status --database postgresql://auditor@db.example.org/fleet"
    )]
    Fleet(fleet::FleetCommand),
}

impl Command {
    /// True for the long-running service, which logs at info by default.
    pub fn is_service(&self) -> bool {
        matches!(self, Self::Watch(_))
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    if let Command::Doctor(args) = &cli.command {
        return doctor::run(cli.global, args);
    }
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
        Command::Holder(cmd) => holder::run(&ctx, &cmd),
        Command::Carrier(cmd) => carrier::run(&ctx, &cmd),
        Command::Order(cmd) => order::run(&ctx, &cmd),
        Command::Wipe(args) => wipe::run(&ctx, &args),
        Command::Watch(args) => watch::run(&ctx, &args),
        Command::Status(args) => status::run(&ctx, &args),
        Command::Doctor(args) => doctor::run(ctx.global, &args),
        Command::Sync(args) => sync::run(&ctx, &args),
        Command::Fleet(cmd) => fleet::run(&ctx, &cmd),
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

    /// Opens (or creates) the journal. A journal is created only in a directory that exists,
    /// except at the default path, whose directory custody creates (0700).
    pub fn open_journal(&self) -> anyhow::Result<Journal> {
        self.create_default_dir()?;
        let path = self.journal_path();
        Ok(Journal::open(&path)?)
    }

    /// Creates the default state directory (`/var/lib/custody` for root, else
    /// `$XDG_DATA_HOME/custody`), mode 0700, when the journal in effect is the default one.
    /// A journal path given with --journal or in the configuration must be in an existing
    /// directory: a mistyped path must not start a new, empty journal.
    pub fn create_default_dir(&self) -> anyhow::Result<()> {
        let path = self.journal_path();
        if path == crate::config::default_journal() {
            if let Some(dir) = path.parent() {
                custody_core::file::create_private_dir_all(dir)?;
            }
        }
        Ok(())
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

    /// Opens an existing journal read-only (verify, backup): nothing is created or written.
    pub fn open_journal_read_only(&self) -> anyhow::Result<Journal> {
        let path = self.journal_path();
        if !path.exists() {
            anyhow::bail!(
                "no journal at {}; run `custody scan` first, point --journal at one, or restore it from a backup",
                path.display()
            );
        }
        Ok(Journal::open_read_only(&path)?)
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
    use clap::CommandFactory;

    use super::*;

    /// Every subcommand's help ends with examples, and every example parses as a command line.
    #[test]
    fn every_subcommand_has_examples_that_parse() {
        let mut cli = Cli::command();
        cli.build();
        let mut checked = 0;
        let mut stack: Vec<(String, &clap::Command)> = cli
            .get_subcommands()
            .map(|c| (c.get_name().to_owned(), c))
            .collect();
        while let Some((path, cmd)) = stack.pop() {
            if cmd.get_name() == "help" || cmd.is_hide_set() {
                continue;
            }
            stack.extend(
                cmd.get_subcommands()
                    .map(|c| (format!("{path} {}", c.get_name()), c)),
            );
            let help = cmd
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.starts_with("Examples:\n"),
                "`custody {path} --help` has no examples"
            );
            let examples: Vec<&str> = help
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix("custody "))
                .collect();
            assert!(
                !examples.is_empty(),
                "`custody {path}`: no example runs custody"
            );
            for example in examples {
                let line = example.split(" > ").next().unwrap_or(example);
                let mut argv = shlex::split(line)
                    .unwrap_or_else(|| panic!("`custody {path}`: example does not split: {line}"));
                argv.insert(0, "custody".to_owned());
                if let Err(err) = Cli::try_parse_from(&argv) {
                    panic!("`custody {path}`: example `{line}` does not parse: {err}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} examples");
    }

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
