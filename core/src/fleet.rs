//! The organisation's journal on PostgreSQL: the only code in custody that uses `postgres`.
//!
//! Each workstation's SQLite journal stays the offline-first source; agents push its events
//! into one PostgreSQL database ([`Fleet::sync`]), idempotently on (journal_id, seq). The
//! database checks every pushed event itself (pgcrypto: the hash must continue the chain it
//! holds, see `sql/0001_schema.sql`), records a refused push as an alarm, and keeps every
//! checkpoint as the witness a rolled-back workstation journal cannot erase. Agents may only
//! INSERT rows of their own journal (row-level security) and read their own rows.
//!
//! This module owns the schema (numbered SQL files applied by [`Fleet::init`]), the roles,
//! sync, and the organisation's reads (status, verify, the events behind the form). It reads
//! local journals only through the journal's public API and never writes to them. Every
//! PostgreSQL error becomes a custody [`Error`] in one place, `map_err`.
//!
//! # Layout
//!
//! - `connect`: the database URL, TLS (sslmode, CA file), the password; never echoed.
//! - `migrations`: the schema versions and the roles.
//! - `enroll`: agent login roles and their credentials.
//! - `sync`: pushing a local journal, the behind/fork checks, [`SyncedCheckpoint`].
//! - `audit`: the organisation's side: status, verify, every journal's events.

mod audit;
mod connect;
mod enroll;
mod migrations;
mod sync;

pub use audit::{
    AlarmRow, FleetJournal, FleetStatus, FleetVerify, JournalCheck, JournalForm, OverdueOrder,
};
pub use connect::{read_password_file, Database, SslMode};
pub use enroll::{check_agent_name, Enrolled};
pub use migrations::{InitReport, LATEST};
pub use sync::{FleetComparison, SyncOptions, SyncReport, SyncedCheckpoint};

use crate::error::{Error, Result};

/// A connection to the organisation's database.
pub struct Fleet {
    client: postgres::Client,
    database: Database,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("database", &self.database.to_string())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Connects to `database`.
    pub fn connect(database: &Database) -> Result<Self> {
        let client = database.connect()?;
        Ok(Self {
            client,
            database: database.clone(),
        })
    }

    /// The database connected to (Display never shows a password).
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The name of the database: the prefix of the fleet's role names.
    pub fn database_name(&mut self) -> Result<String> {
        let row = self
            .client
            .query_one("SELECT current_database()::text", &[])
            .map_err(|e| map_err(&self.database, e))?;
        Ok(row.get(0))
    }
}

/// The one translation of PostgreSQL errors into custody errors: a connection that cannot
/// be made or broke is [`Error::FleetUnreachable`]; a refused right
/// (`insufficient_privilege`, a row-level security violation) is [`Error::FleetRefused`];
/// anything else is [`Error::Fleet`]. Messages come from the server or the client library,
/// which never include the password.
pub(crate) fn map_err(database: &Database, e: postgres::Error) -> Error {
    use postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INSUFFICIENT_PRIVILEGE
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || *code == SqlState::INVALID_PASSWORD
        {
            let mut text = db.message().to_owned();
            if let Some(hint) = db.hint() {
                text.push_str("; ");
                text.push_str(hint);
            }
            return Error::FleetRefused(text);
        }
        if *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || code.code().starts_with("08")
        {
            return Error::FleetUnreachable {
                database: database.to_string(),
                reason: db.message().to_owned(),
            };
        }
        return Error::Fleet(Box::new(e));
    }
    if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) {
        return Error::FleetUnreachable {
            database: database.to_string(),
            reason: e.to_string(),
        };
    }
    Error::Fleet(Box::new(e))
}

/// [`map_err`] for a connection attempt: whatever is not the server's own answer (refused,
/// timed out, a TLS handshake or certificate that does not verify) is unreachable.
pub(crate) fn map_connect_err(database: &Database, e: postgres::Error) -> Error {
    if e.as_db_error().is_some() {
        return map_err(database, e);
    }
    if let Some(reason) = certificate_refusal(&e) {
        return Error::FleetUntrusted {
            database: database.to_string(),
            reason,
        };
    }
    Error::FleetUnreachable {
        database: database.to_string(),
        reason: error_chain(&e),
    }
}

/// OpenSSL's verification result when the TLS handshake failed on the server's certificate.
/// postgres-openssl reports it as "<ssl error>: <verify result>" over an `openssl::ssl::Error`.
fn certificate_refusal(e: &postgres::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let next = s.source();
        if let Some(ssl) = next.and_then(|n| n.downcast_ref::<openssl::ssl::Error>()) {
            let verify_failed = ssl.ssl_error().is_some_and(|stack| {
                stack
                    .errors()
                    .iter()
                    .any(|err| err.reason() == Some("certificate verify failed"))
            });
            if !verify_failed {
                return None;
            }
            let text = s.to_string();
            let ssl_text = ssl.to_string();
            let result = text
                .strip_prefix(ssl_text.as_str())
                .map(|r| r.trim_start_matches(": ").to_owned())
                .filter(|r| !r.is_empty());
            return Some(result.unwrap_or_else(|| "certificate verify failed".to_owned()));
        }
        source = next;
    }
    None
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
