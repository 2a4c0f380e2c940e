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

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use custody_core::fleet::{read_password_file, Database};
use serde::Deserialize;

/// `[fleet]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// `postgresql://USER@HOST:PORT/DBNAME[?sslmode=…&sslrootcert=…]`, without password.
    pub database: Option<String>,
    /// File holding the password (mode 0600).
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// How often the service syncs, e.g. "5m".
    pub interval: Option<String>,
    /// Events per transaction.
    pub batch: Option<usize>,
}

/// `[fleet]`, validated.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The database URL (no password).
    pub database: String,
    /// The password file, relative paths resolved against the configuration's directory.
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
    pub fn validate(raw: RawFleet, source: Option<&Path>) -> anyhow::Result<Option<Self>> {
        let Some(database) = raw.database else {
            if raw.password_file.is_some() || raw.ca_file.is_some() || raw.interval.is_some() {
                bail!("[fleet] needs `database = \"postgresql://…\"`");
            }
            return Ok(None);
        };
        // Parsed now so that a bad URL is reported when the configuration is read; the
        // error never repeats the URL.
        let parsed = Database::parse(&database).context("[fleet] database")?;
        if parsed.has_password() {
            bail!("[fleet] database: the URL holds a password; put it in a file (mode 0600) named by password_file");
        }
        let base = source.and_then(Path::parent).unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let interval = match &raw.interval {
            Some(text) => super::parse_duration(text).context("[fleet] interval")?,
            None => Duration::from_secs(300),
        };
        if interval < Duration::from_secs(1) {
            bail!("[fleet] interval must be at least 1s");
        }
        let batch = raw.batch.unwrap_or(1000);
        if !(1..=100_000).contains(&batch) {
            bail!("[fleet] batch must be between 1 and 100000");
        }
        Ok(Some(Self {
            database,
            password_file: raw.password_file.map(resolve),
            ca_file: raw.ca_file.map(resolve),
            interval,
            batch,
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

    #[test]
    fn fleet_section() {
        let raw: RawFleet = toml::from_str(
            "database = \"postgresql://fleet_agent_ws1@db:5432/fleet?sslmode=require\"\npassword_file = \"fleet.password\"\ninterval = \"30s\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = FleetSettings::validate(raw, Some(Path::new("/etc/custody/custody.toml")))
            .unwrap_or_else(|e| panic!("{e:#}"))
            .unwrap_or_else(|| panic!("no [fleet]"));
        assert_eq!(
            f.password_file,
            Some(PathBuf::from("/etc/custody/fleet.password"))
        );
        assert_eq!(f.interval, Duration::from_secs(30));
        assert_eq!(f.batch, 1000);
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_not_echoed() {
        let raw: RawFleet =
            toml::from_str("database = \"postgresql://u:canary-secret@db/fleet\"\n")
                .unwrap_or_else(|e| panic!("{e}"));
        let e = FleetSettings::validate(raw, None)
            .map(|_| ())
            .expect_err("refused");
        let text = format!("{e:#}");
        assert!(
            text.contains("password_file") && !text.contains("canary-secret"),
            "{text}"
        );
    }
}
