//! The one comparison: what the journal knew ([`Known`]) against what modules showed
//! ([`Observed`]) gives every change to record ([`Comparison`]).
//!
//! The rules that keep the journal true live here and nowhere else:
//! - a carrier read completely is compared object by object ([`super::change`]);
//! - a carrier, certificate or key is removed only when a complete read of a healthy module
//!   shows it absent: a removal needs a [`ConfirmedAbsence`], made only here;
//! - a module that is unavailable gets one `module_unavailable` (while it has carriers
//!   present) and its carriers keep their state; when it answers again, `module_recovered`
//!   and the normal comparison;
//! - a weak serial's identity is resolved by [`super::identity`], never from content.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::change::{diff, Change, ConfirmedAbsence, Previous};
use super::identity;
use super::observation::{CallError, ModuleScan};
use super::snapshot::CarrierSnapshot;
use crate::error::Result;
use crate::event::EventKind;

/// What the journal holds about one carrier before a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownCarrier {
    /// Journal key.
    pub key: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial.
    pub serial: String,
    /// Label when last seen.
    pub label: String,
    /// Module it was last read through.
    pub module: String,
    /// Present at the last read.
    pub present: bool,
    /// Slot id at the last read.
    pub last_slot: Option<u64>,
    /// [`CarrierSnapshot::digest`] of the snapshot stored.
    pub digest: String,
}

/// What the journal holds before a read: its carriers and the modules it has recorded as
/// unavailable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Carriers by key.
    pub carriers: HashMap<String, KnownCarrier>,
    /// Paths of modules whose last module event was `module_unavailable`.
    pub unavailable: BTreeSet<String>,
}

/// Module scans with the digests of their carriers, computed once however often the
/// comparison runs (the journal compares before and inside its transaction).
#[derive(Debug)]
pub struct Observed<'a> {
    scans: Vec<(&'a ModuleScan, Cow<'a, [CarrierSnapshot]>)>,
    digests: Vec<Vec<String>>,
}

impl<'a> Observed<'a> {
    /// Prepares `scans` for comparison with `known` (identity of weak serials resolved
    /// against it; see the `identity` module).
    pub fn new(scans: &'a [ModuleScan], known: &Known) -> Result<Self> {
        let scans: Vec<_> = scans
            .iter()
            .map(|s| (s, identity::resolve(&s.carriers, &s.module.path, known)))
            .collect();
        let digests = scans
            .iter()
            .map(|(_, c)| c.iter().map(CarrierSnapshot::digest).collect())
            .collect::<Result<_>>()?;
        Ok(Self { scans, digests })
    }
}

/// A module event: the module stopped answering, or answers again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ModuleChange {
    /// The module failed, or answered an empty slot list right after device errors; its
    /// carriers keep their state.
    ModuleUnavailable {
        /// Module path.
        module: String,
        /// The call that failed and its return value.
        reason: CallError,
        /// Carriers of this module held as present, which keep that state.
        carriers_kept: usize,
    },
    /// A module recorded as unavailable answers again.
    ModuleRecovered {
        /// Module path.
        module: String,
    },
}

impl ModuleChange {
    /// The journal event kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::ModuleUnavailable { .. } => EventKind::ModuleUnavailable,
            Self::ModuleRecovered { .. } => EventKind::ModuleRecovered,
        }
    }

    /// The module path.
    pub fn module(&self) -> &str {
        match self {
            Self::ModuleUnavailable { module, .. } | Self::ModuleRecovered { module } => module,
        }
    }
}

/// One step of a [`Comparison`], in the order it is to be recorded.
#[derive(Debug)]
pub enum Step {
    /// A module event.
    Module(ModuleChange),
    /// A carrier read with the same snapshot as stored: only `last_seen` and its slot change.
    Unchanged {
        /// Journal key.
        key: String,
        /// Slot id now.
        slot: u64,
    },
    /// A carrier whose snapshot changed (or that is new).
    Updated {
        /// Journal key.
        key: String,
        /// The changes, each one event.
        changes: Vec<Change>,
        /// The snapshot to store.
        stored: CarrierSnapshot,
        /// True for a carrier seen for the first time.
        enrolled: bool,
    },
    /// A carrier a complete read showed gone.
    Removed {
        /// Journal key.
        key: String,
        /// The `carrier_removed` change.
        change: Change,
    },
}

/// Everything one read changes, decided in one place.
#[derive(Debug, Default)]
pub struct Comparison {
    /// The steps, in recording order.
    pub steps: Vec<Step>,
    /// Carriers read completely.
    pub carriers_seen: usize,
    /// Carriers read whose state did not change.
    pub carriers_unchanged: usize,
}

impl Comparison {
    /// True when recording this changes nothing but bookkeeping (`last_seen`, slots).
    pub fn is_bookkeeping_only(&self) -> bool {
        self.steps
            .iter()
            .all(|s| matches!(s, Step::Unchanged { .. }))
    }

    /// True when recording this takes certificates or keys from a carrier that is present
    /// (removed objects, a re-initialisation): what a second read confirms first (see
    /// [`super::ModuleScan::confirmed_by`]). A carrier gone from a complete slot list is not
    /// counted: the module's slot list is what says so.
    pub fn removes_content(&self) -> bool {
        self.steps.iter().any(|s| match s {
            Step::Updated { changes, .. } => changes.iter().any(|c| {
                matches!(
                    c,
                    Change::CertRemoved { .. }
                        | Change::KeyRemoved { .. }
                        | Change::CarrierReinitialised { .. }
                )
            }),
            _ => false,
        })
    }
}

/// Compares what modules showed with what the journal knew. `load` reads a stored snapshot
/// (only for carriers whose digest differs).
pub fn compare(
    observed: &Observed<'_>,
    known: &Known,
    load: &mut dyn FnMut(&str) -> Result<CarrierSnapshot>,
) -> Result<Comparison> {
    let mut out = Comparison::default();
    let mut announced: HashSet<&str> = HashSet::new();
    // Where each carrier of this read was shown first (module, then slot order as read).
    // One token can be shown by two modules (two copies of a library, p11-kit's proxy and the
    // library itself) or twice by one: it is one carrier, recorded once, from its first
    // showing; and no complete read of another module records it as removed.
    let mut first: HashMap<String, (usize, usize)> = HashMap::new();
    for (m, (scan, carriers)) in observed.scans.iter().enumerate() {
        if scan.unavailability().is_none() {
            for (c, snap) in carriers.iter().enumerate() {
                first.entry(snap.id.key()).or_insert((m, c));
            }
        }
    }
    for (m, ((scan, carriers), digests)) in observed.scans.iter().zip(&observed.digests).enumerate()
    {
        let path = scan.module.path.as_str();
        if let Some(reason) = scan.unavailability() {
            let kept = known
                .carriers
                .values()
                .filter(|c| c.present && c.module == path)
                .count();
            if kept > 0 && !known.unavailable.contains(path) && announced.insert(path) {
                out.steps
                    .push(Step::Module(ModuleChange::ModuleUnavailable {
                        module: path.to_owned(),
                        reason,
                        carriers_kept: kept,
                    }));
            }
            continue;
        }
        if known.unavailable.contains(path) && announced.insert(path) {
            out.steps.push(Step::Module(ModuleChange::ModuleRecovered {
                module: path.to_owned(),
            }));
        }
        let mut seen = HashSet::new();
        for (c, (snap, digest)) in carriers.iter().zip(digests).enumerate() {
            let key = snap.id.key();
            if let Some(&(fm, fc)) = first.get(&key).filter(|&&at| at != (m, c)) {
                tracing::warn!(
                    carrier = %key,
                    module = path,
                    slot = snap.slot,
                    recorded_from = %observed.scans[fm].0.module.path,
                    recorded_slot = observed.scans[fm].1[fc].slot,
                    "the same carrier is shown twice; recorded once, from where it was shown first"
                );
                seen.insert(key);
                continue;
            }
            out.carriers_seen += 1;
            // Every carrier here was read completely: its absent objects are confirmed.
            let proof = ConfirmedAbsence::confirmed();
            let step = match known.carriers.get(&key) {
                Some(k) if k.present && &k.digest == digest => {
                    out.carriers_unchanged += 1;
                    Step::Unchanged {
                        key: key.clone(),
                        slot: snap.slot,
                    }
                }
                Some(k) => {
                    let previous = Previous {
                        snapshot: load(&key)?,
                        present: k.present,
                    };
                    let (changes, stored) = diff(Some(&previous), snap, &proof);
                    if changes.is_empty() {
                        out.carriers_unchanged += 1;
                    }
                    Step::Updated {
                        key: key.clone(),
                        changes,
                        stored,
                        enrolled: false,
                    }
                }
                None => {
                    let (changes, stored) = diff(None, snap, &proof);
                    Step::Updated {
                        key: key.clone(),
                        changes,
                        stored,
                        enrolled: true,
                    }
                }
            };
            out.steps.push(step);
            seen.insert(key);
        }
        let unidentified = scan.slot_problems.iter().any(|p| p.carrier.is_none());
        if unidentified {
            // A slot whose token could not even be named may hold any carrier of this module.
            continue;
        }
        let partial: HashSet<&str> = scan
            .slot_problems
            .iter()
            .filter_map(|p| p.carrier.as_deref())
            .collect();
        let mut gone: Vec<&KnownCarrier> = known
            .carriers
            .values()
            .filter(|c| c.present && c.module == path)
            .filter(|c| {
                !seen.contains(&c.key)
                    && !partial.contains(c.key.as_str())
                    && !first.contains_key(&c.key)
            })
            .collect();
        gone.sort_by(|a, b| a.key.cmp(&b.key));
        for c in gone {
            out.steps.push(Step::Removed {
                key: c.key.clone(),
                change: Change::CarrierRemoved {
                    label: c.label.clone(),
                    proof: ConfirmedAbsence::confirmed(),
                },
            });
        }
    }
    Ok(out)
}
