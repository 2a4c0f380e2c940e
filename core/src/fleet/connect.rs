//! The organisation's database: its URL, TLS and password.
//!
//! URLs are PostgreSQL's (`postgresql://user@host:port/dbname?sslmode=verify-full&sslrootcert=ca.pem`,
//! a unix socket directory as a percent-encoded host or `?host=/dir`). `sslmode` follows
//! libpq: `disable`; `prefer` (default: TLS when the server offers it, not verified);
//! `require` (TLS, not verified; verified against the CA when one is given, as libpq does);
//! `verify-ca` (TLS, the server certificate must chain to the CA); `verify-full` (as
//! verify-ca, and the certificate must name the host). The CA file comes from `sslrootcert`
//! or the `[fleet] ca_file` setting. A password comes from the URL, a password file (mode
//! 0600) or `PGPASSWORD`; it is never shown: [`Database`]'s Display and Debug leave it out.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// How the connection is protected (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, certificate not verified.
    Prefer,
    /// TLS, certificate not verified (unless a CA file is given).
    Require,
    /// TLS, certificate verified against the CA file.
    VerifyCa,
    /// TLS, certificate verified against the CA file and naming the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" | "allow" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => {
                return Err(Error::Refused(
                    "the sslmode in the database URL is not known; use disable, prefer, require, verify-ca or verify-full".into(),
                ))
            }
        })
    }
}

/// The organisation's database: where it is and how to reach it.
#[derive(Clone)]
pub struct Database {
    /// The URL without password, sslmode and sslrootcert.
    shown: String,
    config: postgres::Config,
    ssl: SslMode,
    ca_file: Option<PathBuf>,
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.shown)
            .field("ssl", &self.ssl)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Parses a `postgresql://` URL. Errors never repeat the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Refused(format!(
                "the database URL is not valid ({why}); write it as postgresql://USER@HOST:PORT/DBNAME"
            ))
        };
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| bad("it does not start with postgresql://"))?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut kept = Vec::new();
        let mut ssl = SslMode::Prefer;
        let mut ca_file = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => ssl = v.parse()?,
                "sslrootcert" => ca_file = Some(PathBuf::from(decode(v))),
                "password" => {
                    return Err(bad("a password belongs in password_file, not in the URL"))
                }
                _ => kept.push(pair),
            }
        }
        // The authority's user info: `user` or `user:password`.
        let (authority, path) = main.split_at(main.find('/').unwrap_or(main.len()));
        let shown_authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                format!("{user}@{host}")
            }
            None => authority.to_owned(),
        };
        let mut client_url = format!("postgresql://{main}");
        let mut shown = format!("postgresql://{shown_authority}{path}");
        if !kept.is_empty() {
            let q = kept.join("&");
            client_url.push('?');
            client_url.push_str(&q);
            shown.push('?');
            shown.push_str(&q);
        }
        let client_url = Zeroizing::new(client_url);
        let mut config = postgres::Config::from_str(&client_url)
            .map_err(|e| bad(&e.to_string().replace(client_url.as_str(), "…")))?;
        if config.get_dbname().is_none() {
            return Err(bad("it names no database"));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.keepalives_idle(Duration::from_secs(60));
        config.application_name("custody");
        Ok(Self {
            shown,
            config,
            ssl,
            ca_file,
        })
    }

    /// Uses `password` (unless the URL holds one).
    pub fn with_password(mut self, password: &SecretString) -> Self {
        if self.config.get_password().is_none() {
            self.config.password(password.expose_secret().as_bytes());
        }
        self
    }

    /// Verifies the server's certificate against `ca_file` (unless the URL names one).
    pub fn with_ca_file(mut self, ca_file: &Path) -> Self {
        if self.ca_file.is_none() {
            self.ca_file = Some(ca_file.into());
        }
        self
    }

    /// Takes the password from `PGPASSWORD` when neither the URL nor a file gave one.
    pub fn with_env_password(self) -> Self {
        match std::env::var("PGPASSWORD") {
            Ok(p) if self.config.get_password().is_none() => {
                self.with_password(&SecretString::from(p))
            }
            _ => self,
        }
    }

    /// True when a password will be sent.
    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    /// The user name the URL gives.
    pub fn user(&self) -> Option<&str> {
        self.config.get_user()
    }

    /// The database name.
    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The TLS mode.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl
    }

    /// The CA file, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// This database's URL for another user, without password (what an agent's
    /// configuration holds), keeping sslmode and sslrootcert.
    pub fn url_for_user(&self, user: &str) -> String {
        let rest = self
            .shown
            .strip_prefix("postgresql://")
            .unwrap_or(&self.shown);
        let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
        let mut url = format!("postgresql://{user}@{rest}");
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if self.ssl != SslMode::Prefer {
            let mode = match self.ssl {
                SslMode::Disable => "disable",
                SslMode::Prefer => "prefer",
                SslMode::Require => "require",
                SslMode::VerifyCa => "verify-ca",
                SslMode::VerifyFull => "verify-full",
            };
            url.push(sep);
            url.push_str("sslmode=");
            url.push_str(mode);
            sep = '&';
        }
        if let Some(ca) = &self.ca_file {
            url.push(sep);
            url.push_str("sslrootcert=");
            url.push_str(&encode(&ca.to_string_lossy()));
        }
        url
    }

    pub(crate) fn connect(&self) -> Result<postgres::Client> {
        let mut config = self.config.clone();
        config.ssl_mode(match self.ssl {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        let tls = self.tls()?;
        config
            .connect(tls)
            .map_err(|e| super::map_connect_err(self, e))
    }

    fn tls(&self) -> Result<MakeTlsConnector> {
        let tls_err = |e: openssl::error::ErrorStack| Error::Refused(format!("TLS set-up: {e}"));
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls_err)?;
        let verify = match (self.ssl, &self.ca_file) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(Error::Refused(format!(
                    "sslmode={} needs the CA certificate that signed the server's: give sslrootcert=FILE in the URL or ca_file in [fleet]",
                    if self.ssl == SslMode::VerifyCa { "verify-ca" } else { "verify-full" }
                )))
            }
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => false,
            (_, Some(ca)) => {
                builder.set_ca_file(ca).map_err(|e| {
                    Error::Refused(format!(
                        "CA file {} cannot be read as PEM certificates: {e}",
                        ca.display()
                    ))
                })?;
                true
            }
        };
        builder.set_verify(if verify {
            SslVerifyMode::PEER
        } else {
            SslVerifyMode::NONE
        });
        let mut tls = MakeTlsConnector::new(builder.build());
        let full = self.ssl == SslMode::VerifyFull;
        tls.set_callback(move |cfg, _domain| {
            cfg.set_verify_hostname(full);
            Ok(())
        });
        Ok(tls)
    }
}

/// Reads a password file: mode 0600 or stricter, the first line is the password.
pub fn read_password_file(path: &Path) -> Result<SecretString> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Refused(format!(
            "password file {} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        )));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(Error::Refused(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(line.to_owned()))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Everything but unreserved characters and `/` is encoded in a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_never_shown() {
        let db = Database::parse("postgresql://agent:s3cr3t-canary@db.example:5433/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem")
            .unwrap_or_else(|e| panic!("{e}"));
        // Positive control: the password was read.
        assert!(db.has_password());
        assert_eq!(db.to_string(), "postgresql://agent@db.example:5433/fleet");
        assert!(!format!("{db:?}").contains("s3cr3t-canary"));
        assert_eq!(db.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(db.ca_file(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(
            db.url_for_user("fleet_agent_ws1"),
            "postgresql://fleet_agent_ws1@db.example:5433/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echo() {
        for url in [
            "mysql://u:canary-pw@h/db",
            "postgresql://u:canary-pw@h/db?sslmode=sometimes",
            "postgresql://u@h/db?password=canary-pw",
        ] {
            let e = Database::parse(url)
                .map(|_| ())
                .expect_err("refused")
                .to_string();
            assert!(!e.contains("canary-pw"), "{e}");
        }
    }

    #[test]
    fn unix_socket_directories() {
        let db = Database::parse("postgresql://postgres@%2Ftmp%2Fpg/fleet")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(db.dbname(), Some("fleet"));
        assert_eq!(db.url_for_user("x"), "postgresql://x@%2Ftmp%2Fpg/fleet");
    }

    #[test]
    fn verify_modes_need_a_ca() {
        let db = Database::parse("postgresql://u@h/db?sslmode=verify-full")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(db.connect().is_err());
    }
}
