//! `custody revocation requested | confirmed | check`: the steps with the qualified trust
//! service provider after a dismissal; `check` asks the provider itself (`check.rs`).

pub mod check;

use clap::{Args, Subcommand};
use custody_core::journal::{RevocationRequest, RevocationStep};
use time::OffsetDateTime;

use super::issue::{parse_date, refused};
use super::Context;
use crate::output::json;
use crate::Exit;

/// `custody revocation …`
#[derive(Debug, Subcommand)]
pub enum RevocationCommand {
    /// Revocation of the carrier's certificates was requested from the provider.
    #[command(
        after_help = "Examples:\n  # The provider was asked to revoke every certificate of the carrier\n  custody revocation requested --carrier 3c5e0a1b2d4f6789 --ref \"лист № 12/3\"\n  # One certificate\n  custody revocation requested --carrier 3c5e0a1b2d4f6789 --cert 9f86d081 --ref \"ticket 48213\""
    )]
    Requested(RevocationArgs),
    /// The provider confirmed the revocation.
    #[command(
        after_help = "Examples:\n  # The provider confirmed the revocation\n  custody revocation confirmed --carrier 3c5e0a1b2d4f6789 --ref \"ticket 48213\" --date 2026-03-14"
    )]
    Confirmed(RevocationArgs),
    /// Ask the provider (CRL, OCSP) whether certificates are revoked; a verified "revoked"
    /// is recorded as confirmed, with the evidence.
    #[command(
        after_help = "Examples:\n  # Every certificate whose revocation was requested\n  custody revocation check\n  # Every certificate plugged in too, with the provider's CA certificate given\n  custody revocation check --all --issuer diia-ca.cer\n  # OCSP only, as JSON\n  custody revocation check --via ocsp --json"
    )]
    Check(check::CheckArgs),
}

/// Arguments of both steps.
#[derive(Debug, Args)]
pub struct RevocationArgs {
    /// The carrier's serial (or its full key).
    #[arg(long, value_name = "SERIAL")]
    pub carrier: String,
    /// One certificate (at least 8 hex characters of its SHA-256). Default: every
    /// certificate of the carrier.
    #[arg(long, value_name = "FPR")]
    pub cert: Option<String>,
    /// The reference: letter number, ticket, the provider's confirmation number.
    #[arg(long = "ref", value_name = "TEXT")]
    pub reference: String,
    /// Date of the step (YYYY-MM-DD or DD.MM.YYYY). Default: today (UTC).
    #[arg(long, value_name = "DATE")]
    pub date: Option<String>,
}

/// Runs `custody revocation …`.
pub fn run(ctx: &Context, cmd: &RevocationCommand) -> anyhow::Result<Exit> {
    let (step, args) = match cmd {
        RevocationCommand::Requested(a) => (RevocationStep::Requested, a),
        RevocationCommand::Confirmed(a) => (RevocationStep::Confirmed, a),
        RevocationCommand::Check(a) => return check::run(ctx, a),
    };
    let req = RevocationRequest {
        carrier: args.carrier.clone(),
        cert: args.cert.clone(),
        reference: args.reference.clone(),
        date: args.date.as_deref().map(parse_date).transpose()?,
        evidence: Vec::new(),
    };
    let mut journal = ctx.open_existing_journal()?;
    let record =
        match journal.record_revocation(step, &req, &ctx.actor(), OffsetDateTime::now_utc()) {
            Ok(r) => r,
            Err(e) => return refused(ctx, e),
        };
    if ctx.global.json {
        json(&serde_json::json!({ "ok": true, "event": record }))?;
        return Ok(Exit::Ok);
    }
    let what = match step {
        RevocationStep::Requested => "Revocation requested",
        RevocationStep::Confirmed => "Revocation confirmed",
    };
    let certs = match record.data.certificates.len() {
        0 => "the carrier (no certificate known)".to_owned(),
        1 => format!("certificate {}", &record.data.certificates[0][..16]),
        n => format!("{n} certificates"),
    };
    println!(
        "{what} for {certs} of carrier {}: ref {}, {} (event #{}).",
        record.carrier, record.data.reference, record.data.date, record.seq
    );
    Ok(Exit::Ok)
}
