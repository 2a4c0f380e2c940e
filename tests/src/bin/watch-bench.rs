//! `watch-bench`: the benchmark of `custody watch` (run by `bench/watch.sh`), its floor, and
//! the SoftHSM2 token maker the service tests use.
//!
//! ```text
//! watch-bench tokens --count N [--certs K] [--label PREFIX] --cert FILE.der [--module PATH]
//!     Creates N initialised tokens (SO PIN 12345678, user PIN 123456) with K certificate
//!     objects each in the SoftHSM2 of $SOFTHSM2_CONF, in-process through cryptoki (about
//!     four times faster than pkcs11-tool). Prints one JSON line per token: label, serial.
//! watch-bench run --custody PATH [--interval MS] [--idle SECS] [--insertions N]
//!                 [--sizes 1,10,100] [--dir DIR] [--module PATH]
//!     The benchmark: insertion latency and idle cost of `custody watch` with each number of
//!     tokens in `--sizes` present (CPU per poll, goal ≤ 1.15 × the floor; peak RSS, goal ≤
//!     the floor's + 3 MiB) next to the floor,
//!     `custody-floor MODULE --poll MS --reinit` (the module's own minimal poll: C_Finalize +
//!     C_Initialize, then C_GetSlotList, every interval), run at the same time.
//! ```
//!
//! The PINs above belong to throw-away test tokens; they are not secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, CertificateType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use custody_tests::bench::{cpu_time, ms, peak_rss_kib, percentile, LogTail};

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

/// Child processes killed on drop.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits; returns the exit code.
    fn stop(mut self) -> Result<Option<i32>> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        let status = self.child.wait()?;
        Ok(status.code())
    }
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

struct Setup<'a> {
    custody: &'a Path,
    module: PathBuf,
    interval: Duration,
    dir: PathBuf,
}

impl Setup<'_> {
    fn custody(&self, hsm: &Softhsm, journal: &Path, log: &Path) -> Result<Running> {
        let log = std::fs::File::create(log)?;
        let child = Command::new(self.custody)
            .arg("--journal")
            .arg(journal)
            .arg("--module")
            .arg(&self.module)
            .args(["--log-format", "json", "watch", "--interval"])
            .arg(format!("{}ms", self.interval.as_millis()))
            .env("SOFTHSM2_CONF", &hsm.conf)
            .env("CUSTODY_CONFIG", self.dir.join("custody.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting custody watch")?;
        Ok(Running { child })
    }

    /// `custody-floor` (built next to this program) polling like the service, for `secs`.
    fn floor(&self, hsm: &Softhsm, secs: u64) -> Result<Running> {
        let floor = std::env::current_exe()?.with_file_name("custody-floor");
        let child = Command::new(&floor)
            .arg(&self.module)
            .args(["--poll", &self.interval.as_millis().to_string()])
            .args(["--for", &secs.to_string(), "--reinit"])
            .env("SOFTHSM2_CONF", &hsm.conf)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", floor.display()))?;
        Ok(Running { child })
    }
}

struct Idle {
    tokens: usize,
    custody_cpu: Duration,
    floor_cpu: Duration,
    polls: f64,
    custody_rss: u64,
    floor_rss: u64,
    exit: Option<i32>,
}

fn idle(setup: &Setup<'_>, hsm: &Softhsm, tokens: usize, secs: u64, name: &str) -> Result<Idle> {
    let journal = setup.dir.join(format!("{name}.db"));
    let log = setup.dir.join(format!("{name}.log"));
    let custody = setup.custody(hsm, &journal, &log)?;
    // The first poll enrolls the tokens present. The floor starts half an interval later,
    // so that the two never poll at the same moment (on a small machine, simultaneous
    // wake-ups slow each other down and make the comparison noisy).
    let mut tail = LogTail::open(&log)?;
    tail.wait_recorded("carrier_enrolled", "", Duration::from_secs(30))?;
    std::thread::sleep(setup.interval / 2);
    let floor = setup.floor(hsm, secs + 60)?;
    // Warm up: two quiet intervals.
    std::thread::sleep(setup.interval * 2);
    let (c0, f0, t0) = (
        cpu_time(custody.pid())?,
        cpu_time(floor.pid())?,
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, f1, t1) = (
        cpu_time(custody.pid())?,
        cpu_time(floor.pid())?,
        Instant::now(),
    );
    let result = Idle {
        tokens,
        custody_cpu: c1 - c0,
        floor_cpu: f1 - f0,
        polls: (t1 - t0).as_secs_f64() / setup.interval.as_secs_f64(),
        custody_rss: peak_rss_kib(custody.pid())?,
        floor_rss: peak_rss_kib(floor.pid())?,
        exit: None,
    };
    drop(floor);
    Ok(Idle {
        exit: custody.stop()?,
        ..result
    })
}

fn run(args: &Args) -> Result<()> {
    let custody = PathBuf::from(args.get("custody").context("--custody PATH is required")?);
    let interval = Duration::from_millis(args.num("interval", 2000)?);
    let idle_secs = args.num("idle", 60)?;
    let insertions = args.num("insertions", 20)?;
    let dir = match args.get("dir") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("custody-watch-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let setup = Setup {
        custody: &custody,
        module: args.module(),
        interval,
        dir: dir.clone(),
    };
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
    std::fs::write(
        dir.join("custody.toml"),
        format!(
            "[orders]\nallowed_signers = \"{}\"\n[service]\nspool = \"{}\"\n",
            dir.join("allowed_signers").display(),
            dir.join("spool").display()
        ),
    )?;
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
        .map(|n| n.trim().parse().with_context(|| format!("--sizes {n}")))
        .collect::<Result<_>>()?;
    let largest = sizes.iter().copied().max().unwrap_or(1).max(10);
    live.make(1, 1, "present", &cert)?;
    let more_serials = more.make(largest as u64 - 1, 1, "present", &cert)?;
    let staged = stage.make(insertions, 1, "inserted", &cert)?;

    let mut idles = Vec::new();
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
        eprintln!("idle, {size} token(s): {idle_secs} s …");
        idles.push(idle(
            &setup,
            &live,
            size,
            idle_secs,
            &format!("idle{size}"),
        )?);
    }
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
    let journal = dir.join("latency.db");
    let log = dir.join("latency.log");
    let service = setup.custody(&live, &journal, &log)?;
    let mut tail = LogTail::open(&log)?;
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
        .arg(&journal)
        .args(["journal", "verify"])
        .env("CUSTODY_CONFIG", dir.join("custody.toml"))
        .stdout(Stdio::null())
        .status()?;
    latencies.sort();

    let version = Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "custody watch benchmark: SoftHSM {version}, interval {}, {} CPU(s)",
        ms(interval),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
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
    println!("idle over {idle_secs} s (CPU time: exact, from schedstat; RSS: VmHWM):");
    println!(
        "  {:<10} {:>24} {:>24} {:>6} {:>6}   {:>14} {:>14} {:>14}",
        "present",
        "custody CPU",
        "floor CPU",
        "ratio",
        "≤ 1.15",
        "custody RSS",
        "floor RSS",
        "≤ floor+3 MiB"
    );
    for r in &idles {
        let ratio = r.custody_cpu.as_secs_f64() / r.floor_cpu.as_secs_f64().max(1e-9);
        let cpu =
            |d: Duration| format!("{} ({:.0} µs/poll)", ms(d), d.as_secs_f64() * 1e6 / r.polls);
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "  {:<10} {:>24} {:>24} {:>6.2} {:>6}   {:>10.1} MiB {:>10.1} MiB {:>14}",
            format!("{} token{}", r.tokens, if r.tokens == 1 { "" } else { "s" }),
            cpu(r.custody_cpu),
            cpu(r.floor_cpu),
            ratio,
            verdict(ratio <= 1.15),
            r.custody_rss as f64 / 1024.0,
            r.floor_rss as f64 / 1024.0,
            verdict(r.custody_rss <= r.floor_rss + 3 * 1024),
        );
        if r.exit != Some(0) {
            println!("  (custody exited with {:?} on SIGTERM)", r.exit);
        }
    }
    if args.get("keep").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
