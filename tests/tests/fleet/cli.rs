//! The `custody` commands of the organisation's journal, run as users run them: the real
//! binary against a real PostgreSQL cluster.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _};
use custody_core::journal::Journal;
use custody_tests::postgres::Postgres;
use custody_tests::{custody_bin, Custody, Profile, Run, Spec, TokenSet, TokenSpec};

use super::{add_notes, copy_journal, dir, TestResult};

/// Runs custody with no system configuration.
fn custody(args: &[&str]) -> anyhow::Result<Run> {
    let out = Command::new(custody_bin())
        .env("CUSTODY_CONFIG", "/dev/null")
        .env_remove("PGPASSWORD")
        .args(args)
        .output()
        .context("running custody")?;
    Ok(out.into())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

#[test]
fn enroll_sync_verify_and_a_rollback_through_the_cli() -> TestResult {
    let pg = Postgres::shared()?;
    let db = pg.database("cli")?;
    let url = pg.url("postgres", &db);
    custody(&["fleet", "init", "--database", &url])?.expect(0)?;
    let again = custody(&["--json", "fleet", "init", "--database", &url])?.expect(0)?;
    ensure!(again.json()?["from_version"] == again.json()?["version"]);
    let dir = dir("fleet_cli")?;
    let config = dir.join("ws1.toml");
    let enrolled = custody(&[
        "--json",
        "fleet",
        "enroll-agent",
        "ws1",
        "--database",
        &url,
        "--output",
        s(&config),
    ])?
    .expect(0)?
    .json()?;
    let password_file = PathBuf::from(
        enrolled["password_file"]
            .as_str()
            .context("password_file")?,
    );
    for f in [&config, &password_file] {
        let mode = std::fs::metadata(f)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "{} has mode {mode:o}", f.display());
    }
    let text = std::fs::read_to_string(&config)?;
    let password = std::fs::read_to_string(&password_file)?;
    ensure!(password.trim().len() == 64, "a 32-byte random password");
    ensure!(
        text.contains("[fleet]") && text.contains("database = \"postgresql://"),
        "{text}"
    );
    ensure!(
        !text.contains(password.trim()),
        "the password is in the config file"
    );
    // Enrolling the same name again is refused; --rotate is how to get new credentials.
    let twice = custody(&[
        "fleet",
        "enroll-agent",
        "ws1",
        "--database",
        &url,
        "--output",
        s(&dir.join("x.toml")),
    ])?;
    ensure!(
        twice.code != 0 && twice.stderr.contains("--rotate"),
        "{twice:?}"
    );

    let journal = dir.join("journal.db");
    let backup = dir.join("backup.db");
    {
        let mut j = Journal::open(&journal)?;
        add_notes(&mut j, 40, "cli")?;
    }
    let with = |args: &[&str]| {
        let mut all = vec!["--config", s(&config), "--journal", s(&journal)];
        all.extend_from_slice(args);
        custody(&all)
    };
    let synced = with(&["--json", "sync"])?.expect(0)?.json()?;
    // 41: the journal's creation checkpoint and 40 notes.
    ensure!(synced["sync"]["pushed"] == 41, "{synced}");
    let synced = with(&["--json", "sync"])?.expect(0)?.json()?;
    ensure!(synced["sync"]["pushed"] == 0, "{synced}");
    with(&["journal", "verify", "--against-fleet"])?.expect(0)?;
    let status = custody(&["--json", "fleet", "status", "--database", &url])?
        .expect(0)?
        .json()?;
    ensure!(
        status["status"]["journals"][0]["agent"] == "ws1",
        "{status}"
    );
    ensure!(
        status["status"]["journals"][0]["server_seq"] == 41,
        "{status}"
    );
    let verify = custody(&["fleet", "verify", "--database", &url])?.expect(0)?;
    ensure!(
        verify.stdout.contains("events/s") && verify.stdout.contains("all verify"),
        "{verify:?}"
    );

    // A backup, more events synced, then the old backup restored: refused, detected.
    copy_journal(&journal, &backup)?;
    {
        let mut j = Journal::open(&journal)?;
        add_notes(&mut j, 5, "after the backup")?;
    }
    with(&["sync"])?.expect(0)?;
    copy_journal(&backup, &journal)?;
    let refused = with(&["sync"])?;
    ensure!(
        refused.code == 1
            && refused
                .stderr
                .contains("local journal behind the organisation's record at seq 46"),
        "{refused:?}"
    );
    let verify = with(&["journal", "verify", "--against-fleet"])?;
    ensure!(
        verify.code == 1 && verify.stdout.contains("BEHIND"),
        "{verify:?}"
    );
    let verify = with(&["--json", "journal", "verify", "--against-fleet"])?;
    ensure!(
        verify.code == 1 && verify.json()?["fleet"]["behind"] == true,
        "{verify:?}"
    );
    let status = custody(&["fleet", "status", "--database", &url])?;
    ensure!(
        status.code == 1 && status.stdout.contains("ALARM behind"),
        "{status:?}"
    );
    Ok(())
}

#[test]
fn an_unreachable_database_is_exit_2_and_names_no_password() -> TestResult {
    let dir = dir("fleet_unreachable")?;
    let config = dir.join("custody.toml");
    let password = dir.join("pw");
    std::fs::write(&password, "canary-password-7f3e\n")?;
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600))?;
    let gone = dir.join("no-such-socket-dir");
    std::fs::write(
        &config,
        format!(
            "[fleet]\ndatabase = \"postgresql://fleet_agent_ws1@{}/fleet\"\npassword_file = \"{}\"\n",
            s(&gone).replace('/', "%2F"),
            s(&password)
        ),
    )?;
    let journal = dir.join("journal.db");
    {
        let mut j = Journal::open(&journal)?;
        add_notes(&mut j, 3, "offline")?;
    }
    let run = custody(&["--config", s(&config), "--journal", s(&journal), "sync"])?;
    ensure!(
        run.code == 2 && run.stderr.contains("cannot be reached"),
        "{run:?}"
    );
    // Positive control: the password file was read (a missing one is another error).
    ensure!(!run.stderr.contains("pw:"), "{run:?}");
    ensure!(
        !run.stderr.contains("canary-password-7f3e")
            && !run.stdout.contains("canary-password-7f3e")
    );
    // A password file others can read is refused, naming the file, not the password.
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644))?;
    let run = custody(&["--config", s(&config), "--journal", s(&journal), "sync"])?;
    ensure!(run.code != 0 && run.stderr.contains("chmod 600"), "{run:?}");
    ensure!(!run.stderr.contains("canary-password-7f3e"));
    Ok(())
}

const FIXTURES: &str = env!("CARGO_BIN_EXE_custody-fixtures");

#[test]
fn the_fleet_form_is_each_workstations_form_by_agent() -> TestResult {
    let pg = Postgres::shared()?;
    let db = pg.database("form")?;
    let url = pg.url("postgres", &db);
    custody(&["fleet", "init", "--database", &url])?.expect(0)?;
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-form");
    let spec = Spec::new().token(TokenSpec::new("Іваненко І.І.").ec_key_cert(
        "01",
        "signing key",
        Profile::ua_person(),
    ));
    let mut locals = Vec::new();
    for agent in ["ws-a", "ws-b"] {
        let dir = dir(&format!("fleet_form_{agent}"))?;
        let set = TokenSet::cached(
            Path::new(FIXTURES),
            &spec,
            &base.join("cache"),
            &dir.join("set"),
        )?;
        let config = dir.join("agent.toml");
        custody(&[
            "fleet",
            "enroll-agent",
            agent,
            "--database",
            &url,
            "--output",
            s(&config),
        ])?
        .expect(0)?;
        let c = Custody::new(&set, &dir.join("journal.db")).with_config(&config);
        c.run(&["scan"])?.expect(0)?;
        let serial = set.manifest().tokens[0].serial.clone();
        c.run(&["issue", "--carrier", &serial, "--date", "2026-03-02"])?
            .expect(0)?;
        c.run(&[
            "revocation",
            "requested",
            "--carrier",
            &serial,
            "--ref",
            "лист № 12/3-45",
            "--date",
            "2026-03-10",
        ])?
        .expect(0)?;
        c.run(&["sync"])?.expect(0)?;
        let local = c
            .run(&["journal", "export", "--format", "csv", "--lang", "en"])?
            .expect(0)?;
        locals.push((agent, local.stdout));
    }
    let form = custody(&[
        "fleet",
        "form",
        "--database",
        &url,
        "--format",
        "csv",
        "--lang",
        "en",
    ])?
    .expect(0)?;
    let mut lines = form.stdout.lines();
    let header = lines.next().context("header")?;
    let rows: Vec<&str> = lines.collect();
    ensure!(rows.len() == 2, "{}", form.stdout);
    for (i, (agent, local)) in locals.iter().enumerate() {
        let mut l = local.lines();
        ensure!(l.next() == Some(header), "same columns");
        let row = l.next().context("a local row")?;
        // The same cells, column 1 prefixed with the agent.
        ensure!(
            rows[i] == format!("{agent}/{row}"),
            "fleet: {}\nlocal: {row}",
            rows[i]
        );
        ensure!(
            row.contains("лист № 12/3-45") || row.contains("12/3-45"),
            "revocation shown: {row}"
        );
    }
    let json = custody(&["fleet", "form", "--database", &url, "--format", "json"])?
        .expect(0)?
        .json()?;
    ensure!(json["rows"][1]["agent"] == "ws-b", "{json}");
    let html = custody(&["fleet", "form", "--database", &url])?.expect(0)?;
    ensure!(
        html.stdout.contains("ws-a/1") && html.stdout.contains("Іваненко"),
        "html"
    );
    Ok(())
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `secs`.
fn wait_for<T>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn the_service_keeps_journaling_while_the_database_is_down_and_catches_up() -> TestResult {
    let mut pg = Postgres::start(&Default::default())?;
    let db = pg.database("watch")?;
    let url = pg.url("postgres", &db);
    custody(&["fleet", "init", "--database", &url])?.expect(0)?;
    let dir = dir("fleet_watch")?;
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-form");
    let spec = Spec::new().token(TokenSpec::new("Іваненко І.І.").ec_key_cert(
        "01",
        "signing key",
        Profile::ua_person(),
    ));
    let set = TokenSet::cached(
        Path::new(FIXTURES),
        &spec,
        &base.join("cache"),
        &dir.join("set"),
    )?;
    let config = dir.join("agent.toml");
    custody(&[
        "fleet",
        "enroll-agent",
        "ws1",
        "--database",
        &url,
        "--output",
        s(&config),
    ])?
    .expect(0)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str("interval = \"1s\"\n");
    text.push_str("[service]\ninterval = \"500ms\"\n");
    std::fs::write(&config, text)?;
    let journal = dir.join("journal.db");
    let c = Custody::new(&set, &journal).with_config(&config);
    let mut watch = c
        .command()
        .arg("watch")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("watch.log"))?)
        .spawn()?;
    let result = (|| -> TestResult {
        let status = || -> anyhow::Result<serde_json::Value> {
            // Null until the service has created the journal.
            let run = c.run(&["--json", "status"])?;
            Ok(if run.code == 0 {
                run.json()?["fleet_sync"].clone()
            } else {
                serde_json::Value::Null
            })
        };
        wait_for(30, "the first sync", || {
            let f = status()?;
            Ok((f["last_success"].is_string()
                && f["lag_events"] == 0
                && f["server_seq"].as_u64() > Some(0))
            .then_some(()))
        })?;
        pg.stop()?;
        {
            let mut j = Journal::open(&journal)?;
            add_notes(&mut j, 25, "while the database is down")?;
        }
        let down = wait_for(30, "a failed sync", || {
            let f = status()?;
            Ok(f["last_error"].is_string().then_some(f))
        })?;
        ensure!(down["lag_events"].as_u64() >= Some(25), "{down}");
        ensure!(
            down["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("cannot be reached"),
            "{down}"
        );
        let text = c.run(&["status"])?.expect(0)?;
        ensure!(
            text.stdout.contains("not synced yet") && text.stdout.contains("failed"),
            "{text:?}"
        );
        pg.restart()?;
        let up = wait_for(30, "the catch-up", || {
            let f = status()?;
            Ok((f["last_error"].is_null() && f["lag_events"] == 0).then_some(f))
        })?;
        let local = Journal::open(&journal)?.head()?.0;
        let verify = custody(&["--json", "fleet", "verify", "--database", &url])?
            .expect(0)?
            .json()?;
        ensure!(
            verify["verify"]["events"].as_u64() == Some(local),
            "{verify} local {local} {up}"
        );
        Ok(())
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &watch.id().to_string()])
        .status();
    let exit = watch.wait()?;
    if let Err(e) = result {
        let log = std::fs::read_to_string(dir.join("watch.log")).unwrap_or_default();
        anyhow::bail!("{e:#}\nthe service's log:\n{log}");
    }
    ensure!(exit.success(), "watch exited {exit:?}");
    Ok(())
}
