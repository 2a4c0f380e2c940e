//! When to poll, re-initialise and check contents: the service's timing.
//!
//! [`Watch`] says when the next poll is due (every `interval`, without drift; after a poll
//! that overran, `interval` after it) and, through the [`Schedule`], what it does:
//!
//! - **Presence**, every poll: `C_GetSlotList` of every module. Modules that learn of new
//!   tokens only at `C_Initialize` (SoftHSM2) are re-initialised first, as often as the
//!   re-initialisation budget allows: at most [`REINIT_BUDGET`] of wall time, so with a cheap
//!   re-initialisation (≈ 0.15 ms for one SoftHSM token, 1.7 ms for ten) it happens every
//!   poll, and with an expensive one (300 ms for 100 tokens × 20 certificates) every 6 s.
//! - **Identity**, after every re-initialisation: the same slot id may then hold another
//!   token (kryoptic initialises new tokens in existing slots, p11-kit's client numbers slots
//!   in list order), so one `C_GetTokenInfo` per known slot tells which slots to read again
//!   (`worker::slots::list_module`). Not spaced out: on kryoptic and p11-kit a removed token
//!   leaves its slot id listed, so this check is what sees a removal within one interval.
//! - **Contents**, at most every poll and at least every [`MAX_CHECK_PERIOD`]: each present
//!   carrier is read without PIN and compared with the last read, which finds certificates
//!   and keys added or removed and tokens re-initialised in place. Spaced so that it adds at
//!   most [`CHECK_SHARE`] to the modules' own polling cost.
//!
//! - **Fallback poll** of a module with slot events: while a thread of it waits in
//!   `C_WaitForSlotEvent` (OpenSC over pcscd), every insertion and removal wakes a poll at
//!   once, so its slot list is read only after an event, at a content check, and at least
//!   every [`SLOT_EVENT_FALLBACK`] (a lost event is caught within that), not every interval.
//!
//! The worker thread waits for the deadline itself (a blocking channel receive with a
//! timeout: one wake-up per poll). Everything here is plain arithmetic on
//! `tokio::time::Instant`, so the tests run it on paused tokio time.
//!
//! Slot events (`C_WaitForSlotEvent`, on a thread per module, see `worker::slots`) do not go
//! through this clock: the worker answers each by reading the slot it names
//! (`worker::event`), and only an event that needs a full poll makes one due at once
//! ([`Watch::wake`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::poll::PollReport;

/// Re-initialisation may take at most this share of wall time per module.
pub const REINIT_BUDGET: f64 = 0.05;
/// Content checks may add at most this share to the modules' own polling cost.
pub const CHECK_SHARE: f64 = 0.03;
/// Content checks run at least this often.
pub const MAX_CHECK_PERIOD: Duration = Duration::from_secs(30);
/// A module whose slot-event thread waits for events is polled at least this often.
pub const SLOT_EVENT_FALLBACK: Duration = Duration::from_secs(30);
/// A module that failed to load is tried again after this long.
pub const LOAD_RETRY: Duration = Duration::from_secs(30);

/// What one poll does, per module in configuration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollPlan {
    /// Try to load a module that is not loaded.
    pub load: Vec<bool>,
    /// Poll the module (false only for a module with live slot events between its
    /// fallback polls).
    pub presence: Vec<bool>,
    /// Re-initialise before listing slots.
    pub reinit: Vec<bool>,
    /// Read every present carrier and compare.
    pub check_contents: bool,
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
    slot_events: bool,
    failed: bool,
    last_presence: Option<Instant>,
    last_load: Option<Instant>,
    last_reinit: Option<Instant>,
    reinit_cost: Average,
    presence_cost: Average,
}

/// Decides, from measured costs, what each poll does.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    fixed_check: Option<Duration>,
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
            fixed_check: None,
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

    /// Time between content checks: fixed when configured (at least one interval), else
    /// from the measured costs.
    pub fn check_period(&self) -> Duration {
        if let Some(fixed) = self.fixed_check {
            return fixed.max(self.interval);
        }
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
        let reinit = (0..self.modules.len())
            .map(|i| {
                self.reinit_period(i)
                    .is_some_and(|p| self.due(now, self.modules[i].last_reinit, p))
            })
            .collect();
        let check_contents = self.due(now, self.last_check, self.check_period());
        PollPlan {
            presence: self
                .modules
                .iter()
                .map(|m| {
                    !m.slot_events
                        || check_contents
                        || self.due(now, m.last_presence, SLOT_EVENT_FALLBACK)
                })
                .collect(),
            load: self
                .modules
                .iter()
                .map(|m| !m.loaded && self.due(now, m.last_load, LOAD_RETRY))
                .collect(),
            reinit,
            check_contents,
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
            if !plan.presence.get(i).copied().unwrap_or(true) {
                continue;
            }
            m.last_presence = Some(now);
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

/// The poll clock: when the next poll is due, and what it does.
#[derive(Debug, Clone)]
pub struct Watch {
    schedule: Schedule,
    next: Instant,
    /// A slot event asked for the next poll.
    woken: bool,
    /// When the poll in hand was planned ([`Watch::due`]): what it did happened then, as far
    /// as the schedule goes.
    planned: Option<Instant>,
}

impl Watch {
    /// A watch of `modules` modules polled every `interval`; the first poll is due at `now`.
    pub fn new(now: Instant, interval: Duration, modules: usize) -> Self {
        Self {
            schedule: Schedule::new(interval, modules),
            next: now,
            woken: false,
            planned: None,
        }
    }

    /// Checks contents every `period` instead of a measured period, when given.
    pub fn with_check_interval(mut self, period: Option<Duration>) -> Self {
        self.schedule.fixed_check = period;
        self
    }

    /// When the next poll is due.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// The schedule, with the costs measured so far.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Tells whether module `i` must be re-initialised to see new tokens, as known now (a
    /// module's slot-event thread learns it between polls).
    pub fn set_needs_reinit(&mut self, i: usize, needs_reinit: bool) {
        if let Some(m) = self.schedule.modules.get_mut(i) {
            m.needs_reinit = needs_reinit;
        }
    }

    /// Tells whether module `i` has a thread waiting for its slot events, as known now: its
    /// polls are then spaced to [`SLOT_EVENT_FALLBACK`].
    pub fn set_slot_events(&mut self, i: usize, live: bool) {
        if let Some(m) = self.schedule.modules.get_mut(i) {
            m.slot_events = live;
        }
    }

    /// Makes a poll of every module due at once (a module reported a slot event).
    pub fn wake(&mut self, now: Instant) {
        self.next = self.next.min(now);
        self.woken = true;
    }

    /// The plan of the poll due at `now`, or `None` when none is due yet. Moves the
    /// deadline on by one interval.
    pub fn due(&mut self, now: Instant) -> Option<PollPlan> {
        if now < self.next {
            return None;
        }
        self.next += self.schedule.interval;
        self.planned = Some(now);
        let mut plan = self.schedule.plan(now);
        if std::mem::take(&mut self.woken) {
            plan.presence.iter_mut().for_each(|p| *p = true);
        }
        Some(plan)
    }

    /// Takes in what a poll planned by [`Watch::due`] did; `now` is when it ended. The
    /// schedule counts its re-initialisation and checks from when the poll was planned, not
    /// from its end: a poll that took longer than the tenth of an interval allowed for timer
    /// jitter (reading a new carrier, a commit, a busy machine) would otherwise make the next
    /// re-initialisation look early by that much and put it off by a whole interval (a
    /// token deleted on p11-kit's remote module was recorded removed after 3.7 s instead of
    /// within one interval + 1 s). A poll that ran past the next deadline moves it to one
    /// interval after its end, so a slow poll (enrolling many carriers) is never followed by
    /// another at once.
    pub fn observe(&mut self, now: Instant, plan: &PollPlan, report: &PollReport) {
        let planned = self.planned.take().unwrap_or(now);
        self.schedule.observe(planned, plan, report);
        if self.next <= now {
            self.next = now + self.schedule.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::ModulePoll;

    /// A stand-in for the worker with fixed costs; records every plan and its time.
    struct FakePoller {
        reinit_cost: Duration,
        check_cost: Duration,
        busy: Duration,
        plans: Vec<(Duration, PollPlan)>,
    }

    impl FakePoller {
        fn new(reinit_ms: f64, check_ms: f64) -> Self {
            Self {
                reinit_cost: Duration::from_secs_f64(reinit_ms / 1000.0),
                check_cost: Duration::from_secs_f64(check_ms / 1000.0),
                busy: Duration::ZERO,
                plans: Vec::new(),
            }
        }

        fn count(&self, f: impl Fn(&PollPlan) -> bool) -> usize {
            self.plans.iter().filter(|(_, p)| f(p)).count()
        }

        fn times(&self, f: impl Fn(&PollPlan) -> bool) -> Vec<Duration> {
            self.plans
                .iter()
                .filter(|(_, p)| f(p))
                .map(|(t, _)| *t)
                .collect()
        }

        fn report(&self, plan: &PollPlan) -> PollReport {
            let reinit = plan.reinit.first().copied().unwrap_or(false);
            let reinit_cost = if reinit {
                self.reinit_cost
            } else {
                Duration::ZERO
            };
            PollReport {
                modules: vec![ModulePoll {
                    path: "/m.so".into(),
                    loaded: true,
                    needs_reinit: true,
                    reinitialised: reinit,
                    reinit_cost,
                    presence_cost: Duration::from_micros(1) + reinit_cost,
                    unavailable: false,
                    error: None,
                }],
                checked_contents: plan.check_contents,
                check_cost: if plan.check_contents {
                    self.check_cost
                } else {
                    Duration::ZERO
                },
                ..PollReport::default()
            }
        }
    }

    /// The worker's loop on paused tokio time: wait for the deadline, poll, observe.
    async fn run_for(poller: &mut FakePoller, interval: Duration, secs: u64) {
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let mut watch = Watch::new(start, interval, 1);
        loop {
            if watch.deadline() > end {
                break;
            }
            tokio::time::sleep_until(watch.deadline()).await;
            let now = Instant::now();
            let Some(plan) = watch.due(now) else { continue };
            poller.plans.push((now - start, plan.clone()));
            tokio::time::sleep(poller.busy).await;
            let report = poller.report(&plan);
            watch.observe(Instant::now(), &plan, &report);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn polls_every_interval_from_the_start() {
        let mut poller = FakePoller::new(0.15, 0.06);
        run_for(&mut poller, Duration::from_secs(2), 59).await;
        let times = poller.times(|_| true);
        assert_eq!(times.len(), 30, "{times:?}");
        assert_eq!(times[0], Duration::ZERO);
        assert!(times
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_event_makes_a_poll_due_at_once_then_the_interval_resumes() {
        let start = Instant::now();
        let mut watch = Watch::new(start, Duration::from_secs(2), 1);
        assert!(watch.due(start).is_some());
        tokio::time::advance(Duration::from_millis(700)).await;
        let now = Instant::now();
        assert!(watch.due(now).is_none(), "not due before the interval");
        watch.wake(now);
        assert_eq!(watch.deadline(), now);
        assert!(watch.due(now).is_some(), "due at once after a slot event");
        assert_eq!(watch.deadline(), now + Duration::from_secs(2));
        // A wake never postpones a poll that is due earlier.
        let mut early = Watch::new(start, Duration::from_secs(2), 1);
        early.wake(now);
        assert_eq!(early.deadline(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_that_overruns_delays_the_next_by_one_interval() {
        let mut poller = FakePoller::new(0.15, 0.06);
        poller.busy = Duration::from_millis(2500);
        run_for(&mut poller, Duration::from_secs(2), 10).await;
        assert_eq!(
            poller.times(|_| true),
            [0, 4500, 9000].map(Duration::from_millis).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cheap_reinit_happens_every_poll() {
        let mut poller = FakePoller::new(1.7, 0.6);
        run_for(&mut poller, Duration::from_secs(2), 59).await;
        // The first poll follows the module's load (its C_Initialize); every later one
        // re-initialises.
        assert_eq!(poller.count(|_| true), 30);
        assert_eq!(poller.count(|p| p.reinit[0]), 29);
        assert!(!poller.plans[0].1.reinit[0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_poll_does_not_push_the_next_reinit_back() {
        // Re-initialising every poll is within the budget; each poll takes 300 ms (reading a
        // new carrier, the journal's commit, a busy machine): more than the tenth of an
        // interval allowed for timer jitter. Every poll after the first still re-initialises,
        // so a token created or deleted is seen by the next poll, not the one after.
        let mut poller = FakePoller::new(1.7, 0.6);
        poller.busy = Duration::from_millis(300);
        run_for(&mut poller, Duration::from_secs(2), 59).await;
        assert_eq!(poller.count(|_| true), 30);
        assert_eq!(poller.count(|p| p.reinit[0]), 29);
    }

    #[tokio::test(start_paused = true)]
    async fn expensive_reinit_is_spaced_by_the_budget() {
        // 300 ms at a 5 % budget: every 6 s, i.e. every third 2 s poll.
        let mut poller = FakePoller::new(300.0, 1.0);
        run_for(&mut poller, Duration::from_secs(2), 61).await;
        let reinits = poller.times(|p| p.reinit[0]);
        assert_eq!(reinits.len(), 10, "{reinits:?}");
        assert!(reinits
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_secs(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn content_checks_stay_within_their_share() {
        // presence 0.151 ms per poll, check 0.06 ms: 0.06 / (0.03 * 0.151) ≈ 13 polls.
        let mut poller = FakePoller::new(0.15, 0.06);
        run_for(&mut poller, Duration::from_secs(2), 119).await;
        let checks = poller.count(|p| p.check_contents);
        assert!((4..=6).contains(&checks), "{checks} checks in 60 polls");
        assert!(poller.plans[0].1.check_contents, "first poll checks");
    }

    #[tokio::test(start_paused = true)]
    async fn content_checks_run_at_least_every_max_period() {
        // A module with a free slot list (no re-init) and a costly check.
        let mut poller = FakePoller::new(0.0, 50.0);
        run_for(&mut poller, Duration::from_secs(2), 120).await;
        assert_eq!(
            poller.times(|p| p.check_contents),
            [0, 30, 60, 90, 120].map(Duration::from_secs).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_configured_check_interval_wins() {
        let mut poller = FakePoller::new(0.15, 50.0);
        let start = Instant::now();
        let mut watch = Watch::new(start, Duration::from_secs(2), 1)
            .with_check_interval(Some(Duration::from_secs(5)));
        for _ in 0..10 {
            tokio::time::sleep_until(watch.deadline()).await;
            let now = Instant::now();
            if let Some(plan) = watch.due(now) {
                poller.plans.push((now - start, plan.clone()));
                watch.observe(now, &plan, &poller.report(&plan));
            }
        }
        // every 5 s, on the 2 s grid: 0, 6, 12, 18
        assert_eq!(
            poller.times(|p| p.check_contents),
            [0, 6, 12, 18].map(Duration::from_secs).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_module_with_live_slot_events_is_polled_after_events_and_at_the_fallback() {
        let start = Instant::now();
        let mut watch = Watch::new(start, Duration::from_secs(2), 1)
            .with_check_interval(Some(Duration::from_secs(3600)));
        let report = PollReport {
            modules: vec![ModulePoll {
                loaded: true,
                presence_cost: Duration::from_millis(4),
                ..ModulePoll::default()
            }],
            ..PollReport::default()
        };
        let mut report = report;
        let mut polled = Vec::new();
        let mut woken = false;
        while watch.deadline() <= start + Duration::from_secs(90) {
            tokio::time::sleep_until(watch.deadline()).await;
            let now = Instant::now();
            let Some(plan) = watch.due(now) else { continue };
            if plan.presence[0] {
                polled.push(now - start);
            }
            report.checked_contents = plan.check_contents;
            watch.observe(now, &plan, &report);
            // The thread is waiting from the first poll on.
            watch.set_slot_events(0, true);
            if !woken && now - start >= Duration::from_secs(40) {
                // A slot event one second after the poll at 40 s.
                woken = true;
                tokio::time::advance(Duration::from_secs(1)).await;
                watch.wake(Instant::now());
            }
        }
        assert_eq!(polled, [0, 30, 41, 71].map(Duration::from_secs));

        // Without a waiting thread (it ended): every interval again.
        watch.set_slot_events(0, false);
        let now = watch.deadline();
        tokio::time::sleep_until(now).await;
        assert_eq!(watch.due(now).map(|p| p.presence), Some(vec![true]));
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
