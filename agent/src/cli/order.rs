//! `custody order create | sign | verify | reconcile | spool`: destruction orders.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use custody_core::journal::{EventKind, Journal, OrderState};
use custody_core::order::{
    self, signature, AllowedSigners, DestructionOrder, Method, OrderInput, Target, Verification,
    Zone,
};
use custody_core::token::{Module, NoPins};
use custody_core::wipe::{self, Env, Located};
use serde::Serialize;
use time::OffsetDateTime;

use super::Context;
use crate::output::json;
use crate::Exit;

/// `custody order …`
#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Print a new destruction order (JSON) on stdout, to be signed.
    #[command(
        after_help = "Examples:\n  # An order to re-initialise a dismissed holder's carrier\n  custody order create --carrier 3c5e0a1b2d4f6789 --holder \"Іваненко Іван Іванович\" --dismissed 2026-03-13 --method reinit --responsible \"Коваленко Ольга Петрівна\" --reason \"Наказ № 17-к\" > order.json\n  # Destroy only the keys, naming the certificate that must be on the carrier\n  custody order create --carrier 3c5e0a1b2d4f6789 --holder \"Іваненко Іван Іванович\" --dismissed 2026-03-13 --method destroy-keys --responsible \"Коваленко Ольга Петрівна\" --cert 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 > order.json"
    )]
    Create(CreateArgs),
    /// Sign an order with an OpenSSH private key (appends to FILE.sig, like ssh-keygen -Y sign).
    #[command(
        after_help = "Examples:\n  # Sign with an OpenSSH key (appends to order.json.sig)\n  custody order sign --key ~/.ssh/hr_ed25519 order.json\n  # The same with OpenSSH itself\n  ssh-keygen -Y sign -n custody-order -f ~/.ssh/hr_ed25519 order.json"
    )]
    Sign(SignArgs),
    /// Explain whether an order is acceptable: signatures, signers, time window, replay, target.
    #[command(
        after_help = "Examples:\n  # Would this order be executed now?\n  custody order verify order.json\n  # Against another signers file\n  custody order verify --allowed-signers ./allowed_signers order.json"
    )]
    Verify(VerifyArgs),
    /// Check interrupted wipes (wipe_started without outcome) and record their outcome.
    #[command(
        after_help = "Examples:\n  # After a crash or power loss during a wipe\n  custody order reconcile"
    )]
    Reconcile,
    /// Process the order spool directory once: verify arrivals, execute ready orders.
    #[command(
        after_help = "Examples:\n  # Process the configured spool once\n  custody order spool\n  # Another directory\n  custody order spool --dir /var/lib/custody/orders"
    )]
    Spool(SpoolArgs),
}

/// `custody order create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The carrier to wipe: its serial, or its key as `custody journal list` prints it.
    #[arg(long, value_name = "SERIAL")]
    pub carrier: String,
    /// Full name of the dismissed holder.
    #[arg(long, value_name = "NAME")]
    pub holder: String,
    /// Dismissal date (YYYY-MM-DD); the wipe is due by the end of the next day.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub dismissed: String,
    /// reinit (C_InitToken with the SO PIN) or destroy-keys (user PIN, C_DestroyObject).
    #[arg(long)]
    pub method: Method,
    /// Full name of the person responsible for the destruction (journal column 5).
    #[arg(long, value_name = "NAME")]
    pub responsible: String,
    /// SHA-256 of a certificate that must be on the carrier (repeatable).
    #[arg(long = "cert", value_name = "SHA256")]
    pub certs: Vec<String>,
    /// Days the order stays valid (1–31).
    #[arg(long, default_value_t = 7, value_name = "N")]
    pub valid_days: i64,
    /// Why (e.g. the dismissal order's number). Default: "dismissal of HOLDER on DATE".
    #[arg(long)]
    pub reason: Option<String>,
    /// Order id. Default: DATE-RANDOM.
    #[arg(long)]
    pub id: Option<String>,
    /// Carrier manufacturer (default: from the journal; needed when it does not know the
    /// carrier).
    #[arg(long)]
    pub manufacturer: Option<String>,
    /// Carrier model (default: from the journal; needed when it does not know the carrier).
    #[arg(long)]
    pub model: Option<String>,
}

/// `custody order sign`
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The order file.
    pub file: PathBuf,
    /// OpenSSH private key (unencrypted; for a passphrase-protected key use ssh-keygen -Y sign).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Signature file to append to. Default: FILE.sig.
    #[arg(long, value_name = "F")]
    pub signature: Option<PathBuf>,
}

/// `custody order verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The order file.
    pub file: PathBuf,
    /// Signature file. Default: FILE.sig.
    #[arg(long, value_name = "F")]
    pub signature: Option<PathBuf>,
    /// Trusted signers (OpenSSH allowed_signers). Default: orders.allowed_signers in the configuration.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
}

/// `custody order spool`
#[derive(Debug, Args)]
pub struct SpoolArgs {
    /// Spool directory. Default: service.spool in the configuration.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Trusted signers. Default: orders.allowed_signers in the configuration.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
}

/// Runs `custody order …`.
pub fn run(ctx: &Context, cmd: &OrderCommand) -> anyhow::Result<Exit> {
    match cmd {
        OrderCommand::Create(a) => create(ctx, a),
        OrderCommand::Sign(a) => sign(ctx, a),
        OrderCommand::Verify(a) => verify(ctx, a),
        OrderCommand::Reconcile => reconcile(ctx),
        OrderCommand::Spool(a) => spool(ctx, a),
    }
}

/// The trusted signers: `--allowed-signers`, else the configuration's.
pub fn load_trust(ctx: &Context, explicit: Option<&Path>) -> anyhow::Result<AllowedSigners> {
    let path = explicit
        .map(Path::to_path_buf)
        .or_else(|| ctx.config.allowed_signers.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no trusted signers: set [orders] allowed_signers in the configuration or pass --allowed-signers FILE (OpenSSH allowed_signers format)"
            )
        })?;
    let signers = AllowedSigners::load(&path, &Zone::system())?;
    if signers.entries().is_empty() {
        bail!(
            "{} lists no usable signer; add lines `principal keytype key` (see ssh-keygen(1), ALLOWED SIGNERS)",
            path.display()
        );
    }
    Ok(signers)
}

/// The current time (the journal's clock).
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Loads every module in effect; those that fail are reported on stderr and skipped.
pub fn load_modules(ctx: &Context) -> Vec<Module> {
    let mut out = Vec::new();
    for path in ctx.modules() {
        match Module::load(&path) {
            Ok(m) => out.push(m),
            Err(e) => {
                tracing::error!(module = %path.display(), cause = %e, "module not loaded");
                eprintln!("warning: {e}");
            }
        }
    }
    out
}

fn create(ctx: &Context, a: &CreateArgs) -> anyhow::Result<Exit> {
    let dismissed = time::Date::parse(
        &a.dismissed,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .with_context(|| {
        format!(
            "--dismissed {:?} is not a date like 2026-11-23",
            a.dismissed
        )
    })?;
    if !(1..=order::MAX_VALIDITY_DAYS).contains(&a.valid_days) {
        bail!(
            "--valid-days must be between 1 and {}",
            order::MAX_VALIDITY_DAYS
        );
    }
    let now = now().replace_nanosecond(0).unwrap_or_else(|_| now());
    let (manufacturer, model, serial, certificates) = target_identity(ctx, a)?;
    let id = a.id.clone().unwrap_or_else(|| {
        let rand = uuid::Uuid::new_v4().simple().to_string();
        format!(
            "{:04}{:02}{:02}-{}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            &rand[..8]
        )
    });
    let order = DestructionOrder {
        id,
        issued_at: now,
        not_after: now + time::Duration::days(a.valid_days),
        dismissed,
        holder: a.holder.clone(),
        target: Target {
            serial,
            manufacturer: Some(manufacturer),
            model: Some(model),
        },
        certificates,
        method: a.method,
        responsible: a.responsible.clone(),
        reason: a
            .reason
            .clone()
            .unwrap_or_else(|| format!("dismissal of {} on {}", a.holder, a.dismissed)),
    };
    let mut text = serde_json::to_string_pretty(&order)?;
    text.push('\n');
    // What we print must be what we accept.
    DestructionOrder::parse(text.as_bytes()).map_err(|r| anyhow::anyhow!("{}", r.message))?;
    print!("{text}");
    Ok(Exit::Ok)
}

/// The target's manufacturer and model (from the options, else the journal) and the
/// certificate fingerprints of the order: those given and those the journal knows on the
/// carrier. An order always names the carrier fully, so that it can match no other.
/// The target's manufacturer, model and serial (from the journal's row when `--carrier` names
/// one by serial or by the key `journal list` prints), and the certificates to name.
fn target_identity(
    ctx: &Context,
    a: &CreateArgs,
) -> anyhow::Result<(String, String, String, Vec<String>)> {
    let path = ctx.journal_path();
    let known = if path.exists() {
        let journal = Journal::open(&path)?;
        let rows: Vec<_> = journal
            .carriers_by_serial(&a.carrier)?
            .into_iter()
            .filter(|c| a.manufacturer.as_ref().is_none_or(|m| *m == c.manufacturer))
            .filter(|c| a.model.as_ref().is_none_or(|m| *m == c.model))
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let certs: Vec<String> = journal
                .snapshot(&row.carrier)?
                .map(|s| s.certificates.iter().map(|c| c.sha256.clone()).collect())
                .unwrap_or_default();
            out.push((row, certs));
        }
        out
    } else {
        Vec::new()
    };
    let mut given: Vec<String> = a.certs.iter().map(|c| c.to_ascii_lowercase()).collect();
    let (manufacturer, model, serial, known_certs) = match (known.as_slice(), &a.manufacturer, &a.model) {
        ([(one, certs)], _, _) => (
            one.manufacturer.clone(),
            one.model.clone(),
            one.serial.clone(),
            certs.clone(),
        ),
        ([], Some(m), Some(model)) => (m.clone(), model.clone(), a.carrier.clone(), Vec::new()),
        ([], _, _) => bail!(
            "the journal knows no carrier with serial {:?}{}; an order names its carrier fully. Run `custody scan` with the carrier plugged in, or give --manufacturer and --model",
            a.carrier,
            if a.manufacturer.is_some() || a.model.is_some() { " and that manufacturer and model" } else { "" }
        ),
        (many, _, _) => {
            let names: Vec<&str> = many.iter().map(|(c, _)| c.carrier.as_str()).collect();
            let same_identity = many.iter().all(|(c, _)| {
                (c.manufacturer.as_str(), c.model.as_str())
                    == (many[0].0.manufacturer.as_str(), many[0].0.model.as_str())
            });
            if !same_identity {
                bail!(
                    "{} carriers in the journal have serial {:?} ({}); give --manufacturer and --model to name one",
                    many.len(),
                    a.carrier,
                    names.join(", ")
                );
            }
            if given.is_empty() {
                bail!(
                    "{} carriers in the journal share manufacturer, model and serial {:?} ({}); name the certificate of the one to wipe with --cert SHA256 so that the order can match no other",
                    many.len(),
                    a.carrier,
                    names.join(", ")
                );
            }
            (
                many[0].0.manufacturer.clone(),
                many[0].0.model.clone(),
                many[0].0.serial.clone(),
                Vec::new(),
            )
        }
    };
    for c in known_certs {
        if !given.contains(&c) {
            given.push(c);
        }
    }
    Ok((manufacturer, model, serial, given))
}

#[derive(Debug, Serialize)]
struct Signed {
    order_id: String,
    signature_file: String,
    key_fingerprint: String,
    signatures: usize,
}

fn sign(ctx: &Context, a: &SignArgs) -> anyhow::Result<Exit> {
    let (bytes, size) = order::read_capped(&a.file, order::MAX_ORDER_BYTES + 1)?;
    if size > order::MAX_ORDER_BYTES as u64 {
        bail!(
            "{} is larger than an order may be; not signed",
            a.file.display()
        );
    }
    let parsed = DestructionOrder::parse(&bytes).map_err(|r| {
        anyhow::anyhow!(
            "{} is not a valid order, not signed: {}",
            a.file.display(),
            r.message
        )
    })?;
    let key = zeroize::Zeroizing::new(
        std::fs::read_to_string(&a.key)
            .with_context(|| format!("reading the key {}", a.key.display()))?,
    );
    let (block, fingerprint) = signature::sign(&key, &bytes)?;
    let sig_path = a
        .signature
        .clone()
        .unwrap_or_else(|| order::signature_path(&a.file));
    let mut existing = match std::fs::read_to_string(&sig_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    if !existing.is_empty() && !existing.ends_with('\n') {
        existing.push('\n');
    }
    existing.push_str(&block);
    let count = signature::split_blocks(&existing)
        .map(|b| b.len())
        .unwrap_or(1);
    std::fs::write(&sig_path, existing)
        .with_context(|| format!("writing {}", sig_path.display()))?;
    let out = Signed {
        order_id: parsed.id,
        signature_file: sig_path.display().to_string(),
        key_fingerprint: fingerprint,
        signatures: count,
    };
    if ctx.global.json {
        json(&out)?;
    } else {
        println!(
            "Signed order {} with {}; {} now holds {} signature(s)",
            out.order_id, out.key_fingerprint, out.signature_file, out.signatures
        );
    }
    Ok(Exit::Ok)
}

/// The JSON document `custody order verify --json` prints.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// The order file.
    pub file: String,
    /// True when the order would be executed now (or as soon as its carrier is present).
    pub acceptable: bool,
    /// The refusal, when not acceptable.
    pub refusal: Option<order::Rejection>,
    /// The order's fields as read (claims are unverified unless the signatures verified).
    pub order: Option<DestructionOrder>,
    /// SHA-256 of the order file.
    pub sha256: String,
    /// One entry per signature.
    pub signatures: Vec<order::SignatureCheck>,
    /// Distinct allowed signers with a valid signature.
    pub distinct_signers: usize,
    /// Required.
    pub required_signers: u32,
    /// The due time (end of the day after dismissal), local time.
    pub due: Option<String>,
    /// The journal's state of this order id, when the journal knows it.
    pub journal_state: Option<OrderState>,
    /// Target: `present`, `absent`, `mismatch`, `ambiguous`, `not checked`.
    pub target: String,
    /// Explanations, one per line.
    pub notes: Vec<String>,
}

fn verify(ctx: &Context, a: &VerifyArgs) -> anyhow::Result<Exit> {
    let trust = load_trust(ctx, a.allowed_signers.as_deref())?;
    let input = OrderInput::read(&a.file, a.signature.as_deref())?;
    let v = order::check(&input, &trust, ctx.config.required_signers, now());
    let zone = Zone::system();
    let mut notes: Vec<String> = trust.skipped().to_vec();
    let mut refusal = v.result.as_ref().err().cloned();
    let mut journal_state = None;
    let mut target = "not checked".to_owned();
    if let Ok(verified) = &v.result {
        let o = verified.order();
        let path = ctx.journal_path();
        if path.exists() {
            let journal = Journal::open(&path)?;
            if let Some(row) = journal.order(&o.id)? {
                journal_state = Some(row.state);
                if row.sha256 != verified.sha256() {
                    refusal = Some(order::Rejection::new(
                        order::RejectCode::IdConflict,
                        format!("the journal holds another order with id {} (received {}): this one would be refused", o.id, row.received_at),
                    ));
                } else if row.state == OrderState::Completed {
                    refusal = Some(order::Rejection::new(
                        order::RejectCode::AlreadyExecuted,
                        format!(
                            "order {} was executed already: it would be refused as a replay",
                            o.id
                        ),
                    ));
                } else {
                    notes.push(format!(
                        "the journal has this order ({})",
                        row.state.as_str()
                    ));
                }
            }
        }
        let modules = load_modules(ctx);
        match wipe::locate(&modules, &o.target) {
            Located::Found(index, t) => {
                target = "present".into();
                let m = &modules[index];
                match m.read_token(&t, &NoPins) {
                    Ok(snap) => {
                        if let Err(r) = wipe::plan(verified, &snap, m.info()) {
                            target = "mismatch".into();
                            refusal.get_or_insert(r);
                        } else {
                            notes.push(format!(
                                "carrier {} is present in {} (slot {}), label {:?}",
                                t.carrier().key(),
                                m.info().path,
                                t.slot(),
                                t.label()
                            ));
                        }
                    }
                    Err(e) => notes.push(format!("the carrier could not be read: {e}")),
                }
            }
            Located::Refused(r) => match r.code {
                order::RejectCode::TargetAbsent => target = "absent".into(),
                order::RejectCode::TargetMismatch => {
                    target = "mismatch".into();
                    refusal.get_or_insert(r);
                }
                _ => {
                    target = "ambiguous".into();
                    refusal.get_or_insert(r);
                }
            },
        }
        if target == "absent" {
            notes.push(format!(
                "carrier {} is not present now: the order waits for it (wipe refuses until it is plugged in)",
                o.target.serial
            ));
        }
    }
    let report = VerifyReport {
        file: a.file.display().to_string(),
        acceptable: refusal.is_none(),
        refusal,
        order: v.order.clone(),
        sha256: v.sha256.clone(),
        signatures: v.signatures.clone(),
        distinct_signers: v.distinct_signers,
        required_signers: v.required_signers,
        due: v
            .order
            .as_ref()
            .map(|o| crate::deadline::show_time(&zone, o.due(&zone))),
        journal_state,
        target,
        notes,
    };
    if ctx.global.json {
        json(&report)?;
    } else {
        print_verify(&report, &v);
    }
    Ok(if report.acceptable {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

fn print_verify(r: &VerifyReport, v: &Verification) {
    println!(
        "Order file   {} ({} bytes, sha256 {})",
        r.file, v.size, r.sha256
    );
    if let Some(o) = &r.order {
        println!("Order        {} ({})", o.id, o.method);
        println!("Holder       {} (dismissed {})", o.holder, o.dismissed);
        println!(
            "Target       {} {} {}",
            o.target.manufacturer.as_deref().unwrap_or("*"),
            o.target.model.as_deref().unwrap_or("*"),
            o.target.serial
        );
        for c in &o.certificates {
            println!("Certificate  {c}");
        }
        println!("Responsible  {}", o.responsible);
        println!("Reason       {}", o.reason);
        println!(
            "Valid        {} – {} (UTC)",
            custody_core::journal::timestamp(o.issued_at),
            custody_core::journal::timestamp(o.not_after)
        );
        if let Some(due) = &r.due {
            println!("Due          {due}");
        }
    }
    for s in &r.signatures {
        let who = s
            .signer
            .as_ref()
            .map(|x| format!("{} (allowed_signers line {})", x.principals, x.line))
            .unwrap_or_else(|| "unknown signer".into());
        match (&s.problem, s.valid) {
            (None, true) => println!(
                "Signature {}  good: {who}, {}",
                s.index,
                s.key_fingerprint.as_deref().unwrap_or("")
            ),
            (Some(p), _) => println!("Signature {}  BAD: {}", s.index, p.message),
            (None, false) => println!("Signature {}  not counted", s.index),
        }
    }
    println!(
        "Signers      {} distinct of {} required",
        r.distinct_signers, r.required_signers
    );
    if let Some(state) = r.journal_state {
        println!("Journal      {}", state.as_str());
    }
    println!("Target       {}", r.target);
    for n in &r.notes {
        println!("note: {n}");
    }
    match &r.refusal {
        None => println!("\nACCEPTABLE: the order would be executed."),
        Some(x) => println!("\nREFUSED ({}): {}", x.code, x.message),
    }
}

fn reconcile(ctx: &Context) -> anyhow::Result<Exit> {
    let mut journal = ctx.open_journal()?;
    let mut modules = load_modules(ctx);
    let pins = ctx.pins();
    let actor = ctx.actor();
    let env = Env {
        actor: &actor,
        clock: &now,
        source: "reconcile",
        pins: &pins,
    };
    let done = wipe::reconcile(&mut journal, &mut modules, &env)?;
    let failed = done.iter().any(|r| r.kind != EventKind::WipeCompleted);
    if ctx.global.json {
        json(&serde_json::json!({ "reconciled": done }))?;
    } else if done.is_empty() {
        println!("No interrupted wipe in {}", journal.path().display());
    } else {
        print_reconciled(&done);
    }
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

/// Prints what reconciliation recorded.
pub fn print_reconciled(done: &[wipe::Reconciled]) {
    for r in done {
        match r.kind {
            EventKind::WipeCompleted => eprintln!(
                "reconciled: interrupted wipe of order {} on {} is confirmed complete (event #{})",
                r.order_id, r.report.carrier, r.seq
            ),
            _ => eprintln!(
                "reconciled: interrupted wipe of order {} on {} is NOT confirmed: {} (wipe_failed #{})",
                r.order_id,
                r.report.carrier,
                r.report.error.as_deref().unwrap_or(""),
                r.seq
            ),
        }
    }
}

fn spool(ctx: &Context, a: &SpoolArgs) -> anyhow::Result<Exit> {
    let trust = load_trust(ctx, a.allowed_signers.as_deref())?;
    let dir = a.dir.clone().unwrap_or_else(|| ctx.config.spool.clone());
    let mut journal = ctx.open_journal()?;
    let mut modules = load_modules(ctx);
    let pins = ctx.pins();
    let actor = ctx.actor();
    let env = Env {
        actor: &actor,
        clock: &now,
        source: "spool",
        pins: &pins,
    };
    let spool = crate::spool::Spool {
        dir: &dir,
        allowed: &trust,
        required_signers: ctx.config.required_signers,
    };
    let report = crate::spool::process_spool(&spool, &mut journal, &mut modules, &env)?;
    if ctx.global.json {
        json(&report)?;
    } else if report.entries.is_empty() {
        println!("No order in {}", dir.display());
    } else {
        let mut t = crate::output::Table::new(&["FILE", "ORDER", "ACTION", "REASON"]);
        for e in &report.entries {
            t.row(vec![
                e.file.clone(),
                e.order_id.clone().unwrap_or_default(),
                e.action.as_str().into(),
                e.reason.clone().unwrap_or_default(),
            ]);
        }
        t.print();
    }
    Ok(
        if report
            .entries
            .iter()
            .any(|e| e.action == crate::spool::SpoolAction::Error)
        {
            Exit::Error
        } else {
            Exit::Ok
        },
    )
}
