//! `custody wipe --order FILE`: execute a signed destruction order.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use custody_core::order::{self, Method, OrderInput, Rejection};
use custody_core::wipe::{self, Env, Outcome, Reconciled, Secrets, WipeReport};
use secrecy::SecretString;
use serde::Serialize;

use super::order::{load_modules, load_trust, now, print_reconciled};
use super::Context;
use crate::config::read_pin_file;
use crate::output::json;
use crate::progress::Progress;
use crate::Exit;

/// Arguments of `custody wipe`.
#[derive(Debug, Args)]
pub struct WipeArgs {
    /// The signed order (its signature beside it as FILE.sig).
    #[arg(long, value_name = "FILE")]
    pub order: PathBuf,
    /// Signature file. Default: FILE.sig.
    #[arg(long, value_name = "F")]
    pub signature: Option<PathBuf>,
    /// File holding the SO PIN (mode 0600), for method reinit.
    #[arg(long, value_name = "F", group = "pin")]
    pub so_pin_file: Option<PathBuf>,
    /// File holding the user PIN (mode 0600), for method destroy-keys.
    #[arg(long, value_name = "F", group = "pin")]
    pub user_pin_file: Option<PathBuf>,
    /// Read the PIN the method needs (SO PIN for reinit, user PIN for destroy-keys) from the
    /// first line of standard input.
    #[arg(long, group = "pin")]
    pub pin_stdin: bool,
    /// Trusted signers. Default: orders.allowed_signers in the configuration.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
}

/// The JSON document `custody wipe --json` prints.
#[derive(Debug, Serialize)]
pub struct WipeJson {
    /// `completed`, `failed`, `refused` or `error`.
    pub outcome: &'static str,
    /// The exit code.
    pub exit: u8,
    /// The order id, when the order parsed.
    pub order_id: Option<String>,
    /// Why it was refused.
    pub refusal: Option<Rejection>,
    /// The wipe report (completed or failed).
    pub report: Option<WipeReport>,
    /// Interrupted wipes reconciled before this one.
    pub reconciled: Vec<Reconciled>,
    /// The error (outcome unknown or nothing done; the journal says which).
    pub error: Option<String>,
    /// Journal file.
    pub journal: String,
}

fn read_stdin_pin() -> anyhow::Result<SecretString> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let pin = line.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        bail!("--pin-stdin: standard input held no PIN");
    }
    Ok(SecretString::from(pin.to_owned()))
}

/// Runs `custody wipe`.
pub fn run(ctx: &Context, args: &WipeArgs) -> anyhow::Result<Exit> {
    let mut out = WipeJson {
        outcome: "error",
        exit: 2,
        order_id: None,
        refusal: None,
        report: None,
        reconciled: Vec::new(),
        error: None,
        journal: ctx.journal_path().display().to_string(),
    };
    let result = wipe(ctx, args, &mut out);
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            out.outcome = "error";
            if !ctx.global.json {
                return Err(e);
            }
            Exit::Error
        }
    };
    out.exit = match exit {
        Exit::Ok => 0,
        Exit::Failed => 1,
        Exit::Error => 2,
    };
    if ctx.global.json {
        json(&out)?;
    }
    Ok(exit)
}

fn wipe(ctx: &Context, args: &WipeArgs, out: &mut WipeJson) -> anyhow::Result<Exit> {
    let stdin_pin = if args.pin_stdin {
        Some(read_stdin_pin()?)
    } else {
        None
    };
    let mut secrets = Secrets {
        so_pin: args.so_pin_file.as_deref().map(read_pin_file).transpose()?,
        user_pin: args
            .user_pin_file
            .as_deref()
            .map(read_pin_file)
            .transpose()?,
    };
    let trust = load_trust(ctx, args.allowed_signers.as_deref())?;
    let mut journal = ctx.open_journal()?;
    let mut modules = load_modules(ctx);
    if modules.is_empty() {
        bail!("no PKCS#11 module could be loaded; nothing was done. Check --module or [[module]]");
    }
    let pins = ctx.pins();
    let actor = ctx.actor();
    let source = format!("cli:{}", args.order.display());
    let env = Env {
        actor: &actor,
        clock: &now,
        source: &source,
        pins: &pins,
    };
    out.reconciled = wipe::reconcile(&mut journal, &mut modules, &env)?;
    if !ctx.global.json {
        print_reconciled(&out.reconciled);
    }

    let input = OrderInput::read(&args.order, args.signature.as_deref())?;
    let v = order::check(&input, &trust, ctx.config.required_signers, now());
    out.order_id = v.order.as_ref().map(|o| o.id.clone());
    let verified = match v.result {
        Ok(ref verified) => verified.clone(),
        Err(ref r) => {
            wipe::reject_unverified(&mut journal, &env, &v)?;
            return Ok(refused(ctx, out, r.clone()));
        }
    };
    if let Some(pin) = stdin_pin {
        match verified.order().method {
            Method::Reinit => secrets.so_pin = Some(pin),
            Method::DestroyKeys => secrets.user_pin = Some(pin),
        }
    }
    let progress = Progress::spinner(ctx.global.json, "wiping the carrier");
    let outcome = wipe::execute(&mut journal, &mut modules, &verified, &secrets, &env);
    drop(progress);
    match outcome? {
        Outcome::Refused(r) => Ok(refused(ctx, out, r)),
        Outcome::Completed(report) => {
            if !ctx.global.json {
                print_completed(&report, journal.path());
            }
            out.outcome = "completed";
            out.report = Some(*report);
            Ok(Exit::Ok)
        }
        Outcome::Failed(report) => {
            if !ctx.global.json {
                print_failed(&report, journal.path());
            }
            out.outcome = "failed";
            out.report = Some(*report);
            Ok(Exit::Failed)
        }
    }
}

fn refused(ctx: &Context, out: &mut WipeJson, r: Rejection) -> Exit {
    if !ctx.global.json {
        eprintln!(
            "custody: order REFUSED ({}): {}\nNothing was touched; the refusal is recorded in the journal (order_rejected).",
            r.code, r.message
        );
    }
    out.outcome = "refused";
    out.refusal = Some(r);
    Exit::Failed
}

fn print_completed(r: &WipeReport, journal: &std::path::Path) {
    let v = r.verification.as_ref();
    println!(
        "Wiped carrier {} (order {}, method {}).",
        r.carrier, r.order_id, r.method
    );
    println!(
        "Verified in a fresh PKCS#11 context: {} object(s) gone, none of the old CKA_IDs, public keys or certificates remain{}.",
        r.destroyed.len(),
        if v.is_some_and(|v| v.logged_in) {
            " (checked logged in)"
        } else {
            " (user PIN no longer set: no private object can exist)"
        }
    );
    println!("Holder: {}. Responsible: {}.", r.holder, r.responsible);
    println!(
        "Journal {}: wipe_started #{}, wipe_completed #{}.",
        journal.display(),
        r.started_seq,
        r.outcome_seq.unwrap_or(0)
    );
}

fn print_failed(r: &WipeReport, journal: &std::path::Path) {
    eprintln!(
        "custody: wipe of carrier {} (order {}) FAILED: {}",
        r.carrier,
        r.order_id,
        r.error.as_deref().unwrap_or("")
    );
    if let Some(v) = &r.verification {
        for o in &v.remaining {
            eprintln!("  still there: {} id {} ({})", o.class, o.id, o.matched);
        }
    }
    eprintln!(
        "The journal {} records wipe_failed #{}; nothing claims a wipe. Fix the cause and run the order again.",
        journal.display(),
        r.outcome_seq.unwrap_or(0)
    );
}
