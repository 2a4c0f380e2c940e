//! PINs for the service, with a memory of rejections: a PIN a carrier rejected is not
//! offered to that carrier again until its source (file or variable) changes, so the service
//! can never walk a carrier into PIN lockout by retrying every poll.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use custody_core::id::CarrierId;
use custody_core::token::PinSource;
use custody_core::Error;
use secrecy::SecretString;

use crate::config::{Config, ConfigPins, PinRule};

/// The configured PIN sources plus the memory of which carrier rejected which source.
/// Lives on the worker thread only.
#[derive(Debug)]
pub(crate) struct ServicePins {
    config: Config,
    /// Carrier (manufacturer/model/serial) -> fingerprint of the source it rejected.
    rejected: RefCell<HashMap<String, String>>,
    /// The carrier and source fingerprint of the PIN handed out last.
    offered: RefCell<Option<(String, String)>>,
}

/// The memory is keyed by manufacturer/model/serial: the weak-serial discriminator is
/// computed only after the login.
fn pin_key(carrier: &CarrierId) -> String {
    CarrierId {
        discriminator: None,
        ..carrier.clone()
    }
    .key()
}

/// Names a PIN source for messages (never the PIN).
fn source_name(rule: &PinRule) -> Option<String> {
    match (&rule.user_pin_file, &rule.user_pin_env) {
        (Some(f), _) => Some(format!("PIN file {}", f.display())),
        (None, Some(v)) => Some(format!("PIN variable {v}")),
        (None, None) => None,
    }
}

/// Changes whenever the PIN source may hold a different PIN: for a file its identity, size
/// and times (rewriting or replacing it changes them); a variable cannot change while the
/// service runs. Derived from metadata only, never from the PIN.
fn fingerprint(rule: &PinRule) -> Option<String> {
    match (&rule.user_pin_file, &rule.user_pin_env) {
        (Some(f), _) => Some(match std::fs::metadata(f) {
            Ok(m) => format!(
                "file {} {}:{} {} {}.{} {}.{}",
                f.display(),
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ),
            Err(e) => format!("file {} unreadable: {}", f.display(), e.kind()),
        }),
        (None, Some(v)) => Some(format!("env {v}")),
        (None, None) => None,
    }
}

impl ServicePins {
    pub(crate) fn new(config: Config) -> Self {
        Self {
            config,
            rejected: RefCell::default(),
            offered: RefCell::default(),
        }
    }

    /// True when `carrier` rejected a PIN before and its source has changed since: the
    /// carrier should be read again, with the new PIN.
    pub(crate) fn retry_due(&self, carrier: &CarrierId) -> bool {
        let key = pin_key(carrier);
        let rejected = self.rejected.borrow();
        let Some(old) = rejected.get(&key) else {
            return false;
        };
        let now = self.config.pin_rule(&carrier.serial).and_then(fingerprint);
        now.as_ref() != Some(old)
    }
}

impl PinSource for ServicePins {
    fn user_pin(&self, carrier: &CarrierId) -> custody_core::Result<Option<SecretString>> {
        let Some(rule) = self.config.pin_rule(&carrier.serial) else {
            return Ok(None);
        };
        let (Some(fp), Some(name)) = (fingerprint(rule), source_name(rule)) else {
            return Ok(None);
        };
        let key = pin_key(carrier);
        if self.rejected.borrow().get(&key) == Some(&fp) {
            return Err(Error::Refused(format!(
                "not logged in: this carrier rejected the PIN from {name} before, and it is not \
                 offered again until {name} changes; correct it and the service tries once more"
            )));
        }
        // The source changed (or never failed): read it. Forget the rejection only when a PIN
        // is actually handed out, so that a source caught half-written (empty) is retried.
        let pin = ConfigPins(&self.config).user_pin(carrier)?;
        if pin.is_some() {
            self.rejected.borrow_mut().remove(&key);
            *self.offered.borrow_mut() = Some((key, fp));
        }
        Ok(pin)
    }

    fn so_pin(&self, carrier: &CarrierId) -> custody_core::Result<Option<SecretString>> {
        ConfigPins(&self.config).so_pin(carrier)
    }

    fn login_failed(&self, carrier: &CarrierId, error: &Error) {
        let key = pin_key(carrier);
        let offered = self.offered.borrow_mut().take();
        let fp = match offered {
            Some((k, fp)) if k == key => Some(fp),
            _ => self.config.pin_rule(&carrier.serial).and_then(fingerprint),
        };
        if let Some(fp) = fp {
            tracing::warn!(
                carrier = %key,
                cause = %error,
                "the carrier rejected the PIN; it is not offered again until its source changes"
            );
            self.rejected.borrow_mut().insert(key, fp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::write_private_file;
    use secrecy::ExposeSecret;

    fn carrier() -> CarrierId {
        CarrierId {
            manufacturer: "M".into(),
            model: "X".into(),
            serial: "42".into(),
            discriminator: None,
        }
    }

    #[test]
    fn a_rejected_pin_is_not_offered_again_until_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("custody-pins-memory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("user.pin");
        write_private_file(&file, b"111111\n").unwrap_or_else(|e| panic!("{e}"));
        let raw: crate::config::RawConfig = toml::from_str(&format!(
            "[[pin]]\nserial = \"*\"\nuser_pin_file = \"{}\"\n",
            file.display()
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let config = Config::validate(raw, None).unwrap_or_else(|e| panic!("{e}"));
        let pins = ServicePins::new(config);
        let c = carrier();

        let first = pins.user_pin(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            first.map(|p| p.expose_secret().to_owned()).as_deref(),
            Some("111111")
        );
        pins.login_failed(&c, &Error::WrongPin { retries_low: false });

        // Same source: refused without a PIN, and the message names the file, not the PIN.
        let again = pins
            .user_pin(&c)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            again.contains("user.pin") && !again.contains("111111"),
            "{again}"
        );
        assert!(!pins.retry_due(&c));
        // Another carrier is unaffected.
        let other = CarrierId {
            serial: "43".into(),
            ..carrier()
        };
        assert!(pins.user_pin(&other).is_ok());

        // The file is being rewritten (empty for a moment): nothing is offered, and the retry
        // stays due.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&file, b"").unwrap_or_else(|e| panic!("{e}"));
        assert!(pins.retry_due(&c));
        assert!(pins.user_pin(&c).is_err());
        assert!(pins.retry_due(&c));

        // The file is corrected: a retry is due, and the new PIN is offered once.
        std::thread::sleep(std::time::Duration::from_millis(5));
        write_private_file(&file, b"222222\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(pins.retry_due(&c));
        let second = pins.user_pin(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            second.map(|p| p.expose_secret().to_owned()).as_deref(),
            Some("222222")
        );
        assert!(!pins.retry_due(&c));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn carriers_without_a_pin_rule_get_none() {
        let pins = ServicePins::new(
            Config::validate(crate::config::RawConfig::default(), None)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(matches!(pins.user_pin(&carrier()), Ok(None)));
        assert!(!pins.retry_due(&carrier()));
    }
}
