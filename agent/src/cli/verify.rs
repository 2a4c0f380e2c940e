//! `custody journal verify` (the hash chain, every checkpoint, the schema and the state
//! tables, read-only) and `custody journal backup` (a consistent, verified copy).

use std::path::PathBuf;

use clap::Args;
use custody_core::journal::{Checkpoint, CheckpointReport, TrustedKey};

use super::Context;
use crate::output::json;
use crate::progress::Progress;
use crate::Exit;

/// Arguments of `custody journal verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A checkpoint exported earlier (`custody journal checkpoint --export`): the journal
    /// must still hold the events it signed, unchanged.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Also compare with the organisation's journal (`[fleet]`): exit 1 when the local
    /// journal is behind it or differs from it.
    #[arg(long)]
    pub against_fleet: bool,
}

/// Runs `custody journal verify`.
pub fn verify(ctx: &Context, args: &VerifyArgs) -> anyhow::Result<Exit> {
    let journal = ctx.open_journal_read_only()?;
    let exported: Option<Checkpoint> = match &args.checkpoint {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            Some(serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not an exported checkpoint ({e}); make one with `custody journal checkpoint --export`",
                    path.display()
                )
            })?)
        }
        None => None,
    };
    let mut progress = Progress::bar(ctx.global.json, "verifying the hash chain", "events");
    let report = journal.verify_with_progress(&mut progress.callback())?;
    drop(progress);
    let progress = Progress::spinner(ctx.global.json, "verifying checkpoints and state");
    let cps = journal.verify_checkpoints(exported.as_ref())?;
    let schema = journal.schema_problems()?;
    let state = journal.verify_state()?;
    drop(progress);
    let local = Local {
        journal: &journal,
        report: &report,
        cps: &cps,
        schema: &schema,
        state: &state,
    };
    let fleet = if args.against_fleet {
        if !ctx.global.json {
            // The fleet's findings follow the local ones.
            local.print();
        }
        Some(super::sync::against_fleet(ctx, &journal)?)
    } else {
        None
    };
    let ok = report.ok()
        && cps.ok()
        && state.ok()
        && schema.is_empty()
        && fleet.as_ref().is_none_or(|f| f.ok);
    if ctx.global.json {
        json(&serde_json::json!({
            "journal": journal.path(),
            "journal_id": journal.journal_id(),
            "ok": ok,
            "events": report.events,
            "head_hash": report.head_hash,
            "first_bad": report.first_bad,
            "checkpoints": cps,
            "state": state,
            "schema": schema,
            "fleet": fleet.map(|f| f.json),
        }))?;
        return Ok(if ok { Exit::Ok } else { Exit::Failed });
    }
    if fleet.is_none() {
        local.print();
    }
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

/// What verify found in the local journal.
struct Local<'a> {
    journal: &'a custody_core::journal::Journal,
    report: &'a custody_core::journal::VerifyReport,
    cps: &'a CheckpointReport,
    schema: &'a [custody_core::journal::SchemaProblem],
    state: &'a custody_core::journal::StateReport,
}

impl Local<'_> {
    fn print(&self) {
        let (journal, report, schema, state) = (self.journal, self.report, self.schema, self.state);
        if let Some(bad) = &report.first_bad {
            println!(
                "journal {} is BROKEN at event #{}: {}",
                journal.path().display(),
                bad.seq,
                bad.reason
            );
            println!(
                "{} event(s) before it verify; keep the file as evidence and restore from a copy",
                report.events
            );
        } else {
            println!(
                "journal {}: hash chain verifies: {} event(s), head {}",
                journal.path().display(),
                report.events,
                report.head_hash
            );
        }
        print_checkpoints(self.cps, report.events);
        if schema.is_empty() {
            println!(
                "schema is exactly custody's (version {})",
                journal.schema_version()
            );
        } else {
            println!(
                "schema DIFFERS from custody's: {} object(s); write commands refuse this journal:",
                schema.len()
            );
            for p in schema {
                println!("  {p}");
            }
        }
        if state.ok() {
            println!(
                "state tables agree with the events: {} row(s) re-derived from {} event(s)",
                state.rows, state.events
            );
        } else {
            println!(
                "state tables DIFFER from the events ({} difference(s)); custody decides from the events, but the tables were changed outside custody:",
                state.problems.len()
            );
            for p in &state.problems {
                println!("  {p}");
            }
        }
    }
}

fn print_checkpoints(cps: &CheckpointReport, events: u64) {
    let key = match (&cps.public_key, &cps.trusted_key) {
        (Some(k), TrustedKey::KeyFile) => format!("the journal key {k}"),
        (Some(k), TrustedKey::ExportedCheckpoint) => {
            format!("the exported checkpoint's key {k} (no journal key file here)")
        }
        (Some(k), _) => format!(
            "the first checkpoint's key {k} (no journal key file here: trusted on first use)"
        ),
        (None, _) => "no key (no journal key file and no checkpoint)".into(),
    };
    if cps.checked == 0 {
        println!("no checkpoint to check yet; write one with `custody journal checkpoint`");
    } else if cps.ok() {
        println!("{} checkpoint(s) verify against {key}", cps.checked);
    }
    if let Some(l) = &cps.latest {
        println!(
            "latest checkpoint: event #{}, covering {} events, {}; {} event(s) since",
            l.seq,
            l.count,
            l.at,
            events.saturating_sub(l.seq)
        );
    }
    for p in &cps.problems {
        if p.seq == 0 {
            println!("CHECKPOINT PROBLEM: {}", p.reason);
        } else {
            println!("CHECKPOINT PROBLEM at #{}: {}", p.seq, p.reason);
        }
    }
    if !cps.ok() {
        println!("checked against {key}; keep the file as evidence and compare with a copy kept elsewhere");
    }
}

/// Arguments of `custody journal backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy: a new file (an existing file is never overwritten).
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

/// Runs `custody journal backup DEST`: copies the journal with SQLite's online backup (what
/// is still in the -wal file included) while custody may be running, then verifies the copy.
pub fn backup(ctx: &Context, args: &BackupArgs) -> anyhow::Result<Exit> {
    let journal = ctx.open_journal_read_only()?;
    let progress = Progress::spinner(ctx.global.json, "copying and verifying the journal");
    let copy = journal.backup(&args.dest);
    drop(progress);
    let copy = copy?;
    if ctx.global.json {
        json(&serde_json::json!({
            "journal": journal.path(),
            "journal_id": journal.journal_id(),
            "backup": args.dest,
            "ok": copy.ok(),
            "copy": copy,
        }))?;
    } else if copy.ok() {
        println!(
            "backup {} written and verified: {} event(s), head {}, {} checkpoint(s)",
            args.dest.display(),
            copy.events,
            copy.head_hash,
            copy.checkpoints
        );
    } else {
        println!(
            "backup {} was written but does NOT verify: {}",
            args.dest.display(),
            copy.problems.join("; ")
        );
    }
    Ok(if copy.ok() { Exit::Ok } else { Exit::Failed })
}
