//! Which carrier a read token is, when its serial cannot say (see [`crate::id::is_weak_serial`]).
//!
//! A carrier is manufacturer + model + serial. Tokens with weak serials (tpm2-pkcs11: every
//! serial `0000000000000000`) also get a discriminator, made from the label when first seen
//! ([`crate::id::weak_discriminator`]) and never from content, so adding or removing a
//! certificate or key never makes another carrier. Here, against what the journal knows:
//! - two tokens of one read that would share a key are two carriers (the later ones, in slot
//!   order, get `-2`, `-3`, … appended to the discriminator);
//! - a token whose key the journal does not know, in the slot where a weak-serial carrier of
//!   the same manufacturer, model, serial and module was last seen and that this read does not
//!   show otherwise, is that carrier: re-initialised in place (its label changed), which the
//!   comparison records as `carrier_reinitialised`, not as removed + enrolled.

use std::borrow::Cow;
use std::collections::HashSet;

use super::compare::Known;
use super::snapshot::CarrierSnapshot;

/// The carriers of one module's read with weak-serial identities resolved; borrowed as is
/// when no carrier has a weak serial (every scan of ordinary tokens).
pub(super) fn resolve<'a>(
    carriers: &'a [CarrierSnapshot],
    module: &str,
    known: &Known,
) -> Cow<'a, [CarrierSnapshot]> {
    if !carriers.iter().any(|c| c.serial_weak) {
        return Cow::Borrowed(carriers);
    }
    let mut out = carriers.to_vec();
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by_key(|&i| out[i].slot);
    // Two tokens are two carriers, even with the same weak serial and label.
    let mut keys = HashSet::new();
    for &i in &order {
        let base = out[i].id.discriminator.clone().unwrap_or_default();
        let mut n = 1;
        while !keys.insert(out[i].id.key()) {
            n += 1;
            out[i].id.discriminator = Some(format!("{base}-{n}"));
        }
    }
    // A token the journal does not know, where a known weak carrier of its kind was last seen.
    let mut taken: HashSet<String> = keys.clone();
    for &i in &order {
        let snap = &out[i];
        if !snap.serial_weak || known.carriers.contains_key(&snap.id.key()) {
            continue;
        }
        let candidates: Vec<&super::KnownCarrier> = known
            .carriers
            .values()
            .filter(|k| {
                k.module == module
                    && k.last_slot == Some(snap.slot)
                    && k.manufacturer == snap.id.manufacturer
                    && k.model == snap.id.model
                    && k.serial == snap.id.serial
                    && !taken.contains(&k.key)
            })
            .collect();
        let [same] = candidates.as_slice() else {
            continue;
        };
        let Some((_, discriminator)) = same.key.rsplit_once('#') else {
            continue;
        };
        tracing::info!(carrier = %same.key, slot = snap.slot, "weak-serial carrier found in its slot with another label: the same carrier");
        taken.insert(same.key.clone());
        out[i].id.discriminator = Some(discriminator.to_owned());
    }
    Cow::Owned(out)
}
