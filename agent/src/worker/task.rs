//! Work the service does once every interval, on the worker thread, right after the carriers
//! were polled (the order spool plugs in here, see `service::tasks`).

use super::WorkerState;
use crate::poll::PollReport;
use crate::state::PresentCarrier;

/// Work the service does once every interval, right after the carriers were polled. Tasks
/// run one after another on the worker thread, with the modules and the journal at hand
/// ([`TaskContext::state`]), so they cost no extra thread wake-up. A task must not block for
/// long: the next poll waits for it. An error is logged and the service carries on.
pub trait Task: Send {
    /// A short name for logs.
    fn name(&self) -> &str;
    /// One round of work.
    fn run(&mut self, cx: &mut TaskContext<'_>) -> anyhow::Result<()>;
}

/// What a [`Task`] gets each round.
#[derive(Debug)]
pub struct TaskContext<'a> {
    /// The worker's modules, PIN sources and journal. Call
    /// [`WorkerState::carriers_changed`] after changing a carrier (a wipe).
    pub state: &'a mut WorkerState,
    /// The poll that just finished.
    pub poll: &'a PollReport,
    /// The carriers present after it.
    pub present: &'a [PresentCarrier],
}
