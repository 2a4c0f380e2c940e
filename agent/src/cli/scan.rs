//! `custody scan`: read every carrier the modules show and record what changed.
//!
//! A module that cannot be read, or a token that cannot be read completely, makes the scan
//! partial: nothing of that module (or that carrier) is recorded as removed, the output says
//! so, and the exit code is 2.

use std::collections::BTreeMap;

use clap::Args;
use custody_core::inventory::{CallError, ModuleInfo, ModuleScan, SlotProblem};
use custody_core::inventory::{CarrierSnapshot, Login};
use custody_core::journal::EventKind;
use custody_core::token::Module;
use serde::Serialize;

use super::Context;
use crate::output::{clip, json, Table};
use crate::progress::Progress;
use crate::Exit;

/// Arguments of `custody scan` (modules, journal and --json are global options).
#[derive(Debug, Args)]
pub struct ScanArgs {}

/// The JSON document `custody scan --json` prints.
#[derive(Debug, Serialize)]
pub struct ScanReport<'a> {
    /// Journal file.
    pub journal: String,
    /// Journal id.
    pub journal_id: &'a str,
    /// One entry per module, in the order given.
    pub modules: Vec<ModuleReport>,
    /// Events appended.
    pub events: Vec<custody_core::journal::RecordedEvent>,
    /// Carriers seen.
    pub carriers_seen: usize,
    /// Carriers unchanged since the last scan.
    pub carriers_unchanged: usize,
    /// Problems that did not stop the scan.
    pub problems: Vec<Problem>,
    /// The exit code.
    pub exit: u8,
}

/// One module's part of a scan.
#[derive(Debug, Serialize)]
pub struct ModuleReport {
    /// Path as given.
    pub path: String,
    /// Loaded and its slot list read.
    pub ok: bool,
    /// Every slot was read completely from a healthy module: only then can the scan record
    /// a carrier of this module as removed.
    pub complete: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Library info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<ModuleInfo>,
    /// Carriers read.
    pub carriers: Vec<CarrierSnapshot>,
    /// Slots that could not be read.
    pub slot_problems: Vec<SlotProblem>,
}

/// A problem that did not stop the scan.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// `module`, `slot`, `login`, `login_skipped` or `object`.
    pub scope: &'static str,
    /// Module path or carrier key.
    pub subject: String,
    /// What happened.
    pub message: String,
}

/// Runs `custody scan`.
pub fn run(ctx: &Context, _args: &ScanArgs) -> anyhow::Result<Exit> {
    let mut journal = ctx.open_journal()?;
    let pins = ctx.pins();
    let mut scans: Vec<ModuleScan> = Vec::new();
    let paths = ctx.modules();
    let loaded: Vec<Result<Module, custody_core::Error>> =
        paths.iter().map(|p| Module::load(p)).collect();
    // Every module's tokens, so that a PIN rule matching carriers in two modules is refused.
    pins.set_present(loaded.iter().filter_map(|m| m.as_ref().ok()));
    let mut modules: Vec<Option<Module>> = Vec::new();
    for (path, module) in paths.iter().zip(loaded) {
        let progress = Progress::spinner(
            ctx.global.json,
            &format!("scanning the carriers of {}", path.display()),
        );
        let (scan, module) = match module {
            Ok(m) => (m.scan(&pins), Some(m)),
            Err(e) => {
                let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                let failed = ModuleScan::failed(
                    ModuleInfo::unknown(&canonical.display().to_string()),
                    CallError::of(&e),
                );
                (failed, None)
            }
        };
        drop(progress);
        scans.push(scan);
        modules.push(module);
    }
    // A read that would take certificates or keys from a carrier is confirmed by a second
    // read from scratch: a card pulled while it was read shows fewer objects first. A read
    // that needs none is recorded as it was compared here.
    let compared = journal.compare_scan(&scans)?;
    let removing = compared.removes_content().to_vec();
    let compared = (!removing.contains(&true)).then_some(compared);
    for ((scan, module), removing) in scans.iter_mut().zip(&mut modules).zip(removing) {
        let Some(module) = module.as_mut().filter(|_| removing) else {
            continue;
        };
        tracing::debug!(module = %scan.module.path, "objects would be removed; reading the module again");
        let second = match module.reinitialize() {
            Ok(()) => module.scan(&pins),
            Err(e) => ModuleScan::failed(scan.module.clone(), CallError::of(&e)),
        };
        *scan = second.confirmed_by(scan);
    }
    drop(modules);
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for (path, scan) in paths.iter().zip(&scans) {
        let unavailable = scan.unavailability();
        if let Some(why) = &unavailable {
            tracing::debug!(module = %path.display(), cause = %why, "module not scanned");
            problems.push(Problem {
                scope: "module",
                subject: path.display().to_string(),
                message: format!("{why}; its carriers keep their state"),
            });
        }
        for p in &scan.slot_problems {
            problems.push(Problem {
                scope: "slot",
                subject: format!("{} slot {}", scan.module.path, p.slot),
                message: match &p.carrier {
                    Some(c) => format!("carrier {c} not read completely: {}", p.message),
                    None => p.message.clone(),
                },
            });
        }
        for c in &scan.carriers {
            collect_carrier_problems(c, &mut problems);
        }
        reports.push(ModuleReport {
            path: path.display().to_string(),
            ok: scan.failure.is_none(),
            complete: scan.is_complete(),
            error: unavailable.map(|e| e.to_string()),
            info: scan.failure.is_none().then(|| scan.module.clone()),
            carriers: scan.carriers.clone(),
            slot_problems: scan.slot_problems.clone(),
        });
    }
    let (actor, now) = (ctx.actor(), time::OffsetDateTime::now_utc());
    let record = match compared {
        Some(compared) => journal.record_compared(&scans, compared, &actor, now)?,
        None => journal.record_scan(&scans, &actor, now)?,
    };
    let exit = if reports.iter().any(|r| !r.complete) {
        Exit::Error
    } else if problems.iter().any(|p| p.scope == "login") {
        Exit::Failed
    } else {
        Exit::Ok
    };
    if ctx.global.json {
        json(&ScanReport {
            journal: journal.path().display().to_string(),
            journal_id: journal.journal_id(),
            modules: reports,
            events: record.events,
            carriers_seen: record.carriers_seen,
            carriers_unchanged: record.carriers_unchanged,
            problems,
            exit: exit_code(exit),
        })?;
        return Ok(exit);
    }
    print_human(ctx, &reports, &record, &problems, journal.path());
    Ok(exit)
}

fn exit_code(e: Exit) -> u8 {
    match e {
        Exit::Ok => 0,
        Exit::Failed => 1,
        Exit::Error => 2,
    }
}

fn collect_carrier_problems(c: &CarrierSnapshot, problems: &mut Vec<Problem>) {
    let key = c.id.key();
    match &c.login {
        Login::Failed(reason) => problems.push(Problem {
            scope: "login",
            subject: key.clone(),
            message: reason.clone(),
        }),
        Login::Skipped(reason) => problems.push(Problem {
            scope: "login_skipped",
            subject: key.clone(),
            message: reason.clone(),
        }),
        Login::NotAttempted | Login::LoggedIn => {}
    }
    for cert in &c.certificates {
        if let Some(err) = &cert.parse_error {
            problems.push(Problem {
                scope: "object",
                subject: key.clone(),
                message: format!(
                    "certificate object id {} label \"{}\" is unparseable ({err}); recorded by its SHA-256 {}",
                    cert.id.hex(),
                    cert.label.escaped(),
                    &cert.sha256[..16]
                ),
            });
        }
    }
    if c.strings_lossy {
        problems.push(Problem {
            scope: "object",
            subject: key,
            message: "token strings held invalid UTF-8; shown with U+FFFD replacements".into(),
        });
    }
}

fn print_human(
    ctx: &Context,
    reports: &[ModuleReport],
    record: &custody_core::journal::ScanRecord,
    problems: &[Problem],
    journal: &std::path::Path,
) {
    let mut per_carrier: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in &record.events {
        per_carrier
            .entry(&e.carrier)
            .or_default()
            .push(e.kind.as_str());
    }
    let mut table = Table::new(&[
        "SERIAL",
        "MODEL",
        "LABEL",
        "CERTS",
        "KEYS",
        "PRIVATE",
        "HOLDER",
        "VALID UNTIL",
        "CHANGES",
    ]);
    let now = time::OffsetDateTime::now_utc();
    for r in reports {
        for c in &r.carriers {
            let key = c.id.key();
            let changes = per_carrier
                .get(key.as_str())
                .map(|k| summarize(k))
                .unwrap_or_else(|| "unchanged".into());
            let holder = c
                .certificates
                .iter()
                .filter_map(|x| x.info.as_ref()?.holder_name.clone())
                .next()
                .unwrap_or_default();
            table.row(vec![
                c.id.serial.clone(),
                format!("{} {}", c.id.manufacturer, c.id.model),
                c.label.clone(),
                c.certificates.len().to_string(),
                c.public_keys.len().to_string(),
                match (&c.private_keys, &c.login) {
                    (Some(k), _) => k.len().to_string(),
                    (None, Login::Failed(_)) => "login failed".into(),
                    (None, Login::Skipped(_)) => "login skipped".into(),
                    (None, _) => "-".into(),
                },
                clip(&holder, 32),
                valid_until(ctx, c, now),
                changes,
            ]);
        }
    }
    let removed: Vec<&custody_core::journal::RecordedEvent> = record
        .events
        .iter()
        .filter(|e| e.kind == EventKind::CarrierRemoved)
        .collect();
    let ok = reports.iter().filter(|r| r.ok).count();
    println!(
        "Scanned {ok} of {} module(s): {} carrier(s), {} unchanged; {} event(s) appended to {}",
        reports.len(),
        record.carriers_seen,
        record.carriers_unchanged,
        record.events.len(),
        journal.display()
    );
    if !table.is_empty() {
        println!();
        table.print();
    }
    for e in removed {
        println!("removed: {}", e.carrier);
    }
    for e in record.events.iter().filter(|e| e.module.is_some()) {
        println!("{}: {}", e.kind, e.module.as_deref().unwrap_or_default());
    }
    for r in reports.iter().filter(|r| !r.complete) {
        println!(
            "partial: {} was not read completely; no carrier, certificate or key of it was recorded as removed",
            r.path
        );
    }
    if !problems.is_empty() {
        eprintln!();
        for p in problems {
            eprintln!("warning: {} {}: {}", p.scope, p.subject, p.message);
        }
        if problems.iter().any(|p| p.scope == "module") && ctx.global.modules.is_empty() {
            eprintln!("hint: choose modules with --module PATH or [[module]] in the configuration");
        }
    }
}

fn summarize(kinds: &[&str]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for k in kinds {
        *counts.entry(k).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| {
            if *n == 1 {
                (*k).to_owned()
            } else {
                format!("{k}×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The earliest end of validity of a carrier's certificates, local time, marked EXPIRED when
/// past.
fn valid_until(ctx: &Context, c: &CarrierSnapshot, now: time::OffsetDateTime) -> String {
    let Some(not_after) = c
        .certificates
        .iter()
        .filter_map(|x| Some(x.info.as_ref()?.not_after))
        .min()
    else {
        return "-".into();
    };
    let shown = crate::local_time::show(
        &custody_core::journal::timestamp(not_after),
        &ctx.config.zone(),
        crate::local_time::Style::Iso,
    );
    if not_after < now {
        format!("{shown} EXPIRED")
    } else {
        shown
    }
}
