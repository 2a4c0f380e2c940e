//! Schema versions: `PRAGMA user_version` and a list of migrations, applied in order in
//! one transaction. A new journal is made in one step from `sql/latest.sql`: the schema the
//! migrations leave, statement for statement as SQLite stores it (written and checked against
//! the migrations by the unit test `the_stored_schema_is_what_the_migrations_make`), which
//! costs a fraction of replaying every migration (tables copied and renamed, columns added).

use rusqlite::{Connection, Transaction};

use super::{db_err, APPLICATION_ID};
use crate::error::{Error, Result};

/// The migrations; `MIGRATIONS[n]` upgrades schema n to n + 1.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("sql/0001_initial.sql"),
    include_str!("sql/0002_issuance.sql"),
    include_str!("sql/0003_orders.sql"),
    include_str!("sql/0004_key_sets.sql"),
    include_str!("sql/0005_holders.sql"),
    include_str!("sql/0006_number_seen_key_sets.sql"),
];

/// The schema version this build writes.
pub(crate) const LATEST: u32 = MIGRATIONS.len() as u32;

/// The schema of [`LATEST`] as the migrations leave it, one statement per object.
pub(crate) const LATEST_SQL: &str = include_str!("sql/latest.sql");

/// The text of `sql/latest.sql` for the schema in `conn`: every object's SQL as SQLite stores
/// it, in the order the objects were created (so each comes after what it names).
#[cfg(test)]
pub(crate) fn latest_sql(conn: &Connection) -> Result<String> {
    let mut stmt = conn
        .prepare(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite%'
             ORDER BY rowid",
        )
        .map_err(db_err)?;
    let statements = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    Ok(statements
        .iter()
        .map(|s| format!("{s};\n"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Refuses to make a journal of a file that holds anything (a database custody did not
/// make): a new journal starts from an empty file.
fn require_empty(tx: &Transaction<'_>) -> Result<()> {
    let app_id: i32 = tx
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(db_err)?;
    let tables: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(db_err)?;
    if app_id != 0 || tables != 0 {
        return Err(Error::NotAJournal(conn_path(tx)));
    }
    Ok(())
}

/// Makes a new journal inside `tx` when the file is still empty (schema version 0): the
/// latest schema, application id, journal id and version, as the migrations would leave them
/// (less migration 6's mark, which asks to number key sets an older custody saw: a new
/// journal has none). Returns the journal id; `None` when the file has a schema already
/// (another custody made it first), with nothing written.
pub(crate) fn create(tx: &Transaction<'_>) -> Result<Option<String>> {
    let version: u32 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
    if version != 0 {
        return Ok(None);
    }
    require_empty(tx)?;
    tx.execute_batch(LATEST_SQL).map_err(db_err)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(db_err)?;
    let journal_id = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('journal_id', ?1)",
        [&journal_id],
    )
    .map_err(db_err)?;
    tx.pragma_update(None, "user_version", LATEST)
        .map_err(db_err)?;
    Ok(Some(journal_id))
}

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
        require_empty(&tx)?;
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

    /// What a new journal is made of: exactly the objects the migrations make, with the same
    /// stored SQL, application id and version; its meta holds only its journal id.
    #[test]
    fn a_new_journal_is_what_the_migrations_make() {
        let objects = |conn: &Connection| -> Vec<(String, String, String, Option<String>)> {
            conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
                .and_then(|mut s| {
                    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                        .collect()
                })
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let header = |conn: &Connection| -> (i32, u32) {
            let get = |p: &str| conn.pragma_query_value(None, p, |r| r.get::<_, i64>(0));
            let (a, v) = (get("application_id"), get("user_version"));
            (
                a.unwrap_or_else(|e| panic!("{e}")) as i32,
                v.unwrap_or_else(|e| panic!("{e}")) as u32,
            )
        };
        let mut migrated = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        migrate(&mut migrated).unwrap_or_else(|e| panic!("{e}"));
        let mut made = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let tx = made.transaction().unwrap_or_else(|e| panic!("{e}"));
        let id = create(&tx).unwrap_or_else(|e| panic!("{e}"));
        tx.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(objects(&made), objects(&migrated));
        assert_eq!(header(&made), (APPLICATION_ID, LATEST));
        assert_eq!(header(&made), header(&migrated));
        let meta: Vec<(String, String)> = made
            .prepare("SELECT key, value FROM meta")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta, [("journal_id".to_owned(), id.unwrap_or_default())]);
        // A file with a schema is left as it is; one holding anything else is refused.
        let tx = made.transaction().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(create(&tx).ok(), Some(None));
        drop(tx);
        let mut foreign = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        foreign
            .execute_batch("CREATE TABLE t (x)")
            .unwrap_or_else(|e| panic!("{e}"));
        let tx = foreign.transaction().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(create(&tx), Err(Error::NotAJournal(_))));
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

    #[test]
    fn a_schema_1_journal_is_upgraded_and_keeps_its_events() {
        let dir = std::env::temp_dir().join(format!("custody-v1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("v1.db");
        {
            let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
            conn.execute_batch(MIGRATIONS[0])
                .unwrap_or_else(|e| panic!("{e}"));
            conn.execute_batch(&format!(
                "INSERT INTO meta VALUES ('journal_id', 'v1-journal');
                 PRAGMA application_id = {};
                 PRAGMA user_version = 1;",
                APPLICATION_ID
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut j = super::super::Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(j.journal_id(), "v1-journal");
        let version: u32 = j
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap_or_default();
        assert_eq!(version, LATEST);
        // A journal without events gets its first checkpoint when it is opened.
        let first = j.latest_checkpoint().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.map(|c| (c.count, c.seq)), Some((0, 1)));
        let cp = j
            .checkpoint(
                &super::super::Actor::current(None),
                time::OffsetDateTime::now_utc(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((cp.count, cp.seq), (1, 2));
        assert!(j.verify_checkpoints(None).map(|r| r.ok()).unwrap_or(false));
        assert!(j.form(&Default::default()).unwrap_or_default().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_schema_3_form_row_keeps_its_number_and_issued_rows_get_their_issued_event() {
        let mut conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
        for sql in &MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
        }
        tx.execute_batch(
            "INSERT INTO meta VALUES ('journal_id', 'v3');
             INSERT INTO form_rows (row_no, origin, seq, carrier, key_set)
                 VALUES (7, 'issued', 12, 'a/b/c', '{}');
             INSERT INTO form_rows (row_no, origin, seq, key_set, imported)
                 VALUES (3, 'imported', 2, '{}', '{}');
             PRAGMA user_version = 3;",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        tx.commit().unwrap_or_else(|e| panic!("{e}"));
        migrate(&mut conn).unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<(i64, String, Option<i64>)> = conn
            .prepare("SELECT row_no, origin, issued_seq FROM form_rows ORDER BY row_no")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows,
            [(3, "imported".into(), None), (7, "issued".into(), Some(12))]
        );
        assert_eq!(
            super::super::schema::check(&conn, LATEST).ok(),
            Some(vec![])
        );
    }

    #[test]
    fn processes_creating_one_journal_at_once_all_open_it_and_write_one_checkpoint() {
        let dir = std::env::temp_dir().join(format!("custody-race-{}", std::process::id()));
        for round in 0..20 {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            let path = dir.join("journal.db");
            let start = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), std::sync::Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        super::super::Journal::open(&path).map(|_| ())
                    })
                })
                .collect();
            for t in opened {
                let r = t.join().unwrap_or_else(|_| panic!("thread panicked"));
                assert!(r.is_ok(), "round {round}: {r:?}");
            }
            let j = super::super::Journal::open(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(j.event_count().ok(), Some(1), "round {round}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
