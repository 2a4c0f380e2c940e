//! custody runs only its own schema.
//!
//! A journal file may carry SQL of its own: a trigger planted in it runs inside custody's
//! transactions, a view can stand where a table should be. Before anything is written, the
//! file's `sqlite_master` is compared with the exact schema of its `user_version`, which is
//! derived from the migration SQL itself (applied to an in-memory database). The latest
//! schema is also kept as `sql/schema.json`, made the same way and checked against the
//! migrations by a unit test (`the_stored_schema_is_what_the_migrations_make`), so that every
//! open of an up-to-date journal compares with it instead of applying every migration in
//! memory first (half the instructions of a short `custody scan`); a file that does not
//! match the migrations' latest version is not used.
//!
//! An up-to-date journal is first compared byte for byte with the latest schema as SQLite
//! stores it (`sql/latest_objects.rs`, written and checked by the same unit test): type, name,
//! table and SQL of every object, no more and no fewer. Objects equal byte for byte are
//! equal after normalisation too, so this finds what the comparison object by object would;
//! any difference (whitespace included) falls back to that comparison, which names what
//! differs or accepts whitespace alone.
//! Every connection also runs with `trusted_schema` off and SQLite's defensive mode on.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde::Serialize;

use super::db_err;
use super::migrations::{self, MIGRATIONS};
use crate::error::{Error, Result};

/// One object of the schema: its type (`table`, `index`, `trigger`, `view`) and name.
type Key = (String, String);

/// The schema as stored: (type, name) -> (table it belongs to, normalised SQL).
type Schema = BTreeMap<Key, (String, Option<String>)>;

/// An object that is not exactly as custody created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaProblem {
    /// `table`, `index`, `trigger` or `view`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The table it belongs to.
    pub table: String,
    /// What is wrong: `unexpected`, `missing` or `altered`.
    pub problem: String,
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.problem.as_str() {
            "unexpected" => "that custody did not create",
            "missing" => "is missing",
            _ => "was altered",
        };
        write!(f, "{} `{}` on {} {what}", self.kind, self.name, self.table)
    }
}

/// Turns off what a hostile schema could use: functions with side effects in triggers and
/// views (`trusted_schema`), and writes to the schema or file structure (defensive mode).
pub(crate) fn harden(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
        .map_err(db_err)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(db_err)?;
    Ok(())
}

/// Whitespace runs become one space, so that only the SQL itself is compared.
fn normalise(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for word in sql.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// One object of the latest schema as SQLite stores it: (type, name, table, SQL).
type Object = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// The latest schema, object for object (see the module docs).
const LATEST_OBJECTS: &[Object] = &include!("sql/latest_objects.rs");

/// True when the file's schema is exactly the latest one, byte for byte: every object of
/// [`LATEST_OBJECTS`] and nothing else. False on any difference, which [`check`] then names
/// (or accepts, when only whitespace differs).
fn is_latest(conn: &Connection) -> Result<bool> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master")
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut seen = vec![false; LATEST_OBJECTS.len()];
    while let Some(row) = rows.next().map_err(db_err)? {
        let text = |i| match row.get_ref(i) {
            Ok(ValueRef::Text(t)) => Some(t),
            _ => None,
        };
        let (Some(kind), Some(name), Some(table)) = (text(0), text(1), text(2)) else {
            return Ok(false);
        };
        let sql = match row.get_ref(3).map_err(db_err)? {
            ValueRef::Null => None,
            ValueRef::Text(t) => Some(t),
            _ => return Ok(false),
        };
        let Some(i) = LATEST_OBJECTS
            .iter()
            .position(|(k, n, _, _)| n.as_bytes() == name && k.as_bytes() == kind)
        else {
            return Ok(false);
        };
        let (_, _, t, s) = LATEST_OBJECTS[i];
        if seen[i] || t.as_bytes() != table || s.map(str::as_bytes) != sql {
            return Ok(false);
        }
        seen[i] = true;
    }
    Ok(seen.iter().all(|s| *s))
}

/// The text of `sql/latest_objects.rs` for the schema in `conn`.
#[cfg(test)]
fn objects_source(conn: &Connection) -> Result<String> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    let mut out = String::from(
        "// The latest journal schema as SQLite stores it: (type, name, table, SQL).\n// Written by `CUSTODY_WRITE_SCHEMA=1 cargo test -p custody-core --lib stored_schema`.\n[\n",
    );
    for (kind, name, table, sql) in rows {
        let sql = match sql {
            Some(s) => format!("Some(r##\"{s}\"##)"),
            None => "None".into(),
        };
        out.push_str(&format!(
            "    (\"{kind}\", \"{name}\", \"{table}\", {sql}),\n"
        ));
    }
    out.push_str("]\n");
    Ok(out)
}

/// One object of `sql/schema.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
struct StoredObject {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    table: String,
    sql: Option<String>,
}

/// `sql/schema.json`: the schema the migrations make at `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
struct StoredSchema {
    version: u32,
    objects: Vec<StoredObject>,
}

const STORED: &str = include_str!("sql/schema.json");

impl StoredSchema {
    #[cfg(test)]
    fn of(version: u32, schema: &Schema) -> Self {
        Self {
            version,
            objects: schema
                .iter()
                .map(|((kind, name), (table, sql))| StoredObject {
                    kind: kind.clone(),
                    name: name.clone(),
                    table: table.clone(),
                    sql: sql.clone(),
                })
                .collect(),
        }
    }

    fn schema(&self) -> Schema {
        self.objects
            .iter()
            .map(|o| {
                (
                    (o.kind.clone(), o.name.clone()),
                    (o.table.clone(), o.sql.clone()),
                )
            })
            .collect()
    }
}

/// The latest schema from `sql/schema.json`, when that file is of [`migrations::LATEST`].
fn stored_latest() -> Option<&'static Schema> {
    static LATEST: OnceLock<Option<Schema>> = OnceLock::new();
    LATEST
        .get_or_init(|| {
            let stored: StoredSchema = serde_json::from_str(STORED).ok()?;
            (stored.version == migrations::LATEST).then(|| stored.schema())
        })
        .as_ref()
}

fn read(conn: &Connection) -> Result<Schema> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                (
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?.map(|s| normalise(&s)),
                ),
            ))
        })
        .map_err(db_err)?;
    rows.collect::<std::result::Result<_, _>>().map_err(db_err)
}

/// The schema of `version`: none before the first migration, the stored latest one (see the
/// module docs), else from the migrations applied in memory (computed once).
fn expected(version: u32) -> Result<&'static Schema> {
    static EMPTY: Schema = BTreeMap::new();
    if version == 0 {
        return Ok(&EMPTY);
    }
    if version == migrations::LATEST {
        if let Some(latest) = stored_latest() {
            return Ok(latest);
        }
    }
    built(version)
}

/// The schema of every version, from the migrations applied in memory (computed once).
fn built(version: u32) -> Result<&'static Schema> {
    static ALL: OnceLock<std::result::Result<Vec<Schema>, String>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let run = || -> Result<Vec<Schema>> {
            let conn = Connection::open_in_memory().map_err(db_err)?;
            let mut out = vec![read(&conn)?];
            for sql in MIGRATIONS {
                conn.execute_batch(sql).map_err(db_err)?;
                out.push(read(&conn)?);
            }
            Ok(out)
        };
        run().map_err(|e| e.to_string())
    });
    match all {
        Ok(all) => all.get(version as usize).ok_or(Error::SchemaTooNew {
            found: version,
            supported: migrations::LATEST,
        }),
        Err(e) => Err(Error::JournalCorrupt(format!(
            "the expected schema could not be built: {e}"
        ))),
    }
}

/// Compares the file's schema with the exact schema of `version`.
pub(crate) fn check(conn: &Connection, version: u32) -> Result<Vec<SchemaProblem>> {
    let want = expected(version)?;
    let have = read(conn)?;
    let mut problems = Vec::new();
    let mut push = |(kind, name): &Key, table: &str, problem: &str| {
        problems.push(SchemaProblem {
            kind: kind.clone(),
            name: name.clone(),
            table: table.to_owned(),
            problem: problem.into(),
        })
    };
    for (key, (table, sql)) in &have {
        match want.get(key) {
            None => push(key, table, "unexpected"),
            Some((t, s)) if t != table || s != sql => push(key, table, "altered"),
            Some(_) => {}
        }
    }
    for (key, (table, _)) in want {
        if !have.contains_key(key) {
            push(key, table, "missing");
        }
    }
    Ok(problems)
}

/// Refuses a journal whose schema is not exactly custody's, naming the first object. An
/// up-to-date journal is compared byte for byte first ([`is_latest`]); only one that differs
/// is compared object by object.
pub(crate) fn require_own(conn: &Connection, version: u32, path: &std::path::Path) -> Result<()> {
    if version == migrations::LATEST && is_latest(conn)? {
        return Ok(());
    }
    let problems = check(conn, version)?;
    match problems.first() {
        None => Ok(()),
        Some(first) => Err(Error::ForeignSchema {
            path: path.into(),
            object: first.to_string(),
            more: problems.len() - 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        migrations::migrate(&mut conn).unwrap_or_else(|e| panic!("{e}"));
        conn
    }

    /// `sql/schema.json`, `sql/latest_objects.rs` and `sql/latest.sql` are what the migrations
    /// make. Rewrite them after adding a migration:
    /// `CUSTODY_WRITE_SCHEMA=1 cargo test -p custody-core --lib stored_schema`.
    #[test]
    fn the_stored_schema_is_what_the_migrations_make() {
        let built = built(migrations::LATEST).unwrap_or_else(|e| panic!("{e}"));
        let want = StoredSchema::of(migrations::LATEST, built);
        let migrated = journal();
        let want_objects = objects_source(&migrated).unwrap_or_else(|e| panic!("{e}"));
        let want_latest = migrations::latest_sql(&migrated).unwrap_or_else(|e| panic!("{e}"));
        if std::env::var_os("CUSTODY_WRITE_SCHEMA").is_some() {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/journal/sql/");
            let text = serde_json::to_string_pretty(&want).unwrap_or_else(|e| panic!("{e}"));
            let write = |name: &str, text: String| {
                std::fs::write(format!("{dir}{name}"), text).unwrap_or_else(|e| panic!("{e}"))
            };
            write("schema.json", format!("{text}\n"));
            write("latest_objects.rs", want_objects);
            write("latest.sql", want_latest);
            return;
        }
        assert!(
            include_str!("sql/latest_objects.rs") == want_objects,
            "sql/latest_objects.rs is not the schema the migrations make; rewrite it: CUSTODY_WRITE_SCHEMA=1 cargo test -p custody-core --lib stored_schema"
        );
        assert_eq!(is_latest(&migrated).ok(), Some(true));
        assert!(
            migrations::LATEST_SQL == want_latest,
            "sql/latest.sql is not the schema the migrations make; rewrite it: CUSTODY_WRITE_SCHEMA=1 cargo test -p custody-core --lib stored_schema"
        );
        let stored: StoredSchema = serde_json::from_str(STORED).unwrap_or_else(|e| {
            panic!("sql/schema.json does not parse ({e}); rewrite it with CUSTODY_WRITE_SCHEMA=1")
        });
        assert!(
            stored == want,
            "sql/schema.json is not the schema the migrations make; rewrite it: CUSTODY_WRITE_SCHEMA=1 cargo test -p custody-core --lib stored_schema"
        );
        assert_eq!(stored_latest(), Some(built));
        // What an open compares with is that schema, and it finds a planted object.
        let conn = journal();
        assert_eq!(check(&conn, migrations::LATEST).ok(), Some(vec![]));
        conn.execute_batch("CREATE VIEW planted AS SELECT 1")
            .unwrap_or_else(|e| panic!("{e}"));
        let problems = check(&conn, migrations::LATEST).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].problem, "unexpected");
    }

    /// The byte-for-byte comparison tells the latest schema from one with anything planted,
    /// dropped or altered, and the open refuses those; whitespace alone makes it fall back to
    /// the comparison object by object, which accepts it.
    #[test]
    fn the_latest_schema_is_recognised_exactly() {
        let conn = journal();
        assert_eq!(is_latest(&conn).ok(), Some(true));
        for change in [
            "CREATE VIEW planted AS SELECT 1",
            "DROP TRIGGER events_no_delete",
            "DROP INDEX orders_by_state; CREATE INDEX orders_by_state ON orders (serial)",
            "CREATE INDEX planted ON meta (value)",
        ] {
            let conn = journal();
            conn.execute_batch(change).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(is_latest(&conn).ok(), Some(false), "{change}");
            let refused = require_own(&conn, migrations::LATEST, std::path::Path::new("t.db"));
            assert!(
                matches!(refused, Err(Error::ForeignSchema { .. })),
                "{change}: {refused:?}"
            );
        }
        let spaced = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let text = migrations::LATEST_SQL.replace('\n', "\n  \t\n ");
        spaced
            .execute_batch(&text)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(is_latest(&spaced).ok(), Some(false));
        assert_eq!(check(&spaced, migrations::LATEST).ok(), Some(vec![]));
        let path = std::path::Path::new("t.db");
        assert!(require_own(&spaced, migrations::LATEST, path).is_ok());
    }

    #[test]
    fn a_fresh_journal_has_exactly_the_schema_of_its_version() {
        let conn = journal();
        assert_eq!(check(&conn, migrations::LATEST).ok(), Some(vec![]));
    }

    #[test]
    fn planted_dropped_and_altered_objects_are_named() {
        let conn = journal();
        conn.execute_batch(
            "CREATE TRIGGER keep_failed AFTER UPDATE OF state ON orders
             BEGIN UPDATE orders SET state = 'failed' WHERE order_id = NEW.order_id; END;
             CREATE VIEW v AS SELECT 1;
             DROP TRIGGER events_no_delete;
             DROP INDEX orders_by_state; CREATE INDEX orders_by_state ON orders (serial);",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let problems = check(&conn, migrations::LATEST).unwrap_or_default();
        let got: Vec<(String, String)> = problems
            .iter()
            .map(|p| (p.name.clone(), p.problem.clone()))
            .collect();
        assert!(
            got.contains(&("keep_failed".into(), "unexpected".into())),
            "{got:?}"
        );
        assert!(got.contains(&("v".into(), "unexpected".into())), "{got:?}");
        assert!(
            got.contains(&("events_no_delete".into(), "missing".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&("orders_by_state".into(), "altered".into())),
            "{got:?}"
        );
        assert_eq!(got.len(), 4, "{got:?}");
    }

    #[test]
    fn defensive_mode_forbids_writing_the_schema() {
        let conn = journal();
        harden(&conn).unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch("PRAGMA writable_schema = ON;")
            .unwrap_or_else(|e| panic!("{e}"));
        let planted = conn.execute_batch(
            "INSERT INTO sqlite_master VALUES ('view', 'x', 'x', 0, 'CREATE VIEW x AS SELECT 1');",
        );
        assert!(planted.is_err());
    }
}
