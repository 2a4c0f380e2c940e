//! One behaviour test's world: a running implementation, a configuration and a journal of
//! its own, the real `custody` binary, and `custody watch` as a child process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use custody_core::journal::{EventRow, Journal};
use custody_tests::daemon::Daemon;
use custody_tests::implementation::{
    implementation, start_for_test, Capabilities, Carrier, Instance, Support,
};
use custody_tests::{temp_dir, Custody};
use serde_json::Value;

pub(crate) type TestResult = anyhow::Result<()>;

/// How long a test waits for something that should take at most a few polls.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("implementations")
}

/// A test's implementation instance, directory, configuration and journal.
pub(crate) struct World {
    pub(crate) name: &'static str,
    pub(crate) test: String,
    pub(crate) caps: Capabilities,
    pub(crate) instance: Box<dyn Instance>,
    pub(crate) dir: PathBuf,
    pub(crate) journal: PathBuf,
    pub(crate) config: PathBuf,
    /// Carriers no event may name any more: journal key and the last seq before.
    untouched: Vec<(String, u64)>,
}

impl World {
    /// Starts `name` for `test`; `None` when it cannot be set up outside CI (a notice is
    /// printed; under CI=true that is an error).
    pub(crate) fn start(name: &str, test: &str) -> anyhow::Result<Option<Self>> {
        let imp = implementation(name)?;
        let Some(instance) = start_for_test(name, test, &base().join("instances"))? else {
            return Ok(None);
        };
        let dir = temp_dir(&base(), &format!("{name}-{test}"))?;
        let config = dir.join("custody.toml");
        std::fs::write(
            &config,
            format!("[service]\nspool = {}\n", toml_path(&dir.join("spool"))?),
        )?;
        Ok(Some(Self {
            name: imp.name(),
            test: test.to_owned(),
            caps: imp.capabilities(),
            instance,
            journal: dir.join("journal.db"),
            config,
            dir,
            untouched: Vec::new(),
        }))
    }

    /// Prints that a part of the test does not apply, and why.
    pub(crate) fn note(&self, what: &str) {
        eprintln!("[{}] {}: {what}", self.name, self.test);
    }

    /// custody with this world's module, environment, journal and configuration.
    pub(crate) fn custody(&self) -> Custody {
        Custody::for_module(self.instance.module(), self.instance.env(), &self.journal)
            .with_config(&self.config)
    }

    /// `custody ARGS --json`, expecting exit `code`.
    pub(crate) fn json(&self, args: &[&str], code: i32) -> anyhow::Result<Value> {
        self.custody().json(args, code)
    }

    /// `custody --json ARGS` with `stdin` on its standard input; the exit code, the JSON
    /// (null when stdout is empty) and stderr.
    pub(crate) fn json_with_stdin(
        &self,
        args: &[&str],
        stdin: &str,
    ) -> anyhow::Result<(i32, Value, String)> {
        use std::io::Write as _;
        let mut child = self
            .custody()
            .command()
            .arg("--json")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("stdout is not JSON: {text}"))?
        };
        Ok((
            out.status.code().unwrap_or(-1),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// An order signer: an ed25519 key made with ssh-keygen, trusted through
    /// `[orders] allowed_signers` in the configuration.
    pub(crate) fn trust_signer(&self) -> anyhow::Result<PathBuf> {
        let key = self.dir.join("it_ed25519");
        let out = std::process::Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "it@example.org",
                "-f",
            ])
            .arg(&key)
            .stdin(Stdio::null())
            .output()
            .context("running ssh-keygen (Debian package openssh-client)")?;
        ensure!(
            out.status.success(),
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = std::fs::read_to_string(key.with_extension("pub"))?;
        let signers = self.dir.join("allowed_signers");
        std::fs::write(&signers, format!("it@example.org {}", public.trim()))?;
        let mut config = std::fs::read_to_string(&self.config)?;
        config.push_str(&format!(
            "[orders]\nallowed_signers = {}\n",
            toml_path(&signers)?
        ));
        std::fs::write(&self.config, config)?;
        Ok(key)
    }

    /// A signed destruction order for `carrier` by `method`; returns its path.
    pub(crate) fn signed_order(
        &self,
        signer: &Path,
        carrier: &Carrier,
        method: &str,
        cert_sha256: &str,
    ) -> anyhow::Result<PathBuf> {
        let today = time::OffsetDateTime::now_utc().date().to_string();
        let mut args = vec!["order", "create", "--carrier", carrier.serial()];
        // A model with NUL bytes (tpm2-pkcs11) cannot be an argument: the journal's is used.
        for (option, value) in [
            ("--manufacturer", &carrier.token.manufacturer),
            ("--model", &carrier.token.model),
        ] {
            if !value.contains('\0') {
                args.extend([option, value.as_str()]);
            }
        }
        args.extend([
            "--holder",
            "Шевченко Тарас Григорович",
            "--dismissed",
            &today,
            "--method",
            method,
            "--responsible",
            "Коваленко Ольга Петрівна",
            "--cert",
            cert_sha256,
            "--reason",
            "Наказ № 17-к",
        ]);
        let order = self.custody().run(&args)?;
        ensure!(
            order.code == 0,
            "[{}] order create: {}{}",
            self.name,
            order.stdout,
            order.stderr
        );
        let path = self.dir.join(format!("order-{method}.json"));
        std::fs::write(&path, &order.stdout)?;
        let signed = self.custody().run(&[
            "order",
            "sign",
            path.to_str().context("path")?,
            "--key",
            signer.to_str().context("path")?,
        ])?;
        ensure!(
            signed.code == 0,
            "[{}] order sign: {}",
            self.name,
            signed.stderr
        );
        Ok(path)
    }

    /// Every event of the journal.
    pub(crate) fn events(&self) -> anyhow::Result<Vec<EventRow>> {
        Ok(Journal::open(&self.journal)?.events()?)
    }

    /// The journal's key of the carrier now or last labelled `label`.
    pub(crate) fn carrier_key(&self, label: &str) -> anyhow::Result<String> {
        let carriers = Journal::open(&self.journal)?.carriers()?;
        let found: Vec<_> = carriers.iter().filter(|c| c.label == label).collect();
        match found.as_slice() {
            [c] => Ok(c.carrier.clone()),
            _ => bail!(
                "{} carriers labelled {label:?} in the journal: {carriers:?}",
                found.len()
            ),
        }
    }

    /// Events of `kind` for the carrier `key`.
    pub(crate) fn events_of(&self, key: &str, kind: &str) -> anyhow::Result<Vec<EventRow>> {
        Ok(self
            .events()?
            .into_iter()
            .filter(|e| e.kind.as_str() == kind && e.carrier.as_deref() == Some(key))
            .collect())
    }

    /// From now on no event may name the carrier `key`: every [`World::wait_events`] and
    /// [`World::assert_untouched`] fails, with the journal, as soon as one does.
    pub(crate) fn expect_untouched(&mut self, key: &str) -> TestResult {
        let last = self.events()?.last().map_or(0, |e| e.seq);
        self.untouched.push((key.to_owned(), last));
        Ok(())
    }

    /// Fails when an event names a carrier of [`World::expect_untouched`].
    pub(crate) fn assert_untouched(&self) -> TestResult {
        self.check_untouched(&self.events()?)
    }

    fn check_untouched(&self, events: &[EventRow]) -> TestResult {
        for (key, after) in &self.untouched {
            let named: Vec<u64> = events
                .iter()
                .filter(|e| e.seq > *after && e.carrier.as_deref() == Some(key.as_str()))
                .map(|e| e.seq)
                .collect();
            ensure!(
                named.is_empty(),
                "[{}] event(s) {named:?} name {key}, a carrier nothing touched; journal:\n{}",
                self.name,
                self.describe(events)
            );
        }
        Ok(())
    }

    /// The journal's events one a line: seq, kind, carrier key, the carrier's label now and
    /// the certificate or key fingerprint an event names.
    pub(crate) fn describe(&self, events: &[EventRow]) -> String {
        let labels: Vec<(String, String)> = Journal::open(&self.journal)
            .and_then(|j| j.carriers())
            .map(|cs| cs.into_iter().map(|c| (c.carrier, c.label)).collect())
            .unwrap_or_default();
        events
            .iter()
            .map(|e| {
                let carrier = e.carrier.as_deref().unwrap_or("-");
                let label = labels
                    .iter()
                    .find(|(k, _)| k == carrier)
                    .map_or("?", |(_, l)| l.as_str());
                let sha = fingerprint(&e.data)
                    .map(|s| format!(" sha256 {s}"))
                    .unwrap_or_default();
                format!("  #{} {} {carrier} (now {label:?}){sha}", e.seq, e.kind)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `found` returns true on the journal's events; returns the time it took.
    /// Fails at once when an event names a carrier of [`World::expect_untouched`].
    pub(crate) fn wait_events(
        &self,
        what: &str,
        within: Duration,
        mut found: impl FnMut(&[EventRow]) -> bool,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if self.journal.exists() {
                let events = self.events()?;
                self.check_untouched(&events)?;
                if found(&events) {
                    return Ok(start.elapsed());
                }
                if start.elapsed() > within {
                    bail!(
                        "[{}] no {what} within {within:?}; journal:\n{}",
                        self.name,
                        self.describe(&events)
                    );
                }
            } else if start.elapsed() > within {
                bail!("[{}] no journal within {within:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the first event of `kind` for the carrier `key` and returns how long after
    /// `since` custody recorded it (the event's own time, so the test's polling adds
    /// nothing).
    pub(crate) fn latency(
        &self,
        key: &str,
        kind: &str,
        since: time::OffsetDateTime,
    ) -> anyhow::Result<Duration> {
        self.wait_events(&format!("{kind} of {key}"), PATIENCE, |e| {
            e.iter()
                .any(|e| e.kind.as_str() == kind && e.carrier.as_deref() == Some(key))
        })?;
        let events = self.events_of(key, kind)?;
        let at = &events.first().context("the event went away")?.at;
        let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("event time {at:?}"))?;
        Ok(Duration::try_from(at - since).unwrap_or_default())
    }

    /// Fails unless `custody journal verify` says the chain verifies.
    /// Also fails when the device counted a failed authorisation towards its
    /// dictionary-attack lockout (the TPM).
    pub(crate) fn assert_verifies(&self) -> TestResult {
        let v = self.json(&["journal", "verify"], 0)?;
        ensure!(
            v["ok"] == true,
            "[{}] journal does not verify: {v}",
            self.name
        );
        if let Some(count) = self.instance.lockout_counter()? {
            ensure!(
                count == 0,
                "[{}] {count} failed authorisation(s) counted towards the TPM's lockout",
                self.name
            );
        }
        Ok(())
    }

    /// Whether the journal's carrier `key` is present, as `custody journal list` says.
    pub(crate) fn present(&self, key: &str) -> anyhow::Result<Option<bool>> {
        Ok(Journal::open(&self.journal)?
            .carriers()?
            .into_iter()
            .find(|c| c.carrier == key)
            .map(|c| c.present))
    }

    /// Starts `custody watch` with `args` (e.g. `--interval 500ms`).
    pub(crate) fn watch(&self, args: &[&str]) -> anyhow::Result<Watch> {
        let mut command = self.custody().command();
        command
            .env("CUSTODY_LOG", "info,custody_agent::worker=trace")
            .args(["--log-format", "json", "watch"])
            .args(args)
            .stdin(Stdio::null());
        let log = self.dir.join(format!("watch-{}.log", now_ms()));
        let daemon = Daemon::spawn("custody watch", &mut command, &log)?;
        Ok(Watch { daemon })
    }

    /// True when `support` is yes; otherwise prints what is missing.
    pub(crate) fn supports(&self, what: &str, support: Support) -> bool {
        match support {
            Support::Yes => true,
            Support::Missing(missing) => {
                self.note(&format!("{what}: not supported here ({missing})"));
                false
            }
        }
    }
}

/// The first `sha256` an event's data names (a certificate's or key's fingerprint).
fn fingerprint(data: &Value) -> Option<String> {
    match data {
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| (k.ends_with("sha256")).then(|| v.as_str()).flatten())
            .map(|s| s.chars().take(16).collect())
            .or_else(|| map.values().find_map(fingerprint)),
        Value::Array(items) => items.iter().find_map(fingerprint),
        _ => None,
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// `custody watch` running as a child process.
pub(crate) struct Watch {
    daemon: Daemon,
}

impl Watch {
    /// The service's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Fails with the log when the service has exited.
    pub(crate) fn check_running(&mut self) -> TestResult {
        self.daemon.check_running()
    }

    /// SIGTERM, and the exit must be clean.
    pub(crate) fn stop(mut self) -> TestResult {
        self.daemon.stop()?;
        Ok(())
    }
}

/// A TOML string of a path.
pub(crate) fn toml_path(path: &Path) -> anyhow::Result<String> {
    Ok(toml_string(path.to_str().context("path is not UTF-8")?))
}

/// A TOML basic string.
pub(crate) fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
