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
//! token (measured, see BENCHMARKS.md). The thread ends at
//! [`Request::Stop`], or when every handle is dropped, after the poll in hand (and its journal
//! transaction) is finished.
//!
//! A poll is cheap when nothing changed: per module an optional
//! re-initialisation and `C_GetSlotList`, compared with the slots seen last time (`slots`).
//! New slots are read in full; when the plan asks for a content check, every present carrier
//! is read without PIN and compared with what was read before. Only when something may have
//! changed is the journal written: one [`Journal::record_scan`] transaction for everything
//! found in the poll, in which `inventory::compare` decides what changed. The in-memory view
//! is replaced only after that transaction commits, so a failed write is detected again and
//! retried at the next poll. A module that fails, or answers an empty slot list right after
//! device errors, is unavailable: one `module_unavailable`, its carriers keep their state,
//! and it is re-initialised with backoff (1 s doubling to 60 s) until it answers.
//!
//! A slot event ([`Request::SlotEvent`]) goes before everything else waiting: before the
//! tasks of the poll just finished and before calls queued ahead of it. It is answered by
//! reading only the slot it names (`event`), recorded in its own transaction; the service's
//! commits do only the WAL's `fsync`, and the WAL is folded into the database file after the
//! tasks instead of inside a commit ([`Journal::defer_wal_checkpoints`]).

mod confirm;
mod event;
mod report;
mod slots;
mod task;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use custody_core::inventory::ModuleScan;
use custody_core::journal::timestamp;
use custody_core::journal::{Actor, CommitTiming, Journal};
use custody_core::token::{Module, PinSource};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::config::{Config, Reinit};
use crate::pin::Pins as ServicePins;
use crate::poll::{EventTiming, ModulePoll, PollReport, SlotEvent};
use crate::shutdown::Completion;
use crate::state::{PresentCarrier, ServiceState, StateFile};
use crate::watch::{PollPlan, Watch};
use event::Handled;
use report::{log_report, log_timing, update_record};
use slots::{list_module, read_module, Presence, SlotState, Watched};

pub use slots::{BACKOFF_FIRST, BACKOFF_MAX};
pub use task::{Task, TaskContext};

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
    /// A module reported a slot event (C_WaitForSlotEvent): read that slot now (see
    /// `event`).
    SlotEvent(SlotEvent),
    /// Finish the poll in hand and stop.
    Stop,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Call(_) => f.write_str("Call"),
            Self::SlotEvent(e) => write!(f, "SlotEvent({}, {})", e.module, e.slot),
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

/// The worker thread's loop: slot events first ([`Request::SlotEvent`]), a poll every
/// interval (or at once when an event needs one), the tasks after each poll, and calls,
/// until [`Request::Stop`]; then records `last_seen` of the carriers present, marks the state
/// record stopped, and releases the modules (C_Finalize) and the journal.
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
    let mut last_report = PollReport::default();
    let mut file = StateFile::new(state_path);
    let mut watch = Watch::new(tokio::time::Instant::now(), interval, state.modules.len())
        .with_check_interval(check_interval);
    // Requests taken off the channel while looking for slot events, in their order.
    let mut backlog: VecDeque<Request> = VecDeque::new();
    // A slot event that needs a full poll: the next poll answers it.
    let mut polled_event: Option<SlotEvent> = None;
    let mut tasks_due = false;
    loop {
        // Slot events first: one that came in during a poll or a call is not kept waiting
        // behind the tasks, or behind calls queued before it.
        if let Some(event) = take_event(rx, &mut backlog) {
            match state.slot_event(event) {
                Handled::Done(report) => {
                    log_report(&report);
                    if let Some(t) = &report.timing {
                        log_timing(t);
                    }
                    update_record(&mut record, &report, watch.schedule());
                    if let Err(e) = file.poll(&record) {
                        tracing::warn!(cause = %format!("{e:#}"), "service state not updated");
                    }
                }
                Handled::Poll(event) => {
                    // One poll answers every event waiting for it.
                    polled_event.get_or_insert(event);
                    watch.wake(tokio::time::Instant::now());
                }
            }
            continue;
        }
        let now = tokio::time::Instant::now();
        for (i, m) in state.modules.iter().enumerate() {
            watch.set_needs_reinit(i, m.needs_reinit());
            watch.set_slot_events(i, m.events_live());
        }
        if let Some(plan) = watch.due(now) {
            let report = state.poll(&plan, polled_event.take());
            watch.observe(tokio::time::Instant::now(), &plan, &report);
            log_report(&report);
            if let Some(t) = &report.timing {
                log_timing(t);
            }
            update_record(&mut record, &report, watch.schedule());
            if let Err(e) = file.poll(&record) {
                tracing::warn!(cause = %format!("{e:#}"), "service state not updated");
            }
            last_report = report;
            tasks_due = true;
            continue;
        }
        if std::mem::take(&mut tasks_due) {
            for task in &mut tasks {
                let mut cx = TaskContext {
                    state: &mut state,
                    poll: &last_report,
                    present: &record.present,
                };
                if let Err(e) = task.run(&mut cx) {
                    tracing::error!(task = task.name(), cause = %format!("{e:#}"), "task failed");
                }
            }
            // Here, not inside a commit: a slot event's row waits only for its own fsync.
            if let Err(e) = state.journal.fold_wal_if_large() {
                tracing::warn!(cause = %e, "the journal's WAL could not be folded; trying again later");
            }
            continue;
        }
        let request = match backlog.pop_front() {
            Some(request) => Ok(request),
            None => rx.recv_timeout(watch.deadline() - now),
        };
        match request {
            Ok(Request::Call(f)) => f(&mut state),
            // Taken up at the top of the loop.
            Ok(event @ Request::SlotEvent(_)) => backlog.push_front(event),
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

/// The first slot event waiting, taken out of the channel and the backlog; every other
/// request keeps its place in the backlog.
fn take_event(rx: &mpsc::Receiver<Request>, backlog: &mut VecDeque<Request>) -> Option<SlotEvent> {
    backlog.extend(rx.try_iter());
    let at = backlog
        .iter()
        .position(|r| matches!(r, Request::SlotEvent(_)))?;
    match backlog.remove(at) {
        Some(Request::SlotEvent(event)) => Some(event),
        _ => None,
    }
}

impl WorkerState {
    fn open(cfg: WorkerConfig, waker: mpsc::Sender<Request>) -> anyhow::Result<Self> {
        let journal = Journal::open(&cfg.journal)
            .with_context(|| format!("opening the journal {}", cfg.journal.display()))?;
        let modules = cfg
            .modules
            .into_iter()
            .enumerate()
            .map(|(i, (path, policy))| {
                let mut m = Watched::new(i, path, policy, waker.clone());
                m.load();
                m
            })
            .collect();
        let mut journal = journal;
        // The service's commits do only the WAL's fsync; `serve` folds the WAL between polls.
        journal
            .defer_wal_checkpoints()
            .context("setting up the journal's WAL")?;
        Ok(Self {
            journal,
            modules,
            pins: ServicePins::new(&cfg.config, &cfg.journal),
            actor: cfg.actor,
            force_check: false,
        })
    }

    /// At shutdown: records `last_seen` of the carriers present, those whose slot still shows
    /// the same token (one C_GetTokenInfo each: a token may have been swapped since the last
    /// poll); dropping `self` then finalises the modules and closes the journal.
    fn finish(mut self) -> anyhow::Result<()> {
        let present: Vec<String> = self
            .modules
            .iter()
            .flat_map(Watched::carriers_still_there)
            .collect();
        if !present.is_empty() {
            self.journal
                .touch_seen(&present, OffsetDateTime::now_utc())
                .context("recording last_seen at shutdown")?;
        }
        tracing::debug!("worker stopped");
        Ok(())
    }

    /// One poll of every module; `event`: the slot event it answers, if any (its timing is
    /// reported).
    fn poll(&mut self, plan: &PollPlan, event: Option<SlotEvent>) -> PollReport {
        let taken = Instant::now();
        let mut report = PollReport::default();
        let force = std::mem::take(&mut self.force_check);
        let mut pending: Vec<(usize, BTreeMap<u64, SlotState>)> = Vec::new();
        let mut outages: Vec<usize> = Vec::new();
        // Each read with the index of its module.
        let mut scans: Vec<(usize, ModuleScan)> = Vec::new();
        let mut check_cost = Duration::ZERO;
        let now = Instant::now();
        // Every module is listed (re-initialised as planned) before any token is read.
        let mut listed: Vec<(usize, Presence)> = Vec::new();
        let mut polled: Vec<bool> = Vec::with_capacity(self.modules.len());
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
            if let Some(o) = watched.outage.as_ref().filter(|_| watched.module.is_some()) {
                mp.unavailable = true;
                mp.error = Some(o.reason.to_string());
            }
            let skip = watched.module.is_none()
                || watched.outage.as_ref().is_some_and(|o| now < o.next_try);
            polled.push(!skip);
            if skip {
                report.modules.push(mp);
                continue;
            }
            // A module with live slot events between its fallback polls: nothing to do
            // unless it must be read (first poll, after a failed write or a wipe).
            let presence = plan.presence.get(i).copied().unwrap_or(true);
            if !presence && watched.outage.is_none() && !watched.fresh && !force {
                mp.needs_reinit = watched.needs_reinit();
                report.modules.push(mp);
                continue;
            }
            // A module with slot events is tried again without re-initialisation: its slot
            // list is live, and C_Finalize would race with its slot-event thread.
            let planned = plan.reinit.get(i).copied().unwrap_or(false);
            let reinit = if watched.has_slot_events() {
                planned && watched.outage.is_none()
            } else {
                planned || watched.outage.is_some()
            };
            let check = plan.check_contents || force || watched.fresh;
            match list_module(watched, reinit, check, &mut mp) {
                Ok(found) => {
                    watched.answered();
                    mp.unavailable = false;
                    mp.error = None;
                    listed.extend(found.map(|p| (i, p)));
                }
                Err(reason) => {
                    mp.unavailable = true;
                    mp.error = Some(reason.to_string());
                    if watched.unavailable(reason.clone(), Instant::now()) {
                        scans.push((i, ModuleScan::failed(watched.info(), reason)));
                        outages.push(i);
                    }
                }
            }
            report.modules.push(mp);
        }
        if !listed.is_empty() {
            // The tokens every module shows in this poll, after its re-initialisation, so that
            // a PIN rule matching carriers in two modules is refused on both even when they
            // appeared in the same poll (only with PIN rules: one C_GetTokenInfo per token).
            self.pins
                .set_present(self.modules.iter().filter_map(|m| m.module.as_ref()));
        }
        for (i, presence) in listed {
            if let Some(found) = read_module(&self.modules[i], presence, &self.pins) {
                check_cost += found.check_cost;
                if let Some(scan) = found.scan {
                    scans.push((i, scan));
                }
                pending.push((i, found.slots));
            }
        }
        // Read after the poll: a slot-event thread may have answered meanwhile.
        for ((mp, watched), polled) in report.modules.iter_mut().zip(&self.modules).zip(polled) {
            if polled {
                mp.needs_reinit = watched.needs_reinit();
            }
        }
        report.checked_contents = plan.check_contents || force;
        report.check_cost = check_cost;
        let read = Instant::now();
        let commit = self.record(pending, scans, outages, &mut report);
        report.timing = event.map(|event| EventTiming {
            event,
            taken,
            read,
            one_slot: false,
            commit,
        });
        report
    }

    /// Records what a poll (or a slot event) read: `pending`, each module's slots after it;
    /// `scans`, what to record; `outages`, modules found unavailable. Holds back reads that
    /// would remove objects until confirmed (`confirm`), writes one journal transaction,
    /// and replaces the in-memory view only after it commits. Returns the transaction's
    /// timing when one committed.
    fn record(
        &mut self,
        mut pending: Vec<(usize, BTreeMap<u64, SlotState>)>,
        mut scans: Vec<(usize, ModuleScan)>,
        outages: Vec<usize>,
        report: &mut PollReport,
    ) -> Option<CommitTiming> {
        if pending.is_empty() && outages.is_empty() {
            return None;
        }
        if !pending.is_empty() {
            self.force_check |= self.confirm(&mut pending, &mut scans);
        }
        let scans_empty = scans.is_empty();
        let recorded = if scans_empty {
            Ok(Vec::new())
        } else {
            // In the modules' order, whichever step of the poll made each read.
            scans.sort_by_key(|(m, _)| *m);
            let scans: Vec<ModuleScan> = scans.into_iter().map(|(_, s)| s).collect();
            let carriers: usize = scans.iter().map(|s| s.carriers.len()).sum();
            tracing::info!(carriers, "recording changes");
            self.journal
                .record_scan(&scans, &self.actor, OffsetDateTime::now_utc())
                .map(|r| r.events)
        };
        let wrote = !scans_empty && recorded.is_ok();
        match recorded {
            Ok(events) => {
                report.recorded = events;
                let before = self.present();
                for (i, slots) in pending {
                    let m = &mut self.modules[i];
                    m.slots = slots;
                    m.fresh = false;
                }
                for i in outages {
                    if let Some(o) = self.modules[i].outage.as_mut() {
                        o.recorded = true;
                    }
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
        wrote.then(|| self.journal.last_commit()).flatten()
    }

    /// Holds back the reads of this poll that would remove certificates or keys until a
    /// later read confirms them (see `confirm`). Returns true when the next poll must read
    /// every carrier again.
    fn confirm(
        &mut self,
        pending: &mut Vec<(usize, BTreeMap<u64, SlotState>)>,
        scans: &mut Vec<(usize, ModuleScan)>,
    ) -> bool {
        let mut reads: Vec<confirm::Read> = pending
            .drain(..)
            .map(|(module, slots)| confirm::Read {
                module,
                scan: scans
                    .iter()
                    .position(|(m, _)| *m == module)
                    .map(|at| scans.remove(at).1),
                slots: Some(slots),
            })
            .collect();
        let again =
            confirm::confirm_removals(&self.journal, &mut self.modules, &mut reads, Instant::now());
        // Failed modules' reads are never in `pending` and stay; the order is the modules'.
        for read in reads {
            if let Some(scan) = read.scan {
                scans.push((read.module, scan));
            }
            if let Some(slots) = read.slots {
                pending.push((read.module, slots));
            }
        }
        scans.sort_by_key(|(m, _)| *m);
        again
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_event_goes_before_requests_queued_ahead_of_it_and_tells_its_thread_when_done() {
        let (tx, rx) = mpsc::channel();
        let (done, handled) = mpsc::channel();
        let mut backlog = VecDeque::new();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for n in 0..2 {
            let order = order.clone();
            let call = move |_: &mut WorkerState| {
                if let Ok(mut o) = order.lock() {
                    o.push(n);
                }
            };
            tx.send(Request::Call(Box::new(call)))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let event = SlotEvent::now(0, 7, Some(crate::poll::Done(done)));
        tx.send(Request::SlotEvent(event))
            .unwrap_or_else(|e| panic!("{e}"));
        tx.send(Request::Stop).unwrap_or_else(|e| panic!("{e}"));
        let taken = take_event(&rx, &mut backlog).unwrap_or_else(|| panic!("no event"));
        assert_eq!((taken.module, taken.slot), (0, 7));
        assert!(take_event(&rx, &mut backlog).is_none());
        // The calls and the stop keep their order behind it.
        let kinds: Vec<String> = backlog.iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(kinds, ["Call", "Call", "Stop"]);
        // The thread is told once the worker is done with the event, not before.
        assert!(handled.try_recv().is_err());
        drop(taken);
        assert!(handled.try_recv().is_ok());
    }

    #[tokio::test]
    async fn calls_run_on_the_worker_thread_and_stop_ends_it() {
        let dir = std::env::temp_dir().join(format!("custody-worker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
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
}
