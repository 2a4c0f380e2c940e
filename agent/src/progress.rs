//! Progress on the terminal for work that can take more than a second (a scan, a wipe, a
//! sync, verifying or backing up a large journal, the organisation's form): a bar or a
//! spinner on stderr, drawn only when stderr is a terminal and the output is not `--json`,
//! and only once the work has lasted a second. Otherwise nothing is drawn, ever: piped or
//! redirected output and logs hold no progress noise. stdout is never touched.
//! `CUSTODY_PROGRESS=never` turns it off; `CUSTODY_PROGRESS=immediate` draws without waiting
//! the second (still only on a terminal).
//!
//! This module owns the decision and the drawing; it never prints results.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before its progress is drawn.
fn delay() -> Duration {
    if std::env::var_os("CUSTODY_PROGRESS").is_some_and(|v| v == "immediate") {
        Duration::ZERO
    } else {
        Duration::from_secs(1)
    }
}

/// The progress of one piece of work; cleared when dropped.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    shown: bool,
}

/// True when progress may be drawn: stderr is a terminal, the output is for people, and
/// `CUSTODY_PROGRESS` is not `never`.
pub fn wanted(json: bool) -> bool {
    !json
        && std::io::stderr().is_terminal()
        && std::env::var_os("CUSTODY_PROGRESS").is_none_or(|v| v != "never")
}

impl Progress {
    /// A bar of `len` steps of `unit` (e.g. "events"), labelled `what`.
    pub fn bar(json: bool, what: &str, unit: &str) -> Self {
        Self::new(json, |bar| {
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(what.to_owned());
        })
    }

    /// A spinner with the time elapsed, labelled `what`, for work of unknown length.
    pub fn spinner(json: bool, what: &str) -> Self {
        let mut this = Self::new(json, |bar| {
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(what.to_owned());
        });
        if let Some(bar) = &this.bar {
            // The spinner ticks on a thread of its own; it draws once DELAY has passed.
            bar.enable_steady_tick(Duration::from_millis(120));
            let shown = bar.clone();
            let delay = delay();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                if !shown.is_finished() {
                    shown.set_draw_target(ProgressDrawTarget::stderr());
                }
            });
            this.shown = true;
        }
        this
    }

    fn new(json: bool, style: impl FnOnce(&ProgressBar)) -> Self {
        let bar = wanted(json).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            style(&bar);
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            shown: false,
        }
    }

    /// `done` of `total` steps.
    pub fn set(&mut self, done: u64, total: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_length(total);
        bar.set_position(done);
        if !self.shown && self.started.elapsed() >= delay() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.tick();
            self.shown = true;
        }
    }

    /// A callback for core's `*_with_progress` functions.
    pub fn callback(&mut self) -> impl FnMut(u64, u64) + '_ {
        move |done, total| self.set(done, total)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
