//! The secure wipe: plan, execute and verify; reconcile wipes a crash interrupted.
//!
//! Only a [`VerifiedOrder`] is accepted. The sequence, journal first:
//!
//! 1. [`admit`]: replay protection against the journal (an executed order, or the same id
//!    with other content, is refused and the refusal journaled); a new order is recorded
//!    (`order_received`).
//! 2. The target is resolved once by serial ([`Module::resolve`]) and read; [`plan`] checks
//!    serial, manufacturer, model and the certificate fingerprints the order names.
//! 3. `wipe_started` (with the plan: every CKA_ID, public-key and certificate fingerprint that
//!    must be gone) is committed. If that write fails, nothing is wiped.
//! 4. The destructive calls: C_InitToken (`reinit`) or C_DestroyObject (`destroy-keys`).
//! 5. [`Module::verify_gone`] in a fresh context.
//! 6. `wipe_completed` with the evidence, only when that check passed; else `wipe_failed`.
//!
//! A crash between 3 and 6 leaves a `wipe_started` without outcome; [`reconcile`] re-runs the
//! check of step 5 and records the outcome. No path records `wipe_completed` without a passed
//! fresh-context check.
//!
//! Event data kept stable for the journal form: `wipe_completed` carries `responsible` (the
//! person responsible, from the signed order) and the event's time is the destruction time.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::inventory::{CarrierSnapshot, ModuleInfo, ModuleScan};
use crate::journal::{rejection_ends_order, Actor, EventKind, Journal, OrderState};
use crate::order::{DestructionOrder, Method, RejectCode, Rejection, Verification, VerifiedOrder};
use crate::token::{
    DestroyedObject, GoneReport, GoneSpec, Module, PinSource, PinTarget, ReinitTrace, ResolvedToken,
};

mod target;

use target::TargetPins;
pub use target::{locate, Located};

/// An exclusive lock on `<journal>.wipe-lock`, held while a wipe is executed or reconciled, so
/// that two custody processes on one journal never wipe at once and a reconciliation never
/// judges a wipe that another process is still running. Released on drop (and by the kernel
/// when the process dies, so a crash never leaves it held).
#[derive(Debug)]
pub struct WipeLock {
    _file: std::fs::File,
}

impl WipeLock {
    /// How long a second process waits for a running wipe before giving up.
    pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

    /// Takes the lock of the journal at `journal`, waiting up to `wait`.
    pub fn acquire(journal: &std::path::Path, wait: std::time::Duration) -> Result<Self> {
        let mut path = journal.as_os_str().to_owned();
        path.push(".wipe-lock");
        let path = std::path::PathBuf::from(path);
        let file = open_lock_file(&path)?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(std::fs::TryLockError::WouldBlock)
                    if std::time::Instant::now() < deadline && !crate::stop::requested() =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Refused(format!(
                        "another custody process is executing or reconciling a wipe on this journal (it holds {}); nothing was done, run the order again when it has finished",
                        path.display()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
    }
}

/// Opens (creating it 0600) the wipe lock file. Only its owner can open it, so no other user
/// can take the lock and hold up every wipe; a lock file someone else created (or a link) is
/// refused rather than used.
fn open_lock_file(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(crate::file::FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() || Some(meta.uid()) != crate::file::effective_uid() {
        return Err(Error::Refused(format!(
            "the wipe lock {} is not a file of this user (owner uid {}): someone else created it and could hold up every wipe. Remove it (`rm {}`); custody creates it again, mode 0600",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(crate::file::FILE_MODE))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(file)
}

/// PINs given for one wipe (from a file or stdin); `None`: use the configured source.
#[derive(Default)]
pub struct Secrets {
    /// SO PIN, for `reinit`.
    pub so_pin: Option<SecretString>,
    /// User PIN, for `destroy-keys` (and to look for private keys before and after a wipe).
    pub user_pin: Option<SecretString>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("so_pin", &self.so_pin.as_ref().map(|_| "<redacted>"))
            .field("user_pin", &self.user_pin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Who acts, when, from where: what every journal write of a wipe needs.
pub struct Env<'a> {
    /// Recorded with every event.
    pub actor: &'a Actor,
    /// The time of each event (real time in the agent, fixed in tests).
    pub clock: &'a dyn Fn() -> OffsetDateTime,
    /// Where the order came from (`cli:PATH`, `spool:NAME`), recorded with it.
    pub source: &'a str,
    /// PIN sources for carriers (scans, and PINs not given in [`Secrets`]).
    pub pins: &'a dyn PinSource,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("actor", self.actor)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// One object the plan expects to be gone after the wipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedObject {
    /// `private_key`, `public_key` or `certificate`.
    pub class: String,
    /// CKA_ID (hex).
    pub id: String,
    /// CKA_LABEL, escaped.
    pub label: String,
    /// Public-key fingerprint or certificate SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// What a wipe will do and what must be gone afterwards; recorded in `wipe_started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipePlan {
    /// The order.
    pub order_id: String,
    /// SHA-256 of the signed order.
    pub order_sha256: String,
    /// Method.
    pub method: Method,
    /// Carrier key.
    pub carrier: String,
    /// Module path.
    pub module: String,
    /// Slot at planning time.
    pub slot: u64,
    /// Label before the wipe.
    pub label: String,
    /// The label C_InitToken gives the token (`reinit`).
    pub new_label: String,
    /// The objects seen before the wipe (private keys only when a user PIN was available).
    pub objects: Vec<PlannedObject>,
    /// What the check after the wipe looks for.
    pub gone: GoneSpec,
}

/// Checks the order against the carrier as read and plans the wipe.
pub fn plan(
    order: &VerifiedOrder,
    snapshot: &CarrierSnapshot,
    module: &ModuleInfo,
) -> std::result::Result<WipePlan, Rejection> {
    plan_resumed(order, snapshot, module, None)
}

/// Like [`plan`], for running an order again after an earlier attempt of the same order on
/// the same carrier (`previous`, from its `wipe_started`) failed or was interrupted: the
/// certificates the order names were checked then and may be gone now, and everything the
/// earlier plan expected to be gone is checked again.
pub fn plan_resumed(
    order: &VerifiedOrder,
    snapshot: &CarrierSnapshot,
    module: &ModuleInfo,
    previous: Option<&WipePlan>,
) -> std::result::Result<WipePlan, Rejection> {
    let previous =
        previous.filter(|p| p.carrier == snapshot.id.key() && p.order_sha256 == order.sha256());
    let o = order.order();
    let id = &snapshot.id;
    if id.serial != o.target.serial
        || o.target
            .manufacturer
            .as_ref()
            .is_some_and(|m| *m != id.manufacturer)
        || o.target.model.as_ref().is_some_and(|m| *m != id.model)
    {
        return Err(Rejection::new(
            RejectCode::TargetMismatch,
            format!(
                "the order is for {} {} {}, the carrier is {} {} {}; nothing was touched",
                o.target.manufacturer.as_deref().unwrap_or("*"),
                o.target.model.as_deref().unwrap_or("*"),
                o.target.serial,
                id.manufacturer,
                id.model,
                id.serial
            ),
        ));
    }
    let on_token: Vec<&str> = snapshot
        .certificates
        .iter()
        .map(|c| c.sha256.as_str())
        .collect();
    let missing: Vec<String> = o
        .certificate_fingerprints()
        .into_iter()
        .filter(|c| !on_token.contains(&c.as_str()))
        .filter(|c| !previous.is_some_and(|p| p.gone.certificates.contains(c)))
        .collect();
    if !missing.is_empty() {
        return Err(Rejection::new(
            RejectCode::CertificateMismatch,
            format!(
                "carrier {} does not hold the certificate(s) the order names ({}); it holds {}. Nothing was touched; check that the order is for this carrier",
                id.serial,
                missing.iter().map(|m| &m[..16]).collect::<Vec<_>>().join(", "),
                if on_token.is_empty() {
                    "none".to_owned()
                } else {
                    on_token.iter().map(|m| &m[..16.min(m.len())]).collect::<Vec<_>>().join(", ")
                }
            ),
        ));
    }
    // What goes: everything for reinit; for destroy-keys the private keys and the objects
    // sharing their CKA_ID (and certificates the order names), and nothing else is checked.
    let private = snapshot.private_keys.as_deref().unwrap_or_default();
    let private_ids: Vec<&crate::id::RawBytes> = private
        .iter()
        .map(|k| &k.id)
        .filter(|id| !id.is_empty())
        .collect();
    let named = o.certificate_fingerprints();
    let goes = |id: &crate::id::RawBytes| o.method == Method::Reinit || private_ids.contains(&id);
    let mut objects = Vec::new();
    let mut cka_ids: Vec<String> = Vec::new();
    let mut public_keys: Vec<String> = Vec::new();
    let mut certificates: Vec<String> = o.certificate_fingerprints();
    let mut add_id = |id: &crate::id::RawBytes| {
        if !id.is_empty() && !cka_ids.contains(&id.hex()) {
            cka_ids.push(id.hex());
        }
    };
    for c in &snapshot.certificates {
        if !goes(&c.id) && !named.contains(&c.sha256) {
            continue;
        }
        add_id(&c.id);
        if !certificates.contains(&c.sha256) {
            certificates.push(c.sha256.clone());
        }
        if let Some(info) = &c.info {
            if !public_keys.contains(&info.public_key_sha256) {
                public_keys.push(info.public_key_sha256.clone());
            }
        }
        objects.push(PlannedObject {
            class: "certificate".into(),
            id: c.id.hex(),
            label: c.label.escaped(),
            fingerprint: Some(c.sha256.clone()),
        });
    }
    for (class, keys) in [
        ("public_key", &snapshot.public_keys[..]),
        ("private_key", private),
    ] {
        for k in keys {
            if class == "public_key" && !goes(&k.id) {
                continue;
            }
            add_id(&k.id);
            if let Some(fp) = &k.public_key_sha256 {
                if !public_keys.contains(fp) {
                    public_keys.push(fp.clone());
                }
            }
            objects.push(PlannedObject {
                class: class.into(),
                id: k.id.hex(),
                label: k.label.escaped(),
                fingerprint: k.public_key_sha256.clone(),
            });
        }
    }
    if let Some(p) = previous {
        for id in &p.gone.cka_ids {
            if !cka_ids.contains(id) {
                cka_ids.push(id.clone());
            }
        }
        for k in &p.gone.public_keys {
            if !public_keys.contains(k) {
                public_keys.push(k.clone());
            }
        }
        for c in &p.gone.certificates {
            if !certificates.contains(c) {
                certificates.push(c.clone());
            }
        }
        for obj in &p.objects {
            if !objects.contains(obj) {
                objects.push(obj.clone());
            }
        }
    }
    let mut new_label = format!("wiped {}", o.id);
    new_label.truncate(32);
    let reinit_in = (o.method == Method::Reinit).then(|| ReinitTrace {
        slot: snapshot.slot,
        label: new_label.clone(),
    });
    Ok(WipePlan {
        order_id: o.id.clone(),
        order_sha256: order.sha256().to_owned(),
        method: o.method,
        carrier: id.key(),
        module: module.path.clone(),
        slot: snapshot.slot,
        label: snapshot.label.clone(),
        new_label,
        objects,
        gone: GoneSpec {
            serial: id.serial.clone(),
            manufacturer: id.manufacturer.clone(),
            model: id.model.clone(),
            cka_ids,
            public_keys,
            certificates,
            no_private_keys: o.method == Method::DestroyKeys,
            reinit_in,
        },
    })
}

/// `order_received` event data.
#[derive(Debug, Serialize)]
struct OrderReceived<'a> {
    order_id: &'a str,
    sha256: &'a str,
    source: &'a str,
    signers: &'a [crate::order::Signer],
    order: &'a DestructionOrder,
}

/// `order_rejected` event data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderRejected {
    /// The order's id as claimed (unverified unless the signature verified).
    pub order_id: Option<String>,
    /// SHA-256 of the bytes examined.
    pub sha256: String,
    /// Size of the order file.
    pub size: u64,
    /// Where it came from.
    pub source: String,
    /// Stable reason code.
    pub code: RejectCode,
    /// Explanation.
    pub message: String,
    /// True when the signatures verified (the claims are the signer's).
    pub signature_verified: bool,
    /// The serial the order names (as claimed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// `wipe_started` event data.
#[derive(Debug, Serialize, Deserialize)]
struct WipeStarted {
    order_id: String,
    method: Method,
    responsible: String,
    holder: String,
    pid: u32,
    plan: WipePlan,
}

/// `wipe_completed` / `wipe_failed` event data, and what [`execute`] returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WipeReport {
    /// The order.
    pub order_id: String,
    /// Carrier key.
    pub carrier: String,
    /// Method.
    pub method: Method,
    /// The person responsible for the destruction, from the signed order.
    pub responsible: String,
    /// The dismissed holder.
    pub holder: String,
    /// Dismissal date.
    pub dismissed: String,
    /// The order's reason.
    pub reason: String,
    /// The objects that were on the carrier and are confirmed gone (empty when the check
    /// did not pass).
    pub destroyed: Vec<PlannedObject>,
    /// Objects C_DestroyObject was called on (`destroy-keys`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destroy_calls: Vec<DestroyedObject>,
    /// The module.
    pub module: ModuleInfo,
    /// Serial, manufacturer, model.
    pub token: crate::id::CarrierId,
    /// Label before the wipe.
    pub label_before: String,
    /// The fresh-context check; `None` when it could not run.
    pub verification: Option<GoneReport>,
    /// True when the check passed and the wipe is complete.
    pub verified: bool,
    /// The `wipe_started` event.
    pub started_seq: u64,
    /// True when recorded by [`reconcile`] after an interruption.
    pub reconciled: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The outcome event (set after it was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_seq: Option<u64>,
    /// The carrier's key after a `reinit` that gave it a new serial (kryoptic): the link
    /// from the carrier wiped to the carrier it became.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_after: Option<String>,
}

/// What [`execute`] did.
#[derive(Debug)]
pub enum Outcome {
    /// Wiped, checked in a fresh context, `wipe_completed` recorded.
    Completed(Box<WipeReport>),
    /// The wipe or its check failed; `wipe_failed` recorded. Nothing claims a wipe.
    Failed(Box<WipeReport>),
    /// Refused before anything was touched; `order_rejected` recorded.
    Refused(Rejection),
}

/// Records the refusal of an order that did not verify (`order_rejected`).
pub fn reject_unverified(journal: &mut Journal, env: &Env<'_>, v: &Verification) -> Result<u64> {
    let Err(rejection) = &v.result else {
        return Err(Error::Refused(
            "the order verified; nothing to reject".into(),
        ));
    };
    let data = OrderRejected {
        order_id: v.order.as_ref().map(|o| o.id.clone()),
        sha256: v.sha256.clone(),
        size: v.size,
        source: env.source.to_owned(),
        code: rejection.code,
        message: rejection.message.clone(),
        signature_verified: false,
        serial: v.order.as_ref().map(|o| o.target.serial.clone()),
    };
    tracing::warn!(code = %rejection.code, source = env.source, "order rejected");
    journal.write(env.actor, (env.clock)(), |w| {
        w.append(EventKind::OrderRejected, None, &data)
    })
}

fn reject_verified(
    journal: &mut Journal,
    env: &Env<'_>,
    order: &VerifiedOrder,
    rejection: &Rejection,
    carrier: Option<&str>,
) -> Result<u64> {
    let data = OrderRejected {
        order_id: Some(order.order().id.clone()),
        sha256: order.sha256().to_owned(),
        size: order.text().len() as u64,
        source: env.source.to_owned(),
        code: rejection.code,
        message: rejection.message.clone(),
        signature_verified: true,
        serial: Some(order.order().target.serial.clone()),
    };
    tracing::warn!(code = %rejection.code, order = %order.order().id, "order refused");
    journal.write(env.actor, (env.clock)(), |w| {
        let seq = w.append(EventKind::OrderRejected, carrier, &data)?;
        // The events decide: a refusal that ends an order (see
        // `journal::rejection_ends_order`) moves a known order with this content to rejected.
        if rejection_ends_order(rejection.code)
            && w.order(&order.order().id)?
                .is_some_and(|o| o.sha256 == order.sha256())
        {
            w.set_order_state(&order.order().id, OrderState::Rejected, seq, carrier)?;
        }
        Ok(seq)
    })
}

/// Replay protection and intake: records a new order (`order_received`) and returns its
/// state; refuses (and journals the refusal of) an executed order or an id reused with other
/// content. `Ok(Err(_))` is a refusal, `Err(_)` a journal error.
pub fn admit(
    journal: &mut Journal,
    env: &Env<'_>,
    order: &VerifiedOrder,
) -> Result<std::result::Result<OrderState, Rejection>> {
    let o = order.order();
    let mut executed_on = None;
    let verdict = journal.write(env.actor, (env.clock)(), |w| {
        let Some(known) = w.order(&o.id)? else {
            let seq = w.append(
                EventKind::OrderReceived,
                None,
                &OrderReceived {
                    order_id: &o.id,
                    sha256: order.sha256(),
                    source: env.source,
                    signers: order.signers(),
                    order: o,
                },
            )?;
            w.insert_order(order, seq)?;
            tracing::info!(order = %o.id, seq, "order received");
            return Ok(Ok(OrderState::Received));
        };
        if known.sha256 != order.sha256() {
            return Ok(Err(Rejection::new(
                RejectCode::IdConflict,
                format!(
                    "an order with id {} but other content was received on {} (event #{}); this one is refused. Issue a new order with a new id",
                    o.id, known.received_at, known.received_seq
                ),
            )));
        }
        if known.state == OrderState::Completed {
            executed_on = known.carrier.clone();
            return Ok(Err(Rejection::new(
                RejectCode::AlreadyExecuted,
                format!(
                    "order {} was executed already (event #{}); a signed order is good for one wipe",
                    o.id,
                    known.outcome_seq.unwrap_or(0)
                ),
            )));
        }
        Ok(Ok(known.state))
    })?;
    if let Err(r) = &verdict {
        // A replay is recorded on the carrier the order was executed on.
        reject_verified(journal, env, order, r, executed_on.as_deref())?;
    }
    Ok(verdict)
}

fn pin_or_configured(
    given: &Option<SecretString>,
    configured: impl FnOnce() -> Result<Option<SecretString>>,
) -> Result<Option<SecretString>> {
    match given {
        Some(p) => Ok(Some(p.clone())),
        None => configured(),
    }
}

/// Executes a verified order: admit, resolve the target across all `modules` ([`locate`]),
/// plan, journal
/// `wipe_started`, wipe, check in a fresh context, journal the outcome (see the module docs).
/// `Err` means the outcome is unknown or nothing was done because the journal could not be
/// written; the journal says which.
pub fn execute(
    journal: &mut Journal,
    modules: &mut [Module],
    order: &VerifiedOrder,
    secrets: &Secrets,
    env: &Env<'_>,
) -> Result<Outcome> {
    let _lock = WipeLock::acquire(journal.path(), WipeLock::WAIT)?;
    let o = order.order();
    let mut state = match admit(journal, env, order)? {
        Ok(s) => s,
        Err(r) => return Ok(Outcome::Refused(r)),
    };
    if state == OrderState::Started {
        reconcile_locked(journal, modules, env)?;
        state = match admit(journal, env, order)? {
            Ok(s) => s,
            Err(r) => return Ok(Outcome::Refused(r)),
        };
    }
    tracing::debug!(order = %o.id, state = state.as_str(), "order admitted");

    let (index, target) = match locate(modules, &o.target) {
        Located::Found(index, t) => (index, t),
        Located::Refused(r) => {
            reject_verified(journal, env, order, &r, None)?;
            return Ok(Outcome::Refused(r));
        }
    };
    let module = &mut modules[index];
    let carrier_id = target.carrier().clone();
    let pin_target = PinTarget::identity(&carrier_id, Some(target.label()), &module.info().path);
    // A PIN source that cannot be used (rejected before, unreadable) leaves the user PIN
    // out; `destroy-keys` is then refused below, `reinit` needs only the SO PIN.
    let configured_user_pin = match &secrets.user_pin {
        Some(_) => None,
        None => env.pins.user_pin(&pin_target).unwrap_or_else(|e| {
            tracing::warn!(carrier = %carrier_id.key(), cause = %e, "configured user PIN not used");
            None
        }),
    };
    let user_pin = secrets.user_pin.clone().or(configured_user_pin);
    let so_pin = match o.method {
        Method::Reinit => pin_or_configured(&secrets.so_pin, || env.pins.so_pin(&pin_target))?,
        Method::DestroyKeys => None,
    };
    let missing = match o.method {
        Method::Reinit if so_pin.is_none() => {
            Some("the SO PIN (--so-pin-file, --pin-stdin or so_pin_file in [[pin]])")
        }
        Method::DestroyKeys if user_pin.is_none() => {
            Some("the user PIN (--user-pin-file, --pin-stdin or user_pin_file in [[pin]])")
        }
        _ => None,
    };
    if let Some(what) = missing {
        let r = Rejection::new(
            RejectCode::PinMissing,
            format!("method {} needs {what}; nothing was touched", o.method),
        );
        reject_verified(journal, env, order, &r, None)?;
        return Ok(Outcome::Refused(r));
    }
    // From here on only the target is offered a PIN: the journal's scans before and after
    // the wipe read every other carrier without login.
    let pins = TargetPins::new(&carrier_id, user_pin.as_ref(), env.pins);
    let snapshot = module.read_token(&target, &pins)?;
    if o.method == Method::DestroyKeys && snapshot.private_keys.is_none() {
        let reason = match &snapshot.login {
            crate::inventory::Login::Failed(why) | crate::inventory::Login::Skipped(why) => {
                why.clone()
            }
            _ => "login failed".into(),
        };
        let r = Rejection::new(
            RejectCode::PinMissing,
            format!("the user PIN could not be used ({reason}); nothing was touched"),
        );
        reject_verified(journal, env, order, &r, Some(&snapshot.id.key()))?;
        return Ok(Outcome::Refused(r));
    }
    let previous = match journal.order(&o.id)?.and_then(|row| row.started_seq) {
        Some(seq) => Some(started_event(journal, seq)?.plan),
        None => None,
    };
    let plan = match plan_resumed(order, &snapshot, module.info(), previous.as_ref()) {
        Ok(p) => p,
        Err(r) => {
            reject_verified(journal, env, order, &r, Some(&snapshot.id.key()))?;
            return Ok(Outcome::Refused(r));
        }
    };
    let before = scan_for_journal(module, &pins);
    // Journal first: if this write fails, nothing is wiped.
    let started = WipeStarted {
        order_id: o.id.clone(),
        method: o.method,
        responsible: o.responsible.clone(),
        holder: o.holder.clone(),
        pid: std::process::id(),
        plan: plan.clone(),
    };
    let started_seq = journal
        .write(env.actor, (env.clock)(), |w| {
            if let Some(scan) = &before {
                w.record_scan(std::slice::from_ref(scan))?;
            }
            let seq = w.append(EventKind::WipeStarted, Some(&plan.carrier), &started)?;
            w.set_order_state(&o.id, OrderState::Started, seq, Some(&plan.carrier))?;
            Ok(seq)
        })
        .map_err(|e| {
            tracing::error!(cause = %e, order = %o.id, "wipe_started could not be journaled; nothing was wiped");
            Error::Refused(format!(
                "the journal could not record the start of the wipe ({e}); nothing was wiped. Free the journal (another custody process, disk space) and run the order again"
            ))
        })?;
    tracing::info!(order = %o.id, carrier = %plan.carrier, method = %o.method, started_seq, "wipe started");

    let mut destroy_calls = Vec::new();
    let wipe_result = match o.method {
        Method::Reinit => match &so_pin {
            Some(pin) => module.init_token(&target, pin, &plan.new_label),
            None => Err(Error::Refused("no SO PIN".into())),
        },
        Method::DestroyKeys => match &user_pin {
            Some(pin) => module.destroy_keys(&target, pin).map(|d| destroy_calls = d),
            None => Err(Error::Refused("no user PIN".into())),
        },
    };
    if let Err(e) = &wipe_result {
        tracing::error!(cause = %e, order = %o.id, "wipe call failed; checking what remains");
    }
    let check_pin = match o.method {
        Method::DestroyKeys => user_pin.as_ref(),
        Method::Reinit => None,
    };
    let verification = module.verify_gone(&plan.gone, check_pin);
    let after = scan_for_journal(module, &pins);
    let mut report = report_for(order, &plan, module.info(), &target, started_seq, false);
    report.destroy_calls = destroy_calls;
    let (error, verification) = match (wipe_result, verification) {
        (_, Err(e)) => (Some(format!("the check after the wipe failed: {e}")), None),
        (Err(e), Ok(v)) => (Some(format!("the wipe call failed: {e}")), Some(v)),
        (Ok(()), Ok(v)) => (v.problem.clone().filter(|_| !v.passed), Some(v)),
    };
    report.verified = verification.as_ref().is_some_and(|v| v.passed);
    report.carrier_after = carrier_after(target.carrier(), verification.as_ref());
    if report.verified {
        report.destroyed = plan.objects.clone();
        report.error = None;
    } else {
        report.error =
            Some(error.unwrap_or_else(|| "the check after the wipe did not pass".into()));
    }
    report.verification = verification;
    let outcome_seq = record_outcome(journal, env, &o.id, &report, after.as_ref())?;
    report.outcome_seq = Some(outcome_seq);
    Ok(if report.verified {
        tracing::info!(order = %o.id, carrier = %report.carrier, outcome_seq, "wipe completed and verified");
        Outcome::Completed(Box::new(report))
    } else {
        tracing::error!(order = %o.id, carrier = %report.carrier, outcome_seq, "wipe failed");
        Outcome::Failed(Box::new(report))
    })
}

/// The carrier's key after a `reinit` that changed its serial, from the check's evidence.
fn carrier_after(before: &crate::id::CarrierId, check: Option<&GoneReport>) -> Option<String> {
    let serial = check?.serial_after.clone()?;
    Some(
        crate::id::CarrierId {
            serial,
            discriminator: None,
            ..before.clone()
        }
        .key(),
    )
}

fn report_for(
    order: &VerifiedOrder,
    plan: &WipePlan,
    module: &ModuleInfo,
    target: &ResolvedToken,
    started_seq: u64,
    reconciled: bool,
) -> WipeReport {
    let o = order.order();
    WipeReport {
        order_id: o.id.clone(),
        carrier: plan.carrier.clone(),
        method: o.method,
        responsible: o.responsible.clone(),
        holder: o.holder.clone(),
        dismissed: o.dismissed.to_string(),
        reason: o.reason.clone(),
        destroyed: Vec::new(),
        destroy_calls: Vec::new(),
        module: module.clone(),
        token: target.carrier().clone(),
        label_before: plan.label.clone(),
        verification: None,
        verified: false,
        started_seq,
        reconciled,
        error: None,
        outcome_seq: None,
        carrier_after: None,
    }
}

fn scan_for_journal(module: &Module, pins: &dyn PinSource) -> Option<ModuleScan> {
    let scan = module.scan(pins);
    if let Some(why) = scan.unavailability() {
        tracing::warn!(cause = %why, "scan for the journal failed; the wipe goes on");
        return None;
    }
    Some(scan)
}

fn record_outcome(
    journal: &mut Journal,
    env: &Env<'_>,
    order_id: &str,
    report: &WipeReport,
    scan: Option<&ModuleScan>,
) -> Result<u64> {
    let (kind, state) = if report.verified {
        (EventKind::WipeCompleted, OrderState::Completed)
    } else {
        (EventKind::WipeFailed, OrderState::Failed)
    };
    // A destruction is followed by a signed checkpoint in the same transaction. Without a
    // usable journal key the outcome is still recorded: losing it would be worse.
    let key = if report.verified {
        journal
            .journal_key()
            .map_err(|e| tracing::warn!(cause = %e, "no checkpoint after the wipe"))
            .ok()
    } else {
        None
    };
    journal
        .write(env.actor, (env.clock)(), |w| {
            if let Some(scan) = scan {
                w.record_scan(std::slice::from_ref(scan))?;
            }
            let seq = w.append(kind, Some(&report.carrier), report)?;
            w.set_order_state(order_id, state, seq, Some(&report.carrier))?;
            if let Some(key) = &key {
                w.checkpoint(key)?;
            }
            Ok(seq)
        })
        .map_err(|e| {
            Error::Refused(format!(
                "the outcome of the wipe could not be journaled ({e}); the outcome is unknown to the journal, which holds wipe_started #{}. \
                 The next `custody wipe` or `custody order reconcile` checks the carrier and records the outcome",
                report.started_seq
            ))
        })
}

fn started_event(journal: &Journal, seq: u64) -> Result<WipeStarted> {
    let event = journal
        .event(seq)?
        .ok_or_else(|| Error::JournalCorrupt(format!("wipe_started #{seq} is missing")))?;
    serde_json::from_value(event.data)
        .map_err(|e| Error::JournalCorrupt(format!("wipe_started #{seq}: {e}")))
}

/// What [`reconcile`] decided for one interrupted wipe.
#[derive(Debug, Clone, Serialize)]
pub struct Reconciled {
    /// The order.
    pub order_id: String,
    /// `wipe_completed` or `wipe_failed`.
    pub kind: EventKind,
    /// The outcome event.
    pub seq: u64,
    /// The report recorded.
    pub report: WipeReport,
}

/// Finds every `wipe_started` without an outcome, checks its carrier in a fresh context and
/// records `wipe_completed` (check passed) or `wipe_failed`. Modules in `modules` are used
/// when one has the plan's path; others are loaded for the check. Call at start, before
/// anything that executes orders.
pub fn reconcile(
    journal: &mut Journal,
    modules: &mut [Module],
    env: &Env<'_>,
) -> Result<Vec<Reconciled>> {
    let _lock = WipeLock::acquire(journal.path(), WipeLock::WAIT)?;
    reconcile_locked(journal, modules, env)
}

fn reconcile_locked(
    journal: &mut Journal,
    modules: &mut [Module],
    env: &Env<'_>,
) -> Result<Vec<Reconciled>> {
    let mut out = Vec::new();
    for row in journal.orders_started()? {
        let Some(seq) = row.started_seq else { continue };
        let started = started_event(journal, seq)?;
        let plan = &started.plan;
        tracing::warn!(order = %row.order_id, started_seq = seq, "interrupted wipe found; checking the carrier");
        let carrier = crate::id::CarrierId {
            manufacturer: plan.gone.manufacturer.clone(),
            model: plan.gone.model.clone(),
            serial: plan.gone.serial.clone(),
            discriminator: None,
        };
        let target = PinTarget::identity(&carrier, None, &plan.module);
        let user_pin = env.pins.user_pin(&target).unwrap_or_else(|e| {
            tracing::warn!(cause = %e, "user PIN source unusable; checking without login");
            None
        });
        let mut loaded = None;
        let module = match modules.iter_mut().find(|m| m.info().path == plan.module) {
            Some(m) => Ok(m),
            None => match Module::load(std::path::Path::new(&plan.module)) {
                Ok(m) => Ok(loaded.insert(m)),
                Err(e) => Err(e),
            },
        };
        let (verification, info, error) = match module {
            Ok(m) => {
                let info = m.info().clone();
                match m.verify_gone(&plan.gone, user_pin.as_ref()) {
                    Ok(v) => {
                        let err = (!v.passed).then(|| {
                            v.problem
                                .clone()
                                .unwrap_or_else(|| "the check did not pass".into())
                        });
                        (Some(v), info, err)
                    }
                    Err(e) => (None, info, Some(format!("the check failed: {e}"))),
                }
            }
            Err(e) => (
                None,
                ModuleInfo {
                    path: plan.module.clone(),
                    manufacturer: String::new(),
                    description: String::new(),
                    version: String::new(),
                },
                Some(format!("module could not be loaded for the check: {e}")),
            ),
        };
        drop(loaded);
        let order: Option<DestructionOrder> = serde_json::from_str(&row.document).ok();
        let verified = verification.as_ref().is_some_and(|v| v.passed);
        let report = WipeReport {
            order_id: row.order_id.clone(),
            carrier: plan.carrier.clone(),
            method: plan.method,
            responsible: started.responsible.clone(),
            holder: started.holder.clone(),
            dismissed: row.dismissed.clone(),
            reason: order.map(|o| o.reason).unwrap_or_default(),
            destroyed: if verified {
                plan.objects.clone()
            } else {
                Vec::new()
            },
            destroy_calls: Vec::new(),
            module: info,
            token: carrier,
            label_before: plan.label.clone(),
            verification,
            verified,
            started_seq: seq,
            reconciled: true,
            error: error.map(|e| {
                format!(
                    "the wipe was interrupted and could not be confirmed: {e}; run the order again"
                )
            }),
            outcome_seq: None,
            carrier_after: None,
        };
        let report = WipeReport {
            carrier_after: carrier_after(&report.token, report.verification.as_ref()),
            ..report
        };
        let outcome = record_outcome(journal, env, &row.order_id, &report, None)?;
        let kind = if verified {
            EventKind::WipeCompleted
        } else {
            EventKind::WipeFailed
        };
        tracing::warn!(order = %row.order_id, kind = kind.as_str(), seq = outcome, "interrupted wipe reconciled");
        out.push(Reconciled {
            order_id: row.order_id,
            kind,
            seq: outcome,
            report,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
