//! What one poll of the service found, did and cost: made by the [`crate::worker`], read by
//! [`crate::watch`] (timing), the state record and the service's tasks.

use std::time::Duration;

use custody_core::journal::RecordedEvent;

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
    /// Every known slot's token was checked (C_GetTokenInfo) after the re-initialisation.
    pub identity_checked: bool,
    /// Time the identity check took (zero when not done).
    pub identity_cost: Duration,
    /// The module is unavailable (failed, or an empty slot list after device errors): its
    /// carriers keep their state and it is re-initialised with backoff until it answers.
    pub unavailable: bool,
    /// What went wrong in this poll, if anything.
    pub error: Option<String>,
}
