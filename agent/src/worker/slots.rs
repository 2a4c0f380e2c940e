//! One watched module: its slots as last read, the cheap presence poll, content checks, and
//! the backoff of a module that is unavailable.
//!
//! The poll only finds out whether anything may have changed (slot ids, a content check that
//! reads differently); what changed is decided by `custody_core::inventory::compare` when the
//! journal records the module's [`ModuleScan`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use custody_core::inventory::{
    unavailable_if_empty, CallError, CarrierSnapshot, Login, ModuleInfo, ModuleScan, SlotProblem,
};
use custody_core::token::{Module, NoPins, SlotRead};

use super::Request;
use crate::config::Reinit;
use crate::pin::Pins as ServicePins;
use crate::poll::ModulePoll;
use crate::poll::{Done, SlotEvent};

/// First wait before re-initialising a module that became unavailable.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The wait doubles after each failed attempt, up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The longest a slot-event thread waits for the worker to be done with an event before it
/// waits for the next one.
const EVENT_HOLD: Duration = Duration::from_secs(1);

/// One module the worker watches.
pub(super) struct Watched {
    /// Its place in the configuration (what its slot events name).
    index: usize,
    pub(super) path: PathBuf,
    /// `path` as text, for reports (formatted once).
    pub(super) path_text: String,
    pub(super) policy: Reinit,
    pub(super) module: Option<Module>,
    /// Slot id -> what is in it, as recorded in the journal.
    pub(super) slots: BTreeMap<u64, SlotState>,
    /// The slots must be read and recorded in full (first poll after loading, a failed
    /// journal write, or a module that answers again).
    pub(super) fresh: bool,
    /// Why the module is not loaded.
    pub(super) load_error: Option<String>,
    /// Set while the module is unavailable.
    pub(super) outage: Option<Outage>,
    /// Where a slot-event thread sends [`Request::SlotEvent`].
    pub(super) waker: mpsc::Sender<Request>,
    /// What the module's C_WaitForSlotEvent has shown (kept across re-initialisations).
    slot_events: SharedSupport,
    /// A read that would remove objects, waiting for the next read to confirm it (see
    /// `confirm`), and when it was taken.
    pub(super) unconfirmed: Option<(Instant, ModuleScan)>,
}

/// A module that failed, or answered an empty slot list right after device errors.
#[derive(Debug, Clone)]
pub(super) struct Outage {
    /// The last reason.
    pub(super) reason: CallError,
    /// The wait before the next attempt.
    backoff: Duration,
    /// When the next attempt (re-initialisation + slot list) is due.
    pub(super) next_try: Instant,
    /// `module_unavailable` was handed to the journal.
    pub(super) recorded: bool,
}

impl Outage {
    fn start(reason: CallError, now: Instant) -> Self {
        Self {
            reason,
            backoff: BACKOFF_FIRST,
            next_try: now + BACKOFF_FIRST,
            recorded: false,
        }
    }

    fn again(&mut self, reason: CallError, now: Instant) {
        self.reason = reason;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.next_try = now + self.backoff;
    }
}

impl Watched {
    pub(super) fn new(
        index: usize,
        path: PathBuf,
        policy: Reinit,
        waker: mpsc::Sender<Request>,
    ) -> Self {
        Self {
            index,
            path_text: path.display().to_string(),
            path,
            policy,
            module: None,
            slots: BTreeMap::new(),
            fresh: true,
            load_error: None,
            outage: None,
            waker,
            slot_events: SharedSupport::default(),
            unconfirmed: None,
        }
    }

    pub(super) fn load(&mut self) {
        match Module::load(&self.path) {
            Ok(m) => {
                self.module = Some(m);
                self.fresh = true;
                self.load_error = None;
                tracing::info!(
                    module = %self.path_text,
                    library = %self.info().description,
                    manufacturer = %self.info().manufacturer,
                    reinit = %self.reinit_setting(),
                    "module loaded"
                );
                self.wait_for_slot_events();
            }
            Err(e) => {
                self.load_error = Some(e.to_string());
                tracing::error!(module = %self.path_text, cause = %e, "module not loaded; retrying later");
            }
        }
    }

    /// What the module says about itself, or only its path when it is not loaded.
    pub(super) fn info(&self) -> ModuleInfo {
        match &self.module {
            Some(m) => m.info().clone(),
            None => ModuleInfo::unknown(
                &std::fs::canonicalize(&self.path)
                    .unwrap_or_else(|_| self.path.clone())
                    .display()
                    .to_string(),
            ),
        }
    }

    /// Starts a thread that blocks in C_WaitForSlotEvent and wakes the worker on every slot
    /// event, so an insertion is seen at once rather than at the next poll; the poll stays as
    /// the fallback. Not under policy `always` (its C_Finalize would end every wait). The
    /// thread ends when the module answers with an error: `not supported` tells that the
    /// module has no slot events (and, on every module measured, a frozen slot list), so under
    /// policy `auto` it is re-initialised from then on to see new tokens; any other error (the
    /// module was finalised) just ends the thread.
    pub(super) fn wait_for_slot_events(&self) {
        if self.policy == Reinit::Always || self.slot_events.get() == SlotEventSupport::Refused {
            return;
        }
        let Some(events) = self.module.as_ref().and_then(Module::slot_events) else {
            return;
        };
        let waker = self.waker.clone();
        let module = self.path_text.clone();
        let support = self.slot_events.clone();
        let waiting = support.waiting();
        let policy = self.policy;
        let index = self.index;
        let spawned = std::thread::Builder::new()
            .name("custody-slot-events".into())
            .spawn(move || {
                // Counted as waiting until this closure ends, however it ends.
                let _waiting = waiting;
                let (done, handled) = mpsc::channel();
                loop {
                match events.wait() {
                    Ok(slot) => {
                        let event = SlotEvent::now(index, slot, Some(Done(done.clone())));
                        support.set(SlotEventSupport::Live);
                        tracing::debug!(%module, slot, "slot event");
                        if waker.send(Request::SlotEvent(event)).is_err() {
                            return;
                        }
                        // The worker reads the slot first: OpenSC's C_WaitForSlotEvent begins
                        // by asking pcscd about every reader under the module's lock, which
                        // that read would wait for. The module keeps what changes meanwhile.
                        let _ = handled.recv_timeout(EVENT_HOLD);
                        while handled.try_recv().is_ok() {}
                    }
                    Err(e @ custody_core::Error::NotSupported { .. }) => {
                        support.set(SlotEventSupport::Refused);
                        let reinit = policy == Reinit::Auto;
                        tracing::info!(%module, cause = %e, reinit, "no slot events from this module");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%module, cause = %e, "slot-event wait ended");
                        return;
                    }
                }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(cause = %e, "no slot-event thread; polling only");
        }
    }

    /// The effective re-initialisation setting, for the "module loaded" line.
    fn reinit_setting(&self) -> &'static str {
        match self.policy {
            Reinit::Always => "every poll (policy always)",
            Reinit::Never => "never (policy never)",
            Reinit::Auto => {
                "every poll once the module shows it has no slot events, else never (policy auto)"
            }
        }
    }

    /// Whether polls re-initialise the module: policy `always`; or policy `auto` and the
    /// module has shown that it has no slot events.
    pub(super) fn needs_reinit(&self) -> bool {
        match self.policy {
            Reinit::Always => true,
            Reinit::Never => false,
            Reinit::Auto => {
                self.module.is_some() && self.slot_events.get() == SlotEventSupport::Refused
            }
        }
    }

    /// Records that an attempt failed: starts the outage, or doubles its backoff. Returns
    /// true when the journal must still be told.
    pub(super) fn unavailable(&mut self, reason: CallError, now: Instant) -> bool {
        match &mut self.outage {
            Some(o) => {
                tracing::debug!(module = %self.path_text, cause = %reason, "module still unavailable");
                o.again(reason, now);
            }
            None => {
                tracing::warn!(module = %self.path_text, cause = %reason, "module unavailable; its carriers keep their state; re-initialising it with backoff");
                self.outage = Some(Outage::start(reason, now));
                self.fresh = true;
            }
        }
        self.outage.as_ref().is_some_and(|o| !o.recorded)
    }

    /// A slot event arrived: a module with slot events that is unavailable is tried again
    /// at once rather than after its backoff (OpenSC answers an empty slot list after a card
    /// pulled mid-read returned errors; the next card put in is then seen at once).
    /// Such a module is tried without re-initialisation: its slot list is live.
    pub(super) fn slot_event(&mut self) {
        if !self.has_slot_events() {
            return;
        }
        if let Some(o) = &mut self.outage {
            o.next_try = o.next_try.min(Instant::now());
        }
    }

    /// True when the module has reported a slot event: its slot list is live, and its
    /// slot-event thread must not be raced by a re-initialisation.
    pub(super) fn has_slot_events(&self) -> bool {
        self.slot_events.get() == SlotEventSupport::Live
    }

    /// True when a thread of the module waits in C_WaitForSlotEvent (a module without slot
    /// events answers the wait at once with an error, which ends the thread): its fallback
    /// poll can be spaced (see `crate::watch`).
    pub(super) fn events_live(&self) -> bool {
        self.module.is_some()
            && self.slot_events.get() != SlotEventSupport::Refused
            && self.slot_events.is_waiting()
    }

    /// The keys of the carriers last read in this module whose slot still shows the same
    /// token (C_GetTokenInfo); none while the module is unavailable or not loaded.
    pub(super) fn carriers_still_there(&self) -> Vec<String> {
        let Some(module) = self.module.as_ref().filter(|_| self.outage.is_none()) else {
            return Vec::new();
        };
        self.slots
            .iter()
            .filter_map(|(slot, s)| match s {
                SlotState::Carrier(k) if !token_changed(module, *slot, s) => Some(k.full.id.key()),
                _ => None,
            })
            .collect()
    }

    /// The module answered: ends an outage (the next recording says `module_recovered`).
    pub(super) fn answered(&mut self) {
        if self.outage.take().is_some() {
            // Its slot-event thread is running: a re-initialisation (see `poll_module`)
            // started a new one, and a module with slot events is not re-initialised.
            tracing::info!(module = %self.path_text, "module answers again");
        }
    }
}

/// What a module's C_WaitForSlotEvent has shown, shared with its slot-event thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotEventSupport {
    /// No answer yet (the wait blocks, or has not started).
    Unknown = 0,
    /// It reported a slot event.
    Live = 1,
    /// It answered CKR_FUNCTION_NOT_SUPPORTED.
    Refused = 2,
}

/// What the slot-event threads of a module share with the worker.
#[derive(Debug, Default)]
struct SlotEventState {
    /// A [`SlotEventSupport`].
    support: AtomicU8,
    /// Slot-event threads running (an old one may still be ending after a
    /// re-initialisation started a new one).
    waiting: AtomicUsize,
}

/// [`SlotEventState`], cheap to clone.
#[derive(Debug, Clone, Default)]
struct SharedSupport(Arc<SlotEventState>);

impl SharedSupport {
    fn get(&self) -> SlotEventSupport {
        match self.0.support.load(Ordering::Relaxed) {
            1 => SlotEventSupport::Live,
            2 => SlotEventSupport::Refused,
            _ => SlotEventSupport::Unknown,
        }
    }

    fn set(&self, support: SlotEventSupport) {
        self.0.support.store(support as u8, Ordering::Relaxed);
    }

    /// Counts a slot-event thread as running until the returned guard is dropped (when the
    /// thread ends, however it ends).
    fn waiting(&self) -> Waiting {
        self.0.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.0.clone())
    }

    fn is_waiting(&self) -> bool {
        self.0.waiting.load(Ordering::Relaxed) > 0
    }
}

/// A running slot-event thread; see [`SharedSupport::waiting`].
struct Waiting(Arc<SlotEventState>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SlotState {
    /// A token that is not initialised (SoftHSM's spare slot).
    Uninitialised,
    /// A token that could not be read completely and was never read before.
    Unreadable(SlotProblem),
    /// A carrier.
    Carrier(Box<Known>),
}

/// A carrier as last read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Known {
    /// The full read (with private keys when a PIN was accepted): what is recorded.
    pub(super) full: CarrierSnapshot,
    /// What a read without PIN shows ([`public_view`]): what content checks compare.
    public: CarrierSnapshot,
    /// Set when the last read did not finish; the carrier is kept, not removed.
    unreadable: Option<String>,
}

/// The part of a snapshot a read without PIN sees, made comparable: no private keys, no
/// login outcome, no slot, pairing recomputed from public keys only.
fn public_view(s: &CarrierSnapshot) -> CarrierSnapshot {
    let mut p = s.clone();
    p.private_keys = None;
    p.login = Login::NotAttempted;
    p.slot = 0;
    p.pair_keys();
    p
}

/// What polling one module found when something may have changed.
pub(super) struct Found {
    /// The module's slots after this poll (not yet committed).
    pub(super) slots: BTreeMap<u64, SlotState>,
    /// The read to record, when the journal must be told.
    pub(super) scan: Option<ModuleScan>,
    /// Time spent on content checks.
    pub(super) check_cost: Duration,
}

/// What a module's slot list showed in this poll, before any token is read: every module
/// is listed before any is read, so that PIN rules are decided over all of them (see
/// [`crate::pin::Pins::set_present`]).
pub(super) struct Presence {
    /// The slot ids with a token, sorted.
    ids: Vec<u64>,
    /// The ids are the ones last recorded.
    same_slots: bool,
    /// Slots whose token is not the one last read there (after a re-initialisation).
    retoken: BTreeSet<u64>,
    /// Every present carrier's contents are checked.
    check: bool,
}

/// Lists one module's slots: re-initialises it first when `reinit`. `Ok(None)`: nothing may
/// have changed (the common, allocation-free path), or the module is not loaded. `Err`: the
/// module is unavailable, for that reason.
pub(super) fn list_module(
    watched: &mut Watched,
    reinit: bool,
    check: bool,
    mp: &mut ModulePoll,
) -> Result<Option<Presence>, CallError> {
    let start = Instant::now();
    if reinit {
        let Some(module) = watched.module.as_mut() else {
            return Ok(None);
        };
        module.reinitialize().map_err(|e| CallError::of(&e))?;
        mp.reinitialised = true;
        mp.reinit_cost = start.elapsed();
        if !watched.needs_reinit() {
            // C_Finalize ended the wait of a module with slot events: wait again.
            watched.wait_for_slot_events();
        }
    }
    let Some(module) = watched.module.as_ref() else {
        return Ok(None);
    };
    let mut ids = module.slots().map_err(|e| CallError::of(&e))?;
    if ids.is_empty() {
        if let Some(reason) = unavailable_if_empty(0, module.trouble()) {
            return Err(reason);
        }
    }
    mp.presence_cost = start.elapsed();
    tracing::trace!(module = %watched.path_text, reinit, slots = ids.len(), "polled");
    ids.sort_unstable();
    let same_slots = ids.len() == watched.slots.len()
        && ids.iter().zip(watched.slots.keys()).all(|(a, b)| a == b);
    // After a re-initialisation the same slot ids may hold other tokens (kryoptic initialises
    // new tokens in existing slots, and gives a re-initialised one a new serial): one
    // C_GetTokenInfo per slot tells which slots to read again, after every re-initialisation
    // (a content check reads them all anyway). Not spaced out: on kryoptic and p11-kit a
    // removed token leaves its slot id listed, so this check is what sees a removal within
    // one interval.
    let retoken: BTreeSet<u64> = if mp.reinitialised && !check {
        let module: &Module = module;
        ids.iter()
            .copied()
            .filter(|id| {
                watched
                    .slots
                    .get(id)
                    .is_some_and(|old| token_changed(module, *id, old))
            })
            .collect()
    } else {
        BTreeSet::new()
    };
    if same_slots && !check && retoken.is_empty() {
        return Ok(None);
    }
    Ok(Some(Presence {
        ids,
        same_slots,
        retoken,
        check,
    }))
}

/// Reads what [`list_module`] found may have changed: new slots in full (with PINs), and
/// with a content check every present carrier without PIN first.
pub(super) fn read_module(
    watched: &Watched,
    listed: Presence,
    pins: &ServicePins,
) -> Option<Found> {
    let module = watched.module.as_ref()?;
    let Presence {
        ids,
        same_slots,
        retoken,
        check,
    } = listed;
    let check_start = Instant::now();
    let mut next = BTreeMap::new();
    let mut changed = !same_slots;
    for id in ids {
        let state = match watched.slots.get(&id) {
            None => read_new(module, id, pins, None),
            Some(old) if check || retoken.contains(&id) => {
                let new = recheck(module, id, old, pins);
                changed |= new != *old;
                new
            }
            Some(old) => old.clone(),
        };
        next.insert(id, state);
    }
    let check_cost = if check {
        check_start.elapsed()
    } else {
        Duration::ZERO
    };
    let scan = (watched.fresh || changed).then(|| to_scan(module.info().clone(), &next));
    Some(Found {
        slots: next,
        scan,
        check_cost,
    })
}

/// True when the token in `slot` is not the one last read there, as far as C_GetTokenInfo
/// tells: initialised or not, identity, label, flags. A slot that could not be read counts as
/// changed (read it again).
fn token_changed(module: &Module, slot: u64, old: &SlotState) -> bool {
    let known = match old {
        SlotState::Uninitialised => None,
        SlotState::Carrier(known) => Some(&known.full),
        SlotState::Unreadable(_) => return true,
    };
    match module.token_is(slot, known) {
        Ok(same) => !same,
        Err(e) => {
            tracing::debug!(slot, cause = %e, "token information could not be read");
            true
        }
    }
}

/// The read of a module's slots as the journal takes it.
pub(super) fn to_scan(module: ModuleInfo, slots: &BTreeMap<u64, SlotState>) -> ModuleScan {
    let mut carriers = Vec::new();
    let mut problems = Vec::new();
    for (slot, s) in slots {
        match s {
            SlotState::Carrier(k) => match &k.unreadable {
                None => {
                    let mut full = k.full.clone();
                    full.slot = *slot;
                    carriers.push(full);
                }
                Some(message) => problems.push(SlotProblem {
                    slot: *slot,
                    carrier: Some(k.full.id.key()),
                    message: message.clone(),
                }),
            },
            SlotState::Unreadable(p) => problems.push(SlotProblem {
                slot: *slot,
                ..p.clone()
            }),
            SlotState::Uninitialised => {}
        }
    }
    ModuleScan::read(module, carriers, problems, slots.len(), None)
}

/// Reads a slot seen for the first time (or again after a change), with PINs; `known`: what
/// it held before (its parsed certificates are reused).
pub(super) fn read_new(
    module: &Module,
    slot: u64,
    pins: &ServicePins,
    known: Option<&CarrierSnapshot>,
) -> SlotState {
    let read = match known {
        Some(k) => module.read_slot_again(slot, pins, k),
        None => module.read_slot_id(slot, pins),
    };
    match read {
        SlotRead::Carrier(full) => SlotState::Carrier(Box::new(Known {
            public: public_view(&full),
            full: *full,
            unreadable: None,
        })),
        SlotRead::Uninitialised => SlotState::Uninitialised,
        SlotRead::Partial(p) => SlotState::Unreadable(p),
    }
}

/// Content check of a known slot: a read without PIN, compared with the last one; a full
/// read only when it differs (or a PIN source changed since it was rejected).
pub(super) fn recheck(
    module: &Module,
    slot: u64,
    old: &SlotState,
    pins: &ServicePins,
) -> SlotState {
    match old {
        SlotState::Uninitialised => match module.read_slot_id(slot, &NoPins) {
            SlotRead::Uninitialised => SlotState::Uninitialised,
            SlotRead::Carrier(_) => read_new(module, slot, pins, None),
            SlotRead::Partial(p) => SlotState::Unreadable(p),
        },
        SlotState::Unreadable(_) => read_new(module, slot, pins, None),
        SlotState::Carrier(known) => match module.read_slot_again(slot, &NoPins, &known.full) {
            SlotRead::Carrier(public) => {
                if known.unreadable.is_none()
                    && public_view(&public) == known.public
                    && !pins.retry_due(&known.full.id)
                {
                    old.clone()
                } else {
                    match read_new(module, slot, pins, Some(&known.full)) {
                        SlotState::Unreadable(p) => keep_unreadable(known, p.message),
                        other => other,
                    }
                }
            }
            SlotRead::Uninitialised => SlotState::Uninitialised,
            SlotRead::Partial(p) => {
                tracing::debug!(slot, cause = %p.message, "carrier could not be read; kept as present");
                keep_unreadable(known, p.message)
            }
        },
    }
}

fn keep_unreadable(known: &Known, error: String) -> SlotState {
    let mut k = known.clone();
    k.unreadable = Some(error);
    SlotState::Carrier(Box::new(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_core::id::CarrierId;
    use custody_core::inventory::TokenFlags;

    fn snap(serial: &str, label: &str) -> CarrierSnapshot {
        CarrierSnapshot {
            id: CarrierId {
                manufacturer: "M".into(),
                model: "X".into(),
                serial: serial.into(),
                discriminator: None,
            },
            label: label.into(),
            strings_lossy: false,
            serial_weak: false,
            flags: TokenFlags::default(),
            hardware_version: "1.0".into(),
            firmware_version: "1.0".into(),
            module: "/m.so".into(),
            slot: 0,
            certificates: Vec::new(),
            public_keys: Vec::new(),
            private_keys: Some(Vec::new()),
            login: Login::LoggedIn,
        }
    }

    fn carrier(s: CarrierSnapshot) -> SlotState {
        SlotState::Carrier(Box::new(Known {
            public: public_view(&s),
            full: s,
            unreadable: None,
        }))
    }

    #[test]
    fn a_carrier_that_could_not_be_read_is_a_problem_naming_it_not_an_absence() {
        let mut b = Known {
            public: public_view(&snap("b", "B")),
            full: snap("b", "B"),
            unreadable: None,
        };
        b.unreadable = Some("C_FindObjects returned CKR_DEVICE_REMOVED".into());
        let slots = BTreeMap::from([
            (1, carrier(snap("a", "A"))),
            (2, SlotState::Carrier(Box::new(b))),
            (3, SlotState::Uninitialised),
        ]);
        let scan = to_scan(ModuleInfo::unknown("/m.so"), &slots);
        assert_eq!(scan.carriers.len(), 1);
        assert_eq!(scan.slot_problems.len(), 1);
        assert_eq!(scan.slot_problems[0].carrier.as_deref(), Some("M/X/b"));
        assert!(!scan.is_complete());
    }

    #[test]
    fn public_view_ignores_private_keys_login_and_slot() {
        let mut full = snap("a", "A");
        full.slot = 9;
        let mut public = snap("a", "A");
        public.private_keys = None;
        public.login = Login::NotAttempted;
        assert_eq!(public_view(&full), public_view(&public));
        public.label = "B".into();
        assert_ne!(public_view(&full), public_view(&public));
    }

    #[test]
    fn backoff_doubles_from_one_second_to_sixty() {
        let now = Instant::now();
        let reason = CallError {
            call: "C_GetSlotList".into(),
            rv: "CKR_DEVICE_ERROR".into(),
        };
        let mut o = Outage::start(reason.clone(), now);
        let mut waits = vec![o.backoff.as_secs()];
        for _ in 0..8 {
            o.again(reason.clone(), now);
            waits.push(o.backoff.as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(o.next_try, now + BACKOFF_MAX);
    }
}
