//! The fleet connection over TLS, against a real PostgreSQL server with `ssl = on` that
//! accepts TLS only on loopback TCP: a CA and the server's certificate made with the
//! `openssl` command, each `sslmode` of `[fleet]` tried with `custody sync`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context as _};
use custody_core::journal::Journal;
use custody_tests::postgres::{Options, Postgres};
use custody_tests::{custody_bin, Run};

use super::{add_notes, dir, TestFleet, TestResult};

/// The name in the server's certificate; the URL's `hostaddr` takes the client to 127.0.0.1.
const SERVER_NAME: &str = "db.example.org";

/// Runs `openssl` in `dir` with the arguments of `line` (split at spaces).
fn openssl(dir: &Path, line: &str) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(line.split_whitespace())
        .output()
        .context("running openssl (Debian's `openssl` package)")?;
    ensure!(
        out.status.success(),
        "openssl {line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

const P256_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

/// A self-signed CA `NAME.pem` with its key `NAME.key`.
fn make_ca(dir: &Path, name: &str) -> anyhow::Result<()> {
    openssl(
        dir,
        &format!(
            "req -x509 {P256_KEY} -keyout {name}.key -out {name}.pem -days 2 -subj /CN={name} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    )
}

/// `server.crt`/`server.key` for [`SERVER_NAME`], signed by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) -> anyhow::Result<()> {
    openssl(
        dir,
        &format!("req {P256_KEY} -keyout server.key -out server.csr -subj /CN={SERVER_NAME}"),
    )?;
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName = DNS:{SERVER_NAME}\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n"
        ),
    )?;
    openssl(
        dir,
        &format!(
            "x509 -req -in server.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -out server.crt \
             -days 2 -extfile server.ext"
        ),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

#[test]
fn sync_over_tls_verifies_the_servers_certificate_as_configured() -> TestResult {
    let dir = dir("fleet_tls")?;
    make_ca(&dir, "fleet-ca")?;
    make_ca(&dir, "other-ca")?;
    make_server_cert(&dir, "fleet-ca")?;
    let pg = Postgres::start(&Options {
        tcp: true,
        tls: Some((dir.join("server.crt"), dir.join("server.key"))),
        durable: false,
    })?;
    let port = pg.port.context("a TCP port")?;
    let fleet = TestFleet::new(&pg, "tls")?;
    let enrolled = fleet.owner()?.enroll_agent("ws-tls", false)?;
    let password_file = dir.join("fleet.password");
    {
        use secrecy::ExposeSecret as _;
        std::fs::write(&password_file, enrolled.password.expose_secret())?;
    }
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))?;
    let journal = dir.join("journal.db");
    {
        let mut j = Journal::open(&journal)?;
        add_notes(&mut j, 20, "over TLS")?;
    }
    let ca = dir.join("fleet-ca.pem");
    let other_ca = dir.join("other-ca.pem");
    // One sync with `[fleet]` made of this URL query and CA file.
    let sync = |host: &str, sslmode: &str, ca_file: Option<&Path>| -> anyhow::Result<Run> {
        let config = dir.join("custody.toml");
        let mut text = format!(
            "[fleet]\ndatabase = \"postgresql://{role}@{host}:{port}/{db}?hostaddr=127.0.0.1&sslmode={sslmode}\"\npassword_file = \"{pw}\"\n",
            role = enrolled.role,
            db = fleet.db,
            pw = s(&password_file),
        );
        if let Some(ca) = ca_file {
            text.push_str(&format!("ca_file = \"{}\"\n", s(ca)));
        }
        std::fs::write(&config, text)?;
        let out = Command::new(custody_bin())
            .env("CUSTODY_CONFIG", "/dev/null")
            .env_remove("PGPASSWORD")
            .args([
                "--config",
                s(&config),
                "--journal",
                s(&journal),
                "--json",
                "sync",
            ])
            .output()?;
        Ok(out.into())
    };
    // What the server saw of this agent: its name arrives only after the handshake, in the
    // startup message, so a client refused during the handshake leaves no line naming it.
    let seen = || {
        pg.log()
            .lines()
            .filter(|l| l.contains(&enrolled.role))
            .count()
    };
    let held = || -> anyhow::Result<i64> {
        let mut c = pg.client(&fleet.db)?;
        Ok(c.query_one("SELECT count(*) FROM custody.events", &[])?
            .get(0))
    };

    // Refused by custody before anything is sent.
    let refusals: [(&str, &str, Option<&Path>, &str); 4] = [
        (
            SERVER_NAME,
            "verify-full",
            Some(&other_ca),
            "unable to get local issuer certificate",
        ),
        (
            "other.example.org",
            "verify-full",
            Some(&ca),
            "hostname mismatch",
        ),
        (
            SERVER_NAME,
            "verify-ca",
            Some(&other_ca),
            "unable to get local issuer certificate",
        ),
        // As libpq: require with a CA file verifies the chain.
        (
            SERVER_NAME,
            "require",
            Some(&other_ca),
            "unable to get local issuer certificate",
        ),
    ];
    for (host, mode, ca_file, why) in refusals {
        let run = sync(host, mode, ca_file)?;
        ensure!(
            run.code == 2
                && run
                    .stderr
                    .contains("presented a certificate that is not accepted")
                && run.stderr.contains(why)
                && run.stderr.contains("nothing was sent"),
            "{host} {mode}: {run:?}"
        );
        ensure!(
            seen() == 0,
            "{host} {mode}: the server saw the agent:\n{}",
            pg.log()
        );
    }
    // verify-full without any CA is refused before connecting, and says what to give.
    let run = sync(SERVER_NAME, "verify-full", None)?;
    ensure!(run.code == 1 && run.stderr.contains("ca_file"), "{run:?}");
    // The server accepts TLS only: a client without it is turned away by the server.
    let run = sync(SERVER_NAME, "disable", None)?;
    ensure!(
        run.code == 1 && run.stderr.contains("no encryption"),
        "{run:?}"
    );
    ensure!(held()? == 0, "nothing reached the organisation's journal");

    // Accepted: verify-full with the CA that signed the certificate and the host it names.
    let run = sync(SERVER_NAME, "verify-full", Some(&ca))?;
    ensure!(run.code == 0, "{run:?}");
    ensure!(run.json()?["sync"]["pushed"] == 21, "{run:?}");
    ensure!(held()? == 21);
    // The connection was encrypted (the server logs it with the authorization).
    ensure!(
        pg.log().lines().any(|l| l.contains("connection authorized")
            && l.contains(&enrolled.role)
            && l.contains("SSL enabled")),
        "{}",
        pg.log()
    );
    // verify-ca checks the chain, not the name; require without a CA checks nothing (both
    // as libpq does): accepted.
    {
        let mut j = Journal::open(&journal)?;
        add_notes(&mut j, 2, "more")?;
    }
    let run = sync("other.example.org", "verify-ca", Some(&ca))?;
    ensure!(
        run.code == 0 && run.json()?["sync"]["pushed"] == 2,
        "{run:?}"
    );
    {
        let mut j = Journal::open(&journal)?;
        add_notes(&mut j, 1, "more")?;
    }
    let run = sync("other.example.org", "require", None)?;
    ensure!(
        run.code == 0 && run.json()?["sync"]["pushed"] == 1,
        "{run:?}"
    );
    ensure!(held()? == 24);
    Ok(())
}
