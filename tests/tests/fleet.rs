//! The organisation's journal on a real PostgreSQL server (a private cluster per test
//! process, a database per test): schema, roles and row-level security, the server's chain
//! check, sync and its faults (`server`), the `custody` commands (`cli`), TLS (`tls`), and the two-workstation demo (`demo`).

#[path = "fleet/cli.rs"]
mod cli;
#[path = "fleet/demo.rs"]
mod demo;
#[path = "fleet/server.rs"]
mod server;
#[path = "fleet/tls.rs"]
mod tls;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use custody_core::fleet::{Database, Fleet, SyncOptions};
use custody_core::journal::{Actor, Journal};
use custody_tests::postgres::Postgres;
use custody_tests::temp_dir;

pub(crate) type TestResult = anyhow::Result<()>;

pub(crate) fn dir(name: &str) -> anyhow::Result<PathBuf> {
    temp_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

pub(crate) fn actor() -> Actor {
    Actor {
        os_user: "tester".into(),
        operator: Some("Тест Оператор".into()),
        host: "ws-test".into(),
    }
}

/// Appends `n` note events in one transaction.
pub(crate) fn add_notes(journal: &mut Journal, n: usize, text: &str) -> anyhow::Result<()> {
    journal.write(&actor(), time::OffsetDateTime::now_utc(), |w| {
        for i in 0..n {
            w.append(
                custody_core::event::EventKind::Note,
                None,
                &serde_json::json!({ "text": format!("{text} {i}"), "ua": "Примітка «лапки»" }),
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

/// A fleet database, initialised, with a superuser connection.
pub(crate) struct TestFleet<'a> {
    pub(crate) pg: &'a Postgres,
    pub(crate) db: String,
}

impl<'a> TestFleet<'a> {
    pub(crate) fn new(pg: &'a Postgres, hint: &str) -> anyhow::Result<Self> {
        let db = pg.database(hint)?;
        let this = Self { pg, db };
        this.owner()?.init()?;
        Ok(this)
    }

    pub(crate) fn owner(&self) -> anyhow::Result<Fleet> {
        Ok(Fleet::connect(&Database::parse(
            &self.pg.url("postgres", &self.db),
        )?)?)
    }

    /// Enrolls `name`; returns its database (with password).
    pub(crate) fn agent(&self, name: &str) -> anyhow::Result<Database> {
        let enrolled = self.owner()?.enroll_agent(name, false)?;
        Ok(Database::parse(&self.pg.url(&enrolled.role, &self.db))?
            .with_password(&enrolled.password))
    }
}

pub(crate) fn opts(batch: usize) -> SyncOptions {
    SyncOptions {
        batch,
        host: "ws-test".into(),
    }
}

/// Copies a journal (database and WAL) as a backup would.
pub(crate) fn copy_journal(from: &Path, to: &Path) -> anyhow::Result<()> {
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

/// A raw client logged in as an agent, for trying what custody itself never does.
pub(crate) fn raw_agent(
    pg: &Postgres,
    db: &str,
    agent: &Database,
    password: &str,
) -> anyhow::Result<postgres::Client> {
    let mut cfg = postgres::Config::new();
    cfg.host_path(pg.socket_dir())
        .user(agent.user().context("user")?)
        .password(password)
        .dbname(db);
    Ok(cfg.connect(postgres::NoTls)?)
}
