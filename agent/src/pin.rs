//! PINs from the configuration's `[[pin]]` rules, for every command and the service, with a
//! memory of rejections that outlives the process.
//!
//! A rule names one carrier (see [`crate::config::PinRule`]); a rule that matches more than
//! one present carrier offers its PIN to none of them. A PIN a carrier rejected is not
//! offered to that carrier again until its source changes: the rejection is kept in
//! `<journal>.pin-rejections` (mode 0600) with the *version* of the source it was read from,
//! so that no number of scans, services or restarts can walk a carrier into PIN lockout.
//! The version of a PIN file is its identity, size and modification time (rewriting or
//! replacing it changes them); of a variable, a digest of its value keyed with a random salt
//! kept in the same file. The memory never holds a PIN.

use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use custody_core::id::CarrierId;
use custody_core::token::{Module, PinSource, PinTarget, TokenIdentity};
use custody_core::Error;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::config::{read_pin_env, read_pin_file, Config, PinRule};

/// The configured PIN sources plus the memory of which carrier rejected which source.
#[derive(Debug)]
pub struct Pins {
    rules: Vec<PinRule>,
    memory: Memory,
    /// The carrier, source and version of the user PIN handed out last.
    offered: RefCell<Option<(String, String, String)>>,
    /// The tokens every module showed last, with the module's path: a rule that matches a
    /// token in another module than the target's is as ambiguous as one that matches two in
    /// one module (see [`Pins::set_present`]).
    present: RefCell<Vec<(String, TokenIdentity)>>,
}

/// One rejection: a carrier (manufacturer/model/serial) rejected the PIN read from `source`
/// when the source had `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Rejected {
    carrier: String,
    source: String,
    version: String,
    at: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct MemoryFile {
    /// Keys the digests of PIN variables (random, per file).
    salt: String,
    rejected: Vec<Rejected>,
}

/// The rejection memory: the file and what this process last read or wrote.
#[derive(Debug)]
struct Memory {
    path: PathBuf,
    state: RefCell<MemoryFile>,
}

/// The memory is keyed by manufacturer/model/serial: the weak-serial discriminator is
/// computed only after the login.
fn carrier_key(carrier: &CarrierId) -> String {
    CarrierId {
        discriminator: None,
        ..carrier.clone()
    }
    .key()
}

/// A user-PIN source of a rule: its name for messages and the memory (never the PIN).
fn user_source(rule: &PinRule) -> Option<String> {
    match (&rule.user_pin_file, &rule.user_pin_env) {
        (Some(f), _) => Some(format!("PIN file {}", f.display())),
        (None, Some(v)) => Some(format!("PIN variable {v}")),
        (None, None) => None,
    }
}

impl Memory {
    fn open(journal: &Path) -> Self {
        let mut path = journal.as_os_str().to_owned();
        path.push(".pin-rejections");
        let memory = Self {
            path: path.into(),
            state: RefCell::default(),
        };
        memory.reload();
        memory
    }

    /// Reads the file again (another custody process may have recorded a rejection). A
    /// missing file is an empty memory; an unreadable one keeps what is known.
    fn reload(&self) {
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice::<MemoryFile>(&bytes) {
                Ok(file) => *self.state.borrow_mut() = file,
                Err(e) => tracing::warn!(
                    file = %self.path.display(),
                    cause = %e,
                    "PIN rejection memory unreadable; rewrite it by deleting the file"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.path.display(), cause = %e, "PIN rejection memory unreadable")
            }
        }
    }

    fn salt(&self) -> String {
        let mut state = self.state.borrow_mut();
        if state.salt.is_empty() {
            state.salt = uuid::Uuid::new_v4().simple().to_string();
        }
        state.salt.clone()
    }

    /// The version of `rule`'s user-PIN source now (never the PIN: see the module docs).
    fn version(&self, rule: &PinRule) -> Option<String> {
        match (&rule.user_pin_file, &rule.user_pin_env) {
            (Some(f), _) => Some(match std::fs::metadata(f) {
                Ok(m) => format!(
                    "{}:{} {} {}.{}",
                    m.dev(),
                    m.ino(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
                Err(e) => format!("unreadable: {}", e.kind()),
            }),
            (None, Some(v)) => Some(match std::env::var(v) {
                Ok(value) => {
                    let salted = zeroize::Zeroizing::new(format!("{}\n{value}", self.salt()));
                    custody_core::cert::sha256_hex(salted.as_bytes())
                }
                Err(_) => "unset".into(),
            }),
            (None, None) => None,
        }
    }

    fn rejected(&self, carrier: &str, source: &str) -> Option<String> {
        self.state
            .borrow()
            .rejected
            .iter()
            .find(|r| r.carrier == carrier && r.source == source)
            .map(|r| r.version.clone())
    }

    /// Records (or forgets, `version == None`) a rejection, in memory and on disk.
    fn set(&self, carrier: &str, source: &str, version: Option<&str>) {
        let _lock = self.lock();
        self.reload();
        {
            let mut state = self.state.borrow_mut();
            state
                .rejected
                .retain(|r| !(r.carrier == carrier && r.source == source));
            if let Some(v) = version {
                let at = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                state.rejected.push(Rejected {
                    carrier: carrier.to_owned(),
                    source: source.to_owned(),
                    version: v.to_owned(),
                    at,
                });
            }
        }
        if let Err(e) = self.write() {
            tracing::warn!(
                file = %self.path.display(),
                cause = %e,
                "PIN rejection memory could not be written; it holds for this process only"
            );
        }
    }

    fn lock(&self) -> Option<std::fs::File> {
        let mut path = self.path.as_os_str().to_owned();
        path.push(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(path))
            .ok()?;
        file.lock().ok()?;
        Some(file)
    }

    fn write(&self) -> std::io::Result<()> {
        let bytes =
            serde_json::to_vec_pretty(&*self.state.borrow()).map_err(std::io::Error::other)?;
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        crate::config::write_private_file(&tmp, &bytes)?;
        std::fs::rename(&tmp, &self.path)
    }
}

impl Pins {
    /// The PIN sources of `config`, remembering rejections beside the journal at `journal`.
    pub fn new(config: &Config, journal: &Path) -> Self {
        Self {
            rules: config.pins.clone(),
            memory: Memory::open(journal),
            offered: RefCell::default(),
            present: RefCell::default(),
        }
    }

    /// Tells the sources which tokens the modules show now, so that a rule matching carriers
    /// in two modules offers its PIN to neither. Lists every module's tokens by token info
    /// (no session, no PIN); does nothing without rules. A module whose tokens cannot be
    /// listed keeps what it showed before.
    pub fn set_present<'a>(&self, modules: impl IntoIterator<Item = &'a Module>) {
        if self.rules.is_empty() {
            return;
        }
        let mut present = self.present.borrow_mut();
        for module in modules {
            let path = &module.info().path;
            match module.identities() {
                Ok(tokens) => {
                    present.retain(|(m, _)| m != path);
                    present.extend(tokens.into_iter().map(|t| (path.clone(), t)));
                }
                Err(e) => {
                    tracing::debug!(module = %path, cause = %e, "tokens not listed for the PIN rules");
                }
            }
        }
    }

    fn rule(&self, carrier: &CarrierId, label: Option<&str>) -> Option<&PinRule> {
        self.rules.iter().find(|r| r.matches(carrier, label))
    }

    /// True when `carrier` rejected a PIN before and that source has changed since: the
    /// carrier should be read again, with the new PIN.
    pub fn retry_due(&self, carrier: &CarrierId) -> bool {
        let key = carrier_key(carrier);
        let entries: Vec<(String, String)> = self
            .memory
            .state
            .borrow()
            .rejected
            .iter()
            .filter(|r| r.carrier == key)
            .map(|r| (r.source.clone(), r.version.clone()))
            .collect();
        entries.iter().any(|(source, old)| {
            self.rules
                .iter()
                .filter(|r| {
                    r.manufacturer == carrier.manufacturer
                        && r.model == carrier.model
                        && r.serial == carrier.serial
                        && user_source(r).as_deref() == Some(source.as_str())
                })
                .any(|r| self.memory.version(r).as_deref() != Some(old.as_str()))
        })
    }
}

impl PinSource for Pins {
    fn user_pin(&self, target: &PinTarget<'_>) -> custody_core::Result<Option<SecretString>> {
        let Some(rule) = self.rule(target.carrier, target.label) else {
            return Ok(None);
        };
        let Some(source) = user_source(rule) else {
            return Ok(None);
        };
        let mut others: Vec<String> = target
            .others
            .iter()
            .filter(|t| rule.matches(&t.carrier, Some(&t.label)))
            .map(|t| format!("slot {} label {:?}", t.slot, t.label))
            .collect();
        others.extend(
            self.present
                .borrow()
                .iter()
                .filter(|(m, t)| m != target.module && rule.matches(&t.carrier, Some(&t.label)))
                .map(|(m, t)| format!("module {m} slot {} label {:?}", t.slot, t.label)),
        );
        if !others.is_empty() {
            return Err(Error::Refused(format!(
                "not logged in: the [[pin]] rule for {} matches {} present carriers (this one, label {:?}, and {}), so its PIN is offered to none of them. Add the label of the carrier it belongs to (label = \"...\") to the rule; carriers with the same label in two modules cannot share a rule: unplug one",
                rule.describe(),
                others.len() + 1,
                target.label.unwrap_or_default(),
                others.join(", ")
            )));
        }
        let key = carrier_key(target.carrier);
        self.memory.reload();
        let version = self.memory.version(rule).unwrap_or_default();
        let rejected = self.memory.rejected(&key, &source);
        if rejected.as_deref() == Some(version.as_str()) {
            return Err(Error::Refused(format!(
                "not logged in: this carrier rejected the PIN from {source} before, and it is not offered again until {source} changes; correct it and custody tries once more"
            )));
        }
        let read = match (&rule.user_pin_file, &rule.user_pin_env) {
            (Some(f), _) => read_pin_file(f).map_err(|e| (f.display().to_string(), e)),
            (None, Some(v)) => read_pin_env(v).map_err(|e| (v.clone(), e)),
            (None, None) => return Ok(None),
        };
        let pin = read.map_err(|(source_name, e)| Error::PinSource {
            source_name,
            reason: format!("{e:#}"),
        })?;
        if rejected.is_some() {
            // The source changed since the rejection: this PIN is offered once.
            self.memory.set(&key, &source, None);
        }
        *self.offered.borrow_mut() = Some((key, source, version));
        Ok(Some(pin))
    }

    fn so_pin(&self, target: &PinTarget<'_>) -> custody_core::Result<Option<SecretString>> {
        let Some(rule) = self.rule(target.carrier, target.label) else {
            return Ok(None);
        };
        let read = match (&rule.so_pin_file, &rule.so_pin_env) {
            (Some(f), _) => read_pin_file(f).map_err(|e| (f.display().to_string(), e)),
            (None, Some(v)) => read_pin_env(v).map_err(|e| (v.clone(), e)),
            (None, None) => return Ok(None),
        };
        read.map(Some).map_err(|(source_name, e)| Error::PinSource {
            source_name,
            reason: format!("{e:#}"),
        })
    }

    fn login_failed(&self, target: &PinTarget<'_>, error: &Error) {
        let key = carrier_key(target.carrier);
        let offered = self.offered.borrow_mut().take();
        let (source, version) = match offered {
            Some((k, source, version)) if k == key => (source, version),
            _ => {
                let Some(rule) = self.rule(target.carrier, target.label) else {
                    return;
                };
                let Some(source) = user_source(rule) else {
                    return;
                };
                let version = self.memory.version(rule).unwrap_or_default();
                (source, version)
            }
        };
        tracing::warn!(
            carrier = %key,
            source = %source,
            cause = %error,
            "the carrier rejected the PIN; it is not offered again until its source changes"
        );
        self.memory.set(&key, &source, Some(&version));
    }

    fn any(&self) -> bool {
        !self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{write_private_file, RawConfig};
    use secrecy::ExposeSecret;

    fn carrier(serial: &str) -> CarrierId {
        CarrierId {
            manufacturer: "M".into(),
            model: "X".into(),
            serial: serial.into(),
            discriminator: None,
        }
    }

    fn exposed(pin: Option<SecretString>) -> Option<String> {
        pin.map(|p| p.expose_secret().to_owned())
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("custody-pin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    fn config(rules: &str) -> Config {
        let raw: RawConfig = toml::from_str(rules).unwrap_or_else(|e| panic!("{e}"));
        Config::validate(raw, None).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn target<'a>(c: &'a CarrierId, others: &'a [TokenIdentity]) -> PinTarget<'a> {
        PinTarget {
            carrier: c,
            label: Some("L"),
            module: "/m.so",
            others,
        }
    }

    #[test]
    fn a_rejected_pin_is_not_offered_again_until_the_file_changes_even_by_a_new_process() {
        let dir = dir("memory");
        let file = dir.join("user.pin");
        let journal = dir.join("journal.db");
        write_private_file(&file, b"111111\n").unwrap_or_else(|e| panic!("{e}"));
        let cfg = config(&format!(
            "[[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"42\"\nuser_pin_file = \"{}\"\n\
             [[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"43\"\nuser_pin_file = \"{}\"\n",
            file.display(),
            file.display()
        ));
        let pins = Pins::new(&cfg, &journal);
        let c = carrier("42");
        let first = pins
            .user_pin(&target(&c, &[]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(exposed(first).as_deref(), Some("111111"));
        pins.login_failed(&target(&c, &[]), &Error::WrongPin { retries_low: false });

        // Same source, in this process and in the next one: refused without a PIN, and the
        // message names the file, not the PIN; the memory file holds no PIN either.
        for p in [&pins, &Pins::new(&cfg, &journal)] {
            let again = p
                .user_pin(&target(&c, &[]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                again.contains("user.pin") && !again.contains("111111"),
                "{again}"
            );
            assert!(!p.retry_due(&c));
        }
        let memory =
            std::fs::read_to_string(dir.join("journal.db.pin-rejections")).unwrap_or_default();
        assert!(
            memory.contains("M/X/42") && !memory.contains("111111"),
            "{memory}"
        );
        // Another carrier is unaffected.
        assert!(pins.user_pin(&target(&carrier("43"), &[])).is_ok());

        // The file is being rewritten (empty for a moment): nothing is offered, and the retry
        // stays due.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&file, b"").unwrap_or_else(|e| panic!("{e}"));
        assert!(pins.retry_due(&c));
        assert!(pins.user_pin(&target(&c, &[])).is_err());
        assert!(pins.retry_due(&c));

        // The file is corrected: a retry is due, and the new PIN is offered once.
        std::thread::sleep(std::time::Duration::from_millis(5));
        write_private_file(&file, b"222222\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(pins.retry_due(&c));
        let second = pins
            .user_pin(&target(&c, &[]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(exposed(second).as_deref(), Some("222222"));
        assert!(!pins.retry_due(&c));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_pin_variable_is_offered_again_only_when_its_value_changes() {
        let dir = dir("env");
        let name = format!("CUSTODY_PIN_TEST_{}", std::process::id());
        let cfg = config(&format!(
            "[[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"42\"\nuser_pin_env = \"{name}\"\n"
        ));
        // A variable of this test's own name.
        std::env::set_var(&name, "5555");
        let pins = Pins::new(&cfg, &dir.join("j.db"));
        let c = carrier("42");
        assert!(pins.user_pin(&target(&c, &[])).is_ok());
        pins.login_failed(&target(&c, &[]), &Error::WrongPin { retries_low: false });
        let memory = std::fs::read_to_string(dir.join("j.db.pin-rejections")).unwrap_or_default();
        assert!(!memory.contains("5555"), "{memory}");
        assert!(Pins::new(&cfg, &dir.join("j.db"))
            .user_pin(&target(&c, &[]))
            .is_err());
        std::env::set_var(&name, "6666");
        let next = Pins::new(&cfg, &dir.join("j.db"));
        assert!(next.retry_due(&c));
        let pin = next
            .user_pin(&target(&c, &[]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(exposed(pin).as_deref(), Some("6666"));
        std::env::remove_var(&name);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_rule_matching_two_present_carriers_offers_its_pin_to_neither() {
        let dir = dir("ambiguous");
        let file = dir.join("user.pin");
        write_private_file(&file, b"111111\n").unwrap_or_else(|e| panic!("{e}"));
        let cfg = config(&format!(
            "[[pin]]\nmanufacturer = \"M\"\nmodel = \"X\"\nserial = \"0000\"\nuser_pin_file = \"{}\"\n",
            file.display()
        ));
        let pins = Pins::new(&cfg, &dir.join("j.db"));
        let c = carrier("0000");
        let twin = [TokenIdentity {
            carrier: c.clone(),
            label: "other".into(),
            slot: 7,
        }];
        let err = pins
            .user_pin(&target(&c, &twin))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("matches 2 present carriers") && err.contains("label"),
            "{err}"
        );
        // Alone, it gets the PIN.
        assert!(matches!(pins.user_pin(&target(&c, &[])), Ok(Some(_))));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn carriers_without_a_pin_rule_get_none() {
        let dir = dir("none");
        let pins = Pins::new(&config(""), &dir.join("j.db"));
        assert!(matches!(
            pins.user_pin(&target(&carrier("42"), &[])),
            Ok(None)
        ));
        assert!(!pins.retry_due(&carrier("42")));
        assert!(!pins.any());
        let _ = std::fs::remove_dir_all(dir);
    }
}
