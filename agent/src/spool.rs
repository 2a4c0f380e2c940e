//! The order spool: signed orders dropped into a directory are verified on arrival and
//! executed as soon as their carrier is present.
//!
//! Layout of the spool directory (default `/var/lib/custody/orders`):
//!
//! - `NAME.json` + `NAME.json.sig`: an order and its signature(s), dropped in by people or
//!   scripts. Write them under a name starting with `.` and rename, or write the `.sig` last:
//!   an order without signature waits [`SIGNATURE_GRACE`] for it, then is rejected.
//! - `rejected/NAME.json`, `NAME.json.sig`, `NAME.json.reason`: refused orders, with the
//!   reason (`code: message`); an `order_rejected` event is in the journal.
//! - `done/NAME.json`, `NAME.json.sig`, `NAME.json.result`: executed and verified orders; the
//!   result is the wipe report (JSON).
//! - `failed/…` with `NAME.json.reason`: the wipe failed or a PIN is missing (`wipe_failed` or
//!   `order_rejected` in the journal). Failed orders are not retried automatically, so a wrong
//!   PIN can never lock a carrier; move the files back into the spool to retry.
//!
//! Orders waiting for their carrier stay where they are. [`process_spool`] is one pass; the
//! service calls it every interval, `custody order spool` once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use custody_core::journal::{EventKind, Journal};
use custody_core::order::{self, AllowedSigners, OrderInput, RejectCode, Rejection};
use custody_core::token::{Module, Resolution};
use custody_core::wipe::{self, Env, Outcome, Secrets};
use serde::Serialize;

/// How long an order without its signature file waits for it.
pub const SIGNATURE_GRACE: Duration = Duration::from_secs(600);

/// Where the spool is and whom it trusts.
#[derive(Debug)]
pub struct Spool<'a> {
    /// The spool directory.
    pub dir: &'a Path,
    /// Trusted signers.
    pub allowed: &'a AllowedSigners,
    /// Distinct signers an order needs.
    pub required_signers: u32,
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolAction {
    /// Refused; moved to `rejected/`.
    Rejected,
    /// Waiting for its signature or its carrier; left in place.
    Waiting,
    /// Wiped and verified; moved to `done/`.
    Completed,
    /// Wipe failed or could not start; moved to `failed/`.
    Failed,
    /// An error; left in place (the journal says whether a wipe started; it is reconciled on
    /// the next pass).
    Error,
}

impl SpoolAction {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Error => "error",
        }
    }
}

/// One spool file's fate in one pass.
#[derive(Debug, Clone, Serialize)]
pub struct SpoolEntry {
    /// File name.
    pub file: String,
    /// The order id, when it parsed.
    pub order_id: Option<String>,
    /// What happened.
    pub action: SpoolAction,
    /// Refusal code, when refused.
    pub code: Option<RejectCode>,
    /// Why, for people.
    pub reason: Option<String>,
}

/// The result of one pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpoolReport {
    /// Interrupted wipes reconciled at the start of the pass.
    pub reconciled: Vec<wipe::Reconciled>,
    /// One entry per order file.
    pub entries: Vec<SpoolEntry>,
}

/// One pass over the spool: reconcile interrupted wipes, then verify every order file, refuse
/// bad ones, record new ones, execute those whose carrier is present in one of `modules`.
pub fn process_spool(
    spool: &Spool<'_>,
    journal: &mut Journal,
    modules: &mut [Module],
    env: &Env<'_>,
) -> anyhow::Result<SpoolReport> {
    let mut report = SpoolReport {
        reconciled: wipe::reconcile(journal, modules, env)?,
        entries: Vec::new(),
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(spool.dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("reading the order spool {}", spool.dir.display())))
        }
    };
    files.sort();
    for path in files {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let entry = process_one(spool, journal, modules, env, &path, &name);
        let entry = entry.unwrap_or_else(|e| {
            tracing::error!(file = %name, cause = %format!("{e:#}"), "spool order not processed");
            SpoolEntry {
                file: name.clone(),
                order_id: None,
                action: SpoolAction::Error,
                code: None,
                reason: Some(format!("{e:#}")),
            }
        });
        report.entries.push(entry);
    }
    Ok(report)
}

fn process_one(
    spool: &Spool<'_>,
    journal: &mut Journal,
    modules: &mut [Module],
    env: &Env<'_>,
    path: &Path,
    name: &str,
) -> anyhow::Result<SpoolEntry> {
    let sig = order::signature_path(path);
    let mut entry = SpoolEntry {
        file: name.to_owned(),
        order_id: None,
        action: SpoolAction::Waiting,
        code: None,
        reason: None,
    };
    let meta = std::fs::symlink_metadata(path)?;
    let source = format!("spool:{name}");
    let env = Env {
        source: &source,
        ..*env
    };
    if !meta.file_type().is_file() {
        let r = Rejection::new(
            RejectCode::Malformed,
            "only regular files are accepted in the spool (no symlinks or directories)",
        );
        return settle(spool, journal, &env, path, entry, r, None);
    }
    if !sig.exists() {
        let modified = meta
            .modified()
            .map(time::OffsetDateTime::from)
            .unwrap_or_else(|_| (env.clock)());
        let age = (env.clock)() - modified;
        if age < SIGNATURE_GRACE {
            entry.reason = Some("waiting for the signature file NAME.json.sig".into());
            return Ok(entry);
        }
    }
    let input = OrderInput::read(path, None)?;
    let v = order::check(&input, spool.allowed, spool.required_signers, (env.clock)());
    entry.order_id = v.order.as_ref().map(|o| o.id.clone());
    let verified = match &v.result {
        Ok(verified) => verified.clone(),
        Err(r) => {
            wipe::reject_unverified(journal, &env, &v)?;
            return settle(spool, journal, &env, path, entry, r.clone(), Some(()));
        }
    };
    let o = verified.order();
    // Executed once some module shows the serial (a mismatch or ambiguity is then refused
    // by the wipe, which resolves the target against every module at once).
    let found = modules.iter().any(|m| {
        matches!(
            m.resolve(
                &o.target.serial,
                o.target.manufacturer.as_deref(),
                o.target.model.as_deref()
            ),
            Ok(Resolution::Found(_) | Resolution::Mismatch(_) | Resolution::Ambiguous(_))
        )
    });
    if !found {
        // Record it (replay checks included) and wait for the carrier.
        return match wipe::admit(journal, &env, &verified)? {
            Ok(_) => {
                entry.reason = Some(format!("waiting for carrier {}", o.target.serial));
                Ok(entry)
            }
            Err(r) => settle(spool, journal, &env, path, entry, r, Some(())),
        };
    }
    let outcome = wipe::execute(journal, modules, &verified, &Secrets::default(), &env)?;
    match outcome {
        Outcome::Refused(r) if r.code == RejectCode::TargetAbsent => {
            entry.reason = Some(r.message);
            Ok(entry)
        }
        Outcome::Refused(r) if r.code == RejectCode::PinMissing => {
            entry.action = SpoolAction::Failed;
            entry.code = Some(r.code);
            entry.reason = Some(r.message.clone());
            move_out(
                path,
                &spool.dir.join("failed"),
                &format!("{}: {}\n", r.code, r.message),
            )?;
            Ok(entry)
        }
        Outcome::Refused(r) => settle(spool, journal, &env, path, entry, r, Some(())),
        Outcome::Completed(report) => {
            entry.action = SpoolAction::Completed;
            let result = serde_json::to_string_pretty(&report)? + "\n";
            move_out_with(path, &spool.dir.join("done"), "result", &result)?;
            Ok(entry)
        }
        Outcome::Failed(report) => {
            entry.action = SpoolAction::Failed;
            entry.reason = report.error.clone();
            let reason = format!("wipe_failed: {}\n", report.error.as_deref().unwrap_or(""));
            move_out(path, &spool.dir.join("failed"), &reason)?;
            Ok(entry)
        }
    }
}

/// Moves a refused order to `rejected/` with its reason; journals the refusal unless it was
/// journaled already (`journaled`).
fn settle(
    spool: &Spool<'_>,
    journal: &mut Journal,
    env: &Env<'_>,
    path: &Path,
    mut entry: SpoolEntry,
    r: Rejection,
    journaled: Option<()>,
) -> anyhow::Result<SpoolEntry> {
    if journaled.is_none() {
        let size = std::fs::symlink_metadata(path)
            .map(|m| m.len())
            .unwrap_or(0);
        let data = wipe::OrderRejected {
            order_id: None,
            sha256: String::new(),
            size,
            source: env.source.to_owned(),
            code: r.code,
            message: r.message.clone(),
            signature_verified: false,
            serial: None,
        };
        journal.write(env.actor, (env.clock)(), |w| {
            w.append(EventKind::OrderRejected, None, &data)
        })?;
    }
    move_out(
        path,
        &spool.dir.join("rejected"),
        &format!("{}: {}\n", r.code, r.message),
    )?;
    entry.action = SpoolAction::Rejected;
    entry.code = Some(r.code);
    entry.reason = Some(r.message);
    Ok(entry)
}

fn move_out(path: &Path, to: &Path, reason: &str) -> anyhow::Result<()> {
    move_out_with(path, to, "reason", reason)
}

/// Moves `path` and its `.sig` into `to`, and writes `NAME.<suffix>` beside them.
fn move_out_with(path: &Path, to: &Path, suffix: &str, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("no file name"))?;
    let mut dest = to.join(name);
    if dest.exists() {
        // Never overwrite an earlier file of the same name.
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        dest = to.join(format!("{}.{stamp}", name.to_string_lossy()));
    }
    let sig = order::signature_path(path);
    std::fs::rename(path, &dest)?;
    if sig.exists() {
        std::fs::rename(&sig, order::signature_path(&dest))?;
    }
    let mut note = dest.clone().into_os_string();
    note.push(format!(".{suffix}"));
    std::fs::write(PathBuf::from(note), text)?;
    Ok(())
}
