//! `custody issue`: record that a carrier (and the keys on it) was handed to a signer,
//! optionally with the holder's signed acknowledgement.

use std::io::BufRead;

use anyhow::{bail, Context as _};
use clap::Args;
use custody_core::id::RawBytes;
use custody_core::inventory::ModuleScan;
use custody_core::journal::{IssueRecord, IssueRequest};
use custody_core::token::{Module, SignOptions};
use secrecy::SecretString;
use serde::Serialize;
use time::OffsetDateTime;

use super::Context;
use crate::output::json;
use crate::Exit;

/// Arguments of `custody issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The carrier's serial (or its full key manufacturer/model/serial). It must be plugged
    /// in: custody reads the keys and certificates from it.
    #[arg(long, value_name = "SERIAL")]
    pub carrier: String,
    /// The holder's full name. Default: the holder named in the carrier's certificate.
    #[arg(long, value_name = "FULL NAME")]
    pub holder: Option<String>,
    /// The holder's position.
    #[arg(long, value_name = "TEXT")]
    pub position: Option<String>,
    /// The holder's tax number (RNOKPP). Default: the one in the certificate.
    #[arg(long, value_name = "NUMBER")]
    pub tax_number: Option<String>,
    /// Link the holder record (`custody holder list`) with this tax number or e-ID document
    /// number; its name, position and unit fill what is not given. Default: the record with
    /// the holder's tax number, when HR's list has one.
    #[arg(long, value_name = "TAX_NUMBER|DOCUMENT")]
    pub holder_record: Option<String>,
    /// Date of handover (YYYY-MM-DD or DD.MM.YYYY). Default: today (UTC).
    #[arg(long, value_name = "DATE")]
    pub date: Option<String>,
    /// The holder signs the journal entry with the key on the carrier; custody checks the
    /// signature against the certificate and stores it with the entry.
    #[arg(long)]
    pub ack_sign: bool,
    /// Read the holder's PIN from the first line of standard input instead of the terminal.
    #[arg(long, requires = "ack_sign")]
    pub pin_stdin: bool,
    /// CKA_ID (hex) of the key to sign with, when the carrier holds several signing keys.
    #[arg(long, value_name = "HEX", requires = "ack_sign")]
    pub ack_key_id: Option<String>,
    /// Vendor signing mechanism (hex, e.g. 0x80420031) for key types custody does not know.
    #[arg(long, value_name = "HEX", requires = "ack_sign")]
    pub ack_mechanism: Option<String>,
}

/// `custody issue --json`.
#[derive(Debug, Serialize)]
struct IssueReport<'a> {
    ok: bool,
    journal: String,
    #[serde(flatten)]
    record: &'a IssueRecord,
}

/// Runs `custody issue`.
pub fn run(ctx: &Context, args: &IssueArgs) -> anyhow::Result<Exit> {
    let now = OffsetDateTime::now_utc();
    let mut journal = ctx.open_journal()?;
    let actor = ctx.actor();
    let date = args.date.as_deref().map(parse_date).transpose()?;
    let options = SignOptions {
        key_id: match &args.ack_key_id {
            Some(h) => Some(
                RawBytes::from_hex(h.trim_start_matches("0x"))
                    .with_context(|| format!("--ack-key-id {h:?} is not hex"))?,
            ),
            None => None,
        },
        vendor_mechanism: args
            .ack_mechanism
            .as_deref()
            .map(parse_hex_u64)
            .transpose()?,
    };
    // Bring the journal up to date with what is plugged in, and find the carrier.
    let (modules, scans, failed) = load_and_scan(ctx);
    journal.record_scan(&scans, &actor, now)?;
    // A carrier that cannot be found while a module failed may be behind that module: say
    // so, instead of "unknown" or "not plugged in".
    let module_failed = |what: &str| -> anyhow::Result<Exit> {
        let (path, cause) = &failed[0];
        anyhow::bail!(
            "{what}, and module {} failed to load ({cause}): the carrier may be behind it; fix the module (`custody doctor` checks it), then run this again",
            path.display()
        )
    };
    let mut req = IssueRequest {
        carrier: args.carrier.clone(),
        holder: args.holder.clone(),
        position: args.position.clone(),
        tax_number: args.tax_number.clone(),
        holder_record: args.holder_record.clone(),
        date,
        certificates: Vec::new(),
    };
    let plan = match journal.plan_issue(&req, now) {
        Ok(p) => p,
        Err(custody_core::Error::Refused(msg)) if !failed.is_empty() => {
            return module_failed(&format!("carrier {:?} not found ({msg})", args.carrier));
        }
        Err(e) => return refused(ctx, e),
    };
    let id = plan.carrier();
    // A key in a provider's HSM: nothing to read or sign with here; its certificate was
    // recorded when it was added.
    let remote = journal
        .carriers_by_serial(&plan.data.carrier.key)?
        .first()
        .is_some_and(|c| custody_core::journal::is_remote_module(&c.module));
    if remote {
        if args.ack_sign {
            return refused(
                ctx,
                custody_core::Error::Refused(format!(
                    "carrier {} is a key in {}'s HSM: it signs only through the provider; record the handover without --ack-sign and have it signed by hand on the printed form",
                    plan.data.carrier.serial, plan.data.carrier.manufacturer
                )),
            );
        }
        req.certificates = journal.remote_certificates(&plan.data.carrier.key)?;
        let record = match journal.issue(&req, None, &actor, now, &plan) {
            Ok(r) => r,
            Err(e) => return refused(ctx, e),
        };
        return report(ctx, &journal, &record);
    }
    let Some(module) = scans
        .iter()
        .position(|s| {
            s.carriers
                .iter()
                .any(|c| c.id.key() == plan.data.carrier.key)
        })
        .map(|i| &modules[i])
    else {
        if !failed.is_empty() {
            return module_failed(&format!(
                "carrier {} is not among the tokens the working modules show",
                plan.data.carrier.serial
            ));
        }
        return refused(
            ctx,
            custody_core::Error::Refused(format!(
                "carrier {} is in the journal but not plugged in; plug it in (custody reads its keys and certificates when it is issued)",
                plan.data.carrier.serial
            )),
        );
    };
    req.certificates = module
        .carrier_certificates(&id)?
        .into_iter()
        .map(|c| c.der)
        .collect();
    let ack = if args.ack_sign && plan.existing.as_ref().is_none_or(|e| !e.acknowledged) {
        let pin = read_pin(
            args.pin_stdin,
            &plan.data.carrier.serial,
            &plan.data.holder.name,
        )?;
        let message = plan.statement.message();
        let sig = match module.sign_on_carrier(&id, &pin, message.as_bytes(), &options) {
            Ok(s) => s,
            Err(
                e @ (custody_core::Error::Refused(_)
                | custody_core::Error::WrongPin { .. }
                | custody_core::Error::PinLocked),
            ) => {
                return refused(
                    ctx,
                    custody_core::Error::Refused(format!("{e}; nothing was recorded")),
                )
            }
            Err(e) => return Err(e).context("signing the acknowledgement on the carrier"),
        };
        match custody_core::ack::verify(&plan.statement, &sig) {
            Ok(a) => Some(a),
            Err(e) => return refused(ctx, e),
        }
    } else {
        None
    };
    let record = match journal.issue(&req, ack, &actor, now, &plan) {
        Ok(r) => r,
        Err(e) => return refused(ctx, e),
    };
    report(ctx, &journal, &record)
}

fn report(
    ctx: &Context,
    journal: &custody_core::journal::Journal,
    record: &IssueRecord,
) -> anyhow::Result<Exit> {
    if ctx.global.json {
        json(&IssueReport {
            ok: true,
            journal: journal.path().display().to_string(),
            record,
        })?;
        return Ok(Exit::Ok);
    }
    print_human(record);
    Ok(Exit::Ok)
}

fn print_human(r: &IssueRecord) {
    let d = &r.data;
    let who = &d.holder.name;
    if r.already_issued && r.acknowledged_seq.is_none() {
        println!(
            "Carrier {} is already issued to {who} (row {}, {}); nothing recorded.",
            d.carrier.serial, r.row_no, d.issued_on
        );
        return;
    }
    if r.already_issued {
        println!(
            "Acknowledgement added to row {} (carrier {} issued to {who}), event #{}.",
            r.row_no,
            d.carrier.serial,
            r.acknowledged_seq.unwrap_or_default()
        );
    } else {
        println!(
            "Issued carrier {} {} serial {} to {who}: row {}, {} (event #{}).",
            d.carrier.manufacturer, d.carrier.model, d.carrier.serial, r.row_no, d.issued_on, r.seq
        );
        println!(
            "Keys generated: {} ({})",
            d.generated.at,
            match d.generated.source {
                custody_core::journal::GeneratedSource::KeyAttribute => "key attribute",
                custody_core::journal::GeneratedSource::Certificate => "certificate",
                custody_core::journal::GeneratedSource::FirstSeen => "first seen",
            }
        );
        if let Some(t) = &d.holder.tax_number {
            println!("Tax number: {t}");
        }
        if let Some(r) = &d.holder.record {
            println!("Holder record: {r} (HR's list)");
        }
    }
    match &d.acknowledgement {
        Some(a) => println!(
            "Acknowledgement: signed with key {} on the carrier, {} ({}).",
            a.key_id,
            match a.status {
                custody_core::ack::AckStatus::Verified => "verified".to_owned(),
                custody_core::ack::AckStatus::NotVerified =>
                    a.reason.clone().unwrap_or_else(|| "not verified".into()),
            },
            a.algorithm
        ),
        None => {
            println!("Acknowledgement: none (the printed form has a line for a hand signature).")
        }
    }
    if let Some(cp) = &r.checkpoint {
        println!(
            "Checkpoint #{} signed: {} events, head {}.",
            cp.seq,
            cp.count,
            &cp.head_hash[..16]
        );
    }
    for w in &d.warnings {
        eprintln!("warning: {w}");
    }
}

/// Loads every module in effect and scans it with the configured PIN sources; modules that
/// fail are reported on stderr and skipped. Modules and scans are index-aligned.
/// Modules that could not be loaded or scanned, with the reason.
pub(crate) type FailedModules = Vec<(std::path::PathBuf, String)>;

pub(crate) fn load_and_scan(ctx: &Context) -> (Vec<Module>, Vec<ModuleScan>, FailedModules) {
    let pins = ctx.pins();
    let mut modules = Vec::new();
    let mut failed = Vec::new();
    for path in ctx.modules() {
        match Module::load(&path) {
            Ok(m) => modules.push((path, m)),
            Err(e) => {
                eprintln!("warning: module {}: {e}", path.display());
                failed.push((path, e.to_string()));
            }
        }
    }
    // Every module's tokens before any is read, so that a PIN rule matching carriers in two
    // modules is refused on both.
    pins.set_present(modules.iter().map(|(_, m)| m));
    let scans = modules
        .iter()
        .map(|(path, m)| {
            let s = m.scan(&pins);
            if let Some(why) = s.unavailability() {
                eprintln!("warning: module {}: {why}", path.display());
            }
            s
        })
        .collect();
    (modules.into_iter().map(|(_, m)| m).collect(), scans, failed)
}

/// Prints a refusal (exit 1); other errors go up (exit 2).
pub(crate) fn refused(ctx: &Context, e: custody_core::Error) -> anyhow::Result<Exit> {
    match e {
        custody_core::Error::Refused(msg) => {
            if ctx.global.json {
                json(&serde_json::json!({ "ok": false, "refused": msg }))?;
            } else {
                eprintln!("custody: refused: {msg}");
            }
            Ok(Exit::Failed)
        }
        other => Err(other.into()),
    }
}

/// Parses `YYYY-MM-DD` or `DD.MM.YYYY`.
pub(crate) fn parse_date(text: &str) -> anyhow::Result<time::Date> {
    let t = text.trim();
    let iso = time::macros::format_description!("[year]-[month]-[day]");
    let ua = time::macros::format_description!("[day].[month].[year]");
    time::Date::parse(t, iso)
        .or_else(|_| time::Date::parse(t, ua))
        .map_err(|_| anyhow::anyhow!("{t:?} is not a date; write YYYY-MM-DD or DD.MM.YYYY"))
}

fn parse_hex_u64(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let h = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(h, 16).with_context(|| format!("{t:?} is not a hex number like 0x80420031"))
}

/// The holder's PIN: the first line of stdin, or typed on the terminal without echo.
fn read_pin(stdin: bool, serial: &str, holder: &str) -> anyhow::Result<SecretString> {
    let pin = if stdin {
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the PIN from standard input")?;
        zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        zeroize::Zeroizing::new(
            rpassword::prompt_password(format!(
                "{holder}, type the PIN of carrier {serial} to sign the journal entry: "
            ))
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the PIN from a terminal ({e}); pass --pin-stdin and send the PIN on standard input"
                )
            })?,
        )
    };
    if pin.is_empty() {
        bail!("the PIN is empty; nothing was recorded");
    }
    Ok(SecretString::from(pin.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_both_notations() {
        let d = parse_date("2026-11-23").ok();
        assert_eq!(d, parse_date("23.11.2026").ok());
        assert!(d.is_some());
        assert!(parse_date("23/11/2026").is_err());
        assert!(parse_date("2026-02-30").is_err());
    }

    #[test]
    fn mechanisms_in_hex() {
        assert_eq!(parse_hex_u64("0x80420031").ok(), Some(0x8042_0031));
        assert!(parse_hex_u64("zz").is_err());
    }
}
