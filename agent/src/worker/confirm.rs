//! A poll that would take certificates or keys from a carrier is recorded only when the next
//! read, at least [`CONFIRM_AFTER`] later, shows the same.
//!
//! A card pulled while its module reads it (OpenSC binds a card's PKCS#15 application when
//! it is inserted) can show up with some of its objects and not the others: the read looks
//! complete and the objects look removed. A moment later the reader has noticed the card
//! gone (pcscd polls a reader every 400 ms), and the next read shows it gone or whole: then
//! nothing of the first read is recorded. A real removal (a wipe, another tool) reads the
//! same twice and is recorded one poll later. The module is not re-initialised for this:
//! a module with slot events has a thread inside C_WaitForSlotEvent, which C_Finalize would
//! race with. Removals are rare, so the usual poll pays nothing.

use std::time::{Duration, Instant};

use custody_core::inventory::{disagreements, ModuleScan};
use custody_core::journal::Journal;

use super::slots::{SlotState, Watched};
use std::collections::BTreeMap;

/// The least time between a read that would remove objects and the read that confirms it:
/// longer than a smart-card reader's presence poll.
pub(super) const CONFIRM_AFTER: Duration = Duration::from_secs(1);

/// One module's read in a poll: the module's index, what it read, and its slots after it.
pub(super) struct Read {
    pub(super) module: usize,
    pub(super) scan: Option<ModuleScan>,
    pub(super) slots: Option<BTreeMap<u64, SlotState>>,
}

/// Keeps in `reads` only what may be recorded now: a read that would remove certificates or
/// keys stays only when the module's previous such read, at least [`CONFIRM_AFTER`] before,
/// showed the same; otherwise it is dropped (its carriers keep their state) and remembered,
/// and `true` is returned so that the next poll reads every carrier again.
pub(super) fn confirm_removals(
    journal: &Journal,
    modules: &mut [Watched],
    reads: &mut [Read],
    now: Instant,
) -> bool {
    let scans: Vec<ModuleScan> = reads.iter().filter_map(|r| r.scan.clone()).collect();
    if scans.is_empty() {
        // A content check that found nothing changed: nothing to record, nothing to ask the
        // journal (the unchanged poll does not touch it).
        return false;
    }
    let removing = match journal.removes_content(&scans) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(cause = %e, "the journal could not be compared; nothing recorded this poll");
            reads.iter_mut().for_each(|r| {
                r.scan = None;
                r.slots = None;
            });
            return true;
        }
    };
    let mut again = false;
    let with_scan = reads.iter_mut().filter(|r| r.scan.is_some());
    for (read, removing) in with_scan.zip(removing) {
        let watched = &mut modules[read.module];
        let Some(scan) = read.scan.as_ref().filter(|_| removing) else {
            watched.unconfirmed = None;
            continue;
        };
        let previous = watched.unconfirmed.take();
        let same = previous.as_ref().is_some_and(|(_, p)| {
            disagreements(p, scan).is_empty() && disagreements(scan, p).is_empty()
        });
        match previous {
            Some((at, _)) if same && now.saturating_duration_since(at) >= CONFIRM_AFTER => {
                tracing::info!(module = %watched.path_text, "objects removed, confirmed by a second read");
                continue;
            }
            Some(p) if same => watched.unconfirmed = Some(p),
            _ => {
                tracing::info!(module = %watched.path_text, "objects would be removed; recorded only when the next read shows the same");
                watched.unconfirmed = Some((now, scan.clone()));
            }
        }
        read.scan = None;
        read.slots = None;
        again = true;
    }
    again
}
