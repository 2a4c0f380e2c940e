//! A slot event, handled on its own: only the slot it names is read, and what changed is
//! recorded at once, without waiting for (or doing) a poll of every module.
//!
//! A module with slot events (OpenSC over PC/SC) names the slot that changed. Its state is
//! one C_GetSlotInfo (CKF_TOKEN_PRESENT), plus a read of the token when one is present;
//! every other slot keeps its state as last read, as in every poll between content checks.
//! So a removal costs one call instead of a slot list (which on OpenSC asks pcscd about every
//! reader), and the journal transaction follows at once.
//!
//! The rule for a removal is the poll's: a carrier the journal holds as present is recorded
//! removed only from a complete observation of a module that answers. Here that observation
//! is the slot event plus C_GetSlotInfo of the very slot it names showing no token, on a
//! module with no device trouble since its last complete slot list. A removal of a carrier
//! (not of its objects) was never held back for a second read (see `confirm`: that rule is
//! for certificates and keys missing from a carrier that is still present, as a card pulled
//! mid-read shows), so the event itself is the confirmation and the row follows in
//! milliseconds. Whenever the answer is less than that, the event falls back to a full poll
//! at once ([`Handled::Poll`]): the module is unavailable or was never read in full, a
//! content check or a second read is pending, C_GetSlotInfo fails, or the slot shows no token
//! where none was known (the change is elsewhere: OpenSC may name a reader's first slot).

use std::collections::BTreeMap;
use std::time::Instant;

use super::slots::{read_new, recheck, to_scan, SlotState};
use super::WorkerState;
use crate::poll::{EventTiming, ModulePoll, PollReport, SlotEvent};

/// What handling a slot event came to.
pub(super) enum Handled {
    /// The slot was read and what changed recorded (or nothing changed).
    Done(Box<PollReport>),
    /// The event needs a full poll, now (it is handed back for the poll to answer).
    Poll(SlotEvent),
}

impl WorkerState {
    /// Handles `event` by reading only its slot, when that observation is complete (see the
    /// module documentation); else [`Handled::Poll`].
    pub(super) fn slot_event(&mut self, event: SlotEvent) -> Handled {
        let taken = Instant::now();
        let force = self.force_check;
        let (index, slot) = (event.module, event.slot);
        let Some(watched) = self.modules.get_mut(index) else {
            return Handled::Poll(event);
        };
        watched.slot_event();
        let ready = !force
            && !watched.fresh
            && watched.outage.is_none()
            && watched.unconfirmed.is_none()
            && watched.has_slot_events()
            && watched
                .module
                .as_ref()
                .is_some_and(|m| m.trouble().is_none());
        let Some(module) = watched.module.as_ref().filter(|_| ready) else {
            return Handled::Poll(event);
        };
        let present = match module.token_present(slot) {
            Ok(present) => present,
            Err(e) => {
                tracing::debug!(slot, cause = %e, "slot state not read; polling");
                return Handled::Poll(event);
            }
        };
        if present {
            // As a poll does before reading: a PIN rule matching carriers in two modules
            // offers its PIN to neither (nothing is listed without PIN rules).
            self.pins
                .set_present(self.modules.iter().filter_map(|m| m.module.as_ref()));
        }
        let watched = &self.modules[index];
        let Some(module) = watched.module.as_ref() else {
            return Handled::Poll(event);
        };
        let old = watched.slots.get(&slot);
        let new = match (present, old) {
            // Nothing known here and nothing here: the change is in another slot.
            (false, None) => return Handled::Poll(event),
            (false, Some(_)) => None,
            (true, None) => Some(read_new(module, slot, &self.pins, None)),
            (true, Some(old)) => Some(recheck(module, slot, old, &self.pins)),
        };
        let read = Instant::now();
        let changed = new.as_ref() != old;
        let mut report = PollReport {
            modules: self
                .modules
                .iter()
                .map(|m| ModulePoll {
                    path: m.path_text.clone(),
                    loaded: m.module.is_some(),
                    needs_reinit: m.needs_reinit(),
                    unavailable: m.outage.is_some(),
                    error: m.outage.as_ref().map(|o| o.reason.to_string()),
                    ..ModulePoll::default()
                })
                .collect(),
            ..PollReport::default()
        };
        let mut timing = EventTiming {
            event,
            taken,
            read,
            one_slot: true,
            commit: None,
        };
        if changed {
            let watched = &self.modules[index];
            let mut slots: BTreeMap<u64, SlotState> = watched.slots.clone();
            match new {
                Some(state) => slots.insert(slot, state),
                None => slots.remove(&slot),
            };
            let info = watched.module.as_ref().map(|m| m.info().clone());
            let scans = info
                .map(|info| vec![(index, to_scan(info, &slots))])
                .unwrap_or_default();
            timing.commit = self.record(vec![(index, slots)], scans, Vec::new(), &mut report);
        }
        report.timing = Some(timing);
        Handled::Done(Box::new(report))
    }
}
