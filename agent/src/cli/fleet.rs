//! `custody fleet init | enroll-agent | status | verify | form`: the organisation's side of
//! the organisation-wide journal on PostgreSQL (see `custody_core::fleet`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use custody_core::fleet::{read_password_file, Database, Fleet};
use custody_core::order::Zone;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::Context;
use crate::output::{clip, json, Table};
use crate::progress::Progress;
use crate::Exit;

/// Where the organisation's database is, for the commands run by its administrators.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// `postgresql://USER@HOST:PORT/DBNAME[?sslmode=verify-full&sslrootcert=CA.pem]`; a unix
    /// socket directory as a percent-encoded host (`postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/fleet`).
    #[arg(long, value_name = "URL")]
    pub database: String,
    /// File holding the password (mode 0600); else `PGPASSWORD`.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) the server's certificate must chain to (sslmode=verify-ca/verify-full).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The database, with password and CA file.
    pub fn database(&self) -> anyhow::Result<Database> {
        let mut db = Database::parse(&self.database)?;
        if let Some(f) = &self.password_file {
            db = db.with_password(&read_password_file(f)?);
        }
        if let Some(ca) = &self.ca_file {
            db = db.with_ca_file(ca);
        }
        Ok(db.with_env_password())
    }

    fn connect(&self) -> anyhow::Result<Fleet> {
        Ok(Fleet::connect(&self.database()?)?)
    }
}

/// `custody fleet …`
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create or upgrade the organisation's journal in a PostgreSQL database (schema, roles);
    /// safe to run again.
    #[command(
        after_help = "Examples:\n  # As the database owner, on the database server (unix socket)\n  custody fleet init --database postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/fleet\n  # Over TLS, checking the server's certificate\n  custody fleet init --database \"postgresql://postgres@db.example.org/fleet?sslmode=verify-full\" --ca-file /etc/custody/fleet-ca.pem"
    )]
    Init(DatabaseArgs),
    /// Create an agent's login role and write the configuration file its workstation needs
    /// to sync (`[fleet]`, mode 0600, with the password in a file next to it).
    #[command(
        after_help = "Examples:\n  # Credentials for workstation ws-017; copy both files to it\n  custody fleet enroll-agent ws-017 --database postgresql://postgres@db.example.org/fleet --output ws-017.toml\n  # New credentials for an agent already enrolled\n  custody fleet enroll-agent ws-017 --database postgresql://postgres@db.example.org/fleet --output ws-017.toml --rotate"
    )]
    EnrollAgent(EnrollArgs),
    /// Every agent and journal: last sync, lag, alarms, destructions overdue across the
    /// fleet; exit 1 when there is any alarm or overdue destruction.
    #[command(
        after_help = "Examples:\n  # Every agent, its lag, the alarms and overdue destructions\n  custody fleet status --database postgresql://auditor@db.example.org/fleet --password-file /etc/custody/auditor.password\n  # For monitoring (exit 1 on an alarm or an overdue destruction)\n  custody fleet status --database postgresql://auditor@db.example.org/fleet --json"
    )]
    Status(DatabaseArgs),
    /// Re-verify every journal's hash chain in the database and every checkpoint; print the
    /// rate; exit 1 when anything does not verify.
    #[command(
        after_help = "Examples:\n  # Every chain and checkpoint, checked by the database\n  custody fleet verify --database postgresql://auditor@db.example.org/fleet"
    )]
    Verify(DatabaseArgs),
    /// Print the organisation's journal in the mandated form, across all agents.
    #[command(
        after_help = "Examples:\n  # The organisation's journal for printing\n  custody fleet form --database postgresql://auditor@db.example.org/fleet --out fleet-journal.html\n  # One quarter as CSV, in English\n  custody fleet form --database postgresql://auditor@db.example.org/fleet --format csv --lang en --from 2026-01-01 --to 2026-03-31"
    )]
    Form(FormArgs),
}

/// Arguments of `custody fleet enroll-agent`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The agent's name: 1–32 of a–z, 0–9, `_`, `-` (e.g. the workstation's host name).
    pub name: String,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// The configuration file to write for the workstation (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Give an agent already enrolled a new password (the old one stops working).
    #[arg(long)]
    pub rotate: bool,
}

/// Arguments of `custody fleet form`.
#[derive(Debug, Args)]
pub struct FormArgs {
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Format, language, dates and output, as `custody journal export`.
    #[command(flatten)]
    pub export: super::export::ExportArgs,
}

/// Runs a fleet subcommand.
pub fn run(ctx: &Context, cmd: &FleetCommand) -> anyhow::Result<Exit> {
    match cmd {
        FleetCommand::Init(db) => init(ctx, db),
        FleetCommand::EnrollAgent(args) => enroll(ctx, args),
        FleetCommand::Status(db) => status(ctx, db),
        FleetCommand::Verify(db) => verify(ctx, db),
        FleetCommand::Form(args) => {
            super::export::run_fleet(ctx, &mut args.db.connect()?, &args.export)
        }
    }
}

fn init(ctx: &Context, db: &DatabaseArgs) -> anyhow::Result<Exit> {
    let mut fleet = db.connect()?;
    let report = fleet.init()?;
    if ctx.global.json {
        json(&report)?;
    } else {
        if report.from_version == report.version {
            println!(
                "The organisation's journal in {} is at schema version {} already; roles checked.",
                fleet.database(),
                report.version
            );
        } else {
            println!(
                "The organisation's journal in {} is at schema version {} (was {}).",
                fleet.database(),
                report.version,
                report.from_version
            );
        }
        println!(
            "Roles: {} (administrators), {} (auditors, read-only), {} (every agent).",
            report.admin_role, report.auditor_role, report.agent_role
        );
        println!("Next: `custody fleet enroll-agent NAME --database URL --output FILE` for each workstation.");
    }
    Ok(Exit::Ok)
}

fn enroll(ctx: &Context, args: &EnrollArgs) -> anyhow::Result<Exit> {
    let password_path = {
        let mut p = args.output.as_os_str().to_owned();
        p.push(".password");
        PathBuf::from(p)
    };
    if !args.rotate {
        for p in [&args.output, &password_path] {
            if p.exists() {
                anyhow::bail!(
                    "{} exists already; move it away, or pass --rotate to give the agent new credentials",
                    p.display()
                );
            }
        }
    }
    let dir = args
        .output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        anyhow::bail!("directory {} does not exist", dir.display());
    }
    let dir = std::fs::canonicalize(dir)?;
    let password_abs = dir.join(password_path.file_name().unwrap_or_default());
    let mut fleet = args.db.connect()?;
    let enrolled = fleet.enroll_agent(&args.name, args.rotate)?;
    let url = fleet.database().url_for_user(&enrolled.role);
    let mut section = toml::Table::new();
    section.insert("database".into(), url.clone().into());
    section.insert(
        "password_file".into(),
        password_abs.to_string_lossy().into_owned().into(),
    );
    let mut doc = toml::Table::new();
    doc.insert("fleet".into(), section.into());
    let text = format!(
        "# custody configuration of agent {} (written by `custody fleet enroll-agent`).\n# `custody --config {} sync` pushes this workstation's journal to the organisation's.\n{}",
        enrolled.name,
        args.output.display(),
        toml::to_string(&doc)?
    );
    let mut secret = zeroize::Zeroizing::new(enrolled.password.expose_secret().to_owned());
    secret.push('\n');
    crate::config::write_private_file(&password_abs, secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", password_abs.display()))?;
    crate::config::write_private_file(&args.output, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.output.display()))?;
    if ctx.global.json {
        json(&serde_json::json!({
            "agent": enrolled.name,
            "role": enrolled.role,
            "database": url,
            "config": args.output,
            "password_file": password_abs,
        }))?;
    } else {
        println!(
            "Enrolled agent {} (login role {}); wrote {} and {} (mode 0600).",
            enrolled.name,
            enrolled.role,
            args.output.display(),
            password_abs.display()
        );
        println!(
            "Copy both to the workstation (keep the password file's path, or edit password_file) and run `custody --config {} sync`.",
            args.output.display()
        );
    }
    Ok(Exit::Ok)
}

fn status(ctx: &Context, db: &DatabaseArgs) -> anyhow::Result<Exit> {
    let mut fleet = db.connect()?;
    let status = fleet.status(&Zone::system(), OffsetDateTime::now_utc())?;
    let failed = !status.alarms.is_empty() || !status.overdue.is_empty();
    if ctx.global.json {
        json(&serde_json::json!({ "ok": !failed, "status": status }))?;
        return Ok(if failed { Exit::Failed } else { Exit::Ok });
    }
    println!(
        "The organisation's journal in {}: {} agent(s), {} journal(s).",
        fleet.database(),
        status.agents.len(),
        status.journals.len()
    );
    let mut t = Table::new(&[
        "AGENT",
        "HOST",
        "JOURNAL",
        "EVENTS",
        "CHECKPOINTS",
        "LAST SYNC (UTC)",
        "AGO",
        "LAG",
        "ALARMS",
    ]);
    for j in &status.journals {
        t.row(vec![
            j.agent.clone(),
            j.host.clone(),
            clip(&j.journal_id, 13),
            j.server_seq.to_string(),
            j.checkpoints.to_string(),
            j.last_sync.clone().unwrap_or_else(|| "never".into()),
            j.last_sync_age_s.map(age).unwrap_or_default(),
            j.lag_events.map(|l| l.to_string()).unwrap_or_default(),
            j.alarms.to_string(),
        ]);
    }
    if !t.is_empty() {
        t.print();
    }
    if !status.never_synced.is_empty() {
        println!("Enrolled, never synced: {}", status.never_synced.join(", "));
    }
    for a in &status.alarms {
        println!(
            "ALARM {} agent {} journal {} event #{} ({}): {}",
            a.kind,
            a.agent.as_deref().unwrap_or("?"),
            a.journal_id,
            a.seq,
            a.raised_at,
            a.detail
        );
    }
    for o in &status.overdue {
        println!(
            "OVERDUE destruction: order {} (agent {}), holder {}, carrier {}, dismissed {}, due {}",
            o.order_id, o.agent, o.holder, o.serial, o.dismissed, o.due
        );
    }
    if !failed {
        println!("No alarm, no destruction overdue.");
    }
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn verify(ctx: &Context, db: &DatabaseArgs) -> anyhow::Result<Exit> {
    let mut fleet = db.connect()?;
    let progress = Progress::spinner(ctx.global.json, "verifying every chain and checkpoint");
    let report = fleet.verify();
    drop(progress);
    let report = report?;
    let ok = report.ok();
    if ctx.global.json {
        json(&serde_json::json!({ "ok": ok, "verify": report }))?;
        return Ok(if ok { Exit::Ok } else { Exit::Failed });
    }
    for j in &report.journals {
        match &j.first_bad {
            Some((seq, why)) => println!(
                "agent {} journal {}: BROKEN at event #{seq}: {why}",
                j.agent, j.journal_id
            ),
            None => println!(
                "agent {} journal {}: {} event(s) verify, {} checkpoint(s)",
                j.agent, j.journal_id, j.events, j.checkpoints
            ),
        }
        for (seq, why) in &j.checkpoint_problems {
            println!("  CHECKPOINT PROBLEM at #{seq}: {why}");
        }
    }
    println!(
        "{} journal(s), {} event(s) verified in the database in {} ms ({} events/s); {} checkpoint(s) in {} ms: {}",
        report.journals.len(),
        report.events,
        report.chain_ms,
        report.events_per_second,
        report.checkpoints,
        report.checkpoint_ms,
        if ok { "all verify" } else { "PROBLEMS FOUND" }
    );
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}
