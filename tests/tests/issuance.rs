//! `custody issue` and the journal form end to end on fixture token sets: the demo set
//! (EC, RSA and seal carriers, the holder's PIN typed in), and a key carrying CKA_START_DATE
//! (column 2 from the key attribute).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{ensure, Context as _};
use custody_tests::{
    temp_dir, Bytes, Custody, Day, ObjectKind, ObjectSpec, Profile, Spec, TokenSet, TokenSpec,
    Validity,
};
use serde_json::Value;

type TestResult = anyhow::Result<()>;

const FIXTURES: &str = env!("CARGO_BIN_EXE_custody-fixtures");

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("issuance")
}

fn setup(spec: &Spec, name: &str) -> anyhow::Result<(TokenSet, Custody)> {
    let dir = temp_dir(&base(), name)?;
    let set = TokenSet::cached(
        Path::new(FIXTURES),
        spec,
        &base().join("cache"),
        &dir.join("set"),
    )?;
    let config = dir.join("custody.toml");
    std::fs::write(
        &config,
        "[organisation]\nname = \"Прилуцька міська рада\"\n",
    )?;
    let custody = Custody::new(&set, &dir.join("journal.db")).with_config(&config);
    Ok((set, custody))
}

/// `custody --json issue --carrier SERIAL --ack-sign --pin-stdin`, the PIN on stdin.
fn issue_signed(custody: &Custody, serial: &str, pin: &str) -> anyhow::Result<Value> {
    let mut child = custody
        .command()
        .args([
            "--json",
            "issue",
            "--carrier",
            serial,
            "--ack-sign",
            "--pin-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running custody")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{pin}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "issue {serial} exited {:?}: {text}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn demo_carriers_are_issued_with_verified_acknowledgements() -> TestResult {
    let (set, custody) = setup(&Spec::demo(), "demo")?;
    let token = |label: &str| {
        set.manifest()
            .token(label)
            .with_context(|| format!("no token {label} in the demo set"))
    };
    let ivanenko = token("Іваненко І.І.")?;
    let v = issue_signed(&custody, &ivanenko.serial, &ivanenko.user_pin)?;
    // Every key set got its row when `issue` scanned the set first; issuance fills it.
    let mut issued = vec![v["row_no"].as_u64().context("row_no")?];
    ensure!(
        v["data"]["holder"]["name"] == "Іваненко Іван Іванович",
        "{v}"
    );
    ensure!(v["data"]["holder"]["name_source"] == "certificate", "{v}");
    ensure!(v["data"]["acknowledgement"]["status"] == "verified", "{v}");
    ensure!(
        v["data"]["acknowledgement"]["algorithm"] == "ECDSA P-256 SHA-256",
        "{v}"
    );
    let rsa = token("RSA signer")?;
    let v = issue_signed(&custody, &rsa.serial, &rsa.user_pin)?;
    issued.push(v["row_no"].as_u64().context("row_no")?);
    ensure!(
        v["data"]["acknowledgement"]["algorithm"] == "RSA PKCS#1 v1.5 SHA-256",
        "{v}"
    );
    ensure!(v["data"]["acknowledgement"]["status"] == "verified", "{v}");
    // The seal carrier holds an EC key with its certificate and a DSTU 4145 certificate
    // without a key: the EC key signs, both certificates are handed over.
    let seal = token("ЦНАП печатка")?;
    let v = issue_signed(&custody, &seal.serial, &seal.user_pin)?;
    issued.push(v["row_no"].as_u64().context("row_no")?);
    ensure!(v["data"]["acknowledgement"]["key_id"] == "01", "{v}");
    ensure!(v["data"]["acknowledgement"]["status"] == "verified", "{v}");
    ensure!(
        v["data"]["key_set"]["certificates"]
            .as_array()
            .map(Vec::len)
            == Some(2),
        "{v}"
    );
    // The empty token has nothing to hand over.
    let empty = token("Empty token")?;
    let r = custody.run(&["issue", "--carrier", &empty.serial, "--holder", "X"])?;
    ensure!(
        r.code == 1 && r.stderr.contains("no keys or certificates"),
        "{r:?}"
    );
    // The form: a row for every carrier holding keys (none for the empty one); the three
    // issued rows each with a digital acknowledgement, the others with columns 4 and 5 empty.
    let form = custody.json(
        &["journal", "export", "--format", "json", "--lang", "en"],
        0,
    )?;
    let rows = form["rows"].as_array().context("rows")?;
    let holding = set
        .manifest()
        .tokens
        .iter()
        .filter(|t| t.label != "Empty token")
        .count();
    ensure!(
        rows.len() == holding,
        "{holding} carriers with keys: {form}"
    );
    ensure!(
        !rows
            .iter()
            .any(|r| r["data"]["serial"] == empty.serial.as_str()),
        "{form}"
    );
    for row in rows {
        let remarks = row["remarks"].to_string();
        let n = row["row_no"].as_u64().unwrap_or(0);
        ensure!(
            remarks.contains("receipt signed with the carrier's key (signature verified")
                == issued.contains(&n),
            "{row}"
        );
        if !issued.contains(&n) {
            ensure!(row["columns"][3] == "" && row["columns"][4] == "", "{row}");
        }
    }
    let verify = custody.json(&["journal", "verify"], 0)?;
    ensure!(
        // The journal's first checkpoint and one per issuance.
        verify["ok"] == true && verify["checkpoints"]["checked"] == 4,
        "{verify}"
    );
    Ok(())
}

#[test]
fn generation_time_comes_from_the_key_attribute_when_set() -> TestResult {
    let spec = Spec::new()
        .named("issuance-start-date")
        .token(TokenSpec::new("Старт").object(ObjectSpec {
            id: Bytes::from_hex("01")?,
            label: None,
            kind: ObjectKind::EcKeyCert {
                profile: Profile::ua_person(),
                validity: Validity::default(),
                start_date: Some(Day::new(2025, 3, 14)?),
            },
        }));
    let (set, custody) = setup(&spec, "start-date")?;
    let t = set.manifest().token("Старт").context("token")?;
    let v = custody.json(&["issue", "--carrier", &t.serial], 0)?;
    ensure!(v["data"]["generated"]["source"] == "key_attribute", "{v}");
    ensure!(v["data"]["generated"]["at"] == "2025-03-14", "{v}");
    let csv = custody
        .run(&["journal", "export", "--format", "csv"])?
        .expect(0)?
        .stdout;
    ensure!(
        csv.contains("14.03.2025 [дата з атрибута ключа на носії (CKA_START_DATE)]"),
        "{csv}"
    );
    Ok(())
}
