//! Process-wide state: the plan in force (re-read when its file changes), call counters,
//! sessions and the slots they belong to, real serials by slot, the token presence last
//! reported by slot events, and serials changed by C_InitToken. Safe code only.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use cryptoki_sys::{CKR_DEVICE_REMOVED, CKR_SESSION_HANDLE_INVALID};

use crate::log::{self, Origin};
use crate::plan::{Action, Plan};
use crate::real;

/// Process-wide call index of the last call (C_WaitForSlotEvent excepted).
static INDEX: AtomicU64 = AtomicU64::new(0);
/// Index of the last C_WaitForSlotEvent call.
static WAIT_INDEX: AtomicU64 = AtomicU64::new(0);
/// Bumped by every C_Initialize and C_Finalize, so a blocked wait sees either.
static EPOCH: AtomicU64 = AtomicU64::new(0);

static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| Mutex::new(State::new()));

fn lock() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the plan comes from.
enum Source {
    None,
    Inline(String),
    File(PathBuf),
}

#[derive(Clone, Copy)]
struct Session {
    slot: u64,
    /// Its token was hidden at some point: the session is gone for good, as on a real card.
    gone: bool,
}

struct State {
    source: Source,
    plan: Arc<Plan>,
    /// The plan file's identity when last read (length, mtime, inode).
    stamp: Option<(u64, Option<SystemTime>, u64)>,
    /// Bumped whenever a new plan takes effect.
    generation: u64,
    per_function: HashMap<&'static str, u64>,
    sessions: HashMap<u64, Session>,
    serials: HashMap<u64, String>,
    /// Token presence per slot as the application last learnt it from slot events.
    reported: Option<BTreeMap<u64, bool>>,
    /// Plan generation when the presence was last compared without finding a change.
    settled: Option<u64>,
    /// C_InitToken count per real serial (with `reinit_changes_serial`).
    reinit: BTreeMap<String, u64>,
    initialized: bool,
    /// The last problem with the plan, reported once.
    problem: Option<String>,
    /// The inline plan has been parsed.
    inline_read: bool,
}

impl State {
    fn new() -> Self {
        let source = if let Some(text) = std::env::var("CUSTODY_FAULT_PLAN")
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            Source::Inline(text)
        } else if let Some(path) =
            std::env::var_os("CUSTODY_FAULT_PLAN_FILE").filter(|p| !p.is_empty())
        {
            Source::File(path.into())
        } else {
            Source::None
        };
        Self {
            source,
            plan: Arc::new(Plan::default()),
            stamp: None,
            generation: 0,
            per_function: HashMap::new(),
            sessions: HashMap::new(),
            serials: HashMap::new(),
            reported: None,
            settled: None,
            reinit: BTreeMap::new(),
            initialized: false,
            problem: None,
            inline_read: false,
        }
    }

    /// Loads the plan if it is new or its file changed. A plan that does not parse is
    /// reported and the previous one stays (the empty plan at first).
    fn refresh(&mut self) -> Result<(), String> {
        let text = match &self.source {
            Source::None => return Ok(()),
            Source::Inline(text) => {
                if self.inline_read {
                    // An inline plan never changes: parsed once, its verdict stands.
                    return self.problem.clone().map_or(Ok(()), Err);
                }
                self.inline_read = true;
                text.clone()
            }
            Source::File(path) => {
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("cannot read the plan file {}: {e}", path.display()))?;
                let stamp = Some((
                    meta.len(),
                    meta.modified().ok(),
                    std::os::unix::fs::MetadataExt::ino(&meta),
                ));
                if stamp == self.stamp {
                    // Unchanged since it was read: its verdict stands.
                    return self.problem.clone().map_or(Ok(()), Err);
                }
                self.stamp = stamp;
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the plan file {}: {e}", path.display()))?
            }
        };
        let plan = Plan::parse(&text).map_err(|e| format!("bad fault plan: {e}"))?;
        self.plan = Arc::new(plan);
        self.generation += 1;
        self.settled = None;
        // A token hidden now takes its sessions with it, even if it is shown again before the
        // application's next call on them.
        let slots: Vec<u64> = self.sessions.values().map(|s| s.slot).collect();
        for slot in slots {
            if self.slot_hidden(slot) {
                for session in self.sessions.values_mut().filter(|s| s.slot == slot) {
                    session.gone = true;
                }
            }
        }
        Ok(())
    }

    fn refresh_or_report(&mut self) {
        match self.refresh() {
            Ok(()) => self.problem = None,
            Err(message) => {
                // Reported once, not on every call.
                if self.problem.as_deref() != Some(message.as_str()) {
                    log::plan_problem(&message);
                    self.problem = Some(message);
                }
            }
        }
    }

    fn serial(&mut self, slot: u64) -> Option<String> {
        if let Some(serial) = self.serials.get(&slot) {
            return Some(serial.clone());
        }
        let serial = real::token_serial(slot)?;
        self.serials.insert(slot, serial.clone());
        Some(serial)
    }

    fn slot_hidden(&mut self, slot: u64) -> bool {
        if !self.plan.hides() {
            return false;
        }
        let plan = Arc::clone(&self.plan);
        self.serial(slot).is_some_and(|s| plan.is_hidden(&s))
    }

    /// Token presence per slot as the application should now see it.
    fn presence(&mut self) -> BTreeMap<u64, bool> {
        let slots = real::slot_list(true).unwrap_or_default();
        slots
            .into_iter()
            .map(|slot| (slot, !self.slot_hidden(slot)))
            .collect()
    }
}

/// One call of the application, from entry to the logged answer.
pub(crate) struct Call {
    function: &'static str,
    index: String,
    /// The plan in force when the call began.
    pub(crate) plan: Arc<Plan>,
    action: Option<Action>,
}

impl Call {
    /// Counts a call of `function` and decides whether the plan makes it fail.
    pub(crate) fn begin(function: &'static str) -> Self {
        let index = INDEX.fetch_add(1, Ordering::SeqCst) + 1;
        Self::start(function, index, index.to_string())
    }

    /// Like [`Call::begin`] for C_WaitForSlotEvent, which has its own counter: applications
    /// call it from another thread, and it must not shift the indexes of the other calls.
    pub(crate) fn begin_wait() -> Self {
        let n = WAIT_INDEX.fetch_add(1, Ordering::SeqCst) + 1;
        Self::start("C_WaitForSlotEvent", 0, format!("w{n}"))
    }

    fn start(function: &'static str, index: u64, shown: String) -> Self {
        let mut state = lock();
        state.refresh_or_report();
        let nth = state.per_function.entry(function).or_insert(0);
        *nth += 1;
        let nth = *nth;
        let action = state.plan.fault(function, index, nth);
        Self {
            function,
            index: shown,
            plan: Arc::clone(&state.plan),
            action,
        }
    }

    /// What the plan does to this call, if anything.
    pub(crate) fn action(&self) -> Option<Action> {
        self.action
    }

    /// The return value the plan imposes (a `Fail` fault).
    pub(crate) fn injected(&self) -> Option<u64> {
        match self.action {
            Some(Action::Fail(rv)) => Some(rv),
            _ => None,
        }
    }

    /// Logs the answer and returns it.
    pub(crate) fn finish(self, rv: u64) -> u64 {
        let origin = if self.action.is_some() {
            Origin::Fault
        } else {
            Origin::Real
        };
        log::record(&self.index, self.function, rv, origin);
        rv
    }

    /// Logs a refusal because the token is hidden, and returns it.
    pub(crate) fn hidden(self, rv: u64) -> u64 {
        log::record(&self.index, self.function, rv, Origin::Hidden);
        rv
    }
}

/// Whether the token in `slot` is hidden by the plan.
pub(crate) fn slot_hidden(slot: u64) -> bool {
    lock().slot_hidden(slot)
}

/// The answer for a call on `session` when its token is hidden or was: CKR_DEVICE_REMOVED
/// while hidden, CKR_SESSION_HANDLE_INVALID after it is shown again.
pub(crate) fn session_refusal(session: u64) -> Option<u64> {
    let mut state = lock();
    let known = *state.sessions.get(&session)?;
    if state.slot_hidden(known.slot) {
        if let Some(s) = state.sessions.get_mut(&session) {
            s.gone = true;
        }
        return Some(CKR_DEVICE_REMOVED);
    }
    known.gone.then_some(CKR_SESSION_HANDLE_INVALID)
}

/// The real serial of the token of `session`, if known.
pub(crate) fn session_serial(session: u64) -> Option<String> {
    let mut state = lock();
    let slot = state.sessions.get(&session)?.slot;
    state.serial(slot)
}

/// Records a session the real module opened.
pub(crate) fn session_opened(session: u64, slot: u64) {
    lock()
        .sessions
        .insert(session, Session { slot, gone: false });
}

/// Forgets a closed session.
pub(crate) fn session_closed(session: u64) {
    lock().sessions.remove(&session);
}

/// Forgets every session of `slot`.
pub(crate) fn slot_sessions_closed(slot: u64) {
    lock().sessions.retain(|_, s| s.slot != slot);
}

/// After a successful C_Initialize: fresh caches, the serial changes of earlier processes,
/// and the presence the application starts from.
pub(crate) fn initialized() {
    EPOCH.fetch_add(1, Ordering::SeqCst);
    let mut state = lock();
    state.sessions.clear();
    state.serials.clear();
    state.initialized = true;
    state.reinit = reinit_file().map(|p| read_reinit(&p)).unwrap_or_default();
    let presence = state.presence();
    state.reported = Some(presence);
    state.settled = None;
}

/// After C_Finalize: nothing is open, waits end.
pub(crate) fn finalized() {
    EPOCH.fetch_add(1, Ordering::SeqCst);
    let mut state = lock();
    state.sessions.clear();
    state.serials.clear();
    state.reported = None;
    state.initialized = false;
}

/// Changes with every C_Initialize and C_Finalize.
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

/// What is wrong with the plan, if anything (C_Initialize fails then, so a test with a plan
/// that does not parse cannot pass by running without it).
pub(crate) fn plan_problem() -> Option<String> {
    let mut state = lock();
    state.refresh_or_report();
    state.problem.clone()
}

/// Whether the module is initialised.
pub(crate) fn is_initialized() -> bool {
    lock().initialized
}

/// The slot list the application sees: the real one without hidden tokens' slots when only
/// slots with a token are asked for.
pub(crate) fn slot_list(with_token: bool) -> Result<Vec<u64>, u64> {
    let slots = real::slot_list(with_token)?;
    if !with_token {
        return Ok(slots);
    }
    let mut state = lock();
    Ok(slots
        .into_iter()
        .filter(|slot| !state.slot_hidden(*slot))
        .collect())
}

/// The serial the application sees for a token whose real serial is `real_serial`, when the
/// plan changed it by C_InitToken.
pub(crate) fn reinit_serial(real_serial: &str) -> Option<String> {
    let state = lock();
    if !state.plan.reinit_changes_serial {
        return None;
    }
    let n = *state.reinit.get(real_serial)?;
    let keep = real_serial.len().saturating_sub(4);
    Some(format!("{}{:04x}", real_serial.get(..keep)?, n % 0x1_0000))
}

/// Remembers the real serial of `slot` read from its token information.
pub(crate) fn learn_serial(slot: u64, real_serial: &str) {
    lock().serials.insert(slot, real_serial.to_owned());
}

/// After a successful C_InitToken on `slot`: with `reinit_changes_serial`, the token gets a
/// new serial, kept in the `CUSTODY_FAULT_STATE` file for later processes.
pub(crate) fn token_initialised(slot: u64) {
    let mut state = lock();
    state.serials.remove(&slot);
    if !state.plan.reinit_changes_serial {
        return;
    }
    let Some(serial) = state.serial(slot) else {
        return;
    };
    let file = reinit_file();
    if let Some(path) = &file {
        state.reinit = read_reinit(path);
    }
    *state.reinit.entry(serial).or_insert(0) += 1;
    if let Some(path) = file {
        let text = serde_json::to_string(&state.reinit).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            log::plan_problem(&format!("cannot write {}: {e}", path.display()));
        }
    }
}

fn reinit_file() -> Option<PathBuf> {
    std::env::var_os("CUSTODY_FAULT_STATE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

fn read_reinit(path: &std::path::Path) -> BTreeMap<String, u64> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The next slot whose token presence differs from what the application was last told, and
/// records that it has now been told. `None` when nothing changed.
pub(crate) fn next_slot_event() -> Option<u64> {
    let mut state = lock();
    state.refresh_or_report();
    if !state.initialized || state.settled == Some(state.generation) {
        return None;
    }
    let now = state.presence();
    let reported = state.reported.get_or_insert_with(BTreeMap::new);
    let changed = now
        .iter()
        .find(|(slot, present)| reported.get(slot) != Some(present))
        .map(|(slot, present)| (*slot, *present))
        .or_else(|| {
            // A slot that disappeared from the list altogether.
            reported
                .iter()
                .find(|(slot, present)| **present && !now.contains_key(slot))
                .map(|(slot, _)| (*slot, false))
        });
    match changed {
        Some((slot, present)) => {
            reported.insert(slot, present);
            Some(slot)
        }
        None => {
            state.settled = Some(state.generation);
            None
        }
    }
}
