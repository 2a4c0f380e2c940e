//! Order parsing and verification against real `ssh-keygen` keys and signatures.

use std::path::{Path, PathBuf};
use std::process::Command;

use time::macros::{date, datetime};

use super::*;

const NOW: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("custody-order-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{e}"));
        Self(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Generates a key with ssh-keygen; returns the private key path.
    fn key(&self, name: &str, kind: &str) -> PathBuf {
        let path = self.path(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
            .arg(&path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ssh-keygen -t {kind} failed");
        path
    }

    fn public(&self, key: &Path) -> String {
        std::fs::read_to_string(key.with_extension("pub"))
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_owned()
    }

    /// `ssh-keygen -Y sign -n NAMESPACE` of `bytes`; returns the armored signature.
    fn ssh_sign(&self, key: &Path, namespace: &str, bytes: &[u8]) -> Vec<u8> {
        let file = self.path("to-sign");
        std::fs::write(&file, bytes).unwrap_or_else(|e| panic!("{e}"));
        let sig = signature_path(&file);
        let _ = std::fs::remove_file(&sig);
        let out = Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", namespace, "-f"])
            .arg(key)
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&sig).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn order_json(id: &str, issued: &str, not_after: &str) -> Vec<u8> {
    format!(
        r#"{{
  "id": "{id}",
  "issued_at": "{issued}",
  "not_after": "{not_after}",
  "dismissed": "2026-11-23",
  "holder": "Шевченко Тарас Григорович",
  "target": {{ "serial": "a1b2c3d4e5f60718", "manufacturer": "SoftHSM project", "model": "SoftHSM v2" }},
  "certificates": ["{}"],
  "method": "reinit",
  "responsible": "Коваленко Ольга Петрівна",
  "reason": "Наказ № 17-к від 23.11.2026"
}}
"#,
        "ab".repeat(32)
    )
    .into_bytes()
}

fn good_order() -> Vec<u8> {
    order_json("ord-1", "2026-11-24T08:00:00Z", "2026-11-26T08:00:00Z")
}

fn input(order: &[u8], sig: Option<Vec<u8>>) -> OrderInput {
    OrderInput {
        order: order.to_vec(),
        order_size: order.len() as u64,
        signatures_size: sig.as_ref().map(|s| s.len() as u64).unwrap_or(0),
        signatures: sig,
    }
}

struct Trust {
    dir: Dir,
    alice: PathBuf,
    bob: PathBuf,
    mallory: PathBuf,
    allowed: AllowedSigners,
}

fn trust(name: &str) -> Trust {
    let dir = Dir::new(name);
    let alice = dir.key("alice", "ed25519");
    let bob = dir.key("bob", "ed25519");
    let mallory = dir.key("mallory", "ed25519");
    let text = format!(
        "alice@hr {}\nbob@it namespaces=\"custody-order\" {}\n",
        dir.public(&alice),
        dir.public(&bob)
    );
    let allowed =
        AllowedSigners::parse(&text, "test", &Zone::utc()).unwrap_or_else(|e| panic!("{e}"));
    Trust {
        dir,
        alice,
        bob,
        mallory,
        allowed,
    }
}

fn code(v: &Verification) -> Option<RejectCode> {
    v.result.as_ref().err().map(|r| r.code)
}

#[test]
fn ssh_keygen_signature_by_allowed_signer_verifies() {
    let t = trust("ok");
    let order = good_order();
    let sig = t.dir.ssh_sign(&t.alice, NAMESPACE, &order);
    let v = check(&input(&order, Some(sig)), &t.allowed, 1, NOW);
    let verified = v.result.unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(verified.order().id, "ord-1");
    assert_eq!(verified.order().method, Method::Reinit);
    assert_eq!(verified.order().dismissed, date!(2026 - 11 - 23));
    assert_eq!(verified.signers().len(), 1);
    assert_eq!(verified.signers()[0].principals, "alice@hr");
    assert_eq!(verified.sha256(), crate::cert::sha256_hex(&order));
}

#[test]
fn altered_order_is_a_forged_signature() {
    let t = trust("forged");
    let order = good_order();
    let sig = t.dir.ssh_sign(&t.alice, NAMESPACE, &order);
    let altered = String::from_utf8(order)
        .unwrap_or_default()
        .replace("a1b2c3d4e5f60718", "0000000000000001")
        .into_bytes();
    let v = check(&input(&altered, Some(sig)), &t.allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::SignatureInvalid));
    // The explanation names the signer whose signature does not match.
    let msg = v.result.err().map(|r| r.message).unwrap_or_default();
    assert!(msg.contains("alice@hr"), "{msg}");
}

#[test]
fn a_signature_block_with_flipped_bytes_is_refused() {
    let t = trust("flipped");
    let order = good_order();
    let sig = String::from_utf8(t.dir.ssh_sign(&t.alice, NAMESPACE, &order)).unwrap_or_default();
    // Change one base64 character near the end of the signature blob.
    let mut lines: Vec<String> = sig.lines().map(str::to_owned).collect();
    let n = lines.len() - 2;
    let flipped: String = lines[n]
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 3 {
                if c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                c
            }
        })
        .collect();
    lines[n] = flipped;
    let v = check(
        &input(&order, Some(lines.join("\n").into_bytes())),
        &t.allowed,
        1,
        NOW,
    );
    assert!(
        matches!(
            code(&v),
            Some(RejectCode::SignatureInvalid | RejectCode::SignatureMalformed)
        ),
        "{:?}",
        v.result
    );
}

#[test]
fn valid_signature_by_unlisted_key_is_refused() {
    let t = trust("unknown");
    let order = good_order();
    let sig = t.dir.ssh_sign(&t.mallory, NAMESPACE, &order);
    let v = check(&input(&order, Some(sig)), &t.allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::UnknownSigner));
}

#[test]
fn wrong_namespace_is_refused() {
    let t = trust("ns");
    let order = good_order();
    let sig = t.dir.ssh_sign(&t.alice, "git", &order);
    let v = check(&input(&order, Some(sig)), &t.allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::WrongNamespace));
    assert_eq!(v.signatures[0].namespace.as_deref(), Some("git"));
}

#[test]
fn signer_restricted_to_other_namespaces_is_refused() {
    let t = trust("ns-opt");
    let text = format!(
        "alice@hr namespaces=\"git,file\" {}\n",
        t.dir.public(&t.alice)
    );
    let allowed =
        AllowedSigners::parse(&text, "test", &Zone::utc()).unwrap_or_else(|e| panic!("{e}"));
    let order = good_order();
    let sig = t.dir.ssh_sign(&t.alice, NAMESPACE, &order);
    let v = check(&input(&order, Some(sig)), &allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::SignerNotAllowed));
}

#[test]
fn signer_outside_valid_before_is_refused() {
    let t = trust("valid-before");
    let text = format!(
        "alice@hr valid-before=\"20261101Z\" {}\n",
        t.dir.public(&t.alice)
    );
    let allowed =
        AllowedSigners::parse(&text, "test", &Zone::utc()).unwrap_or_else(|e| panic!("{e}"));
    let order = good_order();
    let sig = t.dir.ssh_sign(&t.alice, NAMESPACE, &order);
    let v = check(&input(&order, Some(sig)), &allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::SignerNotAllowed));
}

#[test]
fn expired_and_not_yet_valid() {
    let t = trust("window");
    let expired = order_json("ord-e", "2026-11-20T08:00:00Z", "2026-11-22T08:00:00Z");
    let sig = t.dir.ssh_sign(&t.alice, NAMESPACE, &expired);
    let v = check(&input(&expired, Some(sig)), &t.allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::Expired));

    let future = order_json("ord-f", "2026-11-25T08:00:00Z", "2026-11-27T08:00:00Z");
    let sig = t.dir.ssh_sign(&t.alice, NAMESPACE, &future);
    let v = check(&input(&future, Some(sig)), &t.allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::NotYetValid));

    // Within the tolerated clock skew it is fine.
    let skewed = order_json("ord-s", "2026-11-24T10:03:00Z", "2026-11-27T08:00:00Z");
    let sig = t.dir.ssh_sign(&t.alice, NAMESPACE, &skewed);
    assert!(check(&input(&skewed, Some(sig)), &t.allowed, 1, NOW)
        .result
        .is_ok());
}

#[test]
fn two_person_rule_counts_distinct_keys_and_principals() {
    let t = trust("two");
    let order = good_order();
    let a = t.dir.ssh_sign(&t.alice, NAMESPACE, &order);
    let b = t.dir.ssh_sign(&t.bob, NAMESPACE, &order);
    let a2 = t.dir.ssh_sign(&t.alice, NAMESPACE, &order);

    let one = check(&input(&order, Some(a.clone())), &t.allowed, 2, NOW);
    assert_eq!(code(&one), Some(RejectCode::NotEnoughSigners));

    let twice: Vec<u8> = [a.clone(), a2].concat();
    let v = check(&input(&order, Some(twice)), &t.allowed, 2, NOW);
    assert_eq!(code(&v), Some(RejectCode::NotEnoughSigners));
    assert_eq!(v.distinct_signers, 1);
    assert!(v.signatures.iter().all(|s| s.valid));

    let both: Vec<u8> = [a.clone(), b.clone()].concat();
    let v = check(&input(&order, Some(both)), &t.allowed, 2, NOW);
    assert_eq!(v.distinct_signers, 2);
    assert!(v.result.is_ok());

    // Two keys of the same principal are one person.
    let text = format!(
        "alice@hr {}\nalice@hr {}\n",
        t.dir.public(&t.alice),
        t.dir.public(&t.bob)
    );
    let same = AllowedSigners::parse(&text, "test", &Zone::utc()).unwrap_or_else(|e| panic!("{e}"));
    let v = check(&input(&order, Some([a, b].concat())), &same, 2, NOW);
    assert_eq!(code(&v), Some(RejectCode::NotEnoughSigners));
}

#[test]
fn a_forged_second_signature_does_not_count() {
    let t = trust("two-forged");
    let order = good_order();
    let a = t.dir.ssh_sign(&t.alice, NAMESPACE, &order);
    let other = order_json("ord-2", "2026-11-24T08:00:00Z", "2026-11-26T08:00:00Z");
    let b_other = t.dir.ssh_sign(&t.bob, NAMESPACE, &other);
    let v = check(
        &input(&order, Some([a, b_other].concat())),
        &t.allowed,
        2,
        NOW,
    );
    assert_eq!(code(&v), Some(RejectCode::NotEnoughSigners));
    assert_eq!(
        v.signatures[1].problem.as_ref().map(|p| p.code),
        Some(RejectCode::SignatureInvalid)
    );
}

#[test]
fn missing_empty_and_truncated_signature_files() {
    let t = trust("sigfile");
    let order = good_order();
    let v = check(&input(&order, None), &t.allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::SignatureMissing));
    let v = check(&input(&order, Some(Vec::new())), &t.allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::SignatureMissing));
    let sig = t.dir.ssh_sign(&t.alice, NAMESPACE, &order);
    let v = check(
        &input(&order, Some(sig[..sig.len() / 2].to_vec())),
        &t.allowed,
        1,
        NOW,
    );
    assert_eq!(code(&v), Some(RejectCode::SignatureMalformed));
    let v = check(&input(&order, Some(vec![0xff, 0xfe])), &t.allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::SignatureMalformed));
}

#[test]
fn malformed_truncated_and_oversized_documents() {
    let t = trust("malformed");
    let good = good_order();
    let truncated = &good[..good.len() / 2];
    let unknown_field = String::from_utf8(good.clone())
        .unwrap_or_default()
        .replace("\"method\"", "\"skip_checks\": true,\n  \"method\"")
        .into_bytes();
    let duplicate = String::from_utf8(good.clone())
        .unwrap_or_default()
        .replace(
            "\"method\": \"reinit\"",
            "\"method\": \"reinit\", \"method\": \"destroy-keys\"",
        )
        .into_bytes();
    for (name, doc, want) in [
        ("not json", b"hello".to_vec(), RejectCode::Malformed),
        ("truncated", truncated.to_vec(), RejectCode::Malformed),
        ("unknown field", unknown_field, RejectCode::Malformed),
        ("duplicate field", duplicate, RejectCode::Malformed),
        ("empty", Vec::new(), RejectCode::Malformed),
        (
            "bad id",
            order_json("../etc", "2026-11-24T08:00:00Z", "2026-11-26T08:00:00Z"),
            RejectCode::InvalidField,
        ),
        (
            "window too long",
            order_json("ord-l", "2026-11-24T08:00:00Z", "2027-11-26T08:00:00Z"),
            RejectCode::InvalidField,
        ),
        (
            "not_after before issued_at",
            order_json("ord-r", "2026-11-24T08:00:00Z", "2026-11-23T08:00:00Z"),
            RejectCode::InvalidField,
        ),
    ] {
        // Even correctly signed, a bad document is refused.
        let sig = t.dir.ssh_sign(&t.alice, NAMESPACE, &doc);
        let v = check(&input(&doc, Some(sig)), &t.allowed, 1, NOW);
        assert_eq!(code(&v), Some(want), "{name}: {:?}", v.result);
    }
}

#[test]
fn oversized_order_is_refused_before_parsing() {
    let t = trust("oversized");
    let dir = &t.dir;
    // 1 MiB + 1 of valid-looking JSON whitespace around a good order.
    let mut big = good_order();
    big.resize(1024 * 1024 + 1, b' ');
    let path = dir.path("big.json");
    std::fs::write(&path, &big).unwrap_or_else(|e| panic!("{e}"));
    let sig = dir.ssh_sign(&t.alice, NAMESPACE, &big);
    std::fs::write(signature_path(&path), sig).unwrap_or_else(|e| panic!("{e}"));
    let input = OrderInput::read(&path, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        input.order.len(),
        MAX_ORDER_BYTES + 1,
        "read no more than the cap"
    );
    assert_eq!(input.order_size, big.len() as u64);
    let v = check(&input, &t.allowed, 1, NOW);
    assert_eq!(code(&v), Some(RejectCode::Oversized));
    assert!(v.order.is_none(), "an oversized document is not parsed");
}

#[test]
fn our_signature_verifies_with_ssh_keygen_and_with_us() {
    let t = trust("cross");
    let order = good_order();
    let pem = std::fs::read_to_string(&t.alice).unwrap_or_else(|e| panic!("{e}"));
    let (sig, fingerprint) = signature::sign(&pem, &order).unwrap_or_else(|e| panic!("{e}"));
    assert!(fingerprint.starts_with("SHA256:"));
    // Ours.
    let v = check(
        &input(&order, Some(sig.clone().into_bytes())),
        &t.allowed,
        1,
        NOW,
    );
    assert!(v.result.is_ok(), "{:?}", v.result);
    // OpenSSH's.
    let file = t.dir.path("order.json");
    std::fs::write(&file, &order).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(signature_path(&file), &sig).unwrap_or_else(|e| panic!("{e}"));
    let signers = t.dir.path("allowed_signers");
    std::fs::write(&signers, format!("alice@hr {}\n", t.dir.public(&t.alice)))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", NAMESPACE, "-I", "alice@hr", "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(signature_path(&file))
        .stdin(std::fs::File::open(&file).unwrap_or_else(|e| panic!("{e}")))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "ssh-keygen -Y verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ecdsa_and_rsa_signers_work() {
    let dir = Dir::new("algs");
    let ec = dir.key("ec", "ecdsa");
    let rsa = dir.key("rsa", "rsa");
    let text = format!("ec@it {}\nrsa@it {}\n", dir.public(&ec), dir.public(&rsa));
    let allowed =
        AllowedSigners::parse(&text, "test", &Zone::utc()).unwrap_or_else(|e| panic!("{e}"));
    let order = good_order();
    let sigs = [
        dir.ssh_sign(&ec, NAMESPACE, &order),
        dir.ssh_sign(&rsa, NAMESPACE, &order),
    ]
    .concat();
    let v = check(&input(&order, Some(sigs)), &allowed, 2, NOW);
    assert!(v.result.is_ok(), "{:?} {:?}", v.result, v.signatures);
}

#[test]
fn encrypted_keys_are_refused_by_sign_with_advice() {
    let dir = Dir::new("enc");
    let path = dir.path("enc");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "passphrase", "-f"])
        .arg(&path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok);
    let pem = std::fs::read_to_string(&path).unwrap_or_default();
    let err = signature::sign(&pem, b"x")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("ssh-keygen -Y sign"), "{err}");
}

#[test]
fn due_is_the_end_of_the_day_after_dismissal_in_the_zone() {
    let kyiv = Zone::named("EET-2EEST,M3.5.0/3,M10.5.0/4").unwrap_or_else(|e| panic!("{e}"));
    // Winter: UTC+2. Dismissed 23 Nov → due at the start of 25 Nov local = 24 Nov 22:00 UTC.
    assert_eq!(
        due(date!(2026 - 11 - 23), &kyiv),
        datetime!(2026-11-24 22:00 UTC)
    );
    // Summer: UTC+3.
    assert_eq!(
        due(date!(2026 - 07 - 01), &kyiv),
        datetime!(2026-07-02 21:00 UTC)
    );
    assert_eq!(
        due(date!(2026 - 11 - 23), &Zone::utc()),
        datetime!(2026-11-25 00:00 UTC)
    );
}
