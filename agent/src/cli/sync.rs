//! `custody sync`: push the journal's new events and checkpoints into the organisation's
//! journal (`[fleet]` in the configuration), and `custody journal verify --against-fleet`.

use clap::Args;
use custody_core::fleet::{Fleet, FleetComparison, SyncOptions, SyncReport};
use custody_core::journal::Journal;
use custody_core::Error;

use super::Context;
use crate::config::FleetSettings;
use crate::output::json;
use crate::progress::Progress;
use crate::Exit;

/// Arguments of `custody sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Events per transaction (default: `[fleet] batch`, else 1000).
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
}

/// The `[fleet]` section, or an error saying how to get one.
pub fn settings(ctx: &Context) -> anyhow::Result<&FleetSettings> {
    ctx.config.fleet.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "no [fleet] section in the configuration{}; `custody fleet enroll-agent NAME --database URL --output FILE` writes one, then run with --config FILE",
            ctx.config
                .source
                .as_ref()
                .map(|p| format!(" ({})", p.display()))
                .unwrap_or_default()
        )
    })
}

/// Syncs `journal` with the settings of `[fleet]`.
pub fn sync_journal(
    settings: &FleetSettings,
    journal: &Journal,
    batch: Option<usize>,
    progress: &mut dyn FnMut(u64, u64),
) -> custody_core::Result<SyncReport> {
    let db = settings
        .connect_to()
        .map_err(|e| Error::Refused(format!("{e:#}")))?;
    let mut fleet = Fleet::connect(&db)?;
    fleet.sync_with_progress(
        journal,
        &SyncOptions {
            batch: batch.unwrap_or(settings.batch),
            ..SyncOptions::default()
        },
        progress,
    )
}

/// The exit code of a fleet error: 1 for a refusal (the journal does not continue the
/// organisation's record, a right the role lacks), 2 for the rest (unreachable, …).
pub fn exit_of(e: &Error) -> Exit {
    match e {
        Error::FleetBehind { .. }
        | Error::FleetDiverged { .. }
        | Error::FleetRefused(_)
        | Error::Refused(_) => Exit::Failed,
        _ => Exit::Error,
    }
}

/// Runs `custody sync`.
pub fn run(ctx: &Context, args: &SyncArgs) -> anyhow::Result<Exit> {
    let settings = settings(ctx)?;
    let journal = ctx.open_existing_journal()?;
    let mut progress = Progress::bar(ctx.global.json, "syncing", "events");
    let result = sync_journal(settings, &journal, args.batch, &mut progress.callback());
    drop(progress);
    match result {
        Ok(report) => {
            if ctx.global.json {
                json(
                    &serde_json::json!({ "ok": true, "database": database_shown(settings), "sync": report }),
                )?;
            } else {
                println!(
                    "Synced {} event(s) of journal {} to {}: the organisation holds events up to #{} (local journal: #{}).",
                    report.pushed,
                    report.journal_id,
                    database_shown(settings),
                    report.server_seq,
                    report.local_seq
                );
                if let Some(cp) = &report.checkpoint {
                    println!(
                        "Latest checkpoint held by the organisation: event #{}, covering {} events, {}.",
                        cp.checkpoint().seq,
                        cp.checkpoint().count,
                        cp.checkpoint().at
                    );
                }
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            let exit = exit_of(&e);
            if ctx.global.json {
                json(&serde_json::json!({ "ok": false, "error": e.to_string() }))?;
            }
            eprintln!(
                "custody: {}: {e}",
                if exit == Exit::Failed {
                    "refused"
                } else {
                    "error"
                }
            );
            Ok(exit)
        }
    }
}

fn database_shown(settings: &FleetSettings) -> String {
    settings
        .connect_to()
        .map(|d| d.to_string())
        .unwrap_or_else(|_| "the organisation's database".into())
}

/// What `journal verify --against-fleet` found.
#[derive(Debug)]
pub struct AgainstFleet {
    /// True when the local journal holds everything the organisation holds, unchanged, and
    /// the organisation's latest checkpoint verifies against it.
    pub ok: bool,
    /// For `--json`.
    pub json: serde_json::Value,
}

/// Compares the local journal with the organisation's record and checks the newest
/// checkpoint the organisation holds against it; prints the findings unless `--json`.
pub fn against_fleet(ctx: &Context, journal: &Journal) -> anyhow::Result<AgainstFleet> {
    let settings = settings(ctx)?;
    let db = settings.connect_to()?;
    let cmp: FleetComparison = Fleet::connect(&db)?.compare(journal)?;
    let witness = match &cmp.checkpoint {
        Some(cp) => Some(journal.verify_checkpoints(Some(cp.checkpoint()))?),
        None => None,
    };
    let witness_ok = witness.as_ref().is_none_or(|w| w.ok());
    let ok = cmp.ok() && witness_ok;
    if !ctx.global.json {
        if !cmp.registered {
            println!("the organisation's journal ({db}) holds nothing of this journal yet; run `custody sync`");
        } else if cmp.behind() {
            println!(
                "LOCAL JOURNAL BEHIND the organisation's record at seq {}: the local journal ends at event #{} ({db}); it was restored from an old backup or truncated",
                cmp.server_seq, cmp.local_seq
            );
        } else if let Some(seq) = cmp.first_difference {
            println!("LOCAL JOURNAL DIFFERS from the organisation's record at seq {seq} ({db}): rewritten or forked");
        } else {
            println!(
                "the organisation's record ({db}) holds events 1..#{} of this journal, identical to the local ones; {} local event(s) not synced yet",
                cmp.server_seq,
                cmp.local_seq - cmp.server_seq
            );
        }
        match (&cmp.checkpoint, &witness) {
            (Some(cp), Some(w)) if w.ok() => println!(
                "the organisation's latest checkpoint (event #{}, {} events, received {}) verifies against this journal",
                cp.checkpoint().seq,
                cp.checkpoint().count,
                cp.received_at()
            ),
            (Some(cp), Some(w)) => {
                for p in &w.problems {
                    println!(
                        "ORGANISATION'S CHECKPOINT #{} DOES NOT VERIFY: {}",
                        cp.checkpoint().seq,
                        p.reason
                    );
                }
            }
            _ => println!("the organisation holds no checkpoint of this journal yet"),
        }
        for a in &cmp.alarms {
            println!(
                "alarm {} at #{} ({}): {}",
                a.kind, a.seq, a.raised_at, a.detail
            );
        }
    }
    Ok(AgainstFleet {
        ok,
        json: serde_json::json!({
            "ok": ok,
            "database": db.to_string(),
            "comparison": cmp,
            "behind": cmp.behind(),
            "checkpoint": witness,
        }),
    })
}
