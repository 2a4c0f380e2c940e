//! `custody order create | sign | verify` from the command line.

use std::process::Command;

use serde_json::json;

use super::support::*;

#[test]
fn create_prints_a_valid_order_and_refuses_bad_arguments() {
    let env = Env::new("create");
    let out = env.custody(&[
        "order",
        "create",
        "--carrier",
        "abc123",
        "--holder",
        "Іван Франко",
        "--dismissed",
        "2026-11-23",
        "--method",
        "destroy-keys",
        "--responsible",
        "Леся Українка",
        "--valid-days",
        "3",
        "--manufacturer",
        "IIT",
        "--model",
        "Almaz-1K",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let order =
        custody_core::order::DestructionOrder::parse(&out.stdout).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(order.method, custody_core::order::Method::DestroyKeys);
    assert_eq!(order.target.model.as_deref(), Some("Almaz-1K"));
    assert_eq!(order.not_after - order.issued_at, time::Duration::days(3));
    assert!(order.reason.contains("Іван Франко"));

    for (args, needle) in [
        (vec!["--dismissed", "23.11.2026"], "2026-11-23"),
        (
            vec!["--dismissed", "2026-11-23", "--valid-days", "40"],
            "between 1 and 31",
        ),
        (
            vec!["--dismissed", "2026-11-23", "--cert", "xyz"],
            "SHA-256",
        ),
    ] {
        let mut all = vec![
            "order",
            "create",
            "--carrier",
            "abc",
            "--holder",
            "h",
            "--method",
            "reinit",
            "--responsible",
            "r",
            "--manufacturer",
            "IIT",
            "--model",
            "Almaz-1K",
        ];
        all.extend(args);
        let out = env.custody(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        assert!(text(&out).contains(needle), "{}", text(&out));
    }
    let out = env.custody(&[
        "order",
        "create",
        "--carrier",
        "a",
        "--holder",
        "h",
        "--dismissed",
        "2026-11-23",
        "--method",
        "shred",
        "--responsible",
        "r",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("reinit"), "{}", text(&out));
}

#[test]
fn sign_appends_signatures_that_ssh_keygen_and_verify_accept() {
    let env = Env::with_config("sign", 2, true);
    let order = env.order("ord-sign", json!({}));
    for key in ["hr", "it"] {
        let k = env.t.dir.join(key);
        let out = env.custody(&[
            "--json",
            "order",
            "sign",
            order.to_str().unwrap_or(""),
            "--key",
            k.to_str().unwrap_or(""),
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let sig = custody_core::order::signature_path(&order);
    let blocks = std::fs::read_to_string(&sig).unwrap_or_default();
    assert_eq!(blocks.matches("-----BEGIN SSH SIGNATURE-----").count(), 2);

    // OpenSSH accepts the first block as the hr signature.
    let first: String = blocks
        .split_inclusive("-----END SSH SIGNATURE-----\n")
        .next()
        .unwrap_or_default()
        .to_owned();
    let one = env.path("first.sig");
    std::fs::write(&one, first).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-n",
            "custody-order",
            "-I",
            "hr@example.org",
            "-f",
        ])
        .arg(env.path("allowed_signers"))
        .arg("-s")
        .arg(&one)
        .stdin(std::fs::File::open(&order).unwrap_or_else(|e| panic!("{e}")))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", text(&out));

    let out = env.custody(&["--json", "order", "verify", order.to_str().unwrap_or("")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let j = json_of(&out);
    assert_eq!(j["acceptable"], true);
    assert_eq!(j["distinct_signers"], 2);
    assert_eq!(j["target"], "present");

    // A refused signing: not an order.
    let junk = env.path("junk.json");
    std::fs::write(&junk, "[]").unwrap_or_else(|e| panic!("{e}"));
    let k = env.t.dir.join("hr");
    let out = env.custody(&[
        "order",
        "sign",
        junk.to_str().unwrap_or(""),
        "--key",
        k.to_str().unwrap_or(""),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!custody_core::order::signature_path(&junk).exists());
}

#[test]
fn verify_explains_refusals() {
    let env = Env::new("verify");
    let order = env.order("ord-v", json!({ "certificates": ["cd".repeat(32)] }));
    env.sign(&order, "hr");
    let out = env.custody(&["order", "verify", order.to_str().unwrap_or("")]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("good: hr@example.org") && t.contains("REFUSED (certificate_mismatch)"),
        "{t}"
    );

    let order = env.order("ord-m", json!({}));
    env.sign(&order, "mallory");
    let out = env.custody(&["--json", "order", "verify", order.to_str().unwrap_or("")]);
    assert_eq!(out.status.code(), Some(1));
    let j = json_of(&out);
    assert_eq!(j["refusal"]["code"], "unknown_signer");
    assert_eq!(j["signatures"][0]["valid"], false);
    // verify never writes to the journal.
    assert!(!env.journal.exists());
}

#[test]
fn missing_trust_configuration_is_an_error_with_advice() {
    let env = Env::new("no-trust");
    std::fs::write(&env.config, "").unwrap_or_else(|e| panic!("{e}"));
    let order = env.order("ord-t", json!({}));
    let out = env.custody(&["wipe", "--order", order.to_str().unwrap_or("")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("allowed_signers"), "{}", text(&out));
}
