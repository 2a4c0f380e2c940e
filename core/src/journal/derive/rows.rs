//! Rows of a state table as the events say they should be and as the file holds them, and
//! their comparison: every difference named by table, key and column.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::Connection;
use serde::Serialize;
use serde_json::Value as Json;

use super::super::db_err;
use crate::error::Result;

/// One difference between a state table and what the events say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateProblem {
    /// The table, e.g. `orders`.
    pub table: String,
    /// The row's key, e.g. the order id.
    pub key: String,
    /// What differs.
    pub reason: String,
}

impl std::fmt::Display for StateProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}: {}", self.table, self.key, self.reason)
    }
}

/// The result of re-deriving the state tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateReport {
    /// Events replayed.
    pub events: u64,
    /// Rows compared.
    pub rows: u64,
    /// Every difference found.
    pub problems: Vec<StateProblem>,
}

impl StateReport {
    /// True when every table agrees with the events.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The rows of one table: key -> column -> value.
pub(super) type Rows = BTreeMap<String, BTreeMap<&'static str, Value>>;

pub(super) fn int(v: u64) -> Value {
    Value::Integer(v as i64)
}

pub(super) fn opt_int(v: Option<u64>) -> Value {
    v.map_or(Value::Null, int)
}

pub(super) fn txt(v: impl Into<String>) -> Value {
    Value::Text(v.into())
}

pub(super) fn opt_txt(v: Option<impl Into<String>>) -> Value {
    v.map_or(Value::Null, txt)
}

/// JSON text in one normal form (keys sorted, no spaces), so that equal documents compare
/// equal however they were written.
pub(super) fn json_norm(v: &Value) -> Value {
    match v {
        Value::Text(t) => match serde_json::from_str::<Json>(t) {
            Ok(j) => Value::Text(j.to_string()),
            Err(_) => v.clone(),
        },
        other => other.clone(),
    }
}

/// Inserts `row` under `key`, or under `key #2`, `#3` … when the key is taken (tables
/// without a primary key may hold the same object twice).
pub(super) fn insert_counted(rows: &mut Rows, key: String, row: BTreeMap<&'static str, Value>) {
    let mut k = key.clone();
    let mut n = 1;
    while rows.contains_key(&k) {
        n += 1;
        k = format!("{key} #{n}");
    }
    rows.insert(k, row);
}

/// Reads a table as [`Rows`]: `key` is an SQL expression giving the row's key; `columns`
/// are (name as reported, SQL expression).
pub(super) fn table_rows(
    conn: &Connection,
    table: &str,
    key: &str,
    columns: &[(&'static str, &str)],
) -> Result<Rows> {
    let select: Vec<&str> = columns.iter().map(|(_, sql)| *sql).collect();
    let sql = format!("SELECT {key}, {} FROM {table}", select.join(", "));
    let mut stmt = conn.prepare(&sql).map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut out = Rows::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let key: Value = r.get(0).map_err(db_err)?;
        let key = match key {
            Value::Text(t) => t,
            Value::Integer(i) => i.to_string(),
            other => format!("{other:?}"),
        };
        let mut row = BTreeMap::new();
        for (i, (name, _)) in columns.iter().enumerate() {
            row.insert(*name, r.get::<_, Value>(i + 1).map_err(db_err)?);
        }
        insert_counted(&mut out, key, row);
    }
    Ok(out)
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(t) if t.chars().count() > 80 => {
            format!("{:?}…", t.chars().take(80).collect::<String>())
        }
        Value::Text(t) => format!("{t:?}"),
        Value::Blob(b) => format!("{} byte(s) {}", b.len(), hex::encode(&b[..b.len().min(8)])),
    }
}

pub(super) fn compare(table: &str, expected: &Rows, found: &Rows, report: &mut StateReport) {
    let mut bad = |key: &str, reason: String| {
        report.problems.push(StateProblem {
            table: table.into(),
            key: key.into(),
            reason,
        })
    };
    for (key, want) in expected {
        let Some(have) = found.get(key) else {
            bad(key, "the row is missing, but the events record it".into());
            continue;
        };
        for (col, w) in want {
            let h = have.get(col).cloned().unwrap_or(Value::Null);
            if &h != w {
                bad(
                    key,
                    format!("{col} is {} but the events say {}", show(&h), show(w)),
                );
            }
        }
    }
    for key in found.keys().filter(|k| !expected.contains_key(*k)) {
        bad(key, "the row is not recorded by any event".into());
    }
    report.rows += found.len().max(expected.len()) as u64;
}
