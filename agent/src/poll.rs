//! What one poll of the service found, did and cost: made by the [`crate::worker`], read by
//! [`crate::watch`] (timing), the state record and the service's tasks.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use custody_core::journal::{CommitTiming, RecordedEvent};

use crate::state::PresentCarrier;

/// What one poll found, did and cost.
#[derive(Debug, Clone, Default)]
pub struct PollReport {
    /// One entry per module, in configuration order.
    pub modules: Vec<ModulePoll>,
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
    /// When this poll answered a slot event: where its time went.
    pub timing: Option<EventTiming>,
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
    /// The module is unavailable (failed, or an empty slot list after device errors): its
    /// carriers keep their state and it is re-initialised with backoff until it answers.
    pub unavailable: bool,
    /// What went wrong in this poll, if anything.
    pub error: Option<String>,
}

/// A slot event as the module's slot-event thread saw it.
#[derive(Debug, Clone)]
pub struct SlotEvent {
    /// The module's place in the configuration.
    pub module: usize,
    /// The slot C_WaitForSlotEvent named.
    pub slot: u64,
    /// When C_WaitForSlotEvent returned.
    pub at: Instant,
    /// Tells the slot-event thread that the worker is done with the event, when the last
    /// clone is dropped.
    pub done: Option<Arc<Done>>,
}

impl SlotEvent {
    /// An event of `slot` of module `module`, now.
    pub fn now(module: usize, slot: u64, done: Option<Done>) -> Self {
        Self {
            module,
            slot,
            at: Instant::now(),
            done: done.map(Arc::new),
        }
    }
}

/// Sends one message on its channel when dropped: the worker is done with a slot event, so
/// the module's slot-event thread may wait for the next (see `worker::slots`).
#[derive(Debug)]
pub struct Done(pub mpsc::Sender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        // A thread that has ended needs no telling.
        let _ = self.0.send(());
    }
}

/// Where the time between a slot event and its journal row went (debug log
/// `slot event handled`, read by `slot-event-bench`).
#[derive(Debug, Clone)]
pub struct EventTiming {
    /// The event.
    pub event: SlotEvent,
    /// The worker took it up.
    pub taken: Instant,
    /// The slot's state was known (read done).
    pub read: Instant,
    /// Only the slot was read (`false`: a full poll).
    pub one_slot: bool,
    /// The journal transaction, when one committed.
    pub commit: Option<CommitTiming>,
}
