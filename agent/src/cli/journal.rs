//! `custody journal list | show | verify`.

use clap::Subcommand;
use custody_core::journal::{EventKind, EventRow};
use serde::Serialize;

use super::Context;
use crate::output::{clip, json, Table};
use crate::Exit;

/// `custody journal …`
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// List every carrier in the journal.
    #[command(
        after_help = "Examples:\n  # Every carrier, as a table\n  custody journal list\n  # For a script\n  custody journal list --json"
    )]
    List,
    /// Show one carrier and its history.
    #[command(
        after_help = "Examples:\n  # One carrier's whole history, by serial\n  custody journal show 3c5e0a1b2d4f6789\n  # By its full key, when two carriers share a serial (`carrier` in `custody journal list --json`)\n  custody journal show 'SoftHSM project/SoftHSM v2/3c5e0a1b2d4f6789'"
    )]
    Show {
        /// The carrier's serial (or its full key manufacturer/model/serial).
        serial: String,
    },
    /// Recompute the hash chain and check every signed checkpoint; exit 1 and name the
    /// problem when something does not verify.
    #[command(
        after_help = "Examples:\n  # Check the chain and every signed checkpoint\n  custody journal verify\n  # Also against a checkpoint kept on other media\n  custody journal verify --checkpoint /mnt/archive/checkpoint-2026-03.json"
    )]
    Verify(super::verify::VerifyArgs),
    /// Print the mandated form (CSV, HTML, JSON; Ukrainian or English).
    #[command(
        after_help = "Examples:\n  # The printable form (A4 landscape HTML)\n  custody journal export --out journal.html\n  # One quarter as CSV, in English\n  custody journal export --format csv --lang en --from 2026-01-01 --to 2026-03-31"
    )]
    Export(super::export::ExportArgs),
    /// Import an office's paper journal from CSV; rows keep their numbers.
    #[command(
        after_help = "Examples:\n  # Bring the paper journal's rows in, keeping their numbers\n  custody journal import --csv paper-journal.csv"
    )]
    Import(super::import::ImportArgs),
    /// Write a signed checkpoint, or export the latest one to keep elsewhere.
    #[command(
        after_help = "Examples:\n  # Sign the journal's current head\n  custody journal checkpoint\n  # From a daily timer\n  custody journal checkpoint --if-older-than 24h\n  # Keep the latest one elsewhere\n  custody journal checkpoint --export --out /mnt/archive/checkpoint.json"
    )]
    Checkpoint(super::checkpoint::CheckpointArgs),
    /// Copy the journal consistently (SQLite's online backup, also while the service runs)
    /// and verify the copy.
    #[command(
        after_help = "Examples:\n  # A copy to keep elsewhere\n  custody journal backup /mnt/backup/journal-2026-03-13.db\n  # Restore: stop the service, then copy it back\n  systemctl stop custody && cp /mnt/backup/journal-2026-03-13.db /var/lib/custody/journal.db"
    )]
    Backup(super::verify::BackupArgs),
}

/// Runs a journal subcommand.
pub fn run(ctx: &Context, cmd: &JournalCommand) -> anyhow::Result<Exit> {
    match cmd {
        JournalCommand::Export(args) => return super::export::run(ctx, args),
        JournalCommand::Import(args) => return super::import::run(ctx, args),
        JournalCommand::Checkpoint(args) => return super::checkpoint::run(ctx, args),
        JournalCommand::Verify(args) => return super::verify::verify(ctx, args),
        JournalCommand::Backup(args) => return super::verify::backup(ctx, args),
        _ => {}
    }
    let journal = ctx.open_existing_journal()?;
    match cmd {
        JournalCommand::List => {
            let carriers = journal.carriers()?;
            if ctx.global.json {
                json(&serde_json::json!({
                    "journal": journal.path(),
                    "journal_id": journal.journal_id(),
                    "carriers": carriers,
                }))?;
                return Ok(Exit::Ok);
            }
            if carriers.is_empty() {
                println!(
                    "The journal {} holds no carriers yet; run `custody scan`.",
                    journal.path().display()
                );
                return Ok(Exit::Ok);
            }
            let mut t = Table::new(&[
                "#",
                "SERIAL",
                "MODEL",
                "LABEL",
                "PRESENT",
                "CERTS",
                "KEYS",
                "HOLDER",
                "LAST SEEN",
            ]);
            for c in &carriers {
                t.row(vec![
                    c.enrolled_seq.to_string(),
                    c.serial.clone(),
                    format!("{} {}", c.manufacturer, c.model),
                    c.label.clone(),
                    if c.present { "yes" } else { "no" }.into(),
                    c.certificates.to_string(),
                    c.keys.to_string(),
                    clip(&c.holders.join("; "), 40),
                    c.last_seen.clone(),
                ]);
            }
            t.print();
            Ok(Exit::Ok)
        }
        JournalCommand::Show { serial } => {
            let carriers = journal.carriers_by_serial(serial)?;
            if carriers.is_empty() {
                eprintln!("custody: no carrier with serial {serial:?} in {}; `custody journal list` shows the serials", journal.path().display());
                return Ok(Exit::Failed);
            }
            let mut histories = Vec::new();
            for c in &carriers {
                histories.push((c, journal.carrier_events(&c.carrier)?));
            }
            if ctx.global.json {
                #[derive(Serialize)]
                struct Shown<'a> {
                    carrier: &'a custody_core::journal::CarrierRow,
                    events: &'a [EventRow],
                }
                let shown: Vec<Shown<'_>> = histories
                    .iter()
                    .map(|(c, e)| Shown {
                        carrier: c,
                        events: e,
                    })
                    .collect();
                json(&serde_json::json!({ "carriers": shown }))?;
                return Ok(Exit::Ok);
            }
            let zone = ctx.config.zone();
            let show = |t: &str| crate::local_time::show(t, &zone, crate::local_time::Style::Iso);
            for (c, events) in &histories {
                println!("Carrier   {}", c.carrier);
                println!("Label     {}", custody_core::id::escape_text(&c.label));
                println!("Module    {}", c.module);
                println!(
                    "Present   {} (last seen {})",
                    if c.present { "yes" } else { "no" },
                    show(&c.last_seen)
                );
                println!("Holder    {}", c.holders.join("; "));
                let now = time::OffsetDateTime::now_utc();
                if let Some(snapshot) = journal.snapshot(&c.carrier)? {
                    for cert in snapshot.certificates.iter().filter_map(|x| x.info.as_ref()) {
                        println!(
                            "Cert      {}, valid until {}{}",
                            custody_core::id::escape_text(&cert.subject),
                            show(&custody_core::journal::timestamp(cert.not_after)),
                            if cert.not_after < now { " EXPIRED" } else { "" }
                        );
                    }
                }
                println!();
                let mut t = Table::new(&["SEQ", "TIME", "EVENT", "BY", "DETAILS"]);
                for e in events {
                    t.row(vec![
                        e.seq.to_string(),
                        show(&e.at),
                        e.kind.to_string(),
                        match &e.operator {
                            Some(op) => format!("{} ({op})", e.os_user),
                            None => e.os_user.clone(),
                        },
                        clip(&describe(e), 90),
                    ]);
                }
                t.print();
                println!();
            }
            Ok(Exit::Ok)
        }
        // Dispatched above, before the journal is opened (import may create it; verify and
        // backup open it read-only).
        JournalCommand::Export(_)
        | JournalCommand::Import(_)
        | JournalCommand::Checkpoint(_)
        | JournalCommand::Verify(_)
        | JournalCommand::Backup(_) => Ok(Exit::Error),
    }
}

/// One line about an event for people.
pub fn describe(e: &EventRow) -> String {
    let d = &e.data;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let hexlabel = |v: &serde_json::Value| {
        custody_core::id::RawBytes::from_hex(v.as_str().unwrap_or_default())
            .map(|b| b.escaped())
            .unwrap_or_default()
    };
    match e.kind {
        EventKind::CarrierEnrolled => format!(
            "label \"{}\", {} {}",
            s(&d["carrier"]["label"]),
            s(&d["carrier"]["hardware_version"]),
            s(&d["carrier"]["module"])
        ),
        EventKind::CarrierSeen => format!("present again, label \"{}\"", s(&d["label"])),
        EventKind::CarrierRemoved => format!("gone, label \"{}\"", s(&d["label"])),
        EventKind::CarrierReinitialised => {
            format!("\"{}\" -> \"{}\"", s(&d["old_label"]), s(&d["new_label"]))
        }
        EventKind::CertAdded => {
            let c = &d["cert"];
            match c["info"]["subject"].as_str() {
                Some(subject) => format!(
                    "id {} label \"{}\" {} sha256 {}",
                    s(&c["id"]),
                    hexlabel(&c["label"]),
                    subject,
                    clip(&s(&c["sha256"]), 17)
                ),
                None => format!(
                    "id {} label \"{}\" UNPARSEABLE: {}",
                    s(&c["id"]),
                    hexlabel(&c["label"]),
                    s(&c["parse_error"])
                ),
            }
        }
        EventKind::CertRemoved => {
            format!("id {} {}", s(&d["id"]), d["subject"].as_str().unwrap_or(""))
        }
        EventKind::KeyAdded => {
            let k = &d["key"];
            format!(
                "{} {} id {}{}",
                s(&k["class"]),
                s(&k["key_type_name"]),
                s(&k["id"]),
                if k["local"] == serde_json::Value::Bool(true) {
                    ", generated on the carrier"
                } else {
                    ""
                }
            )
        }
        EventKind::KeyRemoved => format!("{} id {}", s(&d["class"]), s(&d["id"])),
        EventKind::Issued => format!(
            "row {} to {}, {}{}",
            d["row_no"],
            s(&d["holder"]["name"]),
            s(&d["issued_on"]),
            match d["acknowledgement"]["status"].as_str() {
                Some(st) => format!(", acknowledgement {st}"),
                None => String::new(),
            }
        ),
        EventKind::IssueAcknowledged => format!(
            "row {}, acknowledgement {}",
            d["row_no"],
            s(&d["acknowledgement"]["status"])
        ),
        EventKind::RevocationRequested | EventKind::RevocationConfirmed => format!(
            "ref {}, {}, {} certificate(s)",
            s(&d["reference"]),
            s(&d["date"]),
            d["certificates"].as_array().map_or(0, Vec::len)
        ),
        EventKind::Imported => format!(
            "row {} from {} line {}",
            d["row_no"],
            s(&d["source"]),
            d["line"]
        ),
        EventKind::Checkpoint => format!(
            "{} events, head {}",
            d["count"],
            clip(&s(&d["head_hash"]), 17)
        ),
        EventKind::OrderReceived => format!(
            "order {} for {} ({}), holder {}",
            s(&d["order_id"]),
            s(&d["order"]["target"]["serial"]),
            s(&d["order"]["method"]),
            s(&d["order"]["holder"])
        ),
        EventKind::OrderRejected => format!(
            "order {} refused: {}",
            d["order_id"].as_str().unwrap_or("?"),
            s(&d["code"])
        ),
        EventKind::WipeStarted => format!(
            "order {} ({}), {} object(s) to go, responsible {}",
            s(&d["order_id"]),
            s(&d["method"]),
            d["plan"]["objects"].as_array().map(Vec::len).unwrap_or(0),
            s(&d["responsible"])
        ),
        EventKind::WipeCompleted => format!(
            "order {}: {} object(s) destroyed, verified in a fresh context{}; responsible {}",
            s(&d["order_id"]),
            d["destroyed"].as_array().map(Vec::len).unwrap_or(0),
            if d["reconciled"] == serde_json::Value::Bool(true) {
                " after an interruption"
            } else {
                ""
            },
            s(&d["responsible"])
        ),
        EventKind::WipeFailed => format!("order {}: {}", s(&d["order_id"]), s(&d["error"])),
        _ => d.to_string(),
    }
}
