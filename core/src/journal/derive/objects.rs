//! The carrier tables (`carriers`, `carrier_snapshots`, `certificates`, `keys`) compared row
//! by row with the carriers as their events record them (`journal::carrier`).
//!
//! Compared: identity, label, flags, presence, enrolment, whether the carrier is a key in a
//! provider's HSM, and every certificate and key object with what its `cert_added` /
//! `key_added` event recorded (in a snapshot, certificates by SHA-256 and CKA_ID only); `carrier_snapshots.sha256` must be the digest of its snapshot
//! (it decides whether a scan compares a carrier at all), and `carriers.module` the module of
//! its snapshot. Not compared, because no event records them and no protective decision reads
//! them: `last_seen`, `last_slot`, the snapshot's slot, login outcome, hardware and firmware
//! versions and module path (beyond the above), object labels, CKA_START_DATE (column 2 of
//! the form is taken from the `issued` event), how certificates pair with keys, and the
//! `added_seq` columns (never read).

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::Connection;

use super::super::carrier::Recorded;
use super::super::db_err;
use super::super::remote::is_remote_module;
use super::rows::{
    compare, insert_counted, int, opt_txt, table_rows, txt, Rows, StateProblem, StateReport,
};
use crate::error::Result;
use crate::id::CarrierId;
use crate::inventory::{CarrierSnapshot, CertObject, KeyObject, TokenFlags};

fn flag(v: Option<bool>) -> Value {
    v.map_or(Value::Null, |b| Value::Integer(i64::from(b)))
}

fn remote(module: &str) -> Value {
    Value::Integer(i64::from(is_remote_module(module)))
}

fn cert_columns(c: &CertObject) -> BTreeMap<&'static str, Value> {
    let i = c.info.as_ref();
    BTreeMap::from([
        ("subject", opt_txt(i.map(|i| i.subject.clone()))),
        (
            "holder_name",
            opt_txt(i.and_then(|i| i.holder_name.clone())),
        ),
        (
            "tax_number",
            opt_txt(i.and_then(|i| i.tax_number.as_ref().map(|t| t.value.clone()))),
        ),
        (
            "org_code",
            opt_txt(i.and_then(|i| i.org_code.as_ref().map(|t| t.value.clone()))),
        ),
        (
            "not_before",
            opt_txt(i.map(|i| super::super::timestamp(i.not_before))),
        ),
        (
            "not_after",
            opt_txt(i.map(|i| super::super::timestamp(i.not_after))),
        ),
    ])
}

fn key_columns(k: &KeyObject) -> BTreeMap<&'static str, Value> {
    BTreeMap::from([
        ("local", flag(k.local)),
        ("never_extractable", flag(k.never_extractable)),
        ("always_sensitive", flag(k.always_sensitive)),
    ])
}

fn class(k: &KeyObject) -> &'static str {
    match k.class {
        crate::inventory::KeyClass::Public => "public",
        crate::inventory::KeyClass::Private => "private",
    }
}

fn key_name(k: &KeyObject) -> String {
    format!(
        "{}/{}/{}/{}",
        class(k),
        hex::encode(k.id.as_bytes()),
        k.key_type,
        k.public_key_sha256.as_deref().unwrap_or("")
    )
}

/// What a snapshot says that the events also record, as rows keyed by carrier and object.
fn snapshot_rows<'a>(
    out: &mut Rows,
    key: &str,
    (id, label, flags, module): (&CarrierId, &str, &TokenFlags, &str),
    certificates: impl Iterator<Item = &'a CertObject>,
    keys: impl Iterator<Item = &'a KeyObject>,
) {
    out.insert(
        key.to_owned(),
        BTreeMap::from([
            ("carrier key", txt(id.key())),
            ("label", txt(label)),
            (
                "flags",
                txt(serde_json::to_string(flags).unwrap_or_default()),
            ),
            ("module (provider's HSM)", remote(module)),
        ]),
    );
    for c in certificates {
        // By identity only: what a certificate says is read from its `cert_added` event
        // (`carrier::merge`), never from the snapshot, and a newer custody may parse it anew.
        let row = BTreeMap::new();
        let name = format!(
            "{key} certificate {}/{}",
            c.sha256,
            hex::encode(c.id.as_bytes())
        );
        insert_counted(out, name, row);
    }
    for k in keys {
        insert_counted(out, format!("{key} key {}", key_name(k)), key_columns(k));
    }
}

/// Compares the four carrier tables with `carriers` (every carrier the events enrolled).
pub(super) fn verify(
    conn: &Connection,
    carriers: &BTreeMap<String, Recorded>,
    report: &mut StateReport,
) -> Result<()> {
    // carriers
    let expected: Rows = carriers
        .iter()
        .map(|(key, r)| {
            let id = &r.summary.id;
            (
                key.clone(),
                BTreeMap::from([
                    ("manufacturer", txt(id.manufacturer.clone())),
                    ("model", txt(id.model.clone())),
                    ("serial", txt(id.serial.clone())),
                    ("label", txt(r.summary.label.clone())),
                    ("present", Value::Integer(i64::from(r.present))),
                    ("first_seen", txt(r.first_seen.clone())),
                    ("enrolled_seq", int(r.enrolled_seq)),
                    ("module (provider's HSM)", remote(&r.summary.module)),
                ]),
            )
        })
        .collect();
    let mut found = table_rows(
        conn,
        "carriers",
        "carrier",
        &[
            ("manufacturer", "manufacturer"),
            ("model", "model"),
            ("serial", "serial"),
            ("label", "label"),
            ("present", "present"),
            ("first_seen", "first_seen"),
            ("enrolled_seq", "enrolled_seq"),
            ("module (provider's HSM)", "module"),
        ],
    )?;
    let mut modules = BTreeMap::new();
    for (key, row) in &mut found {
        if let Some(Value::Text(m)) = row.get("module (provider's HSM)").cloned() {
            row.insert("module (provider's HSM)", remote(&m));
            modules.insert(key.clone(), m);
        }
    }
    compare("carriers", &expected, &found, report);

    // carrier_snapshots
    let mut expected = Rows::new();
    for (key, r) in carriers {
        let s = &r.summary;
        let private = r
            .keys
            .iter()
            .filter(|k| k.class == crate::inventory::KeyClass::Private);
        let public = r
            .keys
            .iter()
            .filter(|k| k.class == crate::inventory::KeyClass::Public);
        snapshot_rows(
            &mut expected,
            key,
            (&s.id, &s.label, &s.flags, &s.module),
            r.certificates.iter(),
            public.chain(private),
        );
        if !r.flags_known {
            // Not recorded by an older custody's `carrier_reinitialised`: not compared.
            if let Some(row) = expected.get_mut(key) {
                row.remove("flags");
            }
        }
    }
    let mut found = Rows::new();
    let mut stmt = conn
        .prepare("SELECT carrier, sha256, snapshot FROM carrier_snapshots")
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let bad = |key: &str, reason: String| StateProblem {
        table: "carrier_snapshots".into(),
        key: key.into(),
        reason,
    };
    while let Some(row) = rows.next().map_err(db_err)? {
        let key: String = row.get(0).map_err(db_err)?;
        let sha256: String = row.get(1).map_err(db_err)?;
        let text: String = row.get(2).map_err(db_err)?;
        let snap: CarrierSnapshot = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                report.problems.push(bad(
                    &key,
                    format!("the snapshot is not a carrier snapshot ({e})"),
                ));
                found.insert(key, BTreeMap::new());
                continue;
            }
        };
        match snap.digest() {
            Ok(d) if d == sha256 => {}
            Ok(d) => report.problems.push(bad(
                &key,
                format!("sha256 is {sha256:?} but the snapshot's digest is {d:?}"),
            )),
            Err(e) => report
                .problems
                .push(bad(&key, format!("the snapshot has no digest ({e})"))),
        }
        if let Some(m) = modules.get(&key).filter(|m| **m != snap.module) {
            report.problems.push(StateProblem {
                table: "carriers".into(),
                key: key.clone(),
                reason: format!(
                    "module is {m:?} but the carrier's snapshot says {:?}",
                    snap.module
                ),
            });
        }
        let keys = snap
            .public_keys
            .iter()
            .chain(snap.private_keys.iter().flatten());
        snapshot_rows(
            &mut found,
            &key,
            (&snap.id, &snap.label, &snap.flags, &snap.module),
            snap.certificates.iter(),
            keys,
        );
    }
    compare("carrier_snapshots", &expected, &found, report);

    // certificates
    let mut expected = Rows::new();
    for (key, r) in carriers {
        for c in &r.certificates {
            let name = format!("{key}/{}/{}", c.sha256, hex::encode(c.id.as_bytes()));
            // One row per (carrier, sha256, CKA_ID): the table's primary key.
            expected.entry(name).or_insert_with(|| cert_columns(c));
        }
    }
    let found = table_rows(
        conn,
        "certificates",
        "carrier || '/' || sha256 || '/' || lower(hex(cka_id))",
        &[
            ("subject", "subject"),
            ("holder_name", "holder_name"),
            ("tax_number", "tax_number"),
            ("org_code", "org_code"),
            ("not_before", "not_before"),
            ("not_after", "not_after"),
        ],
    )?;
    compare("certificates", &expected, &found, report);

    // keys
    let mut expected = Rows::new();
    for (key, r) in carriers {
        for k in &r.keys {
            insert_counted(
                &mut expected,
                format!("{key}/{}", key_name(k)),
                key_columns(k),
            );
        }
    }
    let found = table_rows(
        conn,
        "keys",
        "carrier || '/' || class || '/' || lower(hex(cka_id)) || '/' || key_type || '/' || coalesce(public_key_sha256, '')",
        &[
            ("local", "local"),
            ("never_extractable", "never_extractable"),
            ("always_sensitive", "always_sensitive"),
        ],
    )?;
    compare("keys", &expected, &found, report);
    Ok(())
}
