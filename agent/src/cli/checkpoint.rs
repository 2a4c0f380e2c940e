//! `custody journal checkpoint` (write or export a signed checkpoint) and `custody journal
//! verify` (the hash chain and every checkpoint).

use std::path::PathBuf;

use clap::Args;
use custody_core::journal::{Checkpoint, CheckpointReport, Journal, TrustedKey};
use time::OffsetDateTime;

use super::Context;
use crate::config::parse_duration;
use crate::output::json;
use crate::Exit;

/// Arguments of `custody journal checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Print the latest checkpoint (JSON, with its public key) instead of writing a new one,
    /// to keep it somewhere else.
    #[arg(long)]
    pub export: bool,
    /// Write only when the latest checkpoint is older than this (e.g. 24h); for timers.
    #[arg(long, value_name = "DURATION", conflicts_with = "export")]
    pub if_older_than: Option<String>,
    /// Write the exported checkpoint to this file instead of standard output.
    #[arg(long, value_name = "FILE", requires = "export")]
    pub out: Option<PathBuf>,
}

/// Arguments of `custody journal verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A checkpoint exported earlier (`custody journal checkpoint --export`): the journal
    /// must still hold the events it signed, unchanged.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
}

/// Runs `custody journal checkpoint`.
pub fn run(ctx: &Context, args: &CheckpointArgs) -> anyhow::Result<Exit> {
    let mut journal = ctx.open_existing_journal()?;
    if args.export {
        let Some(cp) = journal.latest_checkpoint()? else {
            return super::issue::refused(
                ctx,
                custody_core::Error::Refused(
                    "the journal has no checkpoint yet; write one with `custody journal checkpoint`".into(),
                ),
            );
        };
        let mut text = serde_json::to_string_pretty(&cp)?;
        text.push('\n');
        match &args.out {
            Some(path) => {
                std::fs::write(path, text)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                if !ctx.global.json {
                    eprintln!(
                        "Exported checkpoint #{} ({} events) to {}",
                        cp.seq,
                        cp.count,
                        path.display()
                    );
                }
            }
            None => print!("{text}"),
        }
        return Ok(Exit::Ok);
    }
    let now = OffsetDateTime::now_utc();
    let written = match &args.if_older_than {
        Some(age) => {
            let age = parse_duration(age)?;
            let age = time::Duration::try_from(age)?;
            journal.checkpoint_if_due(&ctx.actor(), now, age)
        }
        None => journal.checkpoint(&ctx.actor(), now).map(Some),
    };
    let written = match written {
        Ok(w) => w,
        Err(e) => return super::issue::refused(ctx, e),
    };
    if ctx.global.json {
        json(&serde_json::json!({
            "ok": true,
            "written": written.is_some(),
            "checkpoint": written.clone().or(journal.latest_checkpoint()?),
            "key_file": journal.key_path(),
        }))?;
        return Ok(Exit::Ok);
    }
    match written {
        Some(cp) => print_checkpoint("Checkpoint written", &cp, &journal),
        None => println!("The latest checkpoint is recent enough; nothing written."),
    }
    Ok(Exit::Ok)
}

fn print_checkpoint(what: &str, cp: &Checkpoint, journal: &Journal) {
    println!(
        "{what}: event #{}, covering {} events, head {}, {}",
        cp.seq, cp.count, cp.head_hash, cp.at
    );
    println!(
        "Signed with the journal key {} ({}).",
        cp.public_key,
        journal.key_path().display()
    );
}

/// Runs `custody journal verify`.
pub fn verify(ctx: &Context, journal: &Journal, args: &VerifyArgs) -> anyhow::Result<Exit> {
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
    let report = journal.verify()?;
    let cps = journal.verify_checkpoints(exported.as_ref())?;
    let state = journal.verify_state()?;
    let ok = report.ok() && cps.ok() && state.ok();
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
        }))?;
        return Ok(if ok { Exit::Ok } else { Exit::Failed });
    }
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
    print_checkpoints(&cps, report.events);
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
    Ok(if ok { Exit::Ok } else { Exit::Failed })
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
