//! Agent login roles: `custody fleet enroll-agent NAME` creates `<db>_agent_<name>`, a
//! member of `<db>_agent`, with a random password whose SCRAM-SHA-256 verifier (never the
//! password) is sent to the server.

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::Fleet;
use crate::error::{Error, Result};

/// An enrolled agent and its credentials. Debug never shows the password.
pub struct Enrolled {
    /// Agent name.
    pub name: String,
    /// Its login role.
    pub role: String,
    /// Its password (random, 32 bytes hex).
    pub password: SecretString,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Checks an agent name: 1–32 of a–z, 0–9, `_`, `-`, starting with a letter or digit.
pub fn check_agent_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !name.starts_with(['_', '-']);
    if ok {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "agent name {name:?} is not valid: use 1 to 32 lower-case letters, digits, '_' or '-' (e.g. the workstation's host name)"
        )))
    }
}

impl Fleet {
    /// Creates agent `name`'s login role with a new random password. An agent already
    /// enrolled is refused unless `rotate`, which gives it a new password.
    pub fn enroll_agent(&mut self, name: &str, rotate: bool) -> Result<Enrolled> {
        check_agent_name(name)?;
        self.check_schema()?;
        let db_name = self.database_name()?;
        let role = format!("{db_name}_agent_{name}");
        if role.len() > 63 {
            return Err(Error::Refused(format!(
                "role name {role} is longer than PostgreSQL's 63 bytes; use a shorter agent name"
            )));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut seed[..])
            .map_err(|e| Error::Refused(format!("no randomness for the password: {e}")))?;
        let password = SecretString::from(hex::encode(&seed[..]));
        let verifier =
            postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes());
        let db = self.database.clone();
        let err = |e| super::map_err(&db, e);
        let mut tx = self.client.transaction().map_err(err)?;
        // Enrolling needs CREATEROLE: the connecting role's own, or the admin role's.
        let can_create: bool = tx
            .query_one(
                "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .map_err(err)?
            .get(0);
        if !can_create {
            tx.batch_execute(&format!(
                "SET LOCAL ROLE {}",
                ident(&format!("{db_name}_admin"))
            ))
            .map_err(err)?;
        }
        let exists = tx
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .map_err(err)?
            .is_some();
        let enrolled = tx
            .query_opt(
                "SELECT role::text FROM custody.agents WHERE name = $1",
                &[&name],
            )
            .map_err(err)?
            .map(|r| r.get::<_, String>(0));
        match (exists || enrolled.is_some(), rotate) {
            (true, false) => {
                return Err(Error::Refused(format!(
                    "agent {name} is already enrolled (role {role}); to give it new credentials run `custody fleet enroll-agent {name} --rotate`"
                )))
            }
            (false, true) => {
                return Err(Error::Refused(format!(
                    "agent {name} is not enrolled; enroll it without --rotate"
                )))
            }
            _ => {}
        }
        let password_sql = format!("PASSWORD {}", literal(&verifier));
        if exists {
            tx.batch_execute(&format!("ALTER ROLE {} LOGIN {password_sql}", ident(&role)))
                .map_err(err)?;
        } else {
            tx.batch_execute(&format!(
                "CREATE ROLE {} LOGIN {password_sql} IN ROLE {}",
                ident(&role),
                ident(&format!("{db_name}_agent"))
            ))
            .map_err(err)?;
        }
        if enrolled.is_none() {
            tx.execute(
                "INSERT INTO custody.agents (name, role) VALUES ($1, $2)",
                &[&name, &role],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Enrolled {
            name: name.into(),
            role,
            password,
        })
    }
}

/// A quoted SQL identifier.
pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A quoted SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names() {
        for good in ["ws1", "pc-017", "it_dept"] {
            assert!(check_agent_name(good).is_ok(), "{good}");
        }
        for bad in ["", "WS1", "-x", "a b", "x\"y", &"a".repeat(33)] {
            assert!(check_agent_name(bad).is_err(), "{bad}");
        }
    }
}
