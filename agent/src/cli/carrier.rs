//! `custody carrier add --remote`, `custody carrier destroy-remote`: keys that live in a
//! qualified provider's HSM (remote QES such as Smart-Diia). They have no carrier to scan;
//! the administrator records them with their certificate, and their destruction (the
//! provider's deletion or revocation of the key) with the provider's confirmation as
//! evidence. Nothing here touches PKCS#11.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use custody_core::journal::{Evidence, RemoteDestruction};
use time::OffsetDateTime;

use super::issue::{parse_date, refused};
use super::Context;
use crate::output::json;
use crate::Exit;

/// `custody carrier …`
#[derive(Debug, Subcommand)]
pub enum CarrierCommand {
    /// Record a key held in a provider's HSM (type «хмарний КЕП»): it gets its form row and
    /// can be issued and destroyed like a carrier.
    #[command(
        after_help = "Examples:\n  # A Smart-Diia key, by its certificate (DER or PEM)\n  custody carrier add --remote --provider \"ДП «Дія»\" --cert koval-smart-diia.cer"
    )]
    Add(AddArgs),
    /// Record that the provider deleted (or revoked) a key held in its HSM, with its
    /// confirmation as evidence: column 5 of the key's row.
    #[command(
        after_help = "Examples:\n  # The provider confirmed the deletion by letter\n  custody carrier destroy-remote --carrier 5d8f3a… --evidence diia-confirmation.pdf --responsible \"Коваленко Ольга Петрівна\" --ref \"лист № 17/4\" --date 2026-03-14"
    )]
    DestroyRemote(DestroyArgs),
}

/// Arguments of `custody carrier add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The key is held in a provider's HSM (the only kind added by hand: carriers with
    /// PKCS#11 are enrolled by `custody scan`).
    #[arg(long)]
    pub remote: bool,
    /// The qualified provider holding the key; shown as the carrier in column 3.
    #[arg(long, value_name = "NAME")]
    pub provider: String,
    /// The key's certificate, DER or PEM.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
}

/// Arguments of `custody carrier destroy-remote`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The key: its serial (the certificate's serial number) or full key.
    #[arg(long, value_name = "SERIAL")]
    pub carrier: String,
    /// The provider's confirmation of the deletion (a PDF, an e-mail, a signed letter);
    /// its SHA-256 and size are recorded.
    #[arg(long, value_name = "FILE")]
    pub evidence: PathBuf,
    /// The person responsible for the destruction.
    #[arg(long, value_name = "NAME")]
    pub responsible: String,
    /// The provider's reference (letter or ticket number).
    #[arg(long = "ref", value_name = "TEXT")]
    pub reference: Option<String>,
    /// Date the provider deleted the key (YYYY-MM-DD or DD.MM.YYYY). Default: today (UTC).
    #[arg(long, value_name = "DATE")]
    pub date: Option<String>,
}

/// Runs `custody carrier …`.
pub fn run(ctx: &Context, cmd: &CarrierCommand) -> anyhow::Result<Exit> {
    match cmd {
        CarrierCommand::Add(args) => add(ctx, args),
        CarrierCommand::DestroyRemote(args) => destroy(ctx, args),
    }
}

fn add(ctx: &Context, args: &AddArgs) -> anyhow::Result<Exit> {
    if !args.remote {
        anyhow::bail!(
            "only keys in a provider's HSM are added by hand (--remote); carriers read through PKCS#11 are enrolled by `custody scan`"
        );
    }
    let bytes = std::fs::read(&args.cert)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", args.cert.display()))?;
    let der = der_of(&bytes);
    let mut journal = ctx.open_journal()?;
    let record = match journal.add_remote(
        &args.provider,
        &der,
        &ctx.actor(),
        OffsetDateTime::now_utc(),
    ) {
        Ok(r) => r,
        Err(e) => return refused(ctx, e),
    };
    let carrier = record
        .events
        .first()
        .map(|e| e.carrier.clone())
        .unwrap_or_default();
    let row = journal.live_row_of(&carrier)?;
    if ctx.global.json {
        json(&serde_json::json!({
            "ok": true,
            "journal": journal.path(),
            "carrier": carrier,
            "row_no": row,
            "events": record.events,
        }))?;
    } else {
        println!(
            "Recorded the key in {}'s HSM as carrier {carrier} (хмарний КЕП): row {} of the form.",
            args.provider.trim(),
            row.map(|r| r.to_string()).unwrap_or_else(|| "?".into())
        );
    }
    Ok(Exit::Ok)
}

fn destroy(ctx: &Context, args: &DestroyArgs) -> anyhow::Result<Exit> {
    let date = args.date.as_deref().map(parse_date).transpose()?;
    let bytes = std::fs::read(&args.evidence)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", args.evidence.display()))?;
    if bytes.is_empty() {
        return refused(
            ctx,
            custody_core::Error::Refused(format!(
                "{} is empty; give the provider's confirmation as evidence",
                args.evidence.display()
            )),
        );
    }
    let now = OffsetDateTime::now_utc();
    let date = date.unwrap_or_else(|| now.date());
    let data = RemoteDestruction {
        provider: String::new(),
        date: format!(
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        ),
        responsible: args.responsible.clone(),
        reference: args
            .reference
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
        evidence: Evidence {
            file: args
                .evidence
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: custody_core::cert::sha256_hex(&bytes),
            size: bytes.len() as u64,
        },
    };
    let mut journal = ctx.open_journal()?;
    let record = match journal.destroy_remote(&args.carrier, data, &ctx.actor(), now) {
        Ok(r) => r,
        Err(e) => return refused(ctx, e),
    };
    if ctx.global.json {
        json(&serde_json::json!({ "ok": true, "journal": journal.path(), "destroyed": record }))?;
    } else {
        println!(
            "Recorded the deletion of key {} by {} on {} (event #{}); evidence {} SHA-256 {}.",
            record.carrier,
            record.data.provider,
            record.data.date,
            record.seq,
            record.data.evidence.file,
            record.data.evidence.sha256
        );
    }
    Ok(Exit::Ok)
}

/// DER from a certificate file: PEM is decoded, anything else is taken as DER.
fn der_of(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bytes.to_vec();
    };
    let Some(start) = text.find("-----BEGIN CERTIFICATE-----") else {
        return bytes.to_vec();
    };
    let body = &text[start + "-----BEGIN CERTIFICATE-----".len()..];
    let body = body
        .split("-----END CERTIFICATE-----")
        .next()
        .unwrap_or_default();
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|_| bytes.to_vec())
}
