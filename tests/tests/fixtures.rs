//! Cross-checks of the SoftHSM2 fixture builder against independent tools: `pkcs11-tool`
//! (OpenSC) lists the tokens and objects, `openssl` parses and verifies the certificates.
//!
//! Every test gets its own copy of a set (through the cache under CARGO_TARGET_TMPDIR), and the
//! tools see it only through their own environment: the test process never sets SOFTHSM2_CONF.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use custody_tests::{
    temp_dir, ObjectClass, Person, Profile, Spec, TokenManifest, TokenSet, TokenSpec,
};

type TestResult = anyhow::Result<()>;

const BIN: &str = env!("CARGO_BIN_EXE_custody-fixtures");

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures")
}

/// A private copy of a named set for the test `name`.
fn cached(spec: &Spec, name: &str) -> anyhow::Result<TokenSet> {
    TokenSet::cached(
        Path::new(BIN),
        spec,
        &base().join("cache"),
        &temp_dir(&base(), name)?,
    )
}

/// Runs a tool with the set's environment; returns stdout.
fn run(set: &TokenSet, program: &str, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = set
        .command(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (Debian packages: opensc, openssl)"))?;
    ensure!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

fn pkcs11_tool(set: &TokenSet, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let module = set
        .module()
        .to_str()
        .context("module path is UTF-8")?
        .to_owned();
    let mut all = vec!["--module", module.as_str()];
    all.extend_from_slice(args);
    run(set, "pkcs11-tool", &all)
}

/// One initialised slot as `pkcs11-tool -L` prints it.
#[derive(Debug)]
struct Listed {
    slot: String,
    label: Vec<u8>,
}

/// Parses `pkcs11-tool -L`: serial -> slot id and raw label bytes (labels may not be UTF-8).
fn list_tokens(set: &TokenSet) -> anyhow::Result<BTreeMap<String, Listed>> {
    let out = pkcs11_tool(set, &["-L"])?;
    let mut tokens = BTreeMap::new();
    let mut slot = None;
    let mut label = None;
    for line in out.split(|b| *b == b'\n') {
        let text = String::from_utf8_lossy(line);
        if let Some(rest) = text.strip_prefix("Slot ") {
            // "Slot 3 (0x6a2e205e): SoftHSM slot ID 0x6a2e205e"
            slot = rest
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(id, _)| id.to_owned());
            label = None;
        } else if let Some(pos) = find(line, b"token label        : ") {
            label = Some(line[pos + 21..].to_vec());
        } else if let Some(serial) = text.trim().strip_prefix("serial num         : ") {
            let slot = slot.clone().context("serial before a slot line")?;
            let label = label.take().context("serial before a label line")?;
            tokens.insert(serial.trim().to_owned(), Listed { slot, label });
        }
    }
    Ok(tokens)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn count(haystack: &[u8], needle: &str) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|b| *b != b' ').map_or(0, |p| p + 1);
    &bytes[..end]
}

fn slot_of<'a>(
    listed: &'a BTreeMap<String, Listed>,
    token: &TokenManifest,
) -> anyhow::Result<&'a str> {
    Ok(listed
        .get(&token.serial)
        .with_context(|| format!("pkcs11-tool does not list serial {}", token.serial))?
        .slot
        .as_str())
}

#[test]
fn demo_labels_and_serials_match_pkcs11_tool() -> TestResult {
    let set = cached(&Spec::demo(), "demo_labels_and_serials")?;
    let manifest = set.manifest();
    let listed = list_tokens(&set)?;
    assert_eq!(listed.len(), manifest.tokens.len(), "listed: {listed:?}");
    for token in &manifest.tokens {
        let found = listed
            .get(&token.serial)
            .with_context(|| format!("serial {} of {:?} not listed", token.serial, token.label))?;
        assert_eq!(trim_spaces(&found.label), hex::decode(&token.label_hex)?);
        assert_eq!(token.label.as_bytes(), trim_spaces(&found.label));
        assert_eq!(token.manufacturer, "SoftHSM project");
    }
    for label in [
        "Іваненко І.І.",
        "RSA signer",
        "ЦНАП печатка",
        "Empty token",
        "Бухгалтерія №1",
    ] {
        assert!(manifest.token(label).is_some(), "no token {label}");
    }
    if custody_tests::ua_certs_dir_for_test("demo set: UA real certs token").is_some() {
        let real = manifest
            .token("UA real certs")
            .context("UA real certs token")?;
        assert!(real.certificate_count() >= 6);
    }
    Ok(())
}

#[test]
fn demo_objects_match_pkcs11_tool() -> TestResult {
    let set = cached(&Spec::demo(), "demo_objects")?;
    let listed = list_tokens(&set)?;
    for token in &set.manifest().tokens {
        let slot = slot_of(&listed, token)?;
        let public = pkcs11_tool(&set, &["-O", "--slot", slot])?;
        assert_eq!(
            count(&public, "Certificate Object"),
            token.certificate_count(),
            "certificates on {}",
            token.label
        );
        assert_eq!(
            count(&public, "Public Key Object"),
            token.objects_of(ObjectClass::PublicKey).count(),
            "public keys on {}",
            token.label
        );
        assert_eq!(
            count(&public, "Private Key Object"),
            0,
            "private keys need a login"
        );

        let private_keys = token.objects_of(ObjectClass::PrivateKey).count();
        if private_keys > 0 {
            let all = pkcs11_tool(
                &set,
                &["-O", "--slot", slot, "--login", "--pin", &token.user_pin],
            )?;
            assert_eq!(count(&all, "Private Key Object"), private_keys);
            assert_eq!(
                count(
                    &all,
                    "sensitive, always sensitive, never extractable, local"
                ),
                private_keys,
                "private keys generated on {} and never extractable",
                token.label
            );
        }
    }
    Ok(())
}

#[test]
fn demo_certificates_on_tokens_are_the_manifest_ones_and_parse() -> TestResult {
    let set = cached(&Spec::demo(), "demo_certificates")?;
    let listed = list_tokens(&set)?;
    let out_dir = set.dir().join("read-back");
    std::fs::create_dir_all(&out_dir)?;
    for token in &set.manifest().tokens {
        let slot = slot_of(&listed, token)?;
        for (n, cert) in token.objects_of(ObjectClass::Certificate).enumerate() {
            let file = out_dir.join(format!("{}-{n}.der", token.index));
            let file_arg = file.to_str().context("UTF-8 path")?;
            pkcs11_tool(
                &set,
                &[
                    "--slot",
                    slot,
                    "--read-object",
                    "--type",
                    "cert",
                    "--id",
                    &cert.id_hex,
                    "--output-file",
                    file_arg,
                ],
            )?;
            let der = std::fs::read(&file)?;
            assert_eq!(
                Some(hex::encode(sha2_256(&der))),
                cert.cert_sha256,
                "certificate {} on {}",
                cert.id_hex,
                token.label
            );
            assert_eq!(cert.x509, Some(true));
            let fingerprint = run(
                &set,
                "openssl",
                &[
                    "x509",
                    "-inform",
                    "der",
                    "-in",
                    file_arg,
                    "-noout",
                    "-fingerprint",
                    "-sha256",
                ],
            )?;
            let fingerprint = String::from_utf8(fingerprint)?
                .replace(':', "")
                .to_lowercase();
            assert!(
                fingerprint.contains(cert.cert_sha256.as_deref().unwrap_or("-")),
                "openssl fingerprint {fingerprint} of {}",
                cert.id_hex
            );
        }
    }
    Ok(())
}

fn sha2_256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

#[test]
fn ua_profiles_show_their_extensions_in_openssl() -> TestResult {
    let set = cached(&Spec::demo(), "ua_profiles")?;
    let manifest = set.manifest();
    let cert_file = |label: &str, id: &str| -> anyhow::Result<String> {
        let token = manifest
            .token(label)
            .with_context(|| format!("token {label}"))?;
        let cert = token
            .objects_of(ObjectClass::Certificate)
            .find(|c| c.id_hex == id)
            .with_context(|| format!("certificate {id} on {label}"))?;
        let file = cert.cert_file.as_ref().context("certificate file")?;
        Ok(file.to_str().context("UTF-8 path")?.to_owned())
    };
    let text = |file: &str| -> anyhow::Result<String> {
        // `-text` fails to print a DSTU key but still exits 0; -nameopt utf8 shows Cyrillic.
        let out = run(
            &set,
            "openssl",
            &[
                "x509",
                "-inform",
                "der",
                "-in",
                file,
                "-noout",
                "-text",
                "-nameopt",
                "utf8,sep_comma_plus",
            ],
        )?;
        Ok(String::from_utf8(out)?)
    };

    let person = text(&cert_file("Іваненко І.І.", "01")?)?;
    for expected in [
        "CN=Іваненко Іван Іванович",
        "serialNumber=TINUA-1234567890",
        "organizationIdentifier=NTRUA-12345678",
        "L=Прилуки",
        "Digital Signature, Non Repudiation",
        "Policy: 1.2.804.2.1.1.1.2.2",
        "qcStatements",
        "X509v3 Subject Directory Attributes",
        "ASN1 OID: prime256v1",
    ] {
        assert!(
            person.contains(expected),
            "{expected:?} missing from\n{person}"
        );
    }
    let seal = text(&cert_file("ЦНАП печатка", "01")?)?;
    assert!(
        seal.contains("1.2.804.2.1.1.1.3.9"),
        "stamp EKU missing from\n{seal}"
    );
    let dstu = text(&cert_file("ЦНАП печатка", "02")?)?;
    assert!(dstu.contains("DSTU 4145-2002 little endian"), "{dstu}");

    // Certificates for token keys chain to the fixture CA (OpenSSL cannot load DSTU keys, so
    // the DSTU certificate is checked by the unit tests instead).
    let ca = manifest
        .ca
        .cert_pem
        .to_str()
        .context("UTF-8 path")?
        .to_owned();
    let issued = [
        ("Іваненко І.І.", "01"),
        ("RSA signer", "01"),
        ("ЦНАП печатка", "01"),
    ];
    for (n, (label, id)) in issued.into_iter().enumerate() {
        let pem = set.dir().join(format!("verify-{n}.pem"));
        let pem = pem.to_str().context("UTF-8 path")?.to_owned();
        run(
            &set,
            "openssl",
            &[
                "x509",
                "-inform",
                "der",
                "-in",
                &cert_file(label, id)?,
                "-out",
                &pem,
            ],
        )?;
        let verified = run(&set, "openssl", &["verify", "-CAfile", &ca, &pem])?;
        assert!(String::from_utf8_lossy(&verified).contains(": OK"));
    }
    Ok(())
}

#[test]
fn cached_copies_are_relocated_and_independent() -> TestResult {
    let one = cached(&Spec::demo(), "cached_copy_one")?;
    let two = cached(&Spec::demo(), "cached_copy_two")?;
    assert_ne!(one.dir(), two.dir());
    for set in [&one, &two] {
        let conf = std::fs::read_to_string(set.conf())?;
        let tokens = set.dir().join("tokens");
        assert!(
            conf.contains(&format!("directories.tokendir = {}\n", tokens.display())),
            "{conf}"
        );
        let env = std::fs::read_to_string(&set.manifest().env_file)?;
        assert!(env.contains(&format!("export SOFTHSM2_CONF='{}'", set.conf().display())));
        for token in &set.manifest().tokens {
            assert!(token.token_dir.starts_with(&tokens));
            assert!(token.token_dir.is_dir());
            for (file, pin) in [
                (&token.user_pin_file, &token.user_pin),
                (&token.so_pin_file, &token.so_pin),
            ] {
                assert!(file.starts_with(set.dir()));
                assert_eq!(&std::fs::read_to_string(file)?, pin);
                assert_eq!(std::fs::metadata(file)?.permissions().mode() & 0o777, 0o600);
            }
        }
    }
    // Copies of one cache entry are the same set: same serials and certificates.
    let serials = |set: &TokenSet| -> Vec<String> {
        set.manifest()
            .tokens
            .iter()
            .map(|t| t.serial.clone())
            .collect()
    };
    assert_eq!(serials(&one), serials(&two));
    let reopened = TokenSet::open(two.dir())?;
    assert_eq!(reopened.manifest(), two.manifest());
    Ok(())
}

#[test]
fn edge_set_has_raw_label_and_garbage_certificate() -> TestResult {
    let set = cached(&Spec::edge(), "edge_set")?;
    let listed = list_tokens(&set)?;
    let manifest = set.manifest();
    assert_eq!(listed.len(), 2);

    let raw = &manifest.tokens[0];
    let found = listed.get(&raw.serial).context("raw-label token listed")?;
    assert_eq!(trim_spaces(&found.label), b"\xff\xfeNot UTF-8 \xd0");
    assert!(
        raw.label.contains('\u{fffd}'),
        "cryptoki decodes lossily: {:?}",
        raw.label
    );

    let odd = &manifest.tokens[1];
    let objects = pkcs11_tool(&set, &["-O", "--slot", slot_of(&listed, odd)?])?;
    assert_eq!(
        count(&objects, "Certificate Object"),
        odd.certificate_count()
    );
    let garbage = odd
        .objects_of(ObjectClass::Certificate)
        .find(|c| c.source == "raw_cert")
        .context("garbage certificate")?;
    assert_eq!(garbage.x509, Some(false));
    assert!(odd
        .objects
        .iter()
        .any(|o| o.label_utf8.is_none() && o.label_hex.is_some()));
    assert!(odd
        .objects
        .iter()
        .any(|o| o.start_date.as_deref() == Some("2025-03-14")));
    Ok(())
}

#[test]
fn one_token_spec_builds_with_its_own_pins() -> TestResult {
    let spec = Spec::new().token(
        TokenSpec::new("Тест")
            .pins("1111", "22222222")
            .ec_key_cert(
                "a1",
                "мій ключ",
                Profile::UaPerson(Person {
                    common_name: "Петренко Петро Петрович".to_owned(),
                    drfo: "0987654321".to_owned(),
                    ..Person::default()
                }),
            )
            .rsa_key_cert("a2", "rsa", Profile::plain("rsa")),
    );
    let set = TokenSet::build(Path::new(BIN), &spec, &temp_dir(&base(), "one_token_spec")?)?;
    let token = &set.manifest().tokens[0];
    assert_eq!(token.label, "Тест");
    assert_eq!(token.user_pin, "1111");
    let listed = list_tokens(&set)?;
    let all = pkcs11_tool(
        &set,
        &[
            "-O",
            "--slot",
            slot_of(&listed, token)?,
            "--login",
            "--pin",
            "1111",
        ],
    )?;
    assert_eq!(count(&all, "Private Key Object"), 2);
    let cert = token
        .objects_of(ObjectClass::Certificate)
        .find(|c| c.id_hex == "a1")
        .context("certificate a1")?;
    assert!(cert
        .subject
        .as_deref()
        .unwrap_or("")
        .contains("TINUA-0987654321"));
    // The key pair and the certificate share the public key.
    let spki: Vec<_> = token
        .objects
        .iter()
        .filter(|o| o.id_hex == "a1")
        .map(|o| o.spki_sha256.clone())
        .collect();
    assert_eq!(spki.len(), 3);
    assert!(spki.iter().all(|s| s.is_some() && *s == spki[0]));
    Ok(())
}

#[test]
fn small_bench_set_has_n_tokens_of_k_keys() -> TestResult {
    let set = TokenSet::build(
        Path::new(BIN),
        &Spec::bench(3, 2),
        &temp_dir(&base(), "bench_3_2")?,
    )?;
    let manifest = set.manifest();
    assert_eq!(manifest.name.as_deref(), Some("bench:3:2"));
    let listed = list_tokens(&set)?;
    assert_eq!(listed.len(), 3);
    for (n, token) in manifest.tokens.iter().enumerate() {
        assert_eq!(token.label, format!("bench-{n:03}"));
        assert_eq!(token.certificate_count(), 2);
        assert!(listed.contains_key(&token.serial));
    }
    Ok(())
}

#[test]
fn building_into_a_non_empty_directory_is_refused() -> TestResult {
    let dir = temp_dir(&base(), "non_empty")?;
    std::fs::write(dir.join("keep.txt"), "mine")?;
    let err = TokenSet::build(Path::new(BIN), &Spec::bench(1, 0), &dir)
        .err()
        .context("building into a non-empty directory must fail")?;
    assert!(format!("{err:#}").contains("not empty"), "{err:#}");
    assert_eq!(std::fs::read_to_string(dir.join("keep.txt"))?, "mine");
    Ok(())
}
