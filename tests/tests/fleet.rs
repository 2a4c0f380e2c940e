//! The organisation's journal on a real PostgreSQL server (a private cluster per test
//! process, a database per test): schema, roles and row-level security, the server's chain
//! check, sync and its faults.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use custody_core::fleet::{Database, Fleet, SyncOptions};
use custody_core::journal::{Actor, Journal};
use custody_tests::postgres::Postgres;
use custody_tests::temp_dir;

type TestResult = anyhow::Result<()>;

fn dir(name: &str) -> anyhow::Result<PathBuf> {
    temp_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

fn actor() -> Actor {
    Actor {
        os_user: "tester".into(),
        operator: Some("Тест Оператор".into()),
        host: "ws-test".into(),
    }
}

/// Appends `n` note events in one transaction.
fn add_notes(journal: &mut Journal, n: usize, text: &str) -> anyhow::Result<()> {
    journal.write(&actor(), time::OffsetDateTime::now_utc(), |w| {
        for i in 0..n {
            w.append(
                "note",
                None,
                &serde_json::json!({ "text": format!("{text} {i}"), "ua": "Примітка «лапки»" }),
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

/// A fleet database, initialised, with a superuser connection.
struct TestFleet<'a> {
    pg: &'a Postgres,
    db: String,
}

impl<'a> TestFleet<'a> {
    fn new(pg: &'a Postgres, hint: &str) -> anyhow::Result<Self> {
        let db = pg.database(hint)?;
        let this = Self { pg, db };
        this.owner()?.init()?;
        Ok(this)
    }

    fn owner(&self) -> anyhow::Result<Fleet> {
        Ok(Fleet::connect(&Database::parse(&self.pg.url("postgres", &self.db))?)?)
    }

    /// Enrolls `name`; returns its database (with password).
    fn agent(&self, name: &str) -> anyhow::Result<Database> {
        let enrolled = self.owner()?.enroll_agent(name, false)?;
        Ok(Database::parse(&self.pg.url(&enrolled.role, &self.db))?
            .with_password(&enrolled.password))
    }
}

fn opts(batch: usize) -> SyncOptions {
    SyncOptions {
        batch,
        host: "ws-test".into(),
    }
}

/// Copies a journal (database and WAL) as a backup would.
fn copy_journal(from: &Path, to: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", ".key"] {
        let mut f = from.as_os_str().to_owned();
        f.push(suffix);
        let mut t = to.as_os_str().to_owned();
        t.push(suffix);
        if Path::new(&f).exists() {
            std::fs::copy(&f, &t)?;
        } else {
            let _ = std::fs::remove_file(&t);
        }
    }
    Ok(())
}

#[test]
fn init_is_idempotent_and_creates_the_roles() -> TestResult {
    let pg = Postgres::shared()?;
    let fleet = TestFleet::new(pg, "init")?;
    let report = fleet.owner()?.init()?;
    ensure!(report.from_version == report.version, "{report:?}");
    let mut c = pg.client(&fleet.db)?;
    for role in ["admin", "auditor", "agent"] {
        let name = format!("{}_{role}", fleet.db);
        let n = c.query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])?.len();
        ensure!(n == 1, "role {name} missing");
    }
    Ok(())
}

#[test]
fn sync_pushes_every_event_once_and_the_server_hash_agrees() -> TestResult {
    let pg = Postgres::shared()?;
    let fleet = TestFleet::new(pg, "sync")?;
    let agent = fleet.agent("ws1")?;
    let dir = dir("fleet_sync")?;
    let mut journal = Journal::open(&dir.join("journal.db"))?;
    add_notes(&mut journal, 2500, "перша")?;
    journal.checkpoint(&actor(), time::OffsetDateTime::now_utc())?;
    add_notes(&mut journal, 10, "друга")?;
    let mut f = Fleet::connect(&agent)?;
    let report = f.sync(&journal, &opts(1000))?;
    ensure!(report.pushed == 2511 && report.batches == 3, "{report:?}");
    ensure!(report.server_seq == 2511 && report.local_seq == 2511);
    let cp = report.checkpoint.context("the checkpoint is held")?;
    ensure!(cp.checkpoint().count == 2500 && cp.checkpoint().seq == 2501);
    // Idempotent.
    let again = f.sync(&journal, &opts(1000))?;
    ensure!(again.pushed == 0 && again.server_seq == 2511, "{again:?}");
    let cmp = f.compare(&journal)?;
    ensure!(cmp.ok() && cmp.registered, "{cmp:?}");
    let verify = fleet.owner()?.verify()?;
    ensure!(verify.ok() && verify.events == 2511 && verify.checkpoints == 1, "{verify:?}");
    ensure!(fleet.owner()?.alarms(None)?.is_empty());
    Ok(())
}
