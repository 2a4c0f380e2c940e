//! Configuration: one TOML file (`$CUSTODY_CONFIG`, else `/etc/custody/custody.toml` when it
//! exists), then command-line flags on top. [`RawConfig`] mirrors the file
//! (`deny_unknown_fields`); [`Config`] is the validated result. PINs are never in the file:
//! only where to read them from.
//!
//! No value of the file is ever echoed: a refused value is named by file, line and key
//! (`config::report`), because the one value that must never be shown — a PIN typed into the file
//! by mistake — looks like any other. Values that would be shown later (paths in messages,
//! the organisation on the form) are checked when the file is read: paths must be absolute,
//! the organisation's name must contain letters, variable names must be variable names, so a
//! PIN in any of those keys is refused before anything runs.

mod pin_rule;
mod report;
mod value;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use custody_core::id::CarrierId;
use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

pub use pin_rule::{PinRule, RawPinRule};
pub use report::Problem;

mod fleet;
pub use fleet::{FleetSettings, RawFleet};

/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/custody/custody.toml";

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[organisation]`
    #[serde(default)]
    pub organisation: RawOrganisation,
    /// `[journal]`
    #[serde(default)]
    pub journal: RawJournal,
    /// `[[module]]`
    #[serde(default)]
    pub module: Vec<RawModule>,
    /// `[[pin]]`
    #[serde(default)]
    pub pin: Vec<Spanned<RawPinRule>>,
    /// `[service]`
    #[serde(default)]
    pub service: RawService,
    /// `[orders]`
    #[serde(default)]
    pub orders: RawOrders,
    /// `[fleet]`
    #[serde(default)]
    pub fleet: RawFleet,
}

/// `[organisation]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrganisation {
    /// Printed on the journal form.
    #[serde(default, deserialize_with = "value::organisation")]
    pub name: Option<String>,
    /// The journal form's title, when the organisation's order names it otherwise than the
    /// default «Журнал обліку зберігання та знищення особистих ключів».
    #[serde(default, deserialize_with = "value::organisation")]
    pub title: Option<String>,
    /// IANA time zone for times on the form and in human output (e.g. "Europe/Kyiv");
    /// default: the system's ($TZ, /etc/localtime).
    #[serde(default, deserialize_with = "value::timezone")]
    pub timezone: Option<jiff::tz::TimeZone>,
}

/// `[journal]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    /// Journal file.
    #[serde(default, deserialize_with = "value::absolute")]
    pub path: Option<PathBuf>,
}

/// `[[module]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModule {
    /// Path of a PKCS#11 library.
    #[serde(deserialize_with = "value::absolute_required")]
    pub path: PathBuf,
    /// When `custody watch` re-initialises this module to see new tokens (default `auto`).
    #[serde(default)]
    pub reinit: Reinit,
}

/// When the service re-initialises a module (`C_Finalize` + `C_Initialize`) to see tokens
/// created or deleted by other processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reinit {
    /// Re-initialise a module once it has shown that it has no slot events
    /// (C_WaitForSlotEvent answers CKR_FUNCTION_NOT_SUPPORTED: SoftHSM2, kryoptic,
    /// tpm2-pkcs11, p11-kit's client), whose slot list is frozen between C_Initialize and
    /// C_Finalize; never a module with slot events, whose slot list is live (OpenSC).
    #[default]
    Auto,
    /// Always re-initialise (within the service's re-initialisation cost budget).
    Always,
    /// Never re-initialise.
    Never,
}

/// `[service]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Poll interval, e.g. "2s", "500ms".
    #[serde(default, deserialize_with = "value::duration")]
    pub interval: Option<Duration>,
    /// Time between content checks of present carriers, e.g. "10s"; default: measured, so
    /// that they add at most 3 % to the modules' polling cost, and at most 30 s.
    #[serde(default, deserialize_with = "value::duration")]
    pub check_interval: Option<Duration>,
    /// The longest age of the newest signed checkpoint before the service writes one, e.g.
    /// "1h"; default and longest: 24h.
    #[serde(default, deserialize_with = "value::duration")]
    pub checkpoint_interval: Option<Duration>,
    /// Order spool directory.
    #[serde(default, deserialize_with = "value::absolute")]
    pub spool: Option<PathBuf>,
}

/// `[orders]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrders {
    /// OpenSSH allowed_signers file.
    #[serde(default, deserialize_with = "value::absolute")]
    pub allowed_signers: Option<PathBuf>,
    /// Distinct valid signatures an order needs (1 to 10).
    #[serde(default, deserialize_with = "value::required_signers")]
    pub required_signers: Option<u32>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Organisation name for the journal form.
    pub organisation: Option<String>,
    /// The form's title from `[organisation] title` (`None`: the default).
    pub form_title: Option<String>,
    /// `[organisation] timezone`; see [`Config::zone`].
    pub timezone: Option<jiff::tz::TimeZone>,
    /// Journal file.
    pub journal: PathBuf,
    /// Modules from the file (empty: use the defaults).
    pub modules: Vec<PathBuf>,
    /// `reinit` of each `[[module]]` of the file, for the service.
    pub module_reinit: Vec<(PathBuf, Reinit)>,
    /// PIN rules, first match wins.
    pub pins: Vec<PinRule>,
    /// Service poll interval.
    pub interval: Duration,
    /// Fixed time between content checks (`None`: from the measured cost).
    pub check_interval: Option<Duration>,
    /// The longest age of the newest checkpoint before the service writes one.
    pub checkpoint_interval: Duration,
    /// Order spool.
    pub spool: PathBuf,
    /// allowed_signers file.
    pub allowed_signers: Option<PathBuf>,
    /// Signatures an order needs.
    pub required_signers: u32,
    /// `[fleet]`: where the journal is synced, when configured.
    pub fleet: Option<FleetSettings>,
}

impl Config {
    /// Time zone of times for people: `[organisation] timezone`, else the system's. Looked
    /// up only by the commands that print local times: finding the system's zone reads the
    /// whole zoneinfo tree, which a scan must not pay for.
    pub fn zone(&self) -> jiff::tz::TimeZone {
        self.timezone.clone().unwrap_or_else(system_zone)
    }

    /// Loads `explicit`, else `$CUSTODY_CONFIG`, else the system file when it exists, else
    /// defaults.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Self> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("CUSTODY_CONFIG").map(PathBuf::from))
            .or_else(|| {
                Path::new(SYSTEM_CONFIG)
                    .exists()
                    .then(|| SYSTEM_CONFIG.into())
            });
        let raw = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading configuration {}", p.display()))?;
                return Self::parse(&text, p);
            }
            None => RawConfig::default(),
        };
        Self::validate(raw, path)
    }

    /// Parses and checks the text of the configuration file `file`. Messages name the file,
    /// line and key, never a value.
    pub fn parse(text: &str, file: &Path) -> anyhow::Result<Self> {
        let raw = toml::from_str::<RawConfig>(text)
            .map_err(|e| anyhow::anyhow!(report::from_toml(text, &e).message(file)))?;
        Self::validate_in(raw, Some(file.to_owned()), text)
    }

    /// Checks a parsed file and fills in defaults.
    pub fn validate(raw: RawConfig, source: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::validate_in(raw, source, "")
    }

    /// [`Self::validate`], with the file's text to name lines in messages.
    fn validate_in(raw: RawConfig, source: Option<PathBuf>, text: &str) -> anyhow::Result<Self> {
        let file = source
            .clone()
            .unwrap_or_else(|| PathBuf::from("(configuration)"));
        for rule in &raw.pin {
            let both = |key: &str| {
                let mut problem = Problem::at(
                    text,
                    rule.span().start,
                    format!("give {key}_file or {key}_env, not both"),
                );
                problem.table = Some("[[pin]]".into());
                problem.key = None;
                anyhow::anyhow!(problem.message(&file))
            };
            if rule.get_ref().user_pin_file.is_some() && rule.get_ref().user_pin_env.is_some() {
                return Err(both("user_pin"));
            }
            if rule.get_ref().so_pin_file.is_some() && rule.get_ref().so_pin_env.is_some() {
                return Err(both("so_pin"));
            }
        }
        let pins = pin_rule::validate(raw.pin, text, &file)?;
        let fleet = FleetSettings::validate(raw.fleet)?;
        Ok(Self {
            fleet,
            source,
            organisation: raw.organisation.name,
            form_title: raw.organisation.title,
            timezone: raw.organisation.timezone,
            journal: raw.journal.path.unwrap_or_else(default_journal),
            modules: raw.module.iter().map(|m| m.path.clone()).collect(),
            module_reinit: raw.module.into_iter().map(|m| (m.path, m.reinit)).collect(),
            pins,
            interval: raw.service.interval.unwrap_or(Duration::from_secs(2)),
            check_interval: raw.service.check_interval,
            checkpoint_interval: raw
                .service
                .checkpoint_interval
                .unwrap_or(Duration::from_secs(24 * 3600)),
            spool: raw
                .service
                .spool
                .unwrap_or_else(|| state_dir().join("orders")),
            allowed_signers: raw.orders.allowed_signers,
            required_signers: raw.orders.required_signers.unwrap_or(1),
        })
    }

    /// The re-initialisation policy of a module (`auto` unless the file says otherwise).
    pub fn reinit(&self, module: &Path) -> Reinit {
        self.module_reinit
            .iter()
            .find(|(p, _)| p == module)
            .map(|(_, r)| *r)
            .unwrap_or_default()
    }

    /// The `[[pin]]` rule naming this carrier, if any.
    pub fn pin_rule(&self, carrier: &CarrierId, label: Option<&str>) -> Option<&PinRule> {
        self.pins.iter().find(|r| r.matches(carrier, label))
    }
}

/// Parses "2s", "500ms", "1m", "1h", or a bare number of seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("{t:?} is not a duration like 2s or 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => bail!("unknown unit {other:?} in {t:?}; use ms, s, m or h"),
    };
    if !(0.0..=86_400.0).contains(&secs) || secs == 0.0 {
        bail!("{t:?} is out of range (more than 0, at most 24h)");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `/var/lib/custody` for root, else `$XDG_DATA_HOME/custody` (or `~/.local/share/custody`).
pub fn state_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/custody");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("custody")
}

/// The default journal path.
pub fn default_journal() -> PathBuf {
    state_dir().join("journal.db")
}

/// Reads a PIN from a file, refusing files readable by group or others. A single trailing
/// newline is dropped. The error never contains the PIN.
pub fn read_pin_file(path: &Path) -> anyhow::Result<SecretString> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("PIN file {}: cannot read it", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "PIN file {} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    // A FIFO or device in place of the PIN file must not make custody wait.
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            custody_core::file::open_regular_following(path)
                .map_err(|e| anyhow::anyhow!("PIN file {}: {e}", path.display()))?,
            4096,
        ),
        &mut text,
    )
    .with_context(|| format!("PIN file {}: cannot read it", path.display()))?;
    let pin = text.strip_suffix('\n').unwrap_or(&text);
    let pin = pin.strip_suffix('\r').unwrap_or(pin);
    if pin.is_empty() {
        bail!("PIN file {} is empty", path.display());
    }
    Ok(SecretString::from(pin.to_owned()))
}

/// Reads a PIN from an environment variable named in the configuration.
pub fn read_pin_env(name: &str) -> anyhow::Result<SecretString> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
        _ => bail!("PIN variable {name} is not set or empty"),
    }
}

/// Creates a file with mode 0600 (for PINs and keys written by custody or its tests).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// The system's time zone, read once per process: unless `TZ` is set, straight from
/// `/etc/localtime`, named by the zoneinfo path it links to, which is how
/// `jiff::tz::TimeZone::system` names it too. jiff's own lookup lists the whole zoneinfo tree
/// first (about 20 directories and 600 names), which cost a short `custody scan` more than
/// anything else of its own but the schema check.
fn system_zone() -> jiff::tz::TimeZone {
    static ZONE: std::sync::OnceLock<jiff::tz::TimeZone> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| {
        let path = Path::new("/etc/localtime");
        let name = std::env::var_os("TZ")
            .is_none()
            .then(|| std::fs::read_link(path).ok())
            .flatten()
            .and_then(|target| Some(target.to_str()?.split_once("zoneinfo/")?.1.to_owned()));
        name.and_then(|name| {
            let bytes = std::fs::read(path).ok()?;
            jiff::tz::TimeZone::tzif(&name, &bytes).ok()
        })
        .unwrap_or_else(jiff::tz::TimeZone::system)
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, Path::new("/etc/custody/custody.toml"))
    }

    #[test]
    fn the_system_zone_is_jiffs_with_its_name() {
        if std::env::var_os("TZ").is_some() {
            return;
        }
        let ours = system_zone();
        let jiffs = jiff::tz::TimeZone::system();
        assert_eq!(ours.iana_name(), jiffs.iana_name());
        for t in [
            "2026-01-15T12:00:00Z",
            "2026-07-15T12:00:00Z",
            "1990-03-30T23:30:00Z",
        ] {
            let t: jiff::Timestamp = t.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(ours.to_offset(t), jiffs.to_offset(t), "{t}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_the_line() {
        let err = parse("[journal]\npath = \"/tmp/j.db\"\ncolour = 1\n").err();
        let text = err.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(
            text.contains("line 3, [journal] colour: unknown key colour; expected `path`"),
            "{text}"
        );
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
[organisation]
name = "Прилуцька міська рада"
[journal]
path = "/var/lib/custody/journal.db"
[[module]]
path = "/usr/lib/softhsm/libsofthsm2.so"
reinit = "always"
[[pin]]
manufacturer = "SoftHSM project"
model = "SoftHSM v2"
serial = "3c5e0a1b2d4f6789"
user_pin_file = "/etc/custody/pins/user"
so_pin_file = "/etc/custody/pins/so"
[service]
interval = "500ms"
check_interval = "10s"
spool = "/var/lib/custody/orders"
[orders]
allowed_signers = "/etc/custody/allowed_signers"
required_signers = 2
"#,
        );
        let c = c.unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.check_interval, Some(Duration::from_secs(10)));
        assert_eq!(c.required_signers, 2);
        assert_eq!(c.modules.len(), 1);
        assert_eq!(
            c.reinit(Path::new("/usr/lib/softhsm/libsofthsm2.so")),
            Reinit::Always
        );
        assert_eq!(c.reinit(Path::new("/other.so")), Reinit::Auto);
        let id = |serial: &str| CarrierId {
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            serial: serial.into(),
            discriminator: None,
        };
        assert!(c.pin_rule(&id("3c5e0a1b2d4f6789"), None).is_some());
        assert!(c.pin_rule(&id("3c5e0a1b2d4f6780"), None).is_none());
    }

    #[test]
    fn pin_rules_with_wildcards_or_without_full_identity_are_refused_unechoed() {
        for (rule, says) in [
            (
                "serial = \"*\"",
                "line 1, in [[pin]]: the rule has no manufacturer",
            ),
            (
                "manufacturer = \"M\"\nmodel = \"X\"\nserial = \"*\"",
                "line 4, [[pin]] serial: a wildcard",
            ),
            (
                "manufacturer = \"*\"\nmodel = \"X\"\nserial = \"42\"",
                "line 2, [[pin]] manufacturer: a wildcard",
            ),
            (
                "manufacturer = \"M\"\nserial = \"42\"",
                "the rule has no model",
            ),
            (
                "manufacturer = \"M\"\nmodel = \"X\"\nserial = \"\"",
                "line 4, [[pin]] serial: a wildcard or empty value",
            ),
        ] {
            let text = format!("[[pin]]\n{rule}\nuser_pin_file = \"/p\"\n");
            let err = parse(&text)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(says), "{rule}: {err}");
            // The message shows how to write a rule, and none of the file's values.
            assert!(
                err.contains("manufacturer = ") && err.contains("model = "),
                "{err}"
            );
            assert!(!err.contains("\"M\"") && !err.contains("\"X\""), "{err}");
        }
    }

    #[test]
    fn a_rule_with_a_label_matches_only_that_label() {
        let c = parse(
            "[[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"0000\"\nlabel = \"a\"\nuser_pin_file = \"/a\"\n\
             [[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"0000\"\nlabel = \"b\"\nuser_pin_file = \"/b\"\n",
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let id = CarrierId {
            manufacturer: "M".into(),
            model: "X".into(),
            serial: "0000".into(),
            discriminator: None,
        };
        let file = |label| c.pin_rule(&id, label).and_then(|r| r.user_pin_file.clone());
        assert_eq!(file(Some("a")), Some(PathBuf::from("/a")));
        assert_eq!(file(Some("b")), Some(PathBuf::from("/b")));
        assert_eq!(file(Some("c")), None);
        assert_eq!(file(None), None);
        // Two rules for one carrier are refused, by line.
        let err = parse(
            "[[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"1\"\n[[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"1\"\n",
        )
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(
            err.contains("the rule at line 1 name the same carrier"),
            "{err}"
        );
    }

    #[test]
    fn unknown_reinit_policy_is_refused_without_echoing_it() {
        let err = parse("[[module]]\npath = \"/m.so\"\nreinit = \"sometimes\"\n").err();
        let text = err.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(
            text.contains("line 3, [[module]] reinit") && text.contains("`always`"),
            "{text}"
        );
        assert!(!text.contains("sometimes"), "{text}");
    }

    #[test]
    fn refused_values_are_named_by_line_and_key_never_shown() {
        const PIN: &str = "48151623";
        for (text, want) in [
            (
                format!("[[pin]]\nserial = \"*\"\nuser_pin_file = \"{PIN}\"\n"),
                "line 3, [[pin]] user_pin_file: must be an absolute path",
            ),
            (
                format!("[[pin]]\nserial = \"*\"\nso_pin_env = \"{PIN}\"\n"),
                "line 3, [[pin]] so_pin_env: must be the name of an environment variable",
            ),
            (
                format!("[journal]\npath = {PIN}\n"),
                "line 2, [journal] path: invalid type",
            ),
            (
                format!("[service]\ninterval = \"{PIN}\"\n"),
                "line 2, [service] interval: is not a duration",
            ),
            (
                format!("[orders]\nrequired_signers = {PIN}\n"),
                "line 2, [orders] required_signers: must be a number from 1 to 10",
            ),
            (
                format!("[organisation]\nname = \"{PIN}\"\n"),
                "line 2, [organisation] name: must be a name with letters",
            ),
            (
                format!("[[pin]]\nserial = \"*\"\nuser_pin = \"{PIN}\"\n"),
                "line 3, [[pin]] user_pin: unknown key user_pin",
            ),
            (
                format!("[[pin]]\nserial = \"*\"\n{PIN}\n"),
                "line 3, in [[pin]]:",
            ),
            (
                format!("[[pin]]\nserial = \"*\"\n{PIN} = 1\n"),
                "unknown key (not shown",
            ),
            (
                format!(
                    "[[pin]]\nserial = \"{PIN}\"\nuser_pin_env = \"A\"\nuser_pin_file = \"/p\"\n"
                ),
                "in [[pin]]: give user_pin_file or user_pin_env, not both",
            ),
        ] {
            let err = parse(&text)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            // Positive control: the value is in the text that was refused.
            assert!(text.contains(PIN));
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains("/etc/custody/custody.toml"), "{err}");
            assert!(!err.contains(PIN), "{text:?}: {err}");
            assert!(!err.contains("4815"), "{text:?}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").ok(), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("1m").ok(), Some(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn pin_file_mode_is_enforced_and_pin_never_in_error() {
        let dir = std::env::temp_dir().join(format!("custody-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("pin");
        std::fs::write(&path, "SECRET-9731\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = read_pin_file(&path)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("SECRET-9731"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        let pin = read_pin_file(&path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(pin.expose_secret(), "SECRET-9731");
        assert!(!format!("{pin:?}").contains("SECRET"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
