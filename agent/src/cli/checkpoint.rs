//! `custody journal checkpoint`: write or export a signed checkpoint.

use std::path::PathBuf;

use clap::Args;
use custody_core::journal::{Checkpoint, Journal};
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
