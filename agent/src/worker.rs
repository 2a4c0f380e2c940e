//! The worker: one OS thread owns the PKCS#11 modules, their sessions and the journal.
//!
//! cryptoki's `Session` is not `Sync`, and a blocking PKCS#11 call cannot be cancelled, so
//! the service's async side never touches a module. The worker thread runs the polls itself:
//! it waits for the next deadline of its [`Watch`] in a blocking channel receive with a
//! timeout (one wake-up per poll), polls, updates the state record and runs the service's
//! [`Task`]s. The async side talks to it only through [`WorkerHandle`]: [`Request::Call`]
//! with a oneshot reply, and [`Request::Stop`]. Keeping the timer on this thread matters:
//! waking the async thread for every poll and back, or tokio's timer wheel (which wakes two
//! or three times for a 2 s deadline), cost more than the module's own poll of one SoftHSM2
//! token (measured, see the README's benchmark section). The thread ends at
//! [`Request::Stop`], or when every handle is dropped, after the poll in hand (and its journal
//! transaction) is finished.
//!
//! A poll is cheap when nothing changed: per module an optional
//! re-initialisation and `C_GetSlotList`, compared with the slots seen last time. New slots
//! are read in full; when the plan asks for a content check, every present carrier is read
//! without PIN and compared with what was read before. Only when something changed is the
//! journal written: one [`Journal::record_scan`] transaction for everything found in the poll.
//! The in-memory view is replaced only after that transaction commits, so a failed write is
//! detected again and retried at the next poll.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use custody_core::inventory::{CarrierSnapshot, Login};
use custody_core::journal::timestamp;
use custody_core::journal::{Actor, Journal, RecordedEvent};
use custody_core::token::{Module, ModuleScan, NoPins, PinSource, SlotProblem};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::config::{Config, Reinit};
use crate::pin::Pins as ServicePins;
use crate::service::{Task, TaskContext};
use crate::shutdown::Completion;
use crate::state::{ModuleState, ServiceState, StateFile};
use crate::watch::{PollPlan, Schedule, TokenEvent, Watch};

/// What the worker needs to start.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The journal file (created when missing).
    pub journal: PathBuf,
    /// The modules to watch, in order, with their re-initialisation policy.
    pub modules: Vec<(PathBuf, Reinit)>,
    /// The configuration (PIN sources).
    pub config: Config,
    /// Who the service's events are recorded as.
    pub actor: Actor,
    /// Poll interval.
    pub interval: Duration,
    /// Fixed time between content checks (`None`: from the measured cost).
    pub check_interval: Option<Duration>,
    /// The state record `custody status` reads.
    pub state_path: PathBuf,
}

/// A request to the worker thread.
pub enum Request {
    /// Run a function on the worker thread, with the modules and the journal; see
    /// [`WorkerHandle::call`].
    Call(Box<dyn FnOnce(&mut WorkerState) + Send>),
    /// A module reported a slot event (C_WaitForSlotEvent): poll now.
    Wake,
    /// Finish the poll in hand and stop.
    Stop,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Call(_) => f.write_str("Call"),
            Self::Wake => f.write_str("Wake"),
            Self::Stop => f.write_str("Stop"),
        }
    }
}

/// Sends requests to the worker thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    tx: mpsc::Sender<Request>,
}

impl WorkerHandle {
    /// Asks the worker to stop after the poll in hand (and its journal transaction).
    pub fn stop(&self) {
        // A worker that has stopped already needs no telling.
        let _ = self.tx.send(Request::Stop);
    }

    /// Runs `f` on the worker thread and returns its result. Call
    /// [`WorkerState::carriers_changed`] from `f` after changing a carrier (a wipe), so the
    /// next poll reads every carrier again.
    pub async fn call<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WorkerState) -> T + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(move |state: &mut WorkerState| {
            let _ = reply.send(f(state));
        });
        self.tx
            .send(Request::Call(job))
            .map_err(|_| anyhow::anyhow!("the worker thread has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the worker thread stopped during a call"))
    }
}

/// What one poll found, did and cost.
#[derive(Debug, Clone, Default)]
pub struct PollReport {
    /// One entry per module, in configuration order.
    pub modules: Vec<ModulePoll>,
    /// Carriers inserted, removed or changed.
    pub events: Vec<TokenEvent>,
    /// Journal events appended by this poll.
    pub recorded: Vec<RecordedEvent>,
    /// Why recording failed (it is retried at the next poll).
    pub record_error: Option<String>,
    /// True when this poll checked the contents of every present carrier.
    pub checked_contents: bool,
    /// Time spent checking contents (zero when not checked).
    pub check_cost: Duration,
    /// The carriers present now, when that changed in this poll (or on the first poll).
    pub present: Option<Vec<PresentCarrier>>,
}

/// One module in one poll.
#[derive(Debug, Clone, Default)]
pub struct ModulePoll {
    /// Module path as configured.
    pub path: String,
    /// Loaded and initialised.
    pub loaded: bool,
    /// The module must be re-initialised to see new tokens (policy `always`, or `auto` for a
    /// module known to need it).
    pub needs_reinit: bool,
    /// It was re-initialised in this poll.
    pub reinitialised: bool,
    /// Time the re-initialisation took (zero when not done).
    pub reinit_cost: Duration,
    /// Time of re-initialisation plus slot list: the module's own polling cost.
    pub presence_cost: Duration,
    /// What went wrong in this poll, if anything.
    pub error: Option<String>,
}

/// A carrier present now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresentCarrier {
    /// Carrier key.
    pub carrier: String,
    /// Token label.
    pub label: String,
    /// Module path.
    pub module: String,
    /// Slot id.
    pub slot: u64,
}

/// What a [`Request::Call`] function gets: the worker's modules and journal.
pub struct WorkerState {
    journal: Journal,
    modules: Vec<Watched>,
    pins: ServicePins,
    actor: Actor,
    force_check: bool,
}

impl std::fmt::Debug for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerState")
            .field("journal", &self.journal)
            .field("modules", &self.modules.len())
            .finish_non_exhaustive()
    }
}

impl WorkerState {
    /// The journal.
    pub fn journal(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// The loaded modules.
    pub fn modules(&self) -> impl Iterator<Item = &Module> {
        self.modules.iter().filter_map(|m| m.module.as_ref())
    }

    /// The service's PIN sources (with the memory of rejected PINs).
    pub fn pins(&self) -> &dyn PinSource {
        &self.pins
    }

    /// Who the service records events as.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Asks the next poll to read every present carrier again (after changing one).
    pub fn carriers_changed(&mut self) {
        self.force_check = true;
    }

    /// Runs `f` with the journal, the loaded modules as one slice (what the order spool and
    /// wipes take), the PIN sources and the actor.
    pub fn with_modules<T>(
        &mut self,
        f: impl FnOnce(&mut Journal, &mut [Module], &dyn PinSource, &Actor) -> T,
    ) -> T {
        let (slots, mut modules): (Vec<usize>, Vec<Module>) = self
            .modules
            .iter_mut()
            .enumerate()
            .filter_map(|(i, w)| w.module.take().map(|m| (i, m)))
            .unzip();
        let result = f(&mut self.journal, &mut modules, &self.pins, &self.actor);
        for (i, m) in slots.into_iter().zip(modules) {
            self.modules[i].module = Some(m);
        }
        result
    }
}

/// One module the worker watches.
struct Watched {
    path: PathBuf,
    /// `path` as text, for reports (formatted once).
    path_text: String,
    policy: Reinit,
    module: Option<Module>,
    /// Slot id -> what is in it, as recorded in the journal.
    slots: BTreeMap<u64, SlotState>,
    /// The slots must be read and recorded in full (first poll after loading, or a failed
    /// journal write).
    fresh: bool,
    /// The last poll of this module failed: re-initialise it at the next one.
    failed: bool,
    /// Why the module is not loaded.
    load_error: Option<String>,
    /// Where a slot-event thread sends [`Request::Wake`].
    waker: mpsc::Sender<Request>,
    /// What the module's C_WaitForSlotEvent has shown (kept across re-initialisations).
    slot_events: SharedSupport,
}

impl Watched {
    /// Starts a thread that blocks in C_WaitForSlotEvent and wakes the worker on every slot
    /// event, so an insertion is seen at once rather than at the next poll; the poll stays as
    /// the fallback. Not under policy `always` (its C_Finalize would end every wait). The
    /// thread ends when the module answers with an error: `not supported` tells that the
    /// module has no slot events (and, on every module measured, a frozen slot list), so under
    /// policy `auto` it is re-initialised from then on to see new tokens; any other error (the
    /// module was finalised) just ends the thread.
    fn wait_for_slot_events(&self) {
        if self.policy == Reinit::Always || self.slot_events.get() == SlotEventSupport::Refused {
            return;
        }
        let Some(events) = self.module.as_ref().and_then(Module::slot_events) else {
            return;
        };
        let waker = self.waker.clone();
        let module = self.path_text.clone();
        let support = self.slot_events.clone();
        let policy = self.policy;
        let spawned = std::thread::Builder::new()
            .name("custody-slot-events".into())
            .spawn(move || loop {
                match events.wait() {
                    Ok(slot) => {
                        support.set(SlotEventSupport::Live);
                        tracing::debug!(%module, slot, "slot event");
                        if waker.send(Request::Wake).is_err() {
                            return;
                        }
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
            });
        if let Err(e) = spawned {
            tracing::warn!(cause = %e, "no slot-event thread; polling only");
        }
    }

    /// Whether polls re-initialise the module: policy `always`; or policy `auto` and the
    /// module has shown that it has no slot events.
    fn needs_reinit(&self) -> bool {
        match self.policy {
            Reinit::Always => true,
            Reinit::Never => false,
            Reinit::Auto => {
                self.module.is_some() && self.slot_events.get() == SlotEventSupport::Refused
            }
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

/// [`SlotEventSupport`] behind an atomic, cheap to clone.
#[derive(Debug, Clone, Default)]
struct SharedSupport(std::sync::Arc<std::sync::atomic::AtomicU8>);

impl SharedSupport {
    fn get(&self) -> SlotEventSupport {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            1 => SlotEventSupport::Live,
            2 => SlotEventSupport::Refused,
            _ => SlotEventSupport::Unknown,
        }
    }

    fn set(&self, support: SlotEventSupport) {
        self.0
            .store(support as u8, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a slot holds.
#[derive(Debug, Clone)]
enum SlotState {
    /// A token that is not initialised (SoftHSM's spare slot).
    Uninitialised,
    /// A token that could not be read and was never read before.
    Unreadable(String),
    /// A carrier.
    Carrier(Box<Known>),
}

/// A carrier as last read.
#[derive(Debug, Clone)]
struct Known {
    /// The full read (with private keys when a PIN was accepted): what is recorded.
    full: CarrierSnapshot,
    /// What a read without PIN shows ([`public_view`]): what content checks compare.
    public: CarrierSnapshot,
    /// Set when the last read failed; the carrier is kept, not reported removed.
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

/// A snapshot without its slot and login outcome, for comparing reads (the login outcome
/// is not journaled; what it let the read see is).
fn comparable(s: &CarrierSnapshot) -> CarrierSnapshot {
    let mut s = s.clone();
    s.slot = 0;
    s.login = Login::NotAttempted;
    s
}

/// Starts the worker thread: opens the journal and loads the modules there, then polls
/// every interval until [`WorkerHandle::stop`]. Returns once it is ready, or the error that
/// stopped it (a journal that cannot be opened), and a receiver for the thread's final
/// result. `done` is dropped when the thread ends.
pub async fn start(
    cfg: WorkerConfig,
    tasks: Vec<Box<dyn Task>>,
    done: Completion,
) -> anyhow::Result<(WorkerHandle, oneshot::Receiver<anyhow::Result<()>>)> {
    let (tx, rx) = mpsc::channel::<Request>();
    let waker = tx.clone();
    let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<()>>();
    let (exit_tx, exit_rx) = oneshot::channel::<anyhow::Result<()>>();
    std::thread::Builder::new()
        .name("custody-worker".into())
        .spawn(move || {
            let _done = done;
            let timing = (cfg.interval, cfg.check_interval);
            let state_path = cfg.state_path.clone();
            let state = match WorkerState::open(cfg, waker) {
                Ok(state) => {
                    let _ = ready_tx.send(Ok(()));
                    state
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = exit_tx.send(serve(state, &rx, tasks, timing, state_path));
        })
        .context("starting the worker thread")?;
    ready_rx
        .await
        .map_err(|_| anyhow::anyhow!("the worker thread stopped while starting"))??;
    Ok((WorkerHandle { tx }, exit_rx))
}

/// The worker thread's loop: polls every interval (or at once on a [`Request::Wake`]) and
/// serves calls until [`Request::Stop`]; then records `last_seen` of the carriers
/// present, marks the state record stopped, and releases the modules (C_Finalize) and the
/// journal.
fn serve(
    mut state: WorkerState,
    rx: &mpsc::Receiver<Request>,
    mut tasks: Vec<Box<dyn Task>>,
    (interval, check_interval): (Duration, Option<Duration>),
    state_path: PathBuf,
) -> anyhow::Result<()> {
    let mut record = ServiceState {
        pid: std::process::id(),
        started_at: timestamp(OffsetDateTime::now_utc()),
        stopped_at: None,
        journal: state.journal.path().display().to_string(),
        interval_ms: interval.as_millis() as u64,
        check_period_ms: 0,
        modules: Vec::new(),
        present: Vec::new(),
    };
    let mut file = StateFile::new(state_path);
    let mut watch = Watch::new(tokio::time::Instant::now(), interval, state.modules.len())
        .with_check_interval(check_interval);
    loop {
        let now = tokio::time::Instant::now();
        for (i, m) in state.modules.iter().enumerate() {
            watch.set_needs_reinit(i, m.needs_reinit());
        }
        if let Some(plan) = watch.due(now) {
            let report = state.poll(&plan);
            watch.observe(tokio::time::Instant::now(), &plan, &report);
            log_report(&report);
            update_record(&mut record, &report, watch.schedule());
            if let Err(e) = file.poll(&record) {
                tracing::warn!(cause = %format!("{e:#}"), "service state not updated");
            }
            for task in &mut tasks {
                let mut cx = TaskContext {
                    state: &mut state,
                    poll: &report,
                    present: &record.present,
                };
                if let Err(e) = task.run(&mut cx) {
                    tracing::error!(task = task.name(), cause = %format!("{e:#}"), "task failed");
                }
            }
            continue;
        }
        match rx.recv_timeout(watch.deadline() - now) {
            Ok(Request::Call(f)) => f(&mut state),
            Ok(Request::Wake) => watch.wake(tokio::time::Instant::now()),
            Ok(Request::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let finished = state.finish();
    record.stopped_at = Some(timestamp(OffsetDateTime::now_utc()));
    if let Err(e) = file.write(&record) {
        tracing::warn!(cause = %format!("{e:#}"), "service state not updated");
    }
    finished
}

fn log_report(report: &PollReport) {
    for event in &report.events {
        match event {
            TokenEvent::Inserted {
                carrier,
                module,
                slot,
            } => {
                tracing::info!(%carrier, %module, slot, "carrier inserted");
            }
            TokenEvent::Removed {
                carrier,
                module,
                slot,
            } => {
                tracing::info!(%carrier, %module, slot, "carrier removed");
            }
            TokenEvent::Changed {
                carrier,
                module,
                slot,
            } => {
                tracing::info!(%carrier, %module, slot, "carrier changed");
            }
        }
    }
    // Carrier-level events at info, object-level ones (one per certificate or key) at debug.
    for e in &report.recorded {
        if e.kind.is_carrier() {
            tracing::info!(seq = e.seq, kind = %e.kind, carrier = %e.carrier, "recorded");
        } else {
            tracing::debug!(seq = e.seq, kind = %e.kind, carrier = %e.carrier, "recorded");
        }
    }
    if let (Some(first), Some(last)) = (report.recorded.first(), report.recorded.last()) {
        tracing::info!(
            events = report.recorded.len(),
            first_seq = first.seq,
            last_seq = last.seq,
            "journal transaction committed"
        );
    }
}

/// Brings the state record up to date; cheap when nothing changed (no allocation).
fn update_record(record: &mut ServiceState, report: &PollReport, schedule: &Schedule) {
    if let Some(present) = &report.present {
        record.present.clone_from(present);
    }
    record.check_period_ms = schedule.check_period().as_millis() as u64;
    record
        .modules
        .resize_with(report.modules.len(), || ModuleState {
            path: String::new(),
            loaded: false,
            error: None,
            reinit_period_ms: None,
            poll_cost_us: 0,
        });
    for (i, (m, r)) in record.modules.iter_mut().zip(&report.modules).enumerate() {
        if m.path != r.path {
            m.path.clone_from(&r.path);
        }
        m.loaded = r.loaded;
        if m.error != r.error {
            m.error.clone_from(&r.error);
        }
        m.reinit_period_ms = schedule.reinit_period(i).map(|d| d.as_millis() as u64);
        m.poll_cost_us = schedule.poll_cost(i).as_micros() as u64;
    }
}

impl WorkerState {
    fn open(cfg: WorkerConfig, waker: mpsc::Sender<Request>) -> anyhow::Result<Self> {
        let journal = Journal::open(&cfg.journal)
            .with_context(|| format!("opening the journal {}", cfg.journal.display()))?;
        let modules = cfg
            .modules
            .into_iter()
            .map(|(path, policy)| {
                let mut m = Watched {
                    path_text: path.display().to_string(),
                    path,
                    policy,
                    module: None,
                    slots: BTreeMap::new(),
                    fresh: true,
                    failed: false,
                    load_error: None,
                    waker: waker.clone(),
                    slot_events: SharedSupport::default(),
                };
                m.load();
                m
            })
            .collect();
        Ok(Self {
            journal,
            modules,
            pins: ServicePins::new(&cfg.config, &cfg.journal),
            actor: cfg.actor,
            force_check: false,
        })
    }

    /// At shutdown: records `last_seen` of the carriers present; dropping `self` then
    /// finalises the modules and closes the journal.
    fn finish(mut self) -> anyhow::Result<()> {
        let present: Vec<String> = self
            .modules
            .iter()
            .flat_map(|m| m.slots.values())
            .filter_map(|s| match s {
                SlotState::Carrier(k) => Some(k.full.id.key()),
                _ => None,
            })
            .collect();
        if !present.is_empty() {
            self.journal
                .touch_seen(&present, OffsetDateTime::now_utc())
                .context("recording last_seen at shutdown")?;
        }
        tracing::debug!("worker stopped");
        Ok(())
    }

    fn poll(&mut self, plan: &PollPlan) -> PollReport {
        let mut report = PollReport::default();
        let force = std::mem::take(&mut self.force_check);
        let mut pending: Vec<(usize, BTreeMap<u64, SlotState>)> = Vec::new();
        let mut scans: Vec<ModuleScan> = Vec::new();
        let mut check_cost = Duration::ZERO;
        for (i, watched) in self.modules.iter_mut().enumerate() {
            if watched.module.is_none() && plan.load.get(i).copied().unwrap_or(false) {
                watched.load();
            }
            let mut mp = ModulePoll {
                path: watched.path_text.clone(),
                loaded: watched.module.is_some(),
                error: watched.load_error.clone(),
                ..ModulePoll::default()
            };
            let reinit = plan.reinit.get(i).copied().unwrap_or(false) || watched.failed;
            let check = plan.check_contents || force || watched.fresh;
            match poll_module(watched, reinit, check, &self.pins, &mut mp) {
                Ok(Some(found)) => {
                    check_cost += found.check_cost;
                    report.events.extend(found.events);
                    if let Some(scan) = found.scan {
                        scans.push(scan);
                    }
                    pending.push((i, found.slots));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(module = %watched.path.display(), cause = %e, "poll failed; re-initialising the module at the next poll");
                    watched.failed = true;
                    mp.error = Some(e.to_string());
                }
            }
            // Read after the poll: the slot-event thread may have answered meanwhile.
            mp.needs_reinit = watched.needs_reinit();
            report.modules.push(mp);
        }
        report.checked_contents = plan.check_contents || force;
        report.check_cost = check_cost;
        if pending.is_empty() {
            return report;
        }
        let recorded = if scans.is_empty() {
            Ok(Vec::new())
        } else {
            let carriers: usize = scans.iter().map(|s| s.carriers.len()).sum();
            tracing::info!(
                carriers,
                detected = report.events.len(),
                "recording changes"
            );
            self.journal
                .record_scan(&scans, &self.actor, OffsetDateTime::now_utc())
                .map(|r| r.events)
        };
        match recorded {
            Ok(events) => {
                report.recorded = events;
                let before = self.present();
                for (i, slots) in pending {
                    let m = &mut self.modules[i];
                    m.slots = slots;
                    m.fresh = false;
                }
                let after = self.present();
                if after != before {
                    report.present = Some(after);
                }
            }
            Err(e) => {
                tracing::error!(cause = %e, "the journal could not be written; retrying at the next poll");
                report.record_error = Some(e.to_string());
                for (i, _) in pending {
                    self.modules[i].fresh = true;
                }
            }
        }
        report
    }

    fn present(&self) -> Vec<PresentCarrier> {
        self.modules
            .iter()
            .flat_map(|m| m.slots.iter())
            .filter_map(|(slot, s)| match s {
                SlotState::Carrier(k) => Some(PresentCarrier {
                    carrier: k.full.id.key(),
                    label: k.full.label.clone(),
                    module: k.full.module.clone(),
                    slot: *slot,
                }),
                _ => None,
            })
            .collect()
    }
}

impl Watched {
    fn load(&mut self) {
        match Module::load(&self.path) {
            Ok(m) => {
                tracing::info!(
                    module = %self.path.display(),
                    library = %m.info().description,
                    manufacturer = %m.info().manufacturer,
                    reinit = ?self.policy,
                    "module loaded"
                );
                self.module = Some(m);
                self.fresh = true;
                self.failed = false;
                self.load_error = None;
                self.wait_for_slot_events();
            }
            Err(e) => {
                self.load_error = Some(e.to_string());
                tracing::error!(module = %self.path.display(), cause = %e, "module not loaded; retrying later");
            }
        }
    }
}

/// What polling one module found when something may have changed.
struct Found {
    /// The module's slots after this poll (not yet committed).
    slots: BTreeMap<u64, SlotState>,
    /// Detected changes.
    events: Vec<TokenEvent>,
    /// The scan to record, when the journal must be told.
    scan: Option<ModuleScan>,
    /// Time spent on content checks.
    check_cost: Duration,
}

/// Polls one module. `Ok(None)`: nothing changed (the common, allocation-free path).
fn poll_module(
    watched: &mut Watched,
    reinit: bool,
    check: bool,
    pins: &ServicePins,
    mp: &mut ModulePoll,
) -> custody_core::Result<Option<Found>> {
    let start = Instant::now();
    if reinit {
        let Some(module) = watched.module.as_mut() else {
            return Ok(None);
        };
        module.reinitialize()?;
        mp.reinitialised = true;
        mp.reinit_cost = start.elapsed();
        if !watched.needs_reinit() {
            // C_Finalize ended the wait of a module with slot events: wait again.
            watched.wait_for_slot_events();
        }
    }
    let Some(module) = watched.module.as_mut() else {
        return Ok(None);
    };
    let mut ids = module.slots()?;
    mp.presence_cost = start.elapsed();
    tracing::trace!(module = %watched.path_text, reinit, slots = ids.len(), "polled");
    watched.failed = false;
    ids.sort_unstable();
    let same_slots = ids.len() == watched.slots.len()
        && ids.iter().zip(watched.slots.keys()).all(|(a, b)| a == b);
    // After a re-initialisation the same slot ids may hold other tokens (kryoptic initialises
    // new tokens in existing slots, and gives a re-initialised one a new serial): one
    // C_GetTokenInfo per slot tells which slots to read again.
    let changed: BTreeSet<u64> = if mp.reinitialised && !check {
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
    if same_slots && !check && changed.is_empty() {
        return Ok(None);
    }
    let module: &Module = module;
    let check_start = Instant::now();
    let mut next = BTreeMap::new();
    for id in ids {
        let state = match watched.slots.get(&id) {
            None => read_new(module, id, pins),
            Some(old) if check || changed.contains(&id) => recheck(module, id, old, pins),
            Some(old) => old.clone(),
        };
        next.insert(id, state);
    }
    let check_cost = if check {
        check_start.elapsed()
    } else {
        Duration::ZERO
    };
    let events = compare(&module.info().path, &watched.slots, &next);
    let scan = (watched.fresh || !events.is_empty()).then(|| ModuleScan {
        module: module.info().clone(),
        carriers: next
            .iter()
            .filter_map(|(slot, s)| match s {
                SlotState::Carrier(k) if k.unreadable.is_none() => {
                    let mut full = k.full.clone();
                    full.slot = *slot;
                    Some(full)
                }
                _ => None,
            })
            .collect(),
        slot_problems: next
            .iter()
            .filter_map(|(slot, s)| match s {
                SlotState::Unreadable(message) => Some(SlotProblem {
                    slot: *slot,
                    message: message.clone(),
                }),
                SlotState::Carrier(k) => k.unreadable.as_ref().map(|message| SlotProblem {
                    slot: *slot,
                    message: message.clone(),
                }),
                SlotState::Uninitialised => None,
            })
            .collect(),
    });
    Ok(Some(Found {
        slots: next,
        events,
        scan,
        check_cost,
    }))
}

/// True when the token in `slot` is not the one last read there, as far as C_GetTokenInfo
/// tells: initialised or not, identity, label, flags. A slot that could not be read counts as
/// changed (read it again).
fn token_changed(module: &Module, slot: u64, old: &SlotState) -> bool {
    let now = match module.token_info(slot) {
        Ok(now) => now,
        Err(e) => {
            tracing::debug!(slot, cause = %e, "token information could not be read");
            return true;
        }
    };
    match (old, now) {
        (SlotState::Uninitialised, None) => false,
        (SlotState::Carrier(known), Some(now)) => {
            let was = &known.full;
            was.label != now.label
                || was.id.manufacturer != now.id.manufacturer
                || was.id.model != now.id.model
                || was.id.serial != now.id.serial
                || was.flags != now.flags
        }
        _ => true,
    }
}

/// Reads a slot seen for the first time (or again after a change), with PINs.
fn read_new(module: &Module, slot: u64, pins: &ServicePins) -> SlotState {
    match module.read_slot_id(slot, pins) {
        Ok(Some(full)) => SlotState::Carrier(Box::new(Known {
            public: public_view(&full),
            full,
            unreadable: None,
        })),
        Ok(None) => SlotState::Uninitialised,
        Err(e) => {
            tracing::warn!(slot, cause = %e, "token could not be read");
            SlotState::Unreadable(e.to_string())
        }
    }
}

/// Content check of a known slot: a read without PIN, compared with the last one; a full
/// read only when it differs (or a PIN source changed since it was rejected).
fn recheck(module: &Module, slot: u64, old: &SlotState, pins: &ServicePins) -> SlotState {
    match old {
        SlotState::Uninitialised => match module.read_slot_id(slot, &NoPins) {
            Ok(None) => SlotState::Uninitialised,
            Ok(Some(_)) => read_new(module, slot, pins),
            Err(e) => SlotState::Unreadable(e.to_string()),
        },
        SlotState::Unreadable(_) => read_new(module, slot, pins),
        SlotState::Carrier(known) => match module.read_slot_id(slot, &NoPins) {
            Ok(Some(public)) => {
                if known.unreadable.is_none()
                    && public_view(&public) == known.public
                    && !pins.retry_due(&known.full.id)
                {
                    old.clone()
                } else {
                    match read_new(module, slot, pins) {
                        SlotState::Unreadable(e) => keep_unreadable(known, e),
                        other => other,
                    }
                }
            }
            Ok(None) => SlotState::Uninitialised,
            Err(e) => {
                tracing::debug!(slot, cause = %e, "carrier could not be read; kept as present");
                keep_unreadable(known, e.to_string())
            }
        },
    }
}

fn keep_unreadable(known: &Known, error: String) -> SlotState {
    let mut k = known.clone();
    k.unreadable = Some(error);
    SlotState::Carrier(Box::new(k))
}

/// The changes between two views of a module's slots, by carrier (slot ids are not
/// identity).
fn compare(
    module: &str,
    old: &BTreeMap<u64, SlotState>,
    new: &BTreeMap<u64, SlotState>,
) -> Vec<TokenEvent> {
    let carriers =
        |m: &BTreeMap<u64, SlotState>| -> BTreeMap<String, (u64, CarrierSnapshot, bool)> {
            m.iter()
                .filter_map(|(slot, s)| match s {
                    SlotState::Carrier(k) => Some((
                        k.full.id.key(),
                        (*slot, comparable(&k.full), k.unreadable.is_some()),
                    )),
                    _ => None,
                })
                .collect()
        };
    let (before, after) = (carriers(old), carriers(new));
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut events = Vec::new();
    for key in keys {
        let event = match (before.get(key), after.get(key)) {
            (None, Some((slot, _, _))) => TokenEvent::Inserted {
                carrier: key.clone(),
                module: module.to_owned(),
                slot: *slot,
            },
            (Some((slot, _, _)), None) => TokenEvent::Removed {
                carrier: key.clone(),
                module: module.to_owned(),
                slot: *slot,
            },
            (Some((_, a, _)), Some((slot, b, unreadable))) if a != b && !unreadable => {
                TokenEvent::Changed {
                    carrier: key.clone(),
                    module: module.to_owned(),
                    slot: *slot,
                }
            }
            _ => continue,
        };
        events.push(event);
    }
    events
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

    fn kinds(events: &[TokenEvent]) -> Vec<String> {
        events.iter().map(|e| format!("{e}")).collect()
    }

    #[test]
    fn compare_reports_by_carrier_not_by_slot() {
        let old = BTreeMap::from([(1, carrier(snap("a", "A"))), (2, carrier(snap("b", "B")))]);
        // a moved to slot 7 unchanged, b is gone, c is new, and slot 3 is the spare slot
        let new = BTreeMap::from([
            (7, carrier(snap("a", "A"))),
            (3, SlotState::Uninitialised),
            (4, carrier(snap("c", "C"))),
        ]);
        assert_eq!(
            kinds(&compare("/m.so", &old, &new)),
            ["removed M/X/b (slot 2)", "inserted M/X/c (slot 4)"]
        );
    }

    #[test]
    fn compare_reports_changes_but_not_unreadable_carriers() {
        let old = BTreeMap::from([(1, carrier(snap("a", "A"))), (2, carrier(snap("b", "B")))]);
        let mut b = Known {
            public: public_view(&snap("b", "B")),
            full: snap("b", "B"),
            unreadable: Some("CKR_GENERAL_ERROR".into()),
        };
        b.full.label = "whatever".into();
        let new = BTreeMap::from([
            (1, carrier(snap("a", "A2"))),
            (2, SlotState::Carrier(Box::new(b))),
        ]);
        assert_eq!(
            kinds(&compare("/m.so", &old, &new)),
            ["changed M/X/a (slot 1)"]
        );
    }

    #[tokio::test]
    async fn calls_run_on_the_worker_thread_and_stop_ends_it() {
        let dir = std::env::temp_dir().join(format!("custody-worker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config::validate(crate::config::RawConfig::default(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let coordinator = crate::shutdown::Coordinator::new();
        let (_, done) = coordinator.part();
        let (worker, exit) = start(
            WorkerConfig {
                journal: dir.join("journal.db"),
                modules: Vec::new(),
                config,
                actor: Actor::current(None),
                interval: Duration::from_millis(50),
                check_interval: None,
                state_path: dir.join("journal.watch.json"),
            },
            Vec::new(),
            done,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let (id, thread) = worker
            .call(|state| {
                (
                    state.journal().journal_id().to_owned(),
                    std::thread::current().name().map(str::to_owned),
                )
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert_eq!(thread.as_deref(), Some("custody-worker"));
        worker.stop();
        exit.await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        coordinator.finished().await;
        // The state record says the worker stopped cleanly.
        let (state, _) = StateFile::read(&dir.join("journal.watch.json"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no state record"));
        assert!(state.stopped_at.is_some());
        assert!(
            worker.call(|_| ()).await.is_err(),
            "a stopped worker refuses calls"
        );
        let _ = std::fs::remove_dir_all(dir);
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
}
