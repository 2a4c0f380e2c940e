//! Planning: the target checks that refuse before anything is touched.

use std::process::Command;

use time::macros::datetime;

use super::*;
use crate::id::{CarrierId, RawBytes};
use crate::inventory::{CertObject, KeyClass, KeyObject, KeyPairing, Login, TokenFlags};
use crate::order::{AllowedSigners, OrderInput, Zone};

const NOW: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

fn verified(method: &str, certs: &[&str], manufacturer: Option<&str>) -> VerifiedOrder {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("custody-wipe-plan-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let key = dir.join("k");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap_or_default();
    let pem = std::fs::read_to_string(&key).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let certs: Vec<String> = certs.iter().map(|c| format!("\"{c}\"")).collect();
    let manufacturer = manufacturer
        .map(|m| format!(", \"manufacturer\": \"{m}\""))
        .unwrap_or_default();
    let doc = format!(
        r#"{{"id":"o1","issued_at":"2026-11-24T08:00:00Z","not_after":"2026-11-26T08:00:00Z","dismissed":"2026-11-23",
"holder":"H","target":{{"serial":"s1"{manufacturer}}},"certificates":[{}],"method":"{method}","responsible":"R","reason":"x"}}"#,
        certs.join(",")
    );
    let (sig, _) =
        crate::order::signature::sign(&pem, doc.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let allowed = AllowedSigners::parse(&format!("a {public}"), "t", &Zone::utc())
        .unwrap_or_else(|e| panic!("{e}"));
    let input = OrderInput {
        order: doc.clone().into_bytes(),
        order_size: doc.len() as u64,
        signatures: Some(sig.into_bytes()),
        signatures_size: 0,
    };
    crate::order::verify(&input, &allowed, 1, NOW).unwrap_or_else(|r| panic!("{r}"))
}

fn key(class: KeyClass, id: u8, fp: &str) -> KeyObject {
    KeyObject {
        class,
        id: RawBytes::new(vec![id]),
        label: RawBytes::new(b"k".to_vec()),
        key_type: 3,
        key_type_name: "EC".into(),
        public_key_sha256: Some(fp.into()),
        local: Some(true),
        never_extractable: None,
        always_sensitive: None,
        start_date: None,
    }
}

fn snapshot(serial: &str, cert_sha: &str) -> CarrierSnapshot {
    CarrierSnapshot {
        id: CarrierId {
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            serial: serial.into(),
            discriminator: None,
        },
        label: "alice".into(),
        strings_lossy: false,
        serial_weak: false,
        flags: TokenFlags::default(),
        hardware_version: "2.6".into(),
        firmware_version: "2.6".into(),
        module: "/m.so".into(),
        slot: 7,
        certificates: vec![CertObject {
            id: RawBytes::new(vec![1]),
            label: RawBytes::new(b"c".to_vec()),
            sha256: cert_sha.into(),
            info: None,
            parse_error: Some("x".into()),
            key_pairing: KeyPairing::None,
        }],
        public_keys: vec![key(KeyClass::Public, 1, "pk1")],
        private_keys: Some(vec![
            key(KeyClass::Private, 1, "pk1"),
            key(KeyClass::Private, 2, "pk2"),
        ]),
        login: Login::LoggedIn,
    }
}

fn module() -> ModuleInfo {
    ModuleInfo {
        path: "/m.so".into(),
        manufacturer: "m".into(),
        description: "d".into(),
        version: "1.0".into(),
    }
}

#[test]
fn plan_lists_every_object_and_fingerprint() {
    let sha = "ab".repeat(32);
    let order = verified("reinit", &[&sha], Some("SoftHSM project"));
    let plan = plan(&order, &snapshot("s1", &sha), &module()).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(plan.objects.len(), 4);
    assert_eq!(plan.gone.cka_ids, vec!["01".to_owned(), "02".to_owned()]);
    assert_eq!(
        plan.gone.public_keys,
        vec!["pk1".to_owned(), "pk2".to_owned()]
    );
    assert_eq!(plan.gone.certificates, vec![sha]);
    assert!(!plan.gone.no_private_keys);
    assert_eq!(plan.new_label, "wiped o1");
    assert_eq!(plan.slot, 7);
    // Where a re-initialised token with a new serial is looked for after the wipe.
    assert_eq!(
        plan.gone.reinit_in,
        Some(ReinitTrace {
            slot: 7,
            label: "wiped o1".into()
        })
    );
}

#[test]
fn destroy_keys_plan_requires_no_private_key_left() {
    let order = verified("destroy-keys", &[], None);
    let plan = plan(&order, &snapshot("s1", &"cd".repeat(32)), &module())
        .unwrap_or_else(|r| panic!("{r}"));
    assert!(plan.gone.no_private_keys);
    assert_eq!(plan.gone.reinit_in, None);
}

#[test]
fn other_serial_manufacturer_or_certificate_is_refused() {
    let sha = "ab".repeat(32);
    let order = verified("reinit", &[&sha], Some("SoftHSM project"));
    let r = plan(&order, &snapshot("s2", &sha), &module())
        .err()
        .map(|r| r.code);
    assert_eq!(r, Some(RejectCode::TargetMismatch));
    let mut other = snapshot("s1", &sha);
    other.id.manufacturer = "Other".into();
    let r = plan(&order, &other, &module()).err().map(|r| r.code);
    assert_eq!(r, Some(RejectCode::TargetMismatch));
    let r = plan(&order, &snapshot("s1", &"cd".repeat(32)), &module())
        .err()
        .map(|r| r.code);
    assert_eq!(r, Some(RejectCode::CertificateMismatch));
}

#[test]
fn secrets_debug_never_shows_pins() {
    let s = Secrets {
        so_pin: Some(SecretString::from("CANARY-SO-4711")),
        user_pin: Some(SecretString::from("CANARY-USER-4712")),
    };
    let text = format!("{s:?}");
    assert!(!text.contains("CANARY"), "{text}");
}

#[test]
fn a_resumed_plan_accepts_certificates_gone_in_the_earlier_attempt() {
    let sha = "ab".repeat(32);
    let order = verified("reinit", &[&sha], None);
    let first = plan(&order, &snapshot("s1", &sha), &module()).unwrap_or_else(|r| panic!("{r}"));
    // The interrupted attempt deleted the certificate; the keys remain.
    let mut now = snapshot("s1", &sha);
    now.certificates.clear();
    assert_eq!(
        plan(&order, &now, &module()).err().map(|r| r.code),
        Some(RejectCode::CertificateMismatch)
    );
    let again =
        plan_resumed(&order, &now, &module(), Some(&first)).unwrap_or_else(|r| panic!("{r}"));
    assert!(
        again.gone.certificates.contains(&sha),
        "the old certificate is still checked"
    );
    assert_eq!(again.objects.len(), first.objects.len());
    // Another carrier's earlier plan does not count.
    let mut elsewhere = first.clone();
    elsewhere.carrier = "x/y/z".into();
    assert!(plan_resumed(&order, &now, &module(), Some(&elsewhere)).is_err());
}

#[test]
fn destroy_keys_leaves_objects_without_a_private_key_out_of_the_plan() {
    let order = verified("destroy-keys", &[], None);
    let mut snap = snapshot("s1", &"cd".repeat(32));
    // A CA certificate and a public key with an id no private key has: not destroyed, so not
    // expected to be gone either.
    snap.public_keys.push(key(KeyClass::Public, 9, "pk9"));
    snap.certificates.push(CertObject {
        id: RawBytes::new(vec![9]),
        label: RawBytes::new(b"ca".to_vec()),
        sha256: "ef".repeat(32),
        info: None,
        parse_error: Some("x".into()),
        key_pairing: KeyPairing::None,
    });
    let p = plan(&order, &snap, &module()).unwrap_or_else(|r| panic!("{r}"));
    assert!(!p.gone.cka_ids.contains(&"09".to_owned()));
    assert!(!p.gone.public_keys.contains(&"pk9".to_owned()));
    assert!(!p.gone.certificates.contains(&"ef".repeat(32)));
    assert!(p.gone.cka_ids.contains(&"01".to_owned()) && p.gone.cka_ids.contains(&"02".to_owned()));
    // reinit takes everything.
    let order = verified("reinit", &[], None);
    let p = plan(&order, &snap, &module()).unwrap_or_else(|r| panic!("{r}"));
    assert!(p.gone.cka_ids.contains(&"09".to_owned()));
}

#[test]
fn the_wipe_lock_excludes_a_second_holder_until_released() {
    let dir = std::env::temp_dir().join(format!("custody-wipe-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let journal = dir.join("journal.db");
    let first =
        WipeLock::acquire(&journal, std::time::Duration::ZERO).unwrap_or_else(|e| panic!("{e}"));
    let refused = WipeLock::acquire(&journal, std::time::Duration::from_millis(120));
    let text = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("another custody process"), "{text}");
    drop(first);
    assert!(WipeLock::acquire(&journal, std::time::Duration::ZERO).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reconcile_waits_for_a_running_wipe_to_release_the_lock() {
    let dir = std::env::temp_dir().join(format!("custody-wipe-wait-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("journal.db");
    let mut journal = Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let held =
        WipeLock::acquire(&path, std::time::Duration::ZERO).unwrap_or_else(|e| panic!("{e}"));
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
    });
    let actor = Actor::current(None);
    let clock = || NOW;
    let env = Env {
        actor: &actor,
        clock: &clock,
        source: "test",
        pins: &crate::token::NoPins,
    };
    let start = std::time::Instant::now();
    let done = reconcile(&mut journal, &mut [], &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.is_empty());
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(250),
        "did not wait for the lock"
    );
    let _ = release.join();
    let _ = std::fs::remove_dir_all(dir);
}
