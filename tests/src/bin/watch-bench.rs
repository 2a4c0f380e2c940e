//! `watch-bench`: the benchmark of `custody watch` (run by `bench/watch.sh`), its floor, and
//! the SoftHSM2 token maker the service tests use.
//!
//! ```text
//! watch-bench tokens --count N [--certs K] [--label PREFIX] --cert FILE.der [--module PATH]
//!     Creates N initialised tokens (SO PIN 12345678, user PIN 123456) with K certificate
//!     objects each in the SoftHSM2 of $SOFTHSM2_CONF, in-process through cryptoki (about
//!     four times faster than pkcs11-tool). Prints one JSON line per token: label, serial.
//! watch-bench run --custody PATH [--interval MS] [--idle SECS] [--insertions N]
//!                 [--sizes 1,10,100] [--impls kryoptic,tpm2-pkcs11,p11-kit-remote,opensc] [--impl-idle SECS]
//!                 [--fleet 0] [--baseline PATH] [--dir DIR] [--module PATH]
//!     The benchmark: insertion latency and idle cost of `custody watch` with each number of
//!     SoftHSM2 tokens in `--sizes` present, then with one carrier on every other
//!     implementation in `--impls` (the test suite's harness, `custody_tests::implementation`),
//!     each next to its floor run at the same time (CPU per poll, goal ≤ 1.15 × the floor;
//!     peak RSS, goal ≤ the floor's + 3 MiB): `custody-floor MODULE --poll MS [--reinit]`,
//!     the module's own minimal poll (the slot list every interval, after C_Finalize +
//!     C_Initialize when the service re-initialises that module). Then the service with
//!     `[fleet]` (a private PostgreSQL cluster, nothing to send) next to the same service
//!     without it (goal: ≤ 5 % added CPU); `--fleet 0` leaves that out. `--baseline PATH`:
//!     another custody build (before a change) runs beside the service in every idle
//!     measurement, its figures on a line of their own.
//! ```
//!
//! The PINs above belong to throw-away test tokens; they are not secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, CertificateType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use custody_core::fleet::{Database, Fleet};
use custody_tests::bench::idle::{cpu_over, header, idle, row, Idle, Setup, Target};
use custody_tests::bench::{ms, peak_rss_kib, percentile, thread_cpu_time, LogTail};
use custody_tests::implementation::implementation;
use custody_tests::postgres::{Options as PgOptions, Postgres};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const SO_PIN: &str = "12345678";
const USER_PIN: &str = "123456";
/// The common name of the test certificate (see [`self_signed_cert`]).
const HOLDER: &str = "custody bench holder";

/// DER of the X.501 name `CN=<cn>` (short-form lengths: `cn` under 100 bytes), the subject
/// SoftHSM2 requires for a certificate object.
fn subject_der(cn: &str) -> Vec<u8> {
    let tlv = |tag: u8, body: &[u8]| [&[tag, body.len() as u8][..], body].concat();
    let atv = [tlv(0x06, &[0x55, 0x04, 0x03]), tlv(0x0c, cn.as_bytes())].concat();
    tlv(0x30, &tlv(0x31, &tlv(0x30, &atv)))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tokens") => tokens(&Args::parse(&args[1..])),
        Some("run") => run(&Args::parse(&args[1..])),
        _ => Err(anyhow::anyhow!(
            "usage: watch-bench tokens|run [options]; see the source header"
        )),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watch-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `--name value` options.
struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Self {
        let mut map = BTreeMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                map.insert(name.to_owned(), it.next().cloned().unwrap_or_default());
            }
        }
        Self(map)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn num(&self, name: &str, default: u64) -> Result<u64> {
        self.get(name)
            .map(|v| v.parse().with_context(|| format!("--{name} {v}")))
            .unwrap_or(Ok(default))
    }

    fn module(&self) -> PathBuf {
        PathBuf::from(self.get("module").unwrap_or(SOFTHSM))
    }
}

fn initialize(p: &Pkcs11) -> Result<()> {
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .context("C_Initialize")
}

/// Creates `count` tokens with `certs` certificates each; returns (label, serial).
fn make_tokens(
    module: &Path,
    count: u64,
    certs: u64,
    prefix: &str,
    der: &[u8],
) -> Result<Vec<(String, String)>> {
    let p = Pkcs11::new(module).with_context(|| format!("loading {}", module.display()))?;
    let so = AuthPin::from(SO_PIN);
    let user = AuthPin::from(USER_PIN);
    let mut made = Vec::new();
    for i in 0..count {
        initialize(&p)?;
        let mut free = None;
        for slot in p.get_slots_with_token().context("C_GetSlotList")? {
            if !p
                .get_token_info(slot)
                .context("C_GetTokenInfo")?
                .token_initialized()
            {
                free = Some(slot);
                break;
            }
        }
        let slot = free.context("no free SoftHSM2 slot")?;
        let label = if count == 1 {
            prefix.to_owned()
        } else {
            format!("{prefix}{i}")
        };
        p.init_token(slot, &so, &label).context("C_InitToken")?;
        {
            let s = p.open_rw_session(slot).context("C_OpenSession")?;
            s.login(UserType::So, Some(&so)).context("C_Login SO")?;
            s.init_pin(&user).context("C_InitPIN")?;
            s.logout().context("C_Logout")?;
            s.login(UserType::User, Some(&user)).context("C_Login")?;
            for j in 0..certs {
                s.create_object(&[
                    Attribute::Class(ObjectClass::CERTIFICATE),
                    Attribute::CertificateType(CertificateType::X_509),
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::Id((j as u16).to_be_bytes().to_vec()),
                    Attribute::Label(format!("cert {j}").into_bytes()),
                    Attribute::Subject(subject_der(HOLDER)),
                    Attribute::Value(der.to_vec()),
                ])
                .context("C_CreateObject")?;
            }
        }
        let serial = p
            .get_token_info(slot)
            .context("C_GetTokenInfo")?
            .serial_number()
            .trim_end()
            .to_owned();
        made.push((label, serial));
        p.clone().finalize().context("C_Finalize")?;
    }
    Ok(made)
}

fn tokens(args: &Args) -> Result<()> {
    let der_path = args.get("cert").context("--cert FILE.der is required")?;
    let der = std::fs::read(der_path).with_context(|| format!("reading {der_path}"))?;
    let made = make_tokens(
        &args.module(),
        args.num("count", 1)?,
        args.num("certs", 1)?,
        args.get("label").unwrap_or("bench"),
        &der,
    )?;
    for (label, serial) in made {
        println!(
            "{}",
            serde_json::json!({ "label": label, "serial": serial })
        );
    }
    Ok(())
}

struct Softhsm {
    conf: PathBuf,
    tokendir: PathBuf,
}

impl Softhsm {
    fn new(dir: &Path) -> Result<Self> {
        let tokendir = dir.join("tokens");
        std::fs::create_dir_all(&tokendir)?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokendir.display()
            ),
        )?;
        Ok(Self { conf, tokendir })
    }

    fn make(&self, count: u64, certs: u64, label: &str, cert: &Path) -> Result<Vec<String>> {
        let out = Command::new(std::env::current_exe()?)
            .args([
                "tokens",
                "--count",
                &count.to_string(),
                "--certs",
                &certs.to_string(),
            ])
            .args(["--label", label, "--cert"])
            .arg(cert)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()?;
        if !out.status.success() {
            bail!("making tokens: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)?;
                Ok(v["serial"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    /// The token directory of a serial: SoftHSM2 names it by a UUID ending in the serial.
    fn token_dir(&self, serial: &str) -> Result<PathBuf> {
        for entry in std::fs::read_dir(&self.tokendir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().replace('-', ""))
                .unwrap_or_default();
            if name.ends_with(serial) {
                return Ok(path);
            }
        }
        bail!(
            "no token directory for serial {serial} in {}",
            self.tokendir.display()
        )
    }
}

fn self_signed_cert(dir: &Path) -> Result<PathBuf> {
    let der = dir.join("cert.der");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", &format!("/CN={HOLDER}"), "-days", "365"])
        .args(["-outform", "DER", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(&der)
        .stderr(Stdio::null())
        .status()
        .context("running openssl")?;
    if !status.success() {
        bail!("openssl could not make a test certificate");
    }
    Ok(der)
}

fn run(args: &Args) -> Result<()> {
    let custody = PathBuf::from(args.get("custody").context("--custody PATH is required")?);
    let interval = Duration::from_millis(args.num("interval", 2000)?);
    let idle_secs = args.num("idle", 60)?;
    let impl_secs = args.num("impl-idle", 30)?;
    let insertions = args.num("insertions", 20)?;
    let dir = match args.get("dir") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("custody-watch-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let setup = Setup {
        custody: custody.clone(),
        floor: std::env::current_exe()?.with_file_name("custody-floor"),
        interval,
        dir: dir.clone(),
        config: dir.join("custody.toml"),
        baseline: args.get("baseline").map(PathBuf::from),
    };
    // The implementations' carriers are made by custody-fixtures, built next to this program.
    if std::env::var_os("CUSTODY_FIXTURES_BIN").is_none() {
        std::env::set_var(
            "CUSTODY_FIXTURES_BIN",
            std::env::current_exe()?.with_file_name("custody-fixtures"),
        );
    }
    // The configuration of a real deployment: the order spool is processed (its task runs
    // after every poll); the system's /etc/custody/custody.toml must not apply.
    let key = dir.join("signer");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key)
        .status()
        .context("running ssh-keygen")?;
    if !status.success() {
        bail!("ssh-keygen could not make a signer key");
    }
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    std::fs::write(
        dir.join("allowed_signers"),
        format!(
            "bench@example.org namespaces=\"custody-order\" {}",
            public.trim()
        ),
    )?;
    std::fs::create_dir_all(dir.join("spool"))?;
    let orders = format!(
        "[orders]\nallowed_signers = \"{}\"\n[service]\nspool = \"{}\"\n",
        dir.join("allowed_signers").display(),
        dir.join("spool").display()
    );
    std::fs::write(&setup.config, &orders)?;
    let cert = self_signed_cert(&dir)?;
    let live = Softhsm::new(&dir.join("live"))?;
    let more = Softhsm::new(&dir.join("more"))?;
    let stage = Softhsm::new(&dir.join("stage"))?;
    eprintln!("building tokens in {} …", dir.display());
    // The idle sets: every size asked for (default 1, 10 and 100 tokens with one
    // certificate each), made once and moved into the watched directory as the size grows.
    let sizes: Vec<usize> = args
        .get("sizes")
        .unwrap_or("1,10,100")
        .split(',')
        .filter(|n| !n.trim().is_empty())
        .map(|n| n.trim().parse().with_context(|| format!("--sizes {n}")))
        .collect::<Result<_>>()?;
    let largest = sizes.iter().copied().max().unwrap_or(1).max(10);
    live.make(1, 1, "present", &cert)?;
    let more_serials = more.make(largest as u64 - 1, 1, "present", &cert)?;
    let staged = stage.make(insertions, 1, "inserted", &cert)?;
    let softhsm = |hsm: &Softhsm| Target {
        module: args.module(),
        env: vec![("SOFTHSM2_CONF".into(), hsm.conf.clone().into_os_string())],
    };

    let mut idles: Vec<(String, Idle)> = Vec::new();
    let mut moved = 1;
    for &size in &sizes {
        for serial in
            &more_serials[(moved - 1).min(more_serials.len())..(size - 1).min(more_serials.len())]
        {
            let from = more.token_dir(serial)?;
            std::fs::rename(
                &from,
                live.tokendir.join(from.file_name().context("dir name")?),
            )?;
        }
        moved = moved.max(size);
        eprintln!("idle, SoftHSM2, {size} token(s): {idle_secs} s …");
        let r = idle(&setup, &softhsm(&live), idle_secs, &format!("idle{size}"))?;
        idles.push((
            format!("SoftHSM2, {size} token{}", if size == 1 { "" } else { "s" }),
            r,
        ));
    }

    // Every other implementation the test harness sets up, one carrier each.
    let names: Vec<&str> = args
        .get("impls")
        .unwrap_or("kryoptic,tpm2-pkcs11,p11-kit-remote,opensc")
        .split(',')
        .filter(|n| !n.trim().is_empty())
        .collect();
    let mut versions = Vec::new();
    let mut not_measured = Vec::new();
    for name in names {
        eprintln!("idle, {name}, 1 token: {impl_secs} s …");
        match implementation_idle(&setup, name.trim(), impl_secs) {
            Ok((version, r)) => {
                versions.push(version);
                idles.push((format!("{name}, 1 token"), r));
            }
            Err(e) => not_measured.push(format!("{name}: {e:#}")),
        }
    }

    // `[fleet]` configured, nothing to send: two services side by side on one token.
    let fleet = if args.get("fleet").is_some_and(|v| v == "0") {
        None
    } else {
        eprintln!("idle with [fleet], 1 token: {idle_secs} s …");
        let one = Softhsm::new(&dir.join("fleet"))?;
        one.make(1, 1, "present", &cert)?;
        Some(fleet_idle(&setup, &softhsm(&one), &orders, idle_secs))
    };

    // The latency runs with (at least) 10 tokens present.
    if moved < 10 {
        for serial in &more_serials[moved - 1..9] {
            let from = more.token_dir(serial)?;
            std::fs::rename(
                &from,
                live.tokendir.join(from.file_name().context("dir name")?),
            )?;
        }
    }

    eprintln!("latency: {insertions} insertions …");
    let service = setup.custody(&softhsm(&live), "latency", None)?;
    let mut tail = LogTail::open(&dir.join("latency.log"))?;
    tail.wait_recorded("carrier_enrolled", "", Duration::from_secs(30))?;
    let mut latencies = Vec::new();
    let mut seed = u64::from(std::process::id()) | 1;
    for serial in &staged {
        // A random phase against the poll timer (xorshift; no dependency needed).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let phase = interval.mul_f64((seed % 1000) as f64 / 1000.0);
        std::thread::sleep(phase);
        let from = stage.token_dir(serial)?;
        let to = live.tokendir.join(from.file_name().context("dir name")?);
        let inserted = SystemTime::now();
        std::fs::rename(&from, &to)?;
        let recorded = tail.wait_recorded(
            "carrier_enrolled",
            serial,
            interval + Duration::from_secs(10),
        )?;
        latencies.push(recorded.duration_since(inserted).unwrap_or_default());
    }
    let exit = service.stop()?;
    let verify = Command::new(&custody)
        .arg("--journal")
        .arg(dir.join("latency.db"))
        .args(["journal", "verify"])
        .env("CUSTODY_CONFIG", &setup.config)
        .stdout(Stdio::null())
        .status()?;
    latencies.sort();

    let version = Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "custody watch benchmark: SoftHSM {version}, interval {}, {} CPU(s), load average at the end {}",
        ms(interval),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    for v in &versions {
        println!("  also: {v}");
    }
    println!();
    println!(
        "insertion -> committed journal row ({} insertions at random phases of the poll timer, {} tokens present):",
        latencies.len(),
        moved.max(10)
    );
    let target = interval + Duration::from_millis(20);
    let p99 = percentile(&latencies, 99.0);
    println!(
        "  p50 {}   p99 {}   max {}   target p99 <= {}: {}",
        ms(percentile(&latencies, 50.0)),
        ms(p99),
        ms(latencies.last().copied().unwrap_or_default()),
        ms(target),
        if p99 <= target { "met" } else { "MISSED" }
    );
    println!(
        "  journal verifies: {}; service exit code on SIGTERM: {:?}",
        verify.success(),
        exit
    );
    println!();
    println!(
        "idle (SoftHSM2 over {idle_secs} s, the others over {impl_secs} s; CPU time: exact, from schedstat; RSS: VmHWM):"
    );
    println!("{}", header());
    for (label, r) in &idles {
        println!("{}", row(label, r));
    }
    for n in &not_measured {
        println!("  NOT MEASURED: {n}");
    }
    if let Some(fleet) = fleet {
        println!();
        match fleet {
            Ok(f) => println!("{f}"),
            Err(e) => println!("idle with [fleet]: NOT MEASURED: {e:#}"),
        }
    }
    if args.get("keep").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Starts the implementation `name` with one carrier and measures the service next to its
/// floor; returns the versions in use and the figures.
fn implementation_idle(setup: &Setup, name: &str, secs: u64) -> Result<(String, Idle)> {
    let dir = setup.dir.join(format!("impl-{name}"));
    std::fs::create_dir_all(&dir)?;
    let mut instance = implementation(name)?
        .start(&dir)
        .with_context(|| format!("{name} could not be set up"))?;
    instance.insert("present")?;
    let target = Target {
        module: instance.module().to_path_buf(),
        env: instance.env(),
    };
    let r = idle(setup, &target, secs, &format!("impl-{name}"))?;
    Ok((instance.version(), r))
}

/// `custody watch` with `[fleet]` (sync every 10 s to a private PostgreSQL cluster, the
/// journal unchanged after the first sync) next to the same service without it, over
/// `secs`: the whole processes' CPU, and the sync thread's own.
fn fleet_idle(setup: &Setup, target: &Target, orders: &str, secs: u64) -> Result<String> {
    use secrecy::ExposeSecret as _;
    let pg = Postgres::start(&PgOptions {
        durable: true,
        ..PgOptions::default()
    })?;
    let db = pg.database("idle")?;
    let mut owner = Fleet::connect(&Database::parse(&pg.url("postgres", &db))?)?;
    owner.init()?;
    let enrolled = owner.enroll_agent("ws-idle", false)?;
    let password = setup.dir.join("fleet.password");
    std::fs::write(&password, enrolled.password.expose_secret())?;
    std::fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let with = setup.dir.join("with-fleet.toml");
    std::fs::write(
        &with,
        format!(
            "{orders}[fleet]\ndatabase = \"{}\"\npassword_file = \"{}\"\ninterval = \"10s\"\n",
            pg.url(&enrolled.role, &db),
            password.display(),
        ),
    )?;
    let a = setup.custody(target, "with-fleet", Some(&with))?;
    let mut tail = LogTail::open(&setup.dir.join("with-fleet.log"))?;
    tail.wait_recorded("carrier_enrolled", "", Duration::from_secs(30))?;
    std::thread::sleep(setup.interval / 2);
    let b = setup.custody(target, "without-fleet", None)?;
    let mut tail = LogTail::open(&setup.dir.join("without-fleet.log"))?;
    tail.wait_recorded("carrier_enrolled", "", Duration::from_secs(30))?;
    // Past the first sync (which sends the enrollment) and two quiet intervals.
    let state = setup.dir.join("with-fleet.fleet.json");
    let until = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&state).is_ok_and(|t| t.contains("last_success")) {
        ensure!(Instant::now() < until, "the first sync did not succeed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The journal changed during the first sync (the service's first checkpoint), so one
    // more sync follows an interval later; from then on nothing is sent.
    std::thread::sleep(Duration::from_secs(12));
    let thread0 = thread_cpu_time(a.pid(), "fleet-sync")?;
    let (cpu, took) = cpu_over(&[a.pid(), b.pid()], secs)?;
    let thread = thread_cpu_time(a.pid(), "fleet-sync")? - thread0;
    let rss = (peak_rss_kib(a.pid())?, peak_rss_kib(b.pid())?);
    drop((a, b));
    let (with, without) = (cpu[0].as_secs_f64(), cpu[1].as_secs_f64());
    Ok(format!(
        "idle over {took:.0} s with [fleet] (sync every 10 s, nothing to send), SoftHSM2, 1 token:\n  \
         with [fleet] {:.1} ms CPU, without {:.1} ms CPU: added {:+.1} % (goal ≤ 5 %: {}); \
         the sync thread itself {:.2} ms ({:.2} % of the service without [fleet]); \
         RSS {:.1} / {:.1} MiB",
        with * 1000.0,
        without * 1000.0,
        (with / without.max(1e-9) - 1.0) * 100.0,
        if with <= without * 1.05 { "met" } else { "MISSED" },
        thread.as_secs_f64() * 1000.0,
        thread.as_secs_f64() / without.max(1e-9) * 100.0,
        rss.0 as f64 / 1024.0,
        rss.1 as f64 / 1024.0,
    ))
}
