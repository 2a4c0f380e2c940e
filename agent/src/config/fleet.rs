//! `[fleet]`: where this workstation syncs its journal (the organisation's PostgreSQL
//! database), written by `custody fleet enroll-agent`.
//!
//! ```toml
//! [fleet]
//! database = "postgresql://fleet_agent_ws1@db.example.org:5432/fleet?sslmode=verify-full"
//! password_file = "/etc/custody/fleet.password"   # mode 0600
//! ca_file = "/etc/custody/fleet-ca.pem"           # for verify-ca / verify-full
//! interval = "5m"                                 # how often `custody watch` syncs
//! batch = 1000                                    # events per transaction
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use custody_core::fleet::{read_password_file, Database};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// `[fleet]` as written. Every value is checked as it is read and never echoed (see
/// `super::report`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// `postgresql://USER@HOST:PORT/DBNAME[?sslmode=…&sslrootcert=…]`, without password.
    #[serde(default, deserialize_with = "database")]
    pub database: Option<String>,
    /// File holding the password (mode 0600).
    #[serde(default, deserialize_with = "super::value::absolute")]
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) the server's certificate must chain to.
    #[serde(default, deserialize_with = "super::value::absolute")]
    pub ca_file: Option<PathBuf>,
    /// How often the service syncs, e.g. "5m".
    #[serde(default, deserialize_with = "super::value::duration")]
    pub interval: Option<Duration>,
    /// Events per transaction.
    #[serde(default, deserialize_with = "batch")]
    pub batch: Option<usize>,
}

/// A PostgreSQL URL without a password; the message never repeats it.
fn database<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    match Database::parse(&url) {
        Ok(db) if !db.has_password() => Ok(Some(url)),
        Ok(_) => Err(D::Error::custom(
            "holds a password: put it in a file (mode 0600) named by password_file",
        )),
        Err(_) => Err(D::Error::custom(
            "must be a PostgreSQL URL: postgresql://USER@HOST:PORT/DBNAME, optionally ?sslmode=disable|prefer|require|verify-ca|verify-full&sslrootcert=/ABSOLUTE/CA.pem",
        )),
    }
}

fn batch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let n = i64::deserialize(d)?;
    match usize::try_from(n) {
        Ok(n) if (1..=100_000).contains(&n) => Ok(Some(n)),
        _ => Err(D::Error::custom("must be a number from 1 to 100000")),
    }
}

/// `[fleet]`, validated.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The database URL (no password).
    pub database: String,
    /// The password file.
    pub password_file: Option<PathBuf>,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// Service sync interval.
    pub interval: Duration,
    /// Events per transaction.
    pub batch: usize,
}

impl FleetSettings {
    /// Validates `[fleet]`; `None` when the section names no database.
    pub fn validate(raw: RawFleet) -> anyhow::Result<Option<Self>> {
        let Some(database) = raw.database else {
            if raw.password_file.is_some()
                || raw.ca_file.is_some()
                || raw.interval.is_some()
                || raw.batch.is_some()
            {
                bail!("[fleet] needs `database = \"postgresql://…\"`");
            }
            return Ok(None);
        };
        let interval = raw.interval.unwrap_or(Duration::from_secs(300));
        if interval < Duration::from_secs(1) {
            bail!("[fleet] interval must be at least 1s");
        }
        Ok(Some(Self {
            database,
            password_file: raw.password_file,
            ca_file: raw.ca_file,
            interval,
            batch: raw.batch.unwrap_or(1000),
        }))
    }

    /// The database with its password and CA file.
    pub fn connect_to(&self) -> anyhow::Result<Database> {
        let mut db = Database::parse(&self.database).context("[fleet] database")?;
        if let Some(file) = &self.password_file {
            db = db.with_password(&read_password_file(file)?);
        }
        if let Some(ca) = &self.ca_file {
            db = db.with_ca_file(ca);
        }
        Ok(db.with_env_password())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Option<FleetSettings>> {
        let config = super::super::Config::parse(
            &format!("[fleet]\n{text}"),
            std::path::Path::new("/etc/custody/custody.toml"),
        )?;
        Ok(config.fleet)
    }

    #[test]
    fn fleet_section() {
        let f = parse(
            "database = \"postgresql://fleet_agent_ws1@db:5432/fleet?sslmode=require\"\npassword_file = \"/etc/custody/fleet.password\"\ninterval = \"30s\"\n",
        )
        .unwrap_or_else(|e| panic!("{e:#}"))
        .unwrap_or_else(|| panic!("no [fleet]"));
        assert_eq!(
            f.password_file,
            Some(PathBuf::from("/etc/custody/fleet.password"))
        );
        assert_eq!(f.interval, Duration::from_secs(30));
        assert_eq!(f.batch, 1000);
        assert!(parse("").unwrap_or_else(|e| panic!("{e:#}")).is_none());
    }

    #[test]
    fn bad_values_are_refused_and_not_echoed() {
        for text in [
            "database = \"postgresql://u:canary-secret@db/fleet\"\n",
            "database = \"mysql://canary-secret@db/fleet\"\n",
            "database = \"postgresql://u@db/fleet?sslmode=canary-secret\"\n",
            "database = \"postgresql://u@db/fleet\"\npassword_file = \"canary-secret\"\n",
            "password_file = \"/canary-secret\"\n",
        ] {
            let e = parse(text).map(|_| ()).expect_err("refused");
            let text = format!("{e:#}");
            assert!(!text.contains("canary-secret"), "{text}");
        }
    }
}
