//! Each carrier as its hash-chained events record it ([`Recorded`]), and the snapshot that
//! decisions read ([`recorded_snapshot`]).
//!
//! `carrier_snapshots` holds the last snapshot of each carrier, the basis of the next scan's
//! comparison; anyone who can write the file can change it without breaking the chain. So
//! what the events record of a carrier (identity, label, flags, presence, and every
//! certificate and key object added and not removed since) is replayed from the events
//! whenever a decision needs it: the comparison of a scan (which objects were there before),
//! issuance (the key set handed over) and the certificates an order names. The stored row
//! adds only what no event records: the slot, the login outcome, hardware and firmware
//! versions, the module the carrier was last read through, object labels and CKA_START_DATE,
//! and how certificates pair with keys. `journal verify` compares the stored rows with the
//! events (see `derive`). This module never writes.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value as Json;

use super::{db_err, remote::is_remote_module, EventKind};
use crate::error::{Error, Result};
use crate::inventory::{CarrierSnapshot, CarrierSummary, CertObject, KeyObject, Login};

/// The kinds of event that change what the journal records of a carrier.
pub(crate) const KINDS: &str = "'carrier_enrolled', 'carrier_seen', 'carrier_reinitialised', \
     'carrier_changed', 'carrier_removed', 'cert_added', 'cert_removed', 'key_added', 'key_removed'";

/// One carrier as its events record it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// What `carrier_enrolled` recorded (label and flags kept current below).
    pub(crate) summary: CarrierSummary,
    /// False after a `carrier_reinitialised` written before it recorded the flags, until
    /// the next `carrier_changed` that records them: the flags are then not known.
    pub(crate) flags_known: bool,
    /// Present after the last carrier event.
    pub(crate) present: bool,
    /// When it was enrolled.
    pub(crate) first_seen: String,
    /// The `carrier_enrolled` event.
    pub(crate) enrolled_seq: u64,
    /// Certificate objects added and not removed since, in the order they were added.
    pub(crate) certificates: Vec<CertObject>,
    /// Key objects (public and private) added and not removed since.
    pub(crate) keys: Vec<KeyObject>,
}

impl Recorded {
    /// True when the carrier was enrolled as a key in a provider's HSM (`remote`).
    pub(crate) fn is_remote(&self) -> bool {
        is_remote_module(&self.summary.module)
    }
}

fn corrupt(kind: EventKind, seq: u64, what: impl std::fmt::Display) -> Error {
    Error::JournalCorrupt(format!("{kind} #{seq}: {what}"))
}

fn field<T: serde::de::DeserializeOwned>(
    data: &Json,
    name: &str,
    kind: EventKind,
    seq: u64,
) -> Result<T> {
    T::deserialize(&data[name]).map_err(|e| corrupt(kind, seq, format!("{name}: {e}")))
}

/// Applies one event to `carriers` (events of other kinds are ignored). An object event of a
/// carrier that was never enrolled, or a removal of an object the events never added, is
/// an error: custody writes neither.
pub(crate) fn apply(
    carriers: &mut BTreeMap<String, Recorded>,
    seq: u64,
    at: &str,
    kind: EventKind,
    carrier: Option<&str>,
    data: &Json,
) -> Result<()> {
    let is_carrier_event = matches!(
        kind,
        EventKind::CarrierEnrolled
            | EventKind::CarrierSeen
            | EventKind::CarrierReinitialised
            | EventKind::CarrierChanged
            | EventKind::CarrierRemoved
            | EventKind::CertAdded
            | EventKind::CertRemoved
            | EventKind::KeyAdded
            | EventKind::KeyRemoved
    );
    if !is_carrier_event {
        return Ok(());
    }
    let Some(key) = carrier else {
        return Err(corrupt(kind, seq, "the event names no carrier"));
    };
    if kind == EventKind::CarrierEnrolled {
        if carriers.contains_key(key) {
            return Err(corrupt(
                kind,
                seq,
                format!("carrier {key} was enrolled before"),
            ));
        }
        let summary: CarrierSummary = field(data, "carrier", kind, seq)?;
        carriers.insert(
            key.to_owned(),
            Recorded {
                summary,
                flags_known: true,
                present: true,
                first_seen: at.to_owned(),
                enrolled_seq: seq,
                certificates: Vec::new(),
                keys: Vec::new(),
            },
        );
        return Ok(());
    }
    let Some(c) = carriers.get_mut(key) else {
        return Err(corrupt(
            kind,
            seq,
            format!("carrier {key} was never enrolled"),
        ));
    };
    let text = |name: &str| data[name].as_str().map(str::to_owned);
    match kind {
        EventKind::CarrierSeen => {
            c.present = true;
            if let Some(label) = text("label") {
                c.summary.label = label;
            }
        }
        EventKind::CarrierReinitialised => {
            if let Some(label) = text("new_label") {
                c.summary.label = label;
            }
            c.flags_known = !data["flags"].is_null();
            if c.flags_known {
                c.summary.flags = field(data, "flags", kind, seq)?;
            }
        }
        EventKind::CarrierChanged => {
            if let Some(label) = text("new_label") {
                c.summary.label = label;
            }
            if !data["flags"].is_null() {
                c.summary.flags = field(data, "flags", kind, seq)?;
                c.flags_known = true;
            }
        }
        EventKind::CarrierRemoved => c.present = false,
        EventKind::CertAdded => c.certificates.push(field(data, "cert", kind, seq)?),
        EventKind::CertRemoved => {
            let sha256 = text("sha256").unwrap_or_default();
            let id = field(data, "id", kind, seq)?;
            let Some(i) = c
                .certificates
                .iter()
                .position(|o| o.sha256 == sha256 && o.id == id)
            else {
                return Err(corrupt(kind, seq, "the certificate was never added"));
            };
            c.certificates.remove(i);
        }
        EventKind::KeyAdded => c.keys.push(field(data, "key", kind, seq)?),
        EventKind::KeyRemoved => {
            let class = field(data, "class", kind, seq)?;
            let id = field(data, "id", kind, seq)?;
            let public: Option<String> = text("public_key_sha256");
            let Some(i) = c
                .keys
                .iter()
                .position(|o| o.class == class && o.id == id && o.public_key_sha256 == public)
            else {
                return Err(corrupt(kind, seq, "the key was never added"));
            };
            c.keys.remove(i);
        }
        _ => {}
    }
    Ok(())
}

/// One carrier as its events record it, or `None` when it was never enrolled.
pub(crate) fn recorded(conn: &Connection, key: &str) -> Result<Option<Recorded>> {
    let sql = format!(
        "SELECT seq, at, kind, data FROM events WHERE carrier = ?1 AND kind IN ({KINDS})
         ORDER BY seq"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let mut rows = stmt.query([key]).map_err(db_err)?;
    let mut carriers = BTreeMap::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let seq = r.get::<_, i64>(0).map_err(db_err)? as u64;
        let at: String = r.get(1).map_err(db_err)?;
        let kind: EventKind = r.get(2).map_err(db_err)?;
        let data: String = r.get(3).map_err(db_err)?;
        let data: Json = serde_json::from_str(&data)
            .map_err(|e| corrupt(kind, seq, format!("event data: {e}")))?;
        apply(&mut carriers, seq, &at, kind, Some(key), &data)?;
    }
    Ok(carriers.remove(key))
}

/// The stored snapshot of a carrier, if the row exists and parses.
fn stored(conn: &Connection, key: &str) -> Result<Option<CarrierSnapshot>> {
    let text: Option<String> = conn
        .query_row(
            "SELECT snapshot FROM carrier_snapshots WHERE carrier = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// The snapshot of a carrier that decisions read: everything the events record (identity,
/// label, flags, the certificate and key objects) from the events, the rest (see the module
/// documentation) from the stored row. `None` when the events never enrolled `key`. A stored
/// row that differs from the events is logged; the events win.
pub(crate) fn recorded_snapshot(conn: &Connection, key: &str) -> Result<Option<CarrierSnapshot>> {
    let Some(r) = recorded(conn, key)? else {
        return Ok(None);
    };
    let stored = stored(conn, key)?;
    let snapshot = merge(&r, stored.as_ref());
    if stored.as_ref().is_none_or(|s| !same_record(s, &snapshot)) {
        tracing::warn!(
            carrier = key,
            "the stored snapshot of this carrier differs from its events (the carrier_snapshots table was changed outside custody); custody uses the events. Run `custody journal verify`"
        );
    }
    Ok(Some(snapshot))
}

/// `r` as a snapshot, with what no event records taken from `stored` when there is one.
pub(crate) fn merge(r: &Recorded, stored: Option<&CarrierSnapshot>) -> CarrierSnapshot {
    let s = &r.summary;
    let certificates = r
        .certificates
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let old = stored.and_then(|s| {
                s.certificates
                    .iter()
                    .find(|o| o.sha256 == c.sha256 && o.id == c.id)
            });
            if let Some(old) = old {
                c.label = old.label.clone();
                c.key_pairing = old.key_pairing;
            }
            c
        })
        .collect();
    let stored_keys = stored
        .map(|s| {
            s.public_keys
                .iter()
                .chain(s.private_keys.iter().flatten())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let keys: Vec<KeyObject> = r
        .keys
        .iter()
        .map(|k| {
            let mut k = k.clone();
            if let Some(old) = stored_keys.iter().find(|o| same_key(o, &k)) {
                k.label = old.label.clone();
                k.start_date = old.start_date.clone();
            }
            k
        })
        .collect();
    let (private, public): (Vec<KeyObject>, Vec<KeyObject>) = keys
        .into_iter()
        .partition(|k| k.class == crate::inventory::KeyClass::Private);
    let private_keys = match (private.is_empty(), stored) {
        (false, _) => Some(private),
        (true, Some(st)) => st.private_keys.as_ref().map(|_| Vec::new()),
        (true, None) => None,
    };
    let mut snapshot = CarrierSnapshot {
        id: s.id.clone(),
        label: s.label.clone(),
        strings_lossy: s.strings_lossy,
        serial_weak: s.serial_weak,
        flags: s.flags,
        hardware_version: s.hardware_version.clone(),
        firmware_version: s.firmware_version.clone(),
        module: s.module.clone(),
        slot: 0,
        certificates,
        public_keys: public,
        private_keys,
        login: Login::NotAttempted,
    };
    if let Some(st) = stored {
        snapshot.strings_lossy = st.strings_lossy;
        snapshot.hardware_version = st.hardware_version.clone();
        snapshot.firmware_version = st.firmware_version.clone();
        // A carrier enrolled from a provider's HSM stays one, and no other becomes one.
        if is_remote_module(&st.module) == is_remote_module(&s.module) {
            snapshot.module = st.module.clone();
        }
        snapshot.slot = st.slot;
        snapshot.login = st.login.clone();
        if !r.flags_known {
            snapshot.flags = st.flags;
        }
    }
    snapshot
}

/// Two keys are the same object to a scan's comparison (`inventory`) and to the events.
pub(crate) fn same_key(a: &KeyObject, b: &KeyObject) -> bool {
    a.class == b.class
        && a.id == b.id
        && a.key_type == b.key_type
        && a.public_key_sha256 == b.public_key_sha256
}

/// True when two snapshots agree on everything the events record.
fn same_record(a: &CarrierSnapshot, b: &CarrierSnapshot) -> bool {
    let certs = |s: &CarrierSnapshot| {
        let mut v: Vec<(String, Vec<u8>, Option<String>)> = s
            .certificates
            .iter()
            .map(|c| {
                (
                    c.sha256.clone(),
                    c.id.as_bytes().to_vec(),
                    serde_json::to_string(&c.info).ok(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let keys = |s: &CarrierSnapshot| {
        let mut v: Vec<String> = s
            .public_keys
            .iter()
            .chain(s.private_keys.iter().flatten())
            .map(|k| {
                format!(
                    "{:?}/{}/{}/{:?}/{:?}/{:?}/{:?}",
                    k.class,
                    hex::encode(k.id.as_bytes()),
                    k.key_type,
                    k.public_key_sha256,
                    k.local,
                    k.never_extractable,
                    k.always_sensitive
                )
            })
            .collect();
        v.sort();
        v
    };
    a.id == b.id
        && a.label == b.label
        && a.flags == b.flags
        && is_remote_module(&a.module) == is_remote_module(&b.module)
        && certs(a) == certs(b)
        && keys(a) == keys(b)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inventory::TokenFlags;

    fn run(events: &[(EventKind, Json)]) -> Result<BTreeMap<String, Recorded>> {
        let mut carriers = BTreeMap::new();
        for (i, (kind, data)) in events.iter().enumerate() {
            apply(
                &mut carriers,
                i as u64 + 1,
                "2026-12-03T10:00:00.000Z",
                *kind,
                Some("m/x/1"),
                data,
            )?;
        }
        Ok(carriers)
    }

    fn enrolled() -> (EventKind, Json) {
        let flags = serde_json::to_value(TokenFlags::default()).unwrap_or_default();
        (
            EventKind::CarrierEnrolled,
            json!({"event": "carrier_enrolled", "carrier": {
                "id": {"manufacturer": "m", "model": "x", "serial": "1"}, "label": "a",
                "strings_lossy": false, "serial_weak": false, "flags": flags,
                "hardware_version": "1.0", "firmware_version": "1.0", "module": "/lib/p11.so"}}),
        )
    }

    fn cert(sha: &str) -> Json {
        json!({"id": "01", "label": "", "sha256": sha, "info": null, "parse_error": "x",
               "key_pairing": "none"})
    }

    fn key(class: &str) -> Json {
        json!({"class": class, "id": "01", "label": "", "key_type": 3, "key_type_name": "EC",
               "public_key_sha256": "ab"})
    }

    #[test]
    fn objects_added_and_removed_leave_what_is_on_the_carrier() -> Result<()> {
        let c = run(&[
            enrolled(),
            (EventKind::CertAdded, json!({"cert": cert("aa")})),
            (EventKind::CertAdded, json!({"cert": cert("bb")})),
            (EventKind::KeyAdded, json!({"key": key("public")})),
            (EventKind::KeyAdded, json!({"key": key("private")})),
            (EventKind::CertRemoved, json!({"sha256": "aa", "id": "01"})),
            (
                EventKind::KeyRemoved,
                json!({"class": "private", "id": "01", "public_key_sha256": "ab"}),
            ),
            (EventKind::CarrierRemoved, json!({"label": "a"})),
        ])?;
        let r = &c["m/x/1"];
        assert_eq!(r.certificates.len(), 1);
        assert_eq!(r.certificates[0].sha256, "bb");
        assert_eq!(r.keys.len(), 1);
        assert_eq!(r.keys[0].class, crate::inventory::KeyClass::Public);
        assert!(!r.present);
        let snap = merge(r, None);
        assert_eq!(snap.private_keys, None);
        assert_eq!(snap.public_keys.len(), 1);
        Ok(())
    }

    #[test]
    fn events_custody_never_writes_are_errors() {
        let never_added = run(&[
            enrolled(),
            (EventKind::CertRemoved, json!({"sha256": "aa", "id": "01"})),
        ]);
        assert!(never_added.is_err());
        let not_enrolled = run(&[(EventKind::CertAdded, json!({"cert": cert("aa")}))]);
        assert!(not_enrolled.is_err());
        let twice = run(&[enrolled(), enrolled()]);
        assert!(twice.is_err());
    }

    #[test]
    fn flags_are_known_again_once_an_event_records_them() -> Result<()> {
        let locked = TokenFlags {
            user_pin_locked: true,
            ..TokenFlags::default()
        };
        let locked = serde_json::to_value(locked).unwrap_or_default();
        // An older custody's re-initialisation did not record the flags.
        let c = run(&[
            enrolled(),
            (
                EventKind::CarrierReinitialised,
                json!({"old_label": "a", "new_label": "b"}),
            ),
        ])?;
        assert!(!c["m/x/1"].flags_known);
        assert_eq!(c["m/x/1"].summary.label, "b");
        let c = run(&[
            enrolled(),
            (
                EventKind::CarrierReinitialised,
                json!({"old_label": "a", "new_label": "b"}),
            ),
            (EventKind::CarrierChanged, json!({"flags": locked})),
        ])?;
        assert!(c["m/x/1"].flags_known);
        assert!(c["m/x/1"].summary.flags.user_pin_locked);
        let c = run(&[
            enrolled(),
            (
                EventKind::CarrierReinitialised,
                json!({"old_label": "a", "new_label": "b", "flags": locked}),
            ),
        ])?;
        assert!(c["m/x/1"].flags_known && c["m/x/1"].summary.flags.user_pin_locked);
        Ok(())
    }
}
