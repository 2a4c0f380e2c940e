use std::collections::HashMap;

use super::change::{diff, Previous};
use super::*;
use crate::id::{CarrierId, RawBytes};

fn proof() -> ConfirmedAbsence {
    ConfirmedAbsence::confirmed()
}

fn key(class: KeyClass, id: u8, fpr: &str) -> KeyObject {
    KeyObject {
        class,
        id: RawBytes::new(vec![id]),
        label: RawBytes::new(b"k".to_vec()),
        key_type: 3,
        key_type_name: key_type_name(3),
        public_key_sha256: Some(fpr.into()),
        local: Some(true),
        never_extractable: None,
        always_sensitive: None,
        start_date: None,
    }
}

fn cert(id: u8, sha: &str) -> CertObject {
    CertObject {
        id: RawBytes::new(vec![id]),
        label: RawBytes::default(),
        sha256: sha.into(),
        info: None,
        parse_error: Some("garbage".into()),
        key_pairing: KeyPairing::None,
    }
}

fn snapshot(label: &str) -> CarrierSnapshot {
    CarrierSnapshot {
        id: CarrierId {
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            serial: "0123abcd4567ef89".into(),
            discriminator: None,
        },
        label: label.into(),
        strings_lossy: false,
        serial_weak: false,
        flags: TokenFlags {
            token_initialized: true,
            user_pin_initialized: true,
            login_required: true,
            ..TokenFlags::default()
        },
        hardware_version: "2.6".into(),
        firmware_version: "2.6".into(),
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        slot: 1,
        certificates: vec![cert(1, "aa")],
        public_keys: vec![key(KeyClass::Public, 1, "f1")],
        private_keys: None,
        login: Login::NotAttempted,
    }
}

fn kinds(changes: &[Change]) -> Vec<&'static str> {
    changes.iter().map(|c| c.kind().as_str()).collect()
}

#[test]
fn object_order_does_not_matter_once_sorted() {
    let mut a = snapshot("a");
    a.certificates = vec![cert(2, "bb"), cert(1, "aa")];
    a.public_keys = vec![
        key(KeyClass::Public, 2, "f2"),
        key(KeyClass::Public, 1, "f1"),
    ];
    let mut b = a.clone();
    b.certificates.reverse();
    b.public_keys.reverse();
    assert_ne!(a, b);
    a.sort_objects();
    b.sort_objects();
    assert_eq!(a, b);
    assert_eq!(a.certificates[0].sha256, "aa");
}

#[test]
fn first_sight_enrolls_with_every_object() {
    let (changes, _) = diff(None, &snapshot("a"), &proof());
    assert_eq!(
        kinds(&changes),
        ["carrier_enrolled", "cert_added", "key_added"]
    );
}

#[test]
fn unchanged_state_gives_no_change() {
    let s = snapshot("a");
    let known = Previous {
        snapshot: s.clone(),
        present: true,
    };
    let (changes, stored) = diff(Some(&known), &s, &proof());
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(stored, s);
}

#[test]
fn slot_change_alone_is_not_a_change() {
    let s = snapshot("a");
    let known = Previous {
        snapshot: s.clone(),
        present: true,
    };
    let mut moved = s;
    moved.slot = 99;
    assert!(diff(Some(&known), &moved, &proof()).0.is_empty());
}

#[test]
fn cert_added_and_removed() {
    let s = snapshot("a");
    let known = Previous {
        snapshot: s.clone(),
        present: true,
    };
    let mut n = s;
    n.certificates = vec![cert(2, "bb")];
    let (changes, _) = diff(Some(&known), &n, &proof());
    assert_eq!(kinds(&changes), ["cert_removed", "cert_added"]);
}

#[test]
fn reinit_with_new_key_is_recorded_as_such() {
    let s = snapshot("old");
    let known = Previous {
        snapshot: s.clone(),
        present: true,
    };
    let mut n = s;
    n.label = "new".into();
    n.flags.user_pin_initialized = false;
    n.certificates.clear();
    n.public_keys = vec![key(KeyClass::Public, 7, "f7")];
    let (changes, _) = diff(Some(&known), &n, &proof());
    assert_eq!(
        kinds(&changes),
        [
            "carrier_reinitialised",
            "cert_removed",
            "key_removed",
            "key_added"
        ]
    );
}

#[test]
fn reappearing_carrier_is_seen_again() {
    let s = snapshot("a");
    let known = Previous {
        snapshot: s.clone(),
        present: false,
    };
    assert_eq!(kinds(&diff(Some(&known), &s, &proof()).0), ["carrier_seen"]);
}

#[test]
fn private_keys_unread_are_carried_over_not_removed() {
    let mut s = snapshot("a");
    s.private_keys = Some(vec![key(KeyClass::Private, 1, "f1")]);
    let known = Previous {
        snapshot: s.clone(),
        present: true,
    };
    let mut n = s.clone();
    n.private_keys = None;
    let (changes, stored) = diff(Some(&known), &n, &proof());
    assert!(changes.is_empty());
    assert_eq!(stored.private_keys, s.private_keys);
}

#[test]
fn pairing_confirms_by_public_key() {
    let mut s = snapshot("a");
    s.pair_keys();
    // the test certificate has no parsed info: only the id can match
    assert_eq!(s.certificates[0].key_pairing, KeyPairing::IdOnly);
}

#[test]
fn vendor_key_types_are_named_not_rejected() {
    assert_eq!(key_type_name(0x8042_0131), "DSTU 4145");
    assert_eq!(key_type_name(0x8000_0001), "vendor 0x80000001");
}

fn module_scan(carriers: Vec<CarrierSnapshot>) -> ModuleScan {
    ModuleScan::read(
        ModuleInfo::unknown("/usr/lib/softhsm/libsofthsm2.so"),
        carriers,
        Vec::new(),
        1,
        None,
    )
}

/// The journal's state after recording `snaps` (present), by running the comparison.
fn known_after(snaps: &[CarrierSnapshot]) -> (Known, HashMap<String, CarrierSnapshot>) {
    let mut known = Known::default();
    let mut stored = HashMap::new();
    for s in snaps {
        let key = s.id.key();
        known.carriers.insert(
            key.clone(),
            KnownCarrier {
                key: key.clone(),
                manufacturer: s.id.manufacturer.clone(),
                model: s.id.model.clone(),
                serial: s.id.serial.clone(),
                label: s.label.clone(),
                module: s.module.clone(),
                present: true,
                last_slot: Some(s.slot),
                digest: s.digest().unwrap_or_default(),
            },
        );
        stored.insert(key, s.clone());
    }
    (known, stored)
}

fn run(
    scans: &[ModuleScan],
    known: &Known,
    stored: &HashMap<String, CarrierSnapshot>,
) -> Vec<String> {
    let observed = Observed::new(scans, known).unwrap_or_else(|e| panic!("{e}"));
    let mut load = |k: &str| {
        stored
            .get(k)
            .cloned()
            .ok_or_else(|| crate::error::Error::JournalCorrupt(k.into()))
    };
    let cmp = compare(&observed, known, &mut load).unwrap_or_else(|e| panic!("{e}"));
    cmp.steps
        .iter()
        .flat_map(|s| match s {
            Step::Module(m) => vec![m.kind().as_str().to_owned()],
            Step::Unchanged { .. } => vec!["unchanged".to_owned()],
            Step::Updated { changes, .. } => changes
                .iter()
                .map(|c| c.kind().as_str().to_owned())
                .collect(),
            Step::Removed { change, .. } => vec![change.kind().as_str().to_owned()],
        })
        .collect()
}

fn weak(label: &str, slot: u64) -> CarrierSnapshot {
    let mut s = snapshot(label);
    s.id.serial = "0000000000000000".into();
    s.serial_weak = true;
    s.id.discriminator = Some(crate::id::weak_discriminator(label));
    s.slot = slot;
    s
}

#[test]
fn a_complete_read_without_the_carrier_removes_it() {
    let (known, stored) = known_after(&[snapshot("a")]);
    assert_eq!(
        run(&[module_scan(vec![])], &known, &stored),
        ["carrier_removed"]
    );
}

#[test]
fn a_failed_module_records_one_event_and_removes_nothing() {
    let mut b = snapshot("b");
    b.id.serial = "1111222233334444".into();
    let (mut known, stored) = known_after(&[snapshot("a"), b]);
    let failed = ModuleScan::failed(
        ModuleInfo::unknown("/usr/lib/softhsm/libsofthsm2.so"),
        CallError {
            call: "C_GetSlotList".into(),
            rv: "CKR_DEVICE_ERROR".into(),
        },
    );
    assert_eq!(
        run(std::slice::from_ref(&failed), &known, &stored),
        ["module_unavailable"]
    );
    // once recorded, a second failure adds nothing
    known
        .unavailable
        .insert("/usr/lib/softhsm/libsofthsm2.so".into());
    assert!(run(&[failed], &known, &stored).is_empty());
    // recovery, then the normal comparison
    assert_eq!(
        run(&[module_scan(vec![snapshot("a")])], &known, &stored),
        ["module_recovered", "unchanged", "carrier_removed"]
    );
}

#[test]
fn an_empty_slot_list_after_device_errors_removes_nothing() {
    let (known, stored) = known_after(&[snapshot("a")]);
    let dead = ModuleScan::read(
        ModuleInfo::unknown("/usr/lib/softhsm/libsofthsm2.so"),
        vec![],
        vec![],
        0,
        Some(CallError {
            call: "C_GetTokenInfo".into(),
            rv: "CKR_DEVICE_ERROR".into(),
        }),
    );
    assert_eq!(run(&[dead], &known, &stored), ["module_unavailable"]);
}

#[test]
fn a_carrier_pulled_mid_read_is_not_removed() {
    let a = snapshot("a");
    let (known, stored) = known_after(std::slice::from_ref(&a));
    let mut scan = module_scan(vec![]);
    scan.slot_problems.push(SlotProblem {
        slot: 1,
        carrier: Some(a.id.key()),
        message: "C_FindObjects returned CKR_DEVICE_REMOVED".into(),
    });
    assert!(run(std::slice::from_ref(&scan), &known, &stored).is_empty());
    // a slot that could not even be named may hold it too
    scan.slot_problems[0].carrier = None;
    assert!(run(&[scan], &known, &stored).is_empty());
}

#[test]
fn content_never_changes_a_weak_serial_identity() {
    let a = weak("tpm a", 1);
    let (known, stored) = known_after(std::slice::from_ref(&a));
    let mut more = a.clone();
    more.certificates.push(cert(9, "cc"));
    assert_eq!(
        run(&[module_scan(vec![more])], &known, &stored),
        ["cert_added"]
    );
}

#[test]
fn two_weak_serial_tokens_are_two_carriers_even_with_one_label() {
    let scan = module_scan(vec![weak("same", 1), weak("same", 2)]);
    let steps = run(
        std::slice::from_ref(&scan),
        &Known::default(),
        &HashMap::new(),
    );
    assert_eq!(steps.iter().filter(|k| *k == "carrier_enrolled").count(), 2);
    let observed = Observed::new(std::slice::from_ref(&scan), &Known::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let cmp = compare(&observed, &Known::default(), &mut |k: &str| {
        Err(crate::error::Error::JournalCorrupt(k.into()))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let keys: std::collections::BTreeSet<String> = cmp
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Updated { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[test]
fn a_weak_serial_carrier_reinitialised_in_place_is_recorded_as_such() {
    let a = weak("old label", 3);
    let (known, stored) = known_after(std::slice::from_ref(&a));
    let mut re = weak("new label", 3);
    re.certificates.clear();
    re.public_keys.clear();
    re.flags.user_pin_initialized = false;
    let steps = run(&[module_scan(vec![re])], &known, &stored);
    assert_eq!(
        steps,
        ["carrier_reinitialised", "cert_removed", "key_removed"]
    );
}

#[test]
fn a_second_read_that_disagrees_names_the_carrier_as_not_read_completely() {
    let m = ModuleInfo::unknown("/m.so");
    let whole = snapshot("a");
    let mut part = whole.clone();
    part.certificates.clear();
    let first = ModuleScan::read(m.clone(), vec![part.clone()], vec![], 1, None);
    // The same read twice (another slot id aside) is confirmed as it is.
    let mut moved = part.clone();
    moved.slot = 7;
    let same = ModuleScan::read(m.clone(), vec![moved], vec![], 1, None).confirmed_by(&first);
    assert!(same.is_complete());
    assert_eq!(same.carriers.len(), 1);
    // Gone, or whole again: the carrier is a slot problem, nothing of it is removed.
    for second in [vec![], vec![whole.clone()]] {
        let c = ModuleScan::read(m.clone(), second, vec![], 1, None).confirmed_by(&first);
        assert!(!c.is_complete());
        assert!(c.carriers.is_empty());
        assert_eq!(c.slot_problems.len(), 1);
        assert_eq!(
            c.slot_problems[0].carrier.as_deref(),
            Some(whole.id.key().as_str())
        );
    }
    // A weak serial cannot be named without the journal: the problem names no carrier.
    let mut weak = part;
    weak.serial_weak = true;
    let first = ModuleScan::read(m.clone(), vec![weak], vec![], 1, None);
    let c = ModuleScan::read(m, vec![], vec![], 1, None).confirmed_by(&first);
    assert_eq!(c.slot_problems[0].carrier, None);
    assert!(disagreements(&first, &c).len() == 1);
}

fn scan_of(module: &str, carriers: Vec<CarrierSnapshot>) -> ModuleScan {
    let carriers = carriers
        .into_iter()
        .map(|mut c| {
            c.module = module.into();
            c
        })
        .collect();
    ModuleScan::read(ModuleInfo::unknown(module), carriers, Vec::new(), 1, None)
}

#[test]
fn one_carrier_shown_by_two_modules_is_recorded_once() {
    let (known, stored) = known_after(&[]);
    let scans = [
        scan_of("/m1.so", vec![snapshot("a")]),
        scan_of("/m2.so", vec![snapshot("a")]),
    ];
    assert_eq!(
        run(&scans, &known, &stored),
        ["carrier_enrolled", "cert_added", "key_added"]
    );
    // The same token twice in one module: once as well.
    let mut twice = snapshot("a");
    twice.slot = 2;
    assert_eq!(
        run(
            &[scan_of("/m1.so", vec![snapshot("a"), twice])],
            &known,
            &stored
        ),
        ["carrier_enrolled", "cert_added", "key_added"]
    );
}

#[test]
fn a_carrier_one_module_no_longer_shows_but_another_does_is_not_removed() {
    let mut a = snapshot("a");
    a.module = "/m1.so".into();
    let (known, stored) = known_after(&[a]);
    // Positive control: gone from every module, it is removed.
    assert_eq!(
        run(
            &[scan_of("/m1.so", vec![]), scan_of("/m2.so", vec![])],
            &known,
            &stored
        ),
        ["carrier_removed"]
    );
    // Shown by the other module: present, nothing removed (only where it is read changes).
    let steps = run(
        &[
            scan_of("/m1.so", vec![]),
            scan_of("/m2.so", vec![snapshot("a")]),
        ],
        &known,
        &stored,
    );
    assert!(steps.iter().all(|s| s != "carrier_removed"), "{steps:?}");
}
