//! Schema versions: `PRAGMA user_version` and a list of migrations, applied in order in
//! one transaction.

use rusqlite::Connection;

use super::{db_err, APPLICATION_ID};
use crate::error::{Error, Result};

/// The migrations; `MIGRATIONS[n]` upgrades schema n to n + 1.
const MIGRATIONS: &[&str] = &[
    include_str!("sql/0001_initial.sql"),
    include_str!("sql/0002_issuance.sql"),
    include_str!("sql/0003_orders.sql"),
];

/// The schema version this build writes.
pub(crate) const LATEST: u32 = MIGRATIONS.len() as u32;

/// Brings the schema to [`LATEST`]; a fresh file also gets its application id and
/// journal id.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let version: u32 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
    if version > LATEST {
        return Err(Error::SchemaTooNew {
            found: version,
            supported: LATEST,
        });
    }
    if version == 0 {
        let app_id: i32 = tx
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(db_err)?;
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(db_err)?;
        if app_id != 0 || tables != 0 {
            return Err(Error::NotAJournal(conn_path(&tx)));
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(db_err)?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(db_err)?;
        if i == 0 {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('journal_id', ?1)",
                [uuid::Uuid::new_v4().to_string()],
            )
            .map_err(db_err)?;
        }
        tx.pragma_update(None, "user_version", i as u32 + 1)
            .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

fn conn_path(conn: &Connection) -> std::path::PathBuf {
    conn.path().unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_reaches_latest() {
        let mut conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        migrate(&mut conn).unwrap_or_else(|e| panic!("{e}"));
        let v: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap_or_default();
        assert_eq!(v, LATEST);
        // idempotent
        migrate(&mut conn).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        migrate(&mut conn).unwrap_or_else(|e| panic!("{e}"));
        conn.pragma_update(None, "user_version", LATEST + 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            migrate(&mut conn),
            Err(Error::SchemaTooNew { .. })
        ));
    }

    #[test]
    fn foreign_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch("CREATE TABLE t (x)")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(migrate(&mut conn), Err(Error::NotAJournal(_))));
    }
}
