//! Crash safety: kill -9 the real `custody wipe` at random moments, reconcile, and check that
//! the journal never claims a wipe that did not happen.

use std::time::{Duration, Instant};

use custody_core::journal::EventKind;
use serde_json::json;

use super::support::*;

const RUNS: usize = 50;

/// xorshift64*: enough randomness for kill delays; the seed is printed to replay a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[derive(Debug, Default)]
struct Tally {
    no_wipe_started: usize,
    completed_by_the_run: usize,
    failed_by_the_run: usize,
    reconciled_completed: usize,
    reconciled_failed: usize,
    /// Killed inside SoftHSM's C_InitToken, which is not atomic: token.object truncated, the
    /// carrier no longer listed at all. The journal must then say wipe_failed.
    carrier_damaged: usize,
}

#[test]
fn kill_9_at_random_moments_never_leaves_a_false_wipe_claim() {
    let seed = std::env::var("CUSTODY_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("kill loop seed {seed} (set CUSTODY_KILL_SEED to replay)");
    let mut rng = Rng(seed);

    // The typical duration of a whole uninterrupted wipe, and when within it the journal
    // records wipe_started and the outcome, measured here.
    let (typical, window) = {
        let env = Env::new("crash-measure");
        let order = env.order("ord-measure", json!({}));
        env.sign(&order, "hr");
        let wall = time::OffsetDateTime::now_utc();
        let start = Instant::now();
        let out = env.wipe(&order);
        let took = start.elapsed();
        assert!(out.status.success(), "{}", text(&out));
        let at = |kind: &str| {
            let e = env.events_of(kind);
            let t = time::OffsetDateTime::parse(
                &e[0].at,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap_or(wall);
            Duration::try_from(t - wall).unwrap_or_default()
        };
        let (from, to) = (at("wipe_started"), at("wipe_completed"));
        let margin = Duration::from_millis(3);
        (took, (from.saturating_sub(margin), (to + margin).min(took)))
    };
    eprintln!(
        "a whole wipe takes {typical:?}; wipe_started to wipe_completed at {:?}..{:?}; \
         killing at uniform random delays in [0, whole] (even runs) and within that window (odd runs)",
        window.0, window.1
    );

    // The token directory of alice (SoftHSM names it after the serial's last 12 digits).
    let alice_dir = {
        let serial = &template().alice;
        format!("-{}-{}", &serial[..4], &serial[4..])
    };
    let mut tally = Tally::default();
    let started = Instant::now();
    for run in 0..RUNS {
        let env = Env::new("crash");
        let order = env.order("ord-crash", json!({}));
        env.sign(&order, "hr");
        let (lo, hi) = if run % 2 == 0 {
            (Duration::ZERO, typical)
        } else {
            window
        };
        let span = hi.saturating_sub(lo).as_micros() as u64 + 1;
        let delay = lo + Duration::from_micros(rng.next() % span);
        let mut child = env
            .command(MODULE)
            .args(["wipe", "--order"])
            .arg(&order)
            .arg("--so-pin-file")
            .arg(env.path("so.pin"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        // What the killed run left behind.
        let (had_start, had_outcome) = if env.journal.exists() {
            let ev = env.events();
            (
                ev.iter().any(|e| e.kind == EventKind::WipeStarted),
                ev.iter()
                    .any(|e| e.kind == EventKind::WipeCompleted || e.kind == EventKind::WipeFailed),
            )
        } else {
            (false, false)
        };

        let out = env.custody(&["--json", "order", "reconcile"]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "run {run}: {}",
            text(&out)
        );
        let reconciled = json_of(&out);

        let journal = env.open_journal();
        let report = journal.verify().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            report.ok(),
            "run {run}: journal does not verify: {:?}",
            report.first_bad
        );
        assert!(
            journal.orders_started().unwrap_or_default().is_empty(),
            "run {run}: a wipe_started is left without outcome"
        );
        let events = journal.events().unwrap_or_default();
        let completed: Vec<_> = events
            .iter()
            .filter(|e| e.kind == EventKind::WipeCompleted)
            .collect();
        let listing = env.try_listing_of(&env.t.alice);
        let damaged = listing.is_err();
        let objects_remain = listing
            .as_deref()
            .map(|l| {
                l.lines()
                    .any(|l| l.trim() == "ID:         01" || l.trim() == "ID:         02")
            })
            .unwrap_or(true);
        // Below PKCS#11: SoftHSM keeps each object in a file; after a completed reinit none
        // of alice's object files may be left on disk, not even an unreachable one.
        let leftover: Vec<String> = walk(&env.path("tokens"))
            .into_iter()
            .filter(|f| {
                f.contains(&alice_dir) && f.contains(".object") && !f.contains("token.object")
            })
            .collect();
        for c in &completed {
            assert!(
                leftover.is_empty(),
                "run {run}: wipe_completed #{} while object files remain: {leftover:?}",
                c.seq
            );
            assert!(
                !damaged,
                "run {run}: wipe_completed #{} for an unreadable carrier",
                c.seq
            );
            assert!(
                !objects_remain,
                "run {run} (delay {delay:?}): wipe_completed #{} while objects remain",
                c.seq
            );
            assert_eq!(c.data["verified"], true, "run {run}");
            assert_eq!(
                c.data["verification"]["passed"], true,
                "run {run}: completion without a passed check"
            );
            assert_eq!(c.data["verification"]["fresh_context"], true, "run {run}");
        }
        if completed.is_empty() && had_start {
            // Not claimed: the journal must say it failed.
            assert!(
                events.iter().any(|e| e.kind == EventKind::WipeFailed),
                "run {run}"
            );
        }

        let n = reconciled["reconciled"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        match (had_start, had_outcome, n) {
            (false, _, _) => tally.no_wipe_started += 1,
            (true, true, _) => {
                if completed.is_empty() {
                    tally.failed_by_the_run += 1
                } else {
                    tally.completed_by_the_run += 1
                }
            }
            (true, false, _) => {
                if completed.is_empty() {
                    tally.reconciled_failed += 1
                } else {
                    tally.reconciled_completed += 1
                }
            }
        }
        if damaged {
            tally.carrier_damaged += 1;
            continue;
        }
        // After reconciliation the order can be run to completion (or was completed).
        if completed.is_empty() {
            let out = env.wipe(&order);
            if out.status.code() != Some(0) {
                let files: Vec<String> = walk(&env.path("tokens"));
                panic!(
                    "run {run} (delay {delay:?}): re-running the order: {}\nfiles: {files:?}",
                    text(&out)
                );
            }
            assert!(!env.alice_has_objects(), "run {run}");
        }
    }
    eprintln!("{RUNS} kill runs in {:?}: {tally:?}", started.elapsed());
    assert_eq!(
        tally.no_wipe_started
            + tally.completed_by_the_run
            + tally.failed_by_the_run
            + tally.reconciled_completed
            + tally.reconciled_failed,
        RUNS
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(format!("{} ({len})", p.display()));
            if p.is_dir() {
                out.extend(walk(&p));
            }
        }
    }
    out
}
