//! `custody cert export`: write an official's certificate to a file (DER or PEM), e.g. for a
//! registry profile. Certificates come from the journal (kept when a carrier was issued) and
//! from the carriers plugged in now. `--all --dir DIR` writes the certificate of every key set
//! a person holds now (issued, not destroyed, not revoked), from the journal.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use base64::Engine;
use clap::{ArgGroup, Args, Subcommand};
use custody_core::cert::{sha256_hex, CertInfo};
use custody_core::token::NoPins;
use serde::Serialize;

mod all;

use super::issue::refused;
use super::Context;
use crate::output::json;
use crate::Exit;

/// `custody cert …`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Write one certificate to a file.
    #[command(
        after_help = "Examples:\n  # A holder's certificate as DER\n  custody cert export --holder \"Іваненко Іван Іванович\" --out ivanenko.cer\n  # By fingerprint, as PEM\n  custody cert export --fingerprint 9f86d081 --pem --out cert.pem"
    )]
    Export(CertExportArgs),
}

/// Arguments of `custody cert export`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["holder", "fingerprint", "all"])))]
pub struct CertExportArgs {
    /// The holder's full name (as issued, or as named in the certificate).
    #[arg(long, value_name = "NAME")]
    pub holder: Option<String>,
    /// The certificate's SHA-256 fingerprint (at least 8 hex characters; colons allowed).
    #[arg(long, value_name = "FPR")]
    pub fingerprint: Option<String>,
    /// Every certificate of every key set a person holds now (issued, neither destroyed nor
    /// revoked), each to its own file in --dir.
    #[arg(long, requires = "dir", conflicts_with = "out")]
    pub all: bool,
    /// The directory --all writes to (created, mode 0700, when missing).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// With --all: write DER and PEM, each certificate twice.
    #[arg(long, requires = "all", conflicts_with = "pem")]
    pub both: bool,
    /// Write PEM instead of DER.
    #[arg(long)]
    pub pem: bool,
    /// The file to write.
    #[arg(long, value_name = "FILE", required_unless_present = "all")]
    pub out: Option<PathBuf>,
    /// Overwrite the file when it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize)]
struct Candidate {
    sha256: String,
    #[serde(skip)]
    der: Vec<u8>,
    holders: Vec<String>,
    carrier: Option<String>,
    source: &'static str,
}

/// Runs `custody cert …`.
pub fn run(ctx: &Context, cmd: &CertCommand) -> anyhow::Result<Exit> {
    let CertCommand::Export(args) = cmd;
    if args.all {
        return all::run(ctx, args);
    }
    let Some(out) = &args.out else {
        anyhow::bail!("--out FILE: where to write the certificate");
    };
    let mut candidates: Vec<Candidate> = Vec::new();
    let journal = if ctx.journal_path().exists() {
        Some(ctx.open_existing_journal()?)
    } else {
        None
    };
    if let Some(j) = &journal {
        for c in j.stored_certificates()? {
            let mut holders: Vec<String> =
                c.issued_to.iter().chain(&c.holder_name).cloned().collect();
            holders.extend(parsed_holder(&c.der));
            candidates.push(Candidate {
                sha256: c.sha256,
                der: c.der,
                holders,
                carrier: c.carrier,
                source: "journal",
            });
        }
    }
    for path in ctx.modules() {
        let Ok(module) = custody_core::token::Module::load(&path) else {
            continue;
        };
        let scan = module.scan(&NoPins);
        for carrier in &scan.carriers {
            let Ok(certs) = module.carrier_certificates(&carrier.id) else {
                continue;
            };
            for c in certs {
                let sha256 = sha256_hex(&c.der);
                if candidates.iter().any(|k| k.sha256 == sha256) {
                    continue;
                }
                let mut holders = parsed_holder(&c.der);
                if let Some(j) = &journal {
                    holders.extend(j.holder_of_certificate(&sha256)?);
                }
                candidates.push(Candidate {
                    sha256,
                    der: c.der,
                    holders,
                    carrier: Some(carrier.id.key()),
                    source: "carrier",
                });
            }
        }
    }
    let matches: Vec<&Candidate> = match (&args.fingerprint, &args.holder) {
        (Some(fpr), _) => {
            let want: String = fpr
                .chars()
                .filter(|c| !matches!(c, ':' | ' '))
                .flat_map(char::to_lowercase)
                .collect();
            if want.len() < 8 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
                anyhow::bail!("--fingerprint {fpr:?}: give at least 8 hex characters of the certificate's SHA-256");
            }
            candidates
                .iter()
                .filter(|c| c.sha256.starts_with(&want))
                .collect()
        }
        (None, Some(name)) => candidates
            .iter()
            .filter(|c| c.holders.iter().any(|h| same_name(h, name)))
            .collect(),
        (None, None) => Vec::new(),
    };
    let chosen = match matches.as_slice() {
        [one] => *one,
        [] => {
            return refused(
                ctx,
                custody_core::Error::Refused(format!(
                    "no certificate matches {}; certificates are kept when a carrier is issued, or read from carriers plugged in",
                    args.fingerprint
                        .as_deref()
                        .map(|f| format!("fingerprint {f}"))
                        .or_else(|| args.holder.as_deref().map(|h| format!("holder {h:?}")))
                        .unwrap_or_default()
                )),
            )
        }
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|c| format!("{} ({})", &c.sha256[..16], c.holders.first().map(String::as_str).unwrap_or("?")))
                .collect();
            return refused(
                ctx,
                custody_core::Error::Refused(format!(
                    "{} certificates match: {}; choose one with --fingerprint",
                    many.len(),
                    list.join(", ")
                )),
            );
        }
    };
    let bytes = if args.pem {
        pem(&chosen.der)
    } else {
        chosen.der.clone()
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o644);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = match options.open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return refused(
                ctx,
                custody_core::Error::Refused(format!(
                    "{} exists; choose another file or pass --force",
                    out.display()
                )),
            )
        }
        Err(e) => anyhow::bail!("writing {}: {e}", out.display()),
    };
    file.write_all(&bytes)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    if ctx.global.json {
        json(&serde_json::json!({
            "ok": true,
            "out": out,
            "format": if args.pem { "pem" } else { "der" },
            "certificate": chosen,
        }))?;
    } else {
        println!(
            "Wrote certificate {} ({}) from the {} to {} ({}).",
            chosen.sha256,
            chosen
                .holders
                .first()
                .map(String::as_str)
                .unwrap_or("holder unknown"),
            chosen.source,
            out.display(),
            if args.pem { "PEM" } else { "DER" }
        );
    }
    Ok(Exit::Ok)
}

/// A certificate as PEM text.
pub(crate) fn pem(der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem.into_bytes()
}

fn parsed_holder(der: &[u8]) -> Vec<String> {
    CertInfo::parse(der)
        .ok()
        .and_then(|i| i.holder_name)
        .into_iter()
        .collect()
}

fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split_whitespace()
            .map(|w| w.replace(['\u{2019}', '\u{02bc}', '`'], "'").to_lowercase())
            .collect::<Vec<_>>()
            .join(" ")
    };
    norm(a) == norm(b)
}
