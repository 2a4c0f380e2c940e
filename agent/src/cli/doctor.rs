//! `custody doctor`: checks everything a deployment depends on and says what to fix.
//!
//! Each check ends ✔ (ok), ! (works, but worth a look) or ✘ (broken; with what to do). The
//! doctor only reads: it loads the modules and reads their tokens without PIN, reads the
//! journal without writing to it (a missing journal is reported, never created), and never
//! reads a PIN file's content — only its presence, owner and mode.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use clap::Args;
use custody_core::journal::Journal;
use custody_core::order::{AllowedSigners, Zone};
use custody_core::token::{Module, NoPins};
use serde::Serialize;

use super::{Context, GlobalArgs};
use crate::config::{Config, PinRule};
use crate::output::escape_controls;
use crate::Exit;

/// `custody doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Skip loading the PKCS#11 modules (and the PIN rules' match against present carriers).
    #[arg(long)]
    pub no_modules: bool,
}

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Broken: custody cannot do its job until it is fixed.
    Fail,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: config, module, pin, journal, spool, allowed_signers.
    pub area: &'static str,
    /// The file, module or rule checked.
    pub subject: String,
    /// How it ended.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do, when something is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    ok: bool,
    checks: Vec<Check>,
}

impl Report {
    fn ok(&mut self, area: &'static str, subject: impl Into<String>, message: impl Into<String>) {
        self.push(area, subject, Status::Ok, message, None);
    }

    fn warn(
        &mut self,
        area: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(area, subject, Status::Warn, message, Some(fix.into()));
    }

    fn fail(
        &mut self,
        area: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(area, subject, Status::Fail, message, Some(fix.into()));
    }

    fn push(
        &mut self,
        area: &'static str,
        subject: impl Into<String>,
        status: Status,
        message: impl Into<String>,
        fix: Option<String>,
    ) {
        self.checks.push(Check {
            area,
            subject: subject.into(),
            status,
            message: message.into(),
            fix,
        });
    }
}

/// Runs the doctor. It loads the configuration itself, so that a broken one is reported
/// like every other problem; exit 2 only when the configuration cannot be loaded at all.
pub fn run(global: GlobalArgs, args: &DoctorArgs) -> anyhow::Result<Exit> {
    let mut report = Report::default();
    let config = match Config::load(global.config.as_deref()) {
        Ok(config) => {
            check_config_file(&mut report, &config);
            Some(config)
        }
        Err(err) => {
            report.fail(
                "config",
                config_subject(global.config.as_deref()),
                format!("{err:#}"),
                "fix the file at the line named; `man custody` lists every key",
            );
            None
        }
    };
    let exit = match config {
        Some(config) => {
            let ctx = Context { global, config };
            check_modules_and_pins(&mut report, &ctx, args);
            check_journal(&mut report, &ctx.journal_path());
            check_spool(&mut report, &ctx.config.spool);
            check_allowed_signers(&mut report, &ctx.config);
            print(&report, ctx.global.json)?;
            if report.checks.iter().any(|c| c.status == Status::Fail) {
                Exit::Failed
            } else {
                Exit::Ok
            }
        }
        None => {
            print(&report, global.json)?;
            Exit::Error
        }
    };
    Ok(exit)
}

fn config_subject(explicit: Option<&Path>) -> String {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CUSTODY_CONFIG").map(Into::into))
        .unwrap_or_else(|| crate::config::SYSTEM_CONFIG.into())
        .display()
        .to_string()
}

fn check_config_file(report: &mut Report, config: &Config) {
    let Some(path) = &config.source else {
        report.warn(
            "config",
            crate::config::SYSTEM_CONFIG,
            "no configuration file: defaults everywhere",
            format!(
                "write {} (the package ships a commented sample) to name modules, PIN sources and the spool",
                crate::config::SYSTEM_CONFIG
            ),
        );
        return;
    };
    let subject = path.display().to_string();
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o022 != 0 => report.fail(
            "config",
            subject,
            format!(
                "writable by group or others (mode {:o}): they could point custody at their own module",
                meta.permissions().mode() & 0o777
            ),
            format!("chmod 600 {}", path.display()),
        ),
        Ok(meta) if is_root() && meta.uid() != 0 => report.fail(
            "config",
            subject,
            format!("owned by uid {}, not root", meta.uid()),
            format!("chown root: {}", path.display()),
        ),
        Ok(meta) => report.ok(
            "config",
            subject,
            format!("loaded, mode {:o}", meta.permissions().mode() & 0o777),
        ),
        Err(err) => report.fail(
            "config",
            subject,
            format!("cannot read it: {err}"),
            "check the path",
        ),
    }
}

fn check_modules_and_pins(report: &mut Report, ctx: &Context, args: &DoctorArgs) {
    let mut carriers = Vec::new();
    if !args.no_modules {
        for path in ctx.modules() {
            let subject = path.display().to_string();
            let module = match Module::load(&path) {
                Ok(module) => module,
                Err(err) => {
                    report.fail(
                        "module",
                        subject,
                        err.to_string(),
                        "install the vendor's package or fix [[module]] path; `custody --module PATH scan` tries one module",
                    );
                    continue;
                }
            };
            let info = module.info().clone();
            match module.scan(&NoPins) {
                Ok(scan) => {
                    let message = format!(
                        "{} {} ({}): C_Initialize ok, {} token(s) read, re-initialisation {:?}",
                        escape_controls(&info.description),
                        info.version,
                        escape_controls(&info.manufacturer),
                        scan.carriers.len(),
                        ctx.config.reinit(&path),
                    );
                    if scan.slot_problems.is_empty() {
                        report.ok("module", subject, message);
                    } else {
                        let problems: Vec<String> = scan
                            .slot_problems
                            .iter()
                            .map(|p| format!("slot {}: {}", p.slot, escape_controls(&p.message)))
                            .collect();
                        report.warn(
                            "module",
                            subject,
                            format!("{message}; unreadable: {}", problems.join("; ")),
                            "re-plug the token or check the reader; `custody -v scan` shows the calls",
                        );
                    }
                    carriers.extend(scan.carriers);
                }
                Err(err) => report.fail(
                    "module",
                    subject,
                    format!("loads, but its slots cannot be read: {err}"),
                    "check the module's own configuration and daemon (pcscd, a network HSM)",
                ),
            }
        }
    }
    for (n, rule) in ctx.config.pins.iter().enumerate() {
        check_pin_rule(report, n + 1, rule, &carriers, args.no_modules);
    }
}

fn check_pin_rule(
    report: &mut Report,
    n: usize,
    rule: &PinRule,
    carriers: &[custody_core::inventory::CarrierSnapshot],
    no_modules: bool,
) {
    // Named by position: the rule's values are never echoed (a PIN may have been typed in).
    let subject = format!("[[pin]] rule {n}");
    let mut problems = Vec::new();
    for file in [&rule.user_pin_file, &rule.so_pin_file]
        .into_iter()
        .flatten()
    {
        match std::fs::metadata(file) {
            Err(err) => problems.push((
                format!("{}: {err}", file.display()),
                "create it (mode 0600) or fix the path".to_owned(),
            )),
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => problems.push((
                format!(
                    "{} is readable by group or others (mode {:o})",
                    file.display(),
                    meta.permissions().mode() & 0o777
                ),
                format!("chmod 600 {}", file.display()),
            )),
            Ok(meta) if !meta.is_file() => problems.push((
                format!("{} is not a regular file", file.display()),
                "point the rule at a file holding the PIN".to_owned(),
            )),
            Ok(_) => {}
        }
    }
    for var in [&rule.user_pin_env, &rule.so_pin_env].into_iter().flatten() {
        if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
            problems.push((
                format!("environment variable {var} is not set here"),
                format!("set {var} in the service's environment (systemd: Environment= or LoadCredential=)"),
            ));
        }
    }
    if let Some((message, fix)) = problems.into_iter().next() {
        report.fail("pin", subject, message, fix);
        return;
    }
    if no_modules {
        report.ok("pin", subject, "sources present and private");
        return;
    }
    let matching = carriers
        .iter()
        .filter(|c| rule.matches(&c.id, Some(&c.label)))
        .count();
    match matching {
        1 => report.ok(
            "pin",
            subject,
            "sources present and private; matches exactly one present carrier",
        ),
        0 => report.warn(
            "pin",
            subject,
            "sources present and private; no present carrier matches",
            "plug the carrier in, or check the rule against `custody journal list`",
        ),
        n => report.fail(
            "pin",
            subject,
            format!("matches {n} present carriers: its PIN would be offered to the wrong ones"),
            "add the label of the carrier it belongs to (label = \"...\"); custody offers its PIN to none of them until then",
        ),
    }
}

fn check_journal(report: &mut Report, path: &Path) {
    let subject = path.display().to_string();
    let key = custody_core::journal::JournalKey::path_for(path);
    if !path.exists() {
        if key.exists() {
            report.fail(
                "journal",
                subject,
                format!("missing, but its key {} exists: the journal was lost or moved", key.display()),
                "restore the journal from its backup (README, \"Backup and restore\"); do not start a new one",
            );
        } else {
            report.warn(
                "journal",
                subject,
                "no journal yet",
                "`custody scan` or the service creates it",
            );
        }
        return;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.permissions().mode() & 0o077 != 0 {
                report.warn(
                    "journal",
                    dir.display().to_string(),
                    format!(
                        "directory open to group or others (mode {:o}): holders' names and tax numbers",
                        meta.permissions().mode() & 0o777
                    ),
                    format!("chmod 700 {}", dir.display()),
                );
            }
        }
    }
    for file in [path.to_path_buf(), key.clone()] {
        if let Ok(meta) = std::fs::metadata(&file) {
            if meta.permissions().mode() & 0o077 != 0 {
                report.warn(
                    "journal",
                    file.display().to_string(),
                    format!(
                        "readable by group or others (mode {:o})",
                        meta.permissions().mode() & 0o777
                    ),
                    format!("chmod 600 {}", file.display()),
                );
            }
        }
    }
    let journal = match Journal::open(path) {
        Ok(journal) => journal,
        Err(err) => {
            report.fail(
                "journal",
                subject,
                err.to_string(),
                "restore the journal from its backup; keep the broken file for investigation",
            );
            return;
        }
    };
    match journal.verify() {
        Ok(chain) if chain.ok() => {
            report.ok("journal", subject.clone(), format!("hash chain verifies: {} event(s)", chain.events));
        }
        Ok(chain) => report.fail(
            "journal",
            subject.clone(),
            format!(
                "hash chain does not verify: {}",
                chain
                    .first_bad
                    .as_ref()
                    .map(|p| format!("event #{}: {}", p.seq, p.reason))
                    .unwrap_or_default()
            ),
            "`custody journal verify` names the first bad row; restore from backup, keep the broken file",
        ),
        Err(err) => report.fail(
            "journal",
            subject.clone(),
            format!("cannot verify: {err}"),
            "`custody journal verify` for details",
        ),
    }
    match journal.latest_checkpoint() {
        Ok(Some(cp)) => report.ok(
            "journal",
            format!("{subject} checkpoints"),
            format!("latest checkpoint at event #{}, {}", cp.seq, cp.at),
        ),
        Ok(None) => report.warn(
            "journal",
            format!("{subject} checkpoints"),
            "no signed checkpoint yet",
            "`custody journal checkpoint` (the service writes one daily)",
        ),
        Err(err) => report.fail(
            "journal",
            format!("{subject} checkpoints"),
            err.to_string(),
            "`custody journal verify` for details",
        ),
    }
}

fn check_spool(report: &mut Report, spool: &Path) {
    let subject = spool.display().to_string();
    match std::fs::symlink_metadata(spool) {
        Err(_) => report.warn(
            "spool",
            subject,
            "the order spool directory does not exist: orders dropped there are not executed",
            format!("install -d -m 0700 {}", spool.display()),
        ),
        Ok(meta) if meta.file_type().is_symlink() => report.fail(
            "spool",
            subject,
            "is a symbolic link",
            "make it a real directory (mode 0700) owned by the service's user",
        ),
        Ok(meta) if !meta.is_dir() => report.fail(
            "spool",
            subject,
            "is not a directory",
            "make it a directory (mode 0700)",
        ),
        Ok(meta) if meta.permissions().mode() & 0o002 != 0 => report.fail(
            "spool",
            subject,
            format!(
                "writable by anyone (mode {:o})",
                meta.permissions().mode() & 0o777
            ),
            format!("chmod 700 {}", spool.display()),
        ),
        Ok(meta) => {
            let bad: Vec<String> = ["done", "rejected", "failed"]
                .iter()
                .filter(|d| {
                    std::fs::symlink_metadata(spool.join(d))
                        .is_ok_and(|m| m.file_type().is_symlink())
                })
                .map(|d| (*d).to_owned())
                .collect();
            if bad.is_empty() {
                report.ok(
                    "spool",
                    subject,
                    format!("directory, mode {:o}", meta.permissions().mode() & 0o777),
                );
            } else {
                report.fail(
                    "spool",
                    subject,
                    format!("{} is a symbolic link", bad.join(", ")),
                    "replace it with a real directory",
                );
            }
        }
    }
}

fn check_allowed_signers(report: &mut Report, config: &Config) {
    let Some(path) = &config.allowed_signers else {
        report.warn(
            "allowed_signers",
            "[orders] allowed_signers",
            "not configured: no destruction order can be accepted",
            "list the people who sign orders in an OpenSSH allowed_signers file and name it in [orders]",
        );
        return;
    };
    let subject = path.display().to_string();
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o022 != 0 {
            report.fail(
                "allowed_signers",
                subject,
                format!(
                    "writable by group or others (mode {:o}): anyone could add a signer",
                    meta.permissions().mode() & 0o777
                ),
                format!("chmod 644 {} (owned by root)", path.display()),
            );
            return;
        }
    }
    match AllowedSigners::load(path, &Zone::system()) {
        Ok(signers) if signers.entries().is_empty() => report.fail(
            "allowed_signers",
            subject,
            "no usable signer in it",
            "add a line: PRINCIPAL namespaces=\"custody-order\" ssh-ed25519 AAAA…",
        ),
        Ok(signers) => report.ok(
            "allowed_signers",
            subject,
            format!(
                "{} signer(s); {} order signature(s) required",
                signers.entries().len(),
                config.required_signers
            ),
        ),
        Err(err) => report.fail(
            "allowed_signers",
            subject,
            err.to_string(),
            "fix the line named (OpenSSH allowed_signers format)",
        ),
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    let ok = !report.checks.iter().any(|c| c.status == Status::Fail);
    if json {
        return crate::output::json(&Report {
            ok,
            checks: report.checks.clone(),
        });
    }
    for check in &report.checks {
        let mark = match check.status {
            Status::Ok => "✔",
            Status::Warn => "!",
            Status::Fail => "✘",
        };
        println!(
            "{mark} {:<15} {}: {}",
            check.area,
            escape_controls(&check.subject),
            check.message
        );
        if let Some(fix) = &check.fix {
            println!("  {:<15} → {fix}", "");
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    let warned = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Warn)
        .count();
    println!();
    if failed == 0 && warned == 0 {
        println!("Everything custody depends on is in order.");
    } else {
        println!("{failed} problem(s) to fix, {warned} warning(s).");
    }
    Ok(())
}
