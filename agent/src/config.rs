//! Configuration: one TOML file (`$CUSTODY_CONFIG`, else `/etc/custody/custody.toml` when it
//! exists), then command-line flags on top. [`RawConfig`] mirrors the file
//! (`deny_unknown_fields`); [`Config`] is the validated result. PINs are never in the file:
//! only where to read them from.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use custody_core::id::CarrierId;
use secrecy::SecretString;
use serde::Deserialize;

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
    pub pin: Vec<RawPinRule>,
    /// `[service]`
    #[serde(default)]
    pub service: RawService,
    /// `[orders]`
    #[serde(default)]
    pub orders: RawOrders,
}

/// `[organisation]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrganisation {
    /// Printed on the journal form.
    pub name: Option<String>,
}

/// `[journal]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    /// Journal file.
    pub path: Option<PathBuf>,
}

/// `[[module]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModule {
    /// Path of a PKCS#11 library.
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
    /// Re-initialise modules known to need it (SoftHSM2); never the others, whose slot list
    /// is live (smart-card readers).
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
    pub interval: Option<String>,
    /// Time between content checks of present carriers, e.g. "10s"; default: measured, so
    /// that they add at most 3 % to the modules' polling cost, and at most 30 s.
    pub check_interval: Option<String>,
    /// Order spool directory.
    pub spool: Option<PathBuf>,
}

/// `[orders]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrders {
    /// OpenSSH allowed_signers file.
    pub allowed_signers: Option<PathBuf>,
    /// Distinct valid signatures an order needs.
    pub required_signers: Option<u32>,
}

/// `[[pin]]` as written: where the PINs of one carrier come from. Never a PIN itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPinRule {
    /// CK_TOKEN_INFO.manufacturerID of the carrier.
    pub manufacturer: Option<String>,
    /// CK_TOKEN_INFO.model of the carrier.
    pub model: Option<String>,
    /// CK_TOKEN_INFO.serialNumber of the carrier.
    pub serial: Option<String>,
    /// The token label; tells apart carriers that share manufacturer, model and serial.
    pub label: Option<String>,
    /// File holding the user PIN (mode 0600 or stricter).
    pub user_pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    pub user_pin_env: Option<String>,
    /// File holding the SO PIN.
    pub so_pin_file: Option<PathBuf>,
    /// Environment variable holding the SO PIN.
    pub so_pin_env: Option<String>,
}

/// A validated `[[pin]]` rule: names exactly one carrier by its full identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRule {
    /// CK_TOKEN_INFO.manufacturerID.
    pub manufacturer: String,
    /// CK_TOKEN_INFO.model.
    pub model: String,
    /// CK_TOKEN_INFO.serialNumber.
    pub serial: String,
    /// The token label, when the rule names one.
    pub label: Option<String>,
    /// File holding the user PIN.
    pub user_pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    pub user_pin_env: Option<String>,
    /// File holding the SO PIN.
    pub so_pin_file: Option<PathBuf>,
    /// Environment variable holding the SO PIN.
    pub so_pin_env: Option<String>,
}

impl PinRule {
    /// True when the rule names this carrier: manufacturer, model and serial equal, and the
    /// label too when the rule gives one (a carrier of unknown label never matches a rule
    /// with a label).
    pub fn matches(&self, carrier: &CarrierId, label: Option<&str>) -> bool {
        self.manufacturer == carrier.manufacturer
            && self.model == carrier.model
            && self.serial == carrier.serial
            && self.label.as_deref().is_none_or(|l| Some(l) == label)
    }

    /// The carrier the rule names, for messages.
    pub fn describe(&self) -> String {
        let mut text = format!("{}/{}/{}", self.manufacturer, self.model, self.serial);
        if let Some(l) = &self.label {
            text.push_str(&format!(" label {l:?}"));
        }
        text
    }
}

/// How a `[[pin]]` rule is written, for the messages that refuse one.
const PIN_RULE_EXAMPLE: &str = "write each rule for one carrier, by its full identity as \
`custody scan` or `custody journal list` shows it:\n  [[pin]]\n  manufacturer = \"SoftHSM project\"\n  \
model = \"SoftHSM v2\"\n  serial = \"3c5e0a1b2d4f6789\"\n  label = \"Іваненко І.І.\"   # optional; \
needed when carriers share a serial\n  user_pin_file = \"/etc/custody/pins/3c5e0a1b2d4f6789\"";

impl RawPinRule {
    /// Checks that the rule names one carrier, with no wildcard, and at most one source of
    /// each PIN. `n` is the rule's position in the file (from 1).
    fn validate(self, n: usize) -> anyhow::Result<PinRule> {
        let field = |name: &str, value: Option<String>| -> anyhow::Result<String> {
            match value {
                None => bail!(
                    "[[pin]] rule {n} has no {name}: a PIN is offered only to the carrier its rule names, so a rule must give manufacturer, model and serial; {PIN_RULE_EXAMPLE}"
                ),
                Some(v) if v.trim().is_empty() || v.contains('*') || v.contains('?') => bail!(
                    "[[pin]] rule {n}: {name} = {v:?} would match carriers the PIN does not belong to, and a wrong PIN counts towards locking them; wildcards are refused. {PIN_RULE_EXAMPLE}"
                ),
                Some(v) => Ok(v),
            }
        };
        let rule = PinRule {
            manufacturer: field("manufacturer", self.manufacturer)?,
            model: field("model", self.model)?,
            serial: field("serial", self.serial)?,
            label: self.label,
            user_pin_file: self.user_pin_file,
            user_pin_env: self.user_pin_env,
            so_pin_file: self.so_pin_file,
            so_pin_env: self.so_pin_env,
        };
        if rule.user_pin_file.is_some() && rule.user_pin_env.is_some() {
            bail!(
                "[[pin]] rule {n} for {}: give user_pin_file or user_pin_env, not both",
                rule.describe()
            );
        }
        if rule.so_pin_file.is_some() && rule.so_pin_env.is_some() {
            bail!(
                "[[pin]] rule {n} for {}: give so_pin_file or so_pin_env, not both",
                rule.describe()
            );
        }
        Ok(rule)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Organisation name for the journal form.
    pub organisation: Option<String>,
    /// Journal file.
    pub journal: PathBuf,
    /// Modules from the file (empty: use the defaults).
    pub modules: Vec<PathBuf>,
    /// `reinit` of each `[[module]]` of the file, for the service.
    pub module_reinit: Vec<(PathBuf, Reinit)>,
    /// PIN rules, first match wins.
    pub pins: Vec<PinRule>,
    /// Service poll interval.
    pub interval: std::time::Duration,
    /// Fixed time between content checks (`None`: from the measured cost).
    pub check_interval: Option<std::time::Duration>,
    /// Order spool.
    pub spool: PathBuf,
    /// allowed_signers file.
    pub allowed_signers: Option<PathBuf>,
    /// Signatures an order needs.
    pub required_signers: u32,
}

impl Config {
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
                toml::from_str::<RawConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("configuration {}: {e}", p.display()))?
            }
            None => RawConfig::default(),
        };
        Self::validate(raw, path)
    }

    /// Checks a parsed file and fills in defaults.
    pub fn validate(raw: RawConfig, source: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut pins: Vec<PinRule> = Vec::with_capacity(raw.pin.len());
        for (i, rule) in raw.pin.into_iter().enumerate() {
            let rule = rule.validate(i + 1)?;
            if let Some(j) = pins.iter().position(|p| {
                (p.manufacturer.as_str(), p.model.as_str(), p.serial.as_str())
                    == (
                        rule.manufacturer.as_str(),
                        rule.model.as_str(),
                        rule.serial.as_str(),
                    )
                    && (p.label.is_none() || rule.label.is_none() || p.label == rule.label)
            }) {
                bail!(
                    "[[pin]] rules {} and {} both name carrier {}; keep one, or tell the carriers apart with a label on each",
                    j + 1,
                    i + 1,
                    rule.describe()
                );
            }
            pins.push(rule);
        }
        let interval = match &raw.service.interval {
            Some(text) => {
                parse_duration(text).with_context(|| format!("[service] interval = {text:?}"))?
            }
            None => std::time::Duration::from_secs(2),
        };
        let check_interval = match &raw.service.check_interval {
            Some(text) => Some(
                parse_duration(text)
                    .with_context(|| format!("[service] check_interval = {text:?}"))?,
            ),
            None => None,
        };
        let required_signers = raw.orders.required_signers.unwrap_or(1);
        if required_signers == 0 {
            bail!("[orders] required_signers must be at least 1");
        }
        Ok(Self {
            source,
            organisation: raw.organisation.name,
            journal: raw.journal.path.unwrap_or_else(default_journal),
            modules: raw.module.iter().map(|m| m.path.clone()).collect(),
            module_reinit: raw.module.into_iter().map(|m| (m.path, m.reinit)).collect(),
            pins,
            interval,
            check_interval,
            spool: raw
                .service
                .spool
                .unwrap_or_else(|| state_dir().join("orders")),
            allowed_signers: raw.orders.allowed_signers,
            required_signers,
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
pub fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
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
    Ok(std::time::Duration::from_secs_f64(secs))
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
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("PIN file {}: cannot read it", path.display()))?,
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::validate(toml::from_str(text)?, None)
    }

    #[test]
    fn unknown_keys_are_refused_with_the_line() {
        let err = parse("[journal]\npath = \"/tmp/j.db\"\ncolour = 1\n").err();
        let text = err.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(text.contains("colour") && text.contains("line 3"), "{text}");
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
        assert_eq!(c.interval, std::time::Duration::from_millis(500));
        assert_eq!(c.check_interval, Some(std::time::Duration::from_secs(10)));
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
    fn pin_rules_with_wildcards_or_without_full_identity_are_refused() {
        for (rule, says) in [
            ("serial = \"*\"", "no manufacturer"),
            (
                "manufacturer = \"M\"\nmodel = \"X\"\nserial = \"*\"",
                "wildcards are refused",
            ),
            (
                "manufacturer = \"*\"\nmodel = \"X\"\nserial = \"42\"",
                "wildcards are refused",
            ),
            ("manufacturer = \"M\"\nserial = \"42\"", "no model"),
            (
                "manufacturer = \"M\"\nmodel = \"X\"\nserial = \"\"",
                "wildcards are refused",
            ),
        ] {
            let text = format!("[[pin]]\n{rule}\nuser_pin_file = \"/p\"\n");
            let err = parse(&text)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(says), "{rule}: {err}");
            // The message shows how to write a rule.
            assert!(
                err.contains("manufacturer = ") && err.contains("model = "),
                "{err}"
            );
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
        // Two rules for one carrier are refused.
        let err = parse(
            "[[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"1\"\n[[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"1\"\n",
        )
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(err.contains("rules 1 and 2"), "{err}");
    }

    #[test]
    fn unknown_reinit_policy_is_refused() {
        let err = parse("[[module]]\npath = \"/m.so\"\nreinit = \"sometimes\"\n").err();
        let text = err.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(
            text.contains("sometimes") && text.contains("line 3"),
            "{text}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("2s").ok(),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("1m").ok(),
            Some(std::time::Duration::from_secs(60))
        );
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
