//! When to poll, re-initialise and check contents: the service's timing, on tokio time.
//!
//! Every `interval` the [`Watcher`] asks the worker for one poll, planned by the
//! [`Schedule`]:
//!
//! - **Presence**, every poll: `C_GetSlotList` of every module. Modules that learn of new
//!   tokens only at `C_Initialize` (SoftHSM2) are re-initialised first, as often as the
//!   re-initialisation budget allows: at most [`REINIT_BUDGET`] of wall time, so with a cheap
//!   re-initialisation (≈ 0.15 ms for one SoftHSM token, 1.7 ms for ten) it happens every
//!   poll, and with an expensive one (300 ms for 100 tokens × 20 certificates) every 6 s.
//! - **Contents**, at most every poll and at least every [`MAX_CHECK_PERIOD`]: each present
//!   carrier is read without PIN and compared with the last read, which finds certificates
//!   and keys added or removed and tokens re-initialised in place. Spaced so that it adds at
//!   most [`CHECK_SHARE`] to the modules' own polling cost.
//!
//! `C_WaitForSlotEvent` is not used: SoftHSM2 answers the blocking call with
//! `CKR_FUNCTION_NOT_SUPPORTED` and the non-blocking one always with `CKR_NO_EVENT`, and a
//! blocking wait would hold the worker thread that also writes the journal.

use std::fmt;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::shutdown::Shutdown;
use crate::worker::PollReport;

/// Re-initialisation may take at most this share of wall time per module.
pub const REINIT_BUDGET: f64 = 0.05;
/// Content checks may add at most this share to the modules' own polling cost.
pub const CHECK_SHARE: f64 = 0.05;
/// Content checks run at least this often.
pub const MAX_CHECK_PERIOD: Duration = Duration::from_secs(30);
/// A module that failed to load is tried again after this long.
pub const LOAD_RETRY: Duration = Duration::from_secs(30);

/// A carrier inserted, removed or changed, as one poll saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenEvent {
    /// A carrier appeared.
    Inserted {
        /// Carrier key.
        carrier: String,
        /// Module path.
        module: String,
        /// Slot id.
        slot: u64,
    },
    /// A carrier is gone.
    Removed {
        /// Carrier key.
        carrier: String,
        /// Module path.
        module: String,
        /// Slot id it was in.
        slot: u64,
    },
    /// A present carrier's contents or token information changed.
    Changed {
        /// Carrier key.
        carrier: String,
        /// Module path.
        module: String,
        /// Slot id.
        slot: u64,
    },
}

impl fmt::Display for TokenEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, carrier, slot) = match self {
            Self::Inserted { carrier, slot, .. } => ("inserted", carrier, slot),
            Self::Removed { carrier, slot, .. } => ("removed", carrier, slot),
            Self::Changed { carrier, slot, .. } => ("changed", carrier, slot),
        };
        write!(f, "{what} {carrier} (slot {slot})")
    }
}

/// What one poll does, per module in configuration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollPlan {
    /// Try to load a module that is not loaded.
    pub load: Vec<bool>,
    /// Re-initialise before listing slots.
    pub reinit: Vec<bool>,
    /// Read every present carrier and compare.
    pub check_contents: bool,
}

/// Something that carries out polls: the worker, or a stand-in in tests.
pub trait Poller {
    /// Carries out one poll.
    fn poll(&self, plan: PollPlan)
        -> impl std::future::Future<Output = anyhow::Result<PollReport>>;
}

/// An exponentially weighted average of durations.
#[derive(Debug, Clone, Copy, Default)]
struct Average(Option<f64>);

impl Average {
    fn add(&mut self, d: Duration) {
        let x = d.as_secs_f64();
        self.0 = Some(match self.0 {
            None => x,
            Some(avg) => avg + 0.2 * (x - avg),
        });
    }

    fn secs(self) -> f64 {
        self.0.unwrap_or(0.0)
    }
}

#[derive(Debug, Clone, Default)]
struct ModuleTiming {
    loaded: bool,
    needs_reinit: bool,
    failed: bool,
    last_load: Option<Instant>,
    last_reinit: Option<Instant>,
    reinit_cost: Average,
    presence_cost: Average,
}

/// Decides, from measured costs, what each poll does.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    modules: Vec<ModuleTiming>,
    last_check: Option<Instant>,
    check_cost: Average,
}

impl Schedule {
    /// A schedule for `modules` modules polled every `interval`. Until the first report
    /// every module counts as loaded, needing no re-initialisation.
    pub fn new(interval: Duration, modules: usize) -> Self {
        Self {
            interval,
            modules: vec![
                ModuleTiming {
                    loaded: true,
                    ..ModuleTiming::default()
                };
                modules
            ],
            last_check: None,
            check_cost: Average::default(),
        }
    }

    /// The poll interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Time between re-initialisations of module `i`; `None` when it is not re-initialised.
    pub fn reinit_period(&self, i: usize) -> Option<Duration> {
        let m = self.modules.get(i)?;
        if !(m.needs_reinit || m.failed) || !m.loaded {
            return None;
        }
        let budgeted = Duration::from_secs_f64(m.reinit_cost.secs() / REINIT_BUDGET);
        Some(budgeted.max(self.interval))
    }

    /// Average cost of one poll of module `i` (re-initialisation when done + slot list).
    pub fn poll_cost(&self, i: usize) -> Duration {
        self.modules
            .get(i)
            .map(|m| Duration::from_secs_f64(m.presence_cost.secs()))
            .unwrap_or_default()
    }

    /// Time between content checks.
    pub fn check_period(&self) -> Duration {
        let presence: f64 = self.modules.iter().map(|m| m.presence_cost.secs()).sum();
        let check = self.check_cost.secs();
        let period = if presence > 0.0 {
            let polls = check / (CHECK_SHARE * presence);
            Duration::from_secs_f64((polls * self.interval.as_secs_f64()).min(1e6))
        } else {
            MAX_CHECK_PERIOD
        };
        period.clamp(self.interval, MAX_CHECK_PERIOD.max(self.interval))
    }

    /// True when at least `period` has passed since `last`, allowing for tick jitter.
    fn due(&self, now: Instant, last: Option<Instant>, period: Duration) -> bool {
        last.is_none_or(|t| now.saturating_duration_since(t) + self.interval / 10 >= period)
    }

    /// What the poll at `now` should do.
    pub fn plan(&self, now: Instant) -> PollPlan {
        PollPlan {
            load: self
                .modules
                .iter()
                .map(|m| !m.loaded && self.due(now, m.last_load, LOAD_RETRY))
                .collect(),
            reinit: (0..self.modules.len())
                .map(|i| {
                    self.reinit_period(i)
                        .is_some_and(|p| self.due(now, self.modules[i].last_reinit, p))
                })
                .collect(),
            check_contents: self.due(now, self.last_check, self.check_period()),
        }
    }

    /// Takes in what the poll planned at `now` did.
    pub fn observe(&mut self, now: Instant, plan: &PollPlan, report: &PollReport) {
        for (i, (m, r)) in self.modules.iter_mut().zip(&report.modules).enumerate() {
            if plan.load.get(i).copied().unwrap_or(false) {
                m.last_load = Some(now);
            }
            m.loaded = r.loaded;
            m.needs_reinit = r.needs_reinit;
            m.failed = r.error.is_some();
            if r.reinitialised {
                m.last_reinit = Some(now);
                m.reinit_cost.add(r.reinit_cost);
            }
            if r.loaded && r.error.is_none() {
                m.presence_cost.add(r.presence_cost);
            }
        }
        if report.checked_contents {
            self.last_check = Some(now);
            self.check_cost.add(report.check_cost);
        }
    }
}

/// Polls every interval until shutdown.
#[derive(Debug)]
pub struct Watcher<P> {
    poller: P,
    schedule: Schedule,
    ticks: Interval,
}

impl<P: Poller> Watcher<P> {
    /// A watcher of `modules` modules; the first poll is due at once.
    pub fn new(poller: P, interval: Duration, modules: usize) -> Self {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            poller,
            schedule: Schedule::new(interval, modules),
            ticks,
        }
    }

    /// The schedule, with the costs measured so far.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Waits for the next tick and polls; `None` once shutdown was signalled. A poll that
    /// has started is finished (the worker completes its journal transaction either way).
    pub async fn next(&mut self, shutdown: &mut Shutdown) -> Option<anyhow::Result<PollReport>> {
        if shutdown.is_shutdown() {
            return None;
        }
        tokio::select! {
            biased;
            () = shutdown.recv() => return None,
            _ = self.ticks.tick() => {}
        }
        let plan = self.schedule.plan(Instant::now());
        let report = self.poller.poll(plan.clone()).await;
        if let Ok(r) = &report {
            self.schedule.observe(Instant::now(), &plan, r);
        }
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::Coordinator;
    use crate::worker::ModulePoll;
    use std::cell::RefCell;

    /// A stand-in for the worker with fixed costs; records every plan and the time of it.
    struct FakePoller {
        reinit_cost: Duration,
        list_cost: Duration,
        check_cost: Duration,
        busy: Duration,
        plans: RefCell<Vec<(Duration, PollPlan)>>,
        start: Instant,
    }

    impl FakePoller {
        fn new(reinit_ms: f64, check_ms: f64) -> Self {
            Self {
                reinit_cost: Duration::from_secs_f64(reinit_ms / 1000.0),
                list_cost: Duration::from_micros(1),
                check_cost: Duration::from_secs_f64(check_ms / 1000.0),
                busy: Duration::ZERO,
                plans: RefCell::new(Vec::new()),
                start: Instant::now(),
            }
        }

        fn count(&self, f: impl Fn(&PollPlan) -> bool) -> usize {
            self.plans.borrow().iter().filter(|(_, p)| f(p)).count()
        }
    }

    impl Poller for &FakePoller {
        async fn poll(&self, plan: PollPlan) -> anyhow::Result<PollReport> {
            self.plans
                .borrow_mut()
                .push((self.start.elapsed(), plan.clone()));
            if !self.busy.is_zero() {
                tokio::time::sleep(self.busy).await;
            }
            let reinit = plan.reinit.first().copied().unwrap_or(false);
            Ok(PollReport {
                modules: vec![ModulePoll {
                    path: "/m.so".into(),
                    loaded: true,
                    needs_reinit: true,
                    reinitialised: reinit,
                    reinit_cost: if reinit {
                        self.reinit_cost
                    } else {
                        Duration::ZERO
                    },
                    presence_cost: self.list_cost
                        + if reinit {
                            self.reinit_cost
                        } else {
                            Duration::ZERO
                        },
                    error: None,
                }],
                checked_contents: plan.check_contents,
                check_cost: if plan.check_contents {
                    self.check_cost
                } else {
                    Duration::ZERO
                },
                ..PollReport::default()
            })
        }
    }

    /// Runs a watcher for `secs` seconds of (paused) tokio time.
    async fn run_for(poller: &FakePoller, interval: Duration, secs: u64) {
        let coordinator = Coordinator::new();
        let (mut shutdown, _done) = coordinator.part();
        let mut watcher = Watcher::new(poller, interval, 1);
        let stop = tokio::time::sleep(Duration::from_secs(secs));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                r = watcher.next(&mut shutdown) => { r.map(|r| r.unwrap_or_else(|e| panic!("{e}"))); }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn polls_every_interval_from_the_start() {
        let poller = FakePoller::new(0.15, 0.06);
        run_for(&poller, Duration::from_secs(2), 59).await;
        let times: Vec<Duration> = poller.plans.borrow().iter().map(|(t, _)| *t).collect();
        assert_eq!(times.len(), 30, "{times:?}");
        assert_eq!(times[0], Duration::ZERO);
        assert!(times
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn cheap_reinit_happens_every_poll() {
        let poller = FakePoller::new(1.7, 0.6);
        run_for(&poller, Duration::from_secs(2), 59).await;
        // The first poll follows the module's load (its C_Initialize); every later one
        // re-initialises.
        assert_eq!(poller.count(|_| true), 30);
        assert_eq!(poller.count(|p| p.reinit[0]), 29);
        assert!(!poller.plans.borrow()[0].1.reinit[0]);
    }

    #[tokio::test(start_paused = true)]
    async fn expensive_reinit_is_spaced_by_the_budget() {
        // 300 ms at a 5 % budget: every 6 s, i.e. every third 2 s poll.
        let poller = FakePoller::new(300.0, 1.0);
        run_for(&poller, Duration::from_secs(2), 61).await;
        let reinits: Vec<Duration> = poller
            .plans
            .borrow()
            .iter()
            .filter(|(_, p)| p.reinit[0])
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(reinits.len(), 10, "{reinits:?}");
        assert!(reinits
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_secs(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn content_checks_stay_within_their_share() {
        // presence 0.151 ms per poll, check 0.06 ms: 0.06 / (0.05 * 0.151) ≈ 8 polls.
        let poller = FakePoller::new(0.15, 0.06);
        run_for(&poller, Duration::from_secs(2), 120).await;
        let checks = poller.count(|p| p.check_contents);
        assert!((7..=9).contains(&checks), "{checks} checks in 60 polls");
        assert!(
            poller.plans.borrow()[0].1.check_contents,
            "first poll checks"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn content_checks_run_at_least_every_max_period() {
        // A module with a free slot list (no re-init) and a costly check.
        let mut poller = FakePoller::new(0.0, 50.0);
        poller.reinit_cost = Duration::ZERO;
        run_for(&poller, Duration::from_secs(2), 121).await;
        let times: Vec<Duration> = poller
            .plans
            .borrow()
            .iter()
            .filter(|(_, p)| p.check_contents)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            times,
            [0, 30, 60, 90, 120].map(Duration::from_secs).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_the_poll_in_hand() {
        let mut poller = FakePoller::new(0.1, 0.1);
        poller.busy = Duration::from_secs(1);
        let coordinator = Coordinator::new();
        let (mut shutdown, _done) = coordinator.part();
        let mut watcher = Watcher::new(&poller, Duration::from_secs(2), 1);
        {
            let first = watcher.next(&mut shutdown);
            tokio::pin!(first);
            // Shut down while the first poll is busy: it still completes.
            tokio::select! {
                _ = &mut first => panic!("the poll cannot finish before 1 s"),
                () = tokio::time::sleep(Duration::from_millis(100)) => coordinator.trigger(),
            }
            let report = first.await;
            assert!(matches!(report, Some(Ok(_))));
        }
        assert!(watcher.next(&mut shutdown).await.is_none());
        assert_eq!(poller.plans.borrow().len(), 1);
    }

    #[test]
    fn failed_modules_are_reinitialised_and_unloaded_ones_retried() {
        let mut s = Schedule::new(Duration::from_secs(2), 2);
        let now = Instant::now();
        let plan = s.plan(now);
        let report = PollReport {
            modules: vec![
                ModulePoll {
                    loaded: true,
                    error: Some("C_GetSlotList failed".into()),
                    ..ModulePoll::default()
                },
                ModulePoll::default(),
            ],
            ..PollReport::default()
        };
        s.observe(now, &plan, &report);
        let next = s.plan(now + Duration::from_secs(2));
        assert_eq!(next.reinit, [true, false]);
        assert_eq!(next.load, [false, true], "first retry is due at once");
        let plan = next.clone();
        s.observe(now + Duration::from_secs(2), &plan, &report);
        assert_eq!(s.plan(now + Duration::from_secs(4)).load, [false, false]);
        assert_eq!(s.plan(now + Duration::from_secs(32)).load, [false, true]);
    }
}
