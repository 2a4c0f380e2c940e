//! `custody revocation check`: asks the provider (CRL, OCSP) about every certificate whose
//! revocation was requested, or with `--all` every certificate on a carrier plugged in now;
//! a verified "revoked" answer is recorded as `revocation_confirmed` with the evidence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use clap::{Args, ValueEnum};
use custody_core::cert::{sha256_hex, CertInfo};
use custody_core::journal::{Journal, RevocationRequest, RevocationStep};
use custody_core::revocation::{
    issued_by, Checker, Evidence, Outcome, Skipped, Source, Status, Via,
};
use custody_core::token::NoPins;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::Context;
use crate::output::json;
use crate::Exit;

/// Which services to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ViaArg {
    /// The CRL and OCSP.
    Both,
    /// The CRL only.
    Crl,
    /// OCSP only.
    Ocsp,
}

/// Arguments of `custody revocation check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also check every certificate on the carriers plugged in now, not only those whose
    /// revocation was requested.
    #[arg(long)]
    pub all: bool,
    /// The provider's CA certificate that issued the certificates (DER or PEM; repeatable).
    /// Default: a CA certificate found on a carrier or in the journal.
    #[arg(long, value_name = "FILE")]
    pub issuer: Vec<PathBuf>,
    /// Ask the CRL, OCSP or both (each URL the certificate names).
    #[arg(long, value_enum, default_value = "both")]
    pub via: ViaArg,
    /// Give up on a provider's service after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub timeout: u64,
}

/// One certificate checked.
#[derive(Debug, Serialize)]
pub struct Checked {
    /// Carrier key.
    pub carrier: Option<String>,
    /// SHA-256 of the certificate.
    pub certificate: String,
    /// The certificate's subject.
    pub subject: Option<String>,
    /// Whether its revocation was requested.
    pub requested: bool,
    /// The provider's answer (none when there was an error, or the certificate is
    /// unchecked).
    pub status: Option<Status>,
    /// The verified answers.
    pub evidence: Vec<Evidence>,
    /// URLs the certificate names that were not asked (an `ldap://` distribution point),
    /// each with the reason.
    pub skipped: Vec<Skipped>,
    /// Why the certificate is unchecked: no URL it names can be asked here (nothing was
    /// recorded for it; its request stays unconfirmed).
    pub unchecked: Option<String>,
    /// The `revocation_confirmed` event recorded.
    pub recorded_seq: Option<u64>,
    /// Why the certificate could not be checked (nothing was recorded for it).
    pub error: Option<String>,
}

struct Target {
    carrier: Option<String>,
    sha256: String,
    requested: bool,
}

/// Runs `custody revocation check`. Exit 0 when every certificate got a verified answer or
/// names no URL that can be asked (reported as unchecked), 2 when any service asked gave
/// no verified answer.
pub fn run(ctx: &Context, args: &CheckArgs) -> anyhow::Result<Exit> {
    let mut journal = ctx.open_existing_journal()?;
    let mut pool: Vec<(Option<String>, Vec<u8>)> = journal
        .stored_certificates()?
        .into_iter()
        .map(|c| (c.carrier, c.der))
        .collect();
    let mut present: Vec<(String, Vec<u8>)> = Vec::new();
    for path in ctx.modules() {
        let Ok(module) = custody_core::token::Module::load(&path) else {
            continue;
        };
        for carrier in &module.scan(&NoPins).carriers {
            let Ok(certs) = module.carrier_certificates(&carrier.id) else {
                continue;
            };
            for c in certs {
                present.push((carrier.id.key(), c.der.clone()));
                pool.push((Some(carrier.id.key()), c.der));
            }
        }
    }
    let mut issuers: Vec<Vec<u8>> = Vec::new();
    for file in &args.issuer {
        issuers.push(read_cert_file(file)?);
    }
    let mut targets: Vec<Target> = Vec::new();
    for r in journal.revocation_states()? {
        if r.confirmed_on.is_none() && r.requested_on.is_some() && !r.cert_sha256.is_empty() {
            targets.push(Target {
                carrier: Some(r.carrier),
                sha256: r.cert_sha256,
                requested: true,
            });
        }
    }
    if args.all {
        let confirmed: Vec<String> = journal
            .revocation_states()?
            .into_iter()
            .filter(|r| r.confirmed_on.is_some())
            .map(|r| r.cert_sha256)
            .collect();
        for (carrier, der) in &present {
            let sha256 = sha256_hex(der);
            let ca_only = CertInfo::parse(der).is_ok_and(|c| c.is_ca);
            if ca_only || confirmed.contains(&sha256) || targets.iter().any(|t| t.sha256 == sha256)
            {
                continue;
            }
            targets.push(Target {
                carrier: Some(carrier.clone()),
                sha256,
                requested: false,
            });
        }
    }
    let checker = Checker::new(Duration::from_secs(args.timeout.max(1)));
    let via = match args.via {
        ViaArg::Both => Via::Both,
        ViaArg::Crl => Via::Crl,
        ViaArg::Ocsp => Via::Ocsp,
    };
    let mut results = Vec::new();
    for t in targets {
        let der = pool
            .iter()
            .find(|(_, d)| sha256_hex(d) == t.sha256)
            .map(|(_, d)| d.clone());
        let subject = der
            .as_deref()
            .and_then(|d| CertInfo::parse(d).ok())
            .map(|c| c.subject);
        let mut out = Checked {
            carrier: t.carrier.clone(),
            certificate: t.sha256.clone(),
            subject,
            requested: t.requested,
            status: None,
            evidence: Vec::new(),
            skipped: Vec::new(),
            unchecked: None,
            recorded_seq: None,
            error: None,
        };
        match check_one(ctx, &mut journal, &checker, via, &t, der, &pool, &issuers) {
            Ok((outcome, seq)) => {
                out.status = outcome.status;
                out.evidence = outcome.evidence;
                out.skipped = outcome.skipped;
                out.unchecked = outcome.unchecked;
                out.recorded_seq = seq;
            }
            Err(e) => out.error = Some(format!("{e:#}")),
        }
        results.push(out);
    }
    let failed = results.iter().any(|r| r.error.is_some());
    let unchecked = results.iter().filter(|r| r.unchecked.is_some()).count();
    if ctx.global.json {
        json(&serde_json::json!({ "ok": !failed, "unchecked": unchecked, "checked": results }))?;
    } else {
        print(&results, args.all);
    }
    Ok(if failed { Exit::Error } else { Exit::Ok })
}

#[allow(clippy::too_many_arguments)] // one certificate's whole context, passed once
fn check_one(
    ctx: &Context,
    journal: &mut Journal,
    checker: &Checker,
    via: Via,
    t: &Target,
    der: Option<Vec<u8>>,
    pool: &[(Option<String>, Vec<u8>)],
    issuers: &[Vec<u8>],
) -> anyhow::Result<(Outcome, Option<u64>)> {
    let Some(der) = der else {
        anyhow::bail!(
            "the certificate is neither kept in the journal nor on a carrier plugged in; plug its carrier in and run the check again"
        );
    };
    let issuer = issuers
        .iter()
        .chain(pool.iter().map(|(_, d)| d))
        .find(|cand| **cand != der && issued_by(&der, cand).unwrap_or(false))
        .cloned();
    let Some(issuer) = issuer else {
        anyhow::bail!(
            "no certificate of its issuer was found on the carriers or in the journal, or the one given does not verify it; give the provider's CA certificate with --issuer FILE"
        );
    };
    let outcome = checker.check(&der, &issuer, via)?;
    if outcome.status != Some(Status::Revoked) {
        return Ok((outcome, None));
    }
    let Some(carrier) = &t.carrier else {
        anyhow::bail!("the certificate is revoked, but no carrier of the journal holds it");
    };
    let reference = reference(&outcome.evidence);
    let req = RevocationRequest {
        carrier: carrier.clone(),
        cert: Some(t.sha256.clone()),
        reference,
        date: None,
        evidence: outcome.evidence.clone(),
    };
    let record = journal.record_revocation(
        RevocationStep::Confirmed,
        &req,
        &ctx.actor(),
        OffsetDateTime::now_utc(),
    )?;
    Ok((outcome, Some(record.seq)))
}

/// The reference written with an automatic confirmation: the answers that said revoked.
fn reference(evidence: &[Evidence]) -> String {
    let parts: Vec<String> = evidence
        .iter()
        .filter(|e| e.status == Status::Revoked)
        .map(|e| match e.source {
            Source::Crl => format!(
                "CRL{} {} sha256 {}",
                e.crl_number
                    .as_deref()
                    .map(|n| format!(" No. {n}"))
                    .unwrap_or_default(),
                e.url,
                e.sha256
            ),
            Source::Ocsp => format!("OCSP {} sha256 {}", e.url, e.sha256),
        })
        .collect();
    parts.join("; ")
}

/// Reads a certificate file, DER or PEM.
fn read_cert_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("--issuer {}: {e}", path.display()))?;
    let der = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {
            let body: String = text
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .map_err(|e| anyhow::anyhow!("--issuer {}: bad PEM ({e})", path.display()))?
        }
        _ => bytes,
    };
    CertInfo::parse(&der).map_err(|e| {
        anyhow::anyhow!(
            "--issuer {}: {e}; give the CA certificate as DER or PEM",
            path.display()
        )
    })?;
    Ok(der)
}

fn print(results: &[Checked], all: bool) {
    if results.is_empty() {
        println!(
            "{}",
            if all {
                "No certificate to check: no revocation request is unconfirmed and no carrier with certificates is plugged in."
            } else {
                "No revocation request is waiting for the provider's confirmation (--all checks every certificate plugged in)."
            }
        );
        return;
    }
    for r in results {
        let who = r.subject.as_deref().unwrap_or("(certificate not found)");
        let carrier = r.carrier.as_deref().unwrap_or("-");
        println!(
            "{carrier}  {}  {who}",
            &r.certificate[..16.min(r.certificate.len())]
        );
        for e in &r.evidence {
            let source = match e.source {
                Source::Crl => format!(
                    "CRL{}",
                    e.crl_number
                        .as_deref()
                        .map(|n| format!(" No. {n}"))
                        .unwrap_or_default()
                ),
                Source::Ocsp => "OCSP".to_owned(),
            };
            let when = e
                .revoked_at
                .as_deref()
                .map(|t| format!(", revoked {t}"))
                .unwrap_or_default();
            println!(
                "    {source} {}: {}{when} (sha256 {})",
                e.url,
                e.status.as_str(),
                e.sha256
            );
        }
        for skipped in &r.skipped {
            let source = match skipped.source {
                Source::Crl => "CRL",
                Source::Ocsp => "OCSP",
            };
            println!("    {source} {}: skipped, {}", skipped.url, skipped.reason);
        }
        match (&r.error, r.status, r.recorded_seq) {
            (Some(e), _, _) => println!("    ERROR: {e}"),
            (None, None, _) if r.unchecked.is_some() => println!(
                "    UNCHECKED: {}; nothing recorded",
                r.unchecked.as_deref().unwrap_or_default()
            ),
            (None, Some(Status::Revoked), Some(seq)) => {
                println!("    REVOKED: recorded revocation_confirmed (event #{seq})")
            }
            (None, Some(Status::Good), _) => println!(
                "    not revoked: the provider says good; nothing recorded{}",
                if r.requested {
                    " (the request stays unconfirmed)"
                } else {
                    ""
                }
            ),
            (None, Some(s), _) => println!("    {}: nothing recorded", s.as_str()),
            (None, None, _) => {}
        }
    }
}
