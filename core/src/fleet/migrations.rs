//! The fleet schema's versions: numbered SQL files applied in order, in one transaction,
//! under an advisory lock (two `fleet init` at once apply each file once); the version
//! applied is kept in `custody.migrations`. The roles (`sql/roles.sql`) are created and
//! granted after every run, as roles belong to the cluster, not to the database.

use serde::Serialize;

use super::Fleet;
use crate::error::{Error, Result};

/// The migrations; `MIGRATIONS[n]` upgrades schema n to n + 1.
const MIGRATIONS: &[&str] = &[
    include_str!("sql/0001_schema.sql"),
    include_str!("sql/0002_register_at_once.sql"),
];

const ROLES: &str = include_str!("sql/roles.sql");

/// The schema version this build writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Advisory lock key of `fleet init` ("CUSTODY1" as a big-endian integer).
const INIT_LOCK: i64 = 0x4355_5354_4f44_5931;

/// What `fleet init` did.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The database's name.
    pub database: String,
    /// Schema version before.
    pub from_version: u32,
    /// Schema version now.
    pub version: u32,
    /// The roles, by function.
    pub admin_role: String,
    /// Read-only role.
    pub auditor_role: String,
    /// The group every agent's login role is a member of.
    pub agent_role: String,
}

impl Fleet {
    /// Creates or upgrades the schema and the roles; safe to run again.
    pub fn init(&mut self) -> Result<InitReport> {
        let db = self.database.clone();
        let err = |e| super::map_err(&db, e);
        let encoding: String = self
            .client
            .query_one("SHOW server_encoding", &[])
            .map_err(err)?
            .get(0);
        if encoding != "UTF8" {
            return Err(Error::Refused(format!(
                "the database's encoding is {encoding}; the organisation's journal needs UTF8 (create it with `createdb -E UTF8 -T template0 NAME`)"
            )));
        }
        let mut tx = self.client.transaction().map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INIT_LOCK])
            .map_err(err)?;
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS custody;
             CREATE TABLE IF NOT EXISTS custody.migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());
             REVOKE ALL ON custody.migrations FROM PUBLIC;",
        )
        .map_err(err)?;
        let found: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM custody.migrations",
                &[],
            )
            .map_err(err)?
            .get(0);
        let found = found.max(0) as u32;
        if found > LATEST {
            return Err(Error::SchemaTooNew {
                found,
                supported: LATEST,
            });
        }
        if found == 0 {
            let elsewhere: Option<String> = tx
                .query_opt(
                    "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                     WHERE e.extname = 'pgcrypto' AND n.nspname <> 'custody'",
                    &[],
                )
                .map_err(err)?
                .map(|r| r.get(0));
            if let Some(schema) = elsewhere {
                return Err(Error::Refused(format!(
                    "pgcrypto is installed in schema {schema} of this database; custody needs it in schema custody: run `ALTER EXTENSION pgcrypto SET SCHEMA custody` (after `CREATE SCHEMA custody`) or use a database of its own"
                )));
            }
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).map_err(err)?;
            tx.execute(
                "INSERT INTO custody.migrations (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .map_err(err)?;
        }
        tx.batch_execute(ROLES).map_err(err)?;
        let name: String = tx
            .query_one("SELECT current_database()::text", &[])
            .map_err(err)?
            .get(0);
        tx.commit().map_err(err)?;
        Ok(InitReport {
            admin_role: format!("{name}_admin"),
            auditor_role: format!("{name}_auditor"),
            agent_role: format!("{name}_agent"),
            database: name,
            from_version: found,
            version: LATEST,
        })
    }

    /// The schema version of the database; refused when it is not a custody fleet database
    /// or is newer than this build.
    pub(crate) fn check_schema(&mut self) -> Result<()> {
        let db = self.database.clone();
        let row = self
            .client
            .query_one("SELECT to_regclass('custody.migrations') IS NOT NULL", &[])
            .map_err(|e| super::map_err(&db, e))?;
        if !row.get::<_, bool>(0) {
            return Err(Error::Refused(format!(
                "{db} holds no organisation's journal; create it with `custody fleet init --database URL`"
            )));
        }
        Ok(())
    }
}
