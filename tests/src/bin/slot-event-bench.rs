//! `slot-event-bench`: `custody watch` on a module with slot events, OpenSC's PKCS#11 module
//! over a private pcscd with a virtual card in vsmartcard's reader (run by `bench/watch.sh`).
//!
//! ```text
//! slot-event-bench --custody PATH [--cycles N] [--floor-cycles N] [--idle SECS]
//!                  [--interval MS] [--dir DIR] [--keep 1]
//! ```
//!
//! Measured, in one run:
//!
//! - **removal -> committed journal row**: the card is pulled at pcscd's presence poll (the
//!   virtual card closes its connection when pcscd asks for its ATR, so the instant pcscd
//!   sees it gone is known exactly); the time of the service's `recorded carrier_removed`
//!   log line (written after the commit) minus that instant. pcscd itself polls a vpcd
//!   reader every 400 ms: that delay comes before the event and is reported apart.
//! - **insertion -> committed journal row**: from pcscd's first ATR request (the card seen)
//!   to the `recorded carrier_seen` line; next to it the card's own read time (first to last
//!   command the card answered for this insertion) and what remains after the read.
//! - **the card's read floor**: `custody-floor` reading the card once (OpenSC's driver probe
//!   and PKCS#15 bind, then the objects) — the least any PKCS#11 reader needs.
//! - **idle** over SECS with the card present: CPU time of the service (blocked in
//!   C_WaitForSlotEvent on a thread of its own, and polling every interval as the fallback),
//!   of `custody-floor --poll` (the module's own C_GetSlotList every interval) and of pcscd.
//! - **the floor of the same cycles** (`--floor-cycles`, default as many as `--cycles`, 0 to
//!   leave it out), before the service starts: `custody-floor --events`, a minimal cryptoki
//!   loop (C_WaitForSlotEvent, C_GetSlotInfo, the token's read, one durable single-row SQLite
//!   commit with the journal's pragmas next to the journal), measured from the same pcscd
//!   instants to its commit; the service's figures are then reported as custody minus that
//!   floor. During the service's cycles the bench also times one such commit between events
//!   (`bench::floor::CommitProbe`), the disk's share at the same moments.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};
use custody_tests::bench::floor::{at_unix_us, CommitProbe, FloorEvent, FloorLog};
use custody_tests::bench::{cpu_time, ms, peak_rss_kib, percentile, LogTail};
use custody_tests::pcsc::Reader;
use custody_tests::pkcs15::{CardSpec, Pkcs15Card};
use custody_tests::smartcard::VirtualCard;

/// Child processes killed on drop (by their pid).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, then waits; returns the exit code.
    fn stop(mut self) -> Result<Option<i32>> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        Ok(self.0.wait()?.code())
    }
}

struct Options {
    custody: PathBuf,
    cycles: u64,
    floor_cycles: u64,
    idle: u64,
    interval: Duration,
    dir: PathBuf,
    keep: bool,
}

impl Options {
    fn parse() -> Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let get = |name: &str| {
            args.iter()
                .position(|a| a == &format!("--{name}"))
                .and_then(|i| args.get(i + 1))
        };
        let num = |name: &str, default: u64| -> Result<u64> {
            get(name).map_or(Ok(default), |v| {
                v.parse().with_context(|| format!("--{name} {v}"))
            })
        };
        Ok(Self {
            custody: PathBuf::from(
                get("custody").context("usage: slot-event-bench --custody PATH [options]")?,
            ),
            cycles: num("cycles", 30)?,
            floor_cycles: num("floor-cycles", num("cycles", 30)?)?,
            idle: num("idle", 60)?,
            interval: Duration::from_millis(num("interval", 2000)?),
            dir: get("dir").map_or_else(
                || std::env::temp_dir().join(format!("custody-slot-bench-{}", std::process::id())),
                PathBuf::from,
            ),
            keep: get("keep").is_some(),
        })
    }
}

fn main() -> std::process::ExitCode {
    match Options::parse().and_then(|o| run(&o)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slot-event-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// A small xorshift: random phases without a dependency.
struct Phase(u64);

impl Phase {
    fn next(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 % 1000) as f64 / 1000.0)
    }
}

fn after(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// Where one event's time went: from pcscd seeing the change to the row, in the steps the
/// service's debug log (`slot event handled`) stamps.
#[derive(Debug, Clone, Copy, Default)]
struct Split {
    /// pcscd saw the change -> C_WaitForSlotEvent returned (pcscd's notice, OpenSC; for an
    /// insertion also OpenSC's bind of the card, inside the wait).
    module: Duration,
    /// -> the worker took the event up.
    queued: Duration,
    /// -> the slot's state known (C_GetSlotInfo, and for a token the read of it).
    read: Duration,
    /// -> the journal transaction began (compare with the journal).
    prepare: Duration,
    /// -> COMMIT issued (events appended, state updated).
    write: Duration,
    /// COMMIT: the WAL's fsync.
    commit: Duration,
    /// committed -> the row's log line.
    logged: Duration,
    /// Only the slot was read (not a full poll).
    one_slot: bool,
}

impl Split {
    /// From the service's `slot event handled` fields, pcscd's instant and the row's time;
    /// `None` when the event's own transaction did not write the row (the poll every interval
    /// was running when the event came, and recorded the change first).
    fn from_log(f: &serde_json::Value, seen: SystemTime, row: SystemTime) -> Result<Option<Self>> {
        let us = |name: &str| -> Result<Duration> {
            f[name]
                .as_u64()
                .map(Duration::from_micros)
                .with_context(|| format!("no {name} in {f}"))
        };
        if f["committed"] != true {
            return Ok(None);
        }
        let event = SystemTime::UNIX_EPOCH + us("event_unix_us")?;
        let (queued, read, prepare, write, commit) = (
            us("queued_us")?,
            us("read_us")?,
            us("prepare_us")?,
            us("write_us")?,
            us("commit_us")?,
        );
        let committed = event + queued + read + prepare + write + commit;
        Ok(Some(Self {
            module: after(event, seen),
            queued,
            read,
            prepare,
            write,
            commit,
            logged: after(row, committed),
            one_slot: f["one_slot"] == true,
        }))
    }

    /// custody's own share: everything but the module's and the disk's.
    fn custody(&self) -> Duration {
        self.queued + self.read + self.prepare + self.write + self.logged
    }
}

/// `n` appends of 4 KiB to a file in `dir`, each followed by fsync: the disk's own share of
/// a commit, measured on the journal's disk at the same time.
fn fsync_samples(dir: &std::path::Path, n: usize) -> Result<Vec<Duration>> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fsync-probe"))?;
    let page = [0x5au8; 4096];
    (0..n)
        .map(|_| {
            let start = Instant::now();
            f.write_all(&page)?;
            f.sync_all()?;
            Ok(start.elapsed())
        })
        .collect()
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

struct Cycle {
    /// pulled at the poll -> row
    removal: Duration,
    removal_split: Option<Split>,
    insertion_split: Option<Split>,
    /// pcscd saw the card -> row
    insertion: Duration,
    /// pcscd saw the card -> last command answered before the row
    read: Duration,
    /// commands answered for this insertion
    commands: u64,
}

fn run(o: &Options) -> Result<()> {
    let _ = std::fs::remove_dir_all(&o.dir);
    std::fs::create_dir_all(&o.dir)?;
    let reader = Reader::start(&o.dir).context("starting pcscd with a vpcd reader")?;
    let card = Pkcs15Card::generate(&CardSpec::new("bench card", "slot-event-bench"))?;
    let serial = card.spec.serial_hex();

    // The card's read floor: one minimal PKCS#11 read of the card, in a fresh process.
    let inserted = reader.insert(&card.image)?;
    inserted.wait_detected(Duration::from_secs(10))?;
    let floor_bin = std::env::current_exe()?.with_file_name("custody-floor");
    inserted.restart_timeline();
    let started = Instant::now();
    let out = Command::new(&floor_bin)
        .arg(reader.module())
        .envs(reader.env())
        .output()
        .with_context(|| format!("running {}", floor_bin.display()))?;
    let floor_wall = started.elapsed();
    if !out.status.success() {
        bail!("custody-floor: {}", String::from_utf8_lossy(&out.stderr));
    }
    let t = inserted.timeline();
    let floor_commands = t.commands;
    let floor_read = match (t.first_command, t.last_command) {
        (Some(first), Some(last)) => after(last, first),
        _ => Duration::ZERO,
    };
    inserted.remove();
    std::thread::sleep(Duration::from_secs(1));

    let mut phase = Phase(u64::from(std::process::id()) | 1);
    let floor_run = if o.floor_cycles > 0 {
        eprintln!(
            "the floor (custody-floor --events): {} removals and insertions …",
            o.floor_cycles
        );
        let run = floor_cycles(o, &reader, &card, &floor_bin, &mut phase)?;
        std::thread::sleep(Duration::from_secs(1));
        Some(run)
    } else {
        None
    };

    let journal = o.dir.join("journal.db");
    let log = o.dir.join("watch.log");
    let service = Running(
        Command::new(&o.custody)
            .arg("--journal")
            .arg(&journal)
            .arg("--module")
            .arg(reader.module())
            .args(["--log-format", "json", "watch", "--interval"])
            .arg(format!("{}ms", o.interval.as_millis()))
            .envs(reader.env())
            .env("CUSTODY_CONFIG", "/dev/null")
            // The worker's debug lines: `slot event handled` stamps each step of an event.
            .env("CUSTODY_LOG", "info,custody_agent::worker=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting custody watch")?,
    );
    let mut tail = LogTail::open(&log)?;
    // Enrollment first (not measured: the first read of a new carrier).
    let mut present = reader.insert(&card.image)?;
    tail.wait_recorded("carrier_enrolled", &serial, Duration::from_secs(30))?;

    eprintln!("slot events: {} removals and insertions …", o.cycles);
    let mut cycles = Vec::new();
    let mut gaps = Vec::new();
    let mut fsyncs = Vec::new();
    let mut probe = CommitProbe::open(&o.dir, "commit-probe.db")?;
    let mut commits = Vec::new();
    let mut loads = vec![load_average()];
    for _ in 0..o.cycles {
        std::thread::sleep(phase.next(o.interval));
        let asked = SystemTime::now();
        let removed = present.remove_at_next_poll(Duration::from_secs(5))?;
        let pulled = removed.pulled.context("pulled")?;
        let row = tail.wait_recorded("carrier_removed", &serial, Duration::from_secs(30))?;
        let removal = after(row, pulled);
        let (fields, _) = tail.wait_message("slot event handled", Duration::from_secs(5))?;
        let removal_split = Split::from_log(&fields, pulled, row)?;
        gaps.push(after(pulled, asked));
        fsyncs.extend(fsync_samples(&o.dir, 2)?);
        commits.push(probe.commit_one()?);
        // Out for a while (longer than pcscd's 400 ms poll), then back in.
        std::thread::sleep(Duration::from_millis(500) + phase.next(o.interval));
        present = reader.insert(&card.image)?;
        let row = tail.wait_recorded("carrier_seen", &serial, Duration::from_secs(30))?;
        let t = present.timeline();
        let detected = t.detected.context("detected")?;
        let (fields, _) = tail.wait_message("slot event handled", Duration::from_secs(5))?;
        let insertion_split = Split::from_log(&fields, detected, row)?;
        fsyncs.extend(fsync_samples(&o.dir, 2)?);
        commits.push(probe.commit_one()?);
        loads.push(load_average());
        cycles.push(Cycle {
            removal,
            removal_split,
            insertion_split,
            insertion: after(row, detected),
            read: t
                .last_command
                .map_or(Duration::ZERO, |l| after(l, detected)),
            commands: t.commands,
        });
    }

    eprintln!("idle with the card present: {} s …", o.idle);
    std::thread::sleep(o.interval * 2);
    let floor = Running(
        Command::new(&floor_bin)
            .arg(reader.module())
            .args(["--poll", &o.interval.as_millis().to_string()])
            .args(["--for", &(o.idle + 30).to_string()])
            .envs(reader.env())
            .stdout(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(o.interval);
    let pids = [service.pid(), floor.pid(), reader.pid()];
    let start: Vec<Duration> = pids.iter().map(|p| cpu_time(*p)).collect::<Result<_>>()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(o.idle));
    let end: Vec<Duration> = pids.iter().map(|p| cpu_time(*p)).collect::<Result<_>>()?;
    let idle_wall = t0.elapsed();
    let rss = [peak_rss_kib(service.pid())?, peak_rss_kib(floor.pid())?];
    drop(floor);
    let polls = idle_wall.as_secs_f64() / o.interval.as_secs_f64();
    let exit = service.stop()?;
    drop(present);
    let verify = Command::new(&o.custody)
        .arg("--journal")
        .arg(&journal)
        .args(["journal", "verify"])
        .env("CUSTODY_CONFIG", "/dev/null")
        .stdout(Stdio::null())
        .status()?;

    report(o, &cycles, &gaps, (floor_read, floor_commands, floor_wall));
    split_report(&cycles, &fsyncs, &commits, &loads);
    println!(
        "  journal verifies: {}; service exit code on SIGTERM: {exit:?}",
        verify.success()
    );
    if let Some(floor) = &floor_run {
        floor_report(floor, &cycles);
    }
    println!();
    println!(
        "idle over {} s, card present, interval {} (CPU time from schedstat; RSS: VmHWM):",
        o.idle,
        ms(o.interval)
    );
    let names = [
        "custody watch (slot-event thread + polling)",
        "custody-floor --poll (C_GetSlotList only)",
        "pcscd (polls the vpcd reader every 400 ms)",
    ];
    for (i, name) in names.iter().enumerate() {
        let cpu = end[i].saturating_sub(start[i]);
        let rss = rss
            .get(i)
            .map(|k| format!("   RSS {:.1} MiB", *k as f64 / 1024.0))
            .unwrap_or_default();
        println!(
            "  {name:<46} {:>10} ({:.0} µs per interval){rss}",
            ms(cpu),
            cpu.as_secs_f64() * 1e6 / polls
        );
    }
    if !o.keep {
        drop(reader);
        let _ = std::fs::remove_dir_all(&o.dir);
    }
    Ok(())
}

fn report(o: &Options, cycles: &[Cycle], gaps: &[Duration], floor: (Duration, u64, Duration)) {
    let sorted = |f: &dyn Fn(&Cycle) -> Duration| {
        let mut v: Vec<Duration> = cycles.iter().map(f).collect();
        v.sort();
        v
    };
    let line = |name: &str, v: &[Duration], target: Option<Duration>| {
        let p99 = percentile(v, 99.0);
        let verdict = target.map_or(String::new(), |t| {
            format!(
                "   target p99 <= {}: {}",
                ms(t),
                if p99 <= t { "met" } else { "MISSED" }
            )
        });
        println!(
            "  {name:<44} p50 {:>9}   p99 {:>9}   max {:>9}{verdict}",
            ms(percentile(v, 50.0)),
            ms(p99),
            ms(v.last().copied().unwrap_or_default())
        );
    };
    let first_line = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let version = format!(
        "{}, {}",
        first_line("opensc-tool", "--info"),
        first_line("/usr/sbin/pcscd", "--version")
    );
    println!(
        "custody watch on OpenSC over pcscd with a virtual card ({version}), interval {}, {} CPU(s)",
        ms(o.interval),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!(
        "slot events ({} removals and insertions at random phases):",
        cycles.len()
    );
    let mut g = gaps.to_vec();
    g.sort();
    line("pull asked -> pcscd's poll sees it (vpcd)", &g, None);
    line(
        "removal seen by pcscd -> row",
        &sorted(&|c| c.removal),
        Some(Duration::from_millis(20)),
    );
    line(
        "insertion seen by pcscd -> row",
        &sorted(&|c| c.insertion),
        None,
    );
    line(
        "  of which the card's read (first..last command)",
        &sorted(&|c| c.read),
        None,
    );
    line(
        "  after the read -> row",
        &sorted(&|c| c.insertion.saturating_sub(c.read)),
        Some(Duration::from_millis(20)),
    );
    let commands: Vec<u64> = cycles.iter().map(|c| c.commands).collect();
    println!(
        "  commands per insertion: {:?}..{:?}; the read floor (custody-floor, one read): {} commands, {} of card traffic, {} in all",
        commands.iter().min().unwrap_or(&0),
        commands.iter().max().unwrap_or(&0),
        floor.1,
        ms(floor.0),
        ms(floor.2)
    );
}

/// Where each event's time went (the service's `slot event handled` stamps), the disk's
/// fsync at the same time, and the machine's load.
fn split_report(cycles: &[Cycle], fsyncs: &[Duration], commits: &[Duration], loads: &[f64]) {
    let line = |name: &str, mut v: Vec<Duration>| {
        v.sort();
        println!(
            "    {name:<50} p50 {:>9}   p99 {:>9}   max {:>9}",
            ms(percentile(&v, 50.0)),
            ms(percentile(&v, 99.0)),
            ms(v.last().copied().unwrap_or_default())
        );
    };
    for (what, pick, read) in [
        (
            "removal",
            (|c: &Cycle| c.removal_split) as fn(&Cycle) -> Option<Split>,
            "-> the slot's state known (C_GetSlotInfo)",
        ),
        (
            "insertion",
            |c: &Cycle| c.insertion_split,
            "-> the slot's state known (C_GetSlotInfo + read)",
        ),
    ] {
        let splits: Vec<Split> = cycles.iter().filter_map(pick).collect();
        let of = |f: &dyn Fn(&Split) -> Duration| splits.iter().map(f).collect::<Vec<_>>();
        println!(
            "  {what}: where the time went (service's debug log; {} rows written by the event's own transaction, {} of them after reading only the slot; {} by the poll every interval, running when the event came)",
            splits.len(),
            splits.iter().filter(|s| s.one_slot).count(),
            cycles.len() - splits.len()
        );
        line(
            "pcscd sees it -> C_WaitForSlotEvent returns (module)",
            of(&|s| s.module),
        );
        line("-> the worker takes the event up", of(&|s| s.queued));
        line(read, of(&|s| s.read));
        line(
            "-> transaction begins (compared with the journal)",
            of(&|s| s.prepare),
        );
        line(
            "-> COMMIT issued (events appended, state)",
            of(&|s| s.write),
        );
        line("COMMIT (the WAL's fsync: the disk)", of(&|s| s.commit));
        line("committed -> row logged", of(&|s| s.logged));
        line(
            "custody's own share (all but module and COMMIT)",
            of(&|s| s.custody()),
        );
        line(
            "custody + COMMIT (event returned -> row)",
            of(&|s| s.custody() + s.commit),
        );
    }
    let mut f = fsyncs.to_vec();
    f.sort();
    println!(
        "  the journal's disk meanwhile: append 4 KiB + fsync, {} samples between events: p50 {}   p99 {}   max {}",
        f.len(),
        ms(percentile(&f, 50.0)),
        ms(percentile(&f, 99.0)),
        ms(f.last().copied().unwrap_or_default())
    );
    let mut c = commits.to_vec();
    c.sort();
    println!(
        "  one durable single-row SQLite commit (WAL, synchronous = FULL) next to the journal, {} samples between events: p50 {}   p99 {}   max {}",
        c.len(),
        ms(percentile(&c, 50.0)),
        ms(percentile(&c, 99.0)),
        ms(c.last().copied().unwrap_or_default())
    );
    print_loads("the cycles", loads);
}

fn print_loads(what: &str, loads: &[f64]) {
    let (lo, hi) = loads
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), l| (lo.min(*l), hi.max(*l)));
    println!(
        "  load average (1 min) during {what}: {lo:.1} .. {hi:.1} on {} CPU(s)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
}

/// The floor's cycles: the same pulls and insertions as the service's, handled by
/// `custody-floor --events` (see the module documentation).
struct FloorRun {
    /// One per cycle: (removal event, pcscd's instant of the pull).
    removals: Vec<(FloorEvent, SystemTime)>,
    /// One per cycle: (insertion event, pcscd's first sight of the card, last command
    /// answered before the commit).
    insertions: Vec<(FloorEvent, SystemTime, SystemTime)>,
    loads: Vec<f64>,
}

fn floor_cycles(
    o: &Options,
    reader: &Reader,
    card: &Pkcs15Card,
    floor_bin: &std::path::Path,
    phase: &mut Phase,
) -> Result<FloorRun> {
    let dir = o.dir.join("floor");
    std::fs::create_dir_all(&dir)?;
    let lines = o.dir.join("floor-events.jsonl");
    let floor = Running(
        Command::new(floor_bin)
            .arg(reader.module())
            .args(["--events", "1000000", "--commit"])
            .arg(&dir)
            .envs(reader.env())
            .stdout(std::fs::File::create(&lines)?)
            .spawn()
            .context("starting custody-floor --events")?,
    );
    let mut log = FloorLog::open(&lines)?;
    // Loaded and waiting (C_Initialize takes milliseconds); the first insertion is not
    // measured.
    std::thread::sleep(Duration::from_secs(1));
    let mut present: VirtualCard = reader.insert(&card.image)?;
    log.wait(true, Duration::from_secs(30))?;
    let mut run = FloorRun {
        removals: Vec::new(),
        insertions: Vec::new(),
        loads: vec![load_average()],
    };
    for _ in 0..o.floor_cycles {
        std::thread::sleep(phase.next(o.interval));
        let removed = present.remove_at_next_poll(Duration::from_secs(5))?;
        let pulled = removed.pulled.context("pulled")?;
        run.removals
            .push((log.wait(false, Duration::from_secs(30))?, pulled));
        std::thread::sleep(Duration::from_millis(500) + phase.next(o.interval));
        present = reader.insert(&card.image)?;
        let event = log.wait(true, Duration::from_secs(30))?;
        let t = present.timeline();
        let detected = t.detected.context("detected")?;
        run.insertions
            .push((event, detected, t.last_command.unwrap_or(detected)));
        run.loads.push(load_average());
    }
    drop(floor);
    drop(present);
    Ok(run)
}

/// The floor's figures and the service's against them (p50 and p99 of each, not paired).
fn floor_report(floor: &FloorRun, cycles: &[Cycle]) {
    let sorted = |mut v: Vec<Duration>| {
        v.sort();
        v
    };
    let line = |name: &str, v: &[Duration]| {
        println!(
            "  {name:<44} p50 {:>9}   p99 {:>9}   max {:>9}",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(v.last().copied().unwrap_or_default())
        );
    };
    let removal = sorted(
        floor
            .removals
            .iter()
            .map(|(e, pulled)| after(at_unix_us(e.committed_us), *pulled))
            .collect(),
    );
    let insertion = sorted(
        floor
            .insertions
            .iter()
            .map(|(e, seen, _)| after(at_unix_us(e.committed_us), *seen))
            .collect(),
    );
    let read = sorted(
        floor
            .insertions
            .iter()
            .map(|(_, seen, last)| after(*last, *seen))
            .collect(),
    );
    let after_read = sorted(
        floor
            .insertions
            .iter()
            .map(|(e, _, last)| after(at_unix_us(e.committed_us), *last))
            .collect(),
    );
    let step = |f: &dyn Fn(&FloorEvent) -> Duration, removals: bool| {
        sorted(if removals {
            floor.removals.iter().map(|(e, _)| f(e)).collect()
        } else {
            floor.insertions.iter().map(|(e, _, _)| f(e)).collect()
        })
    };
    let us = |a: u64, b: u64| Duration::from_micros(b.saturating_sub(a));
    println!();
    println!(
        "the floor, same run ({} cycles before the service started; custody-floor --events: C_WaitForSlotEvent, C_GetSlotInfo, the token's read, one durable single-row SQLite commit):",
        floor.removals.len()
    );
    line("removal seen by pcscd -> committed", &removal);
    line(
        "  C_WaitForSlotEvent returned -> committed",
        &step(&|e| us(e.event_us, e.committed_us), true),
    );
    line(
        "  of which C_GetSlotInfo",
        &step(&|e| us(e.event_us, e.known_us), true),
    );
    line(
        "  of which the commit",
        &step(&|e| us(e.read_us, e.committed_us), true),
    );
    line("insertion seen by pcscd -> committed", &insertion);
    line("  of which the card's read (first..last command)", &read);
    line("  after the read -> committed", &after_read);
    line(
        "  C_WaitForSlotEvent returned -> committed",
        &step(&|e| us(e.event_us, e.committed_us), false),
    );
    line(
        "  of which C_GetSlotInfo + the token's read",
        &step(&|e| us(e.event_us, e.read_us), false),
    );
    line(
        "  of which the commit",
        &step(&|e| us(e.read_us, e.committed_us), false),
    );
    print_loads("the floor's cycles", &floor.loads);
    let custody_removal = sorted(cycles.iter().map(|c| c.removal).collect());
    let custody_after_read = sorted(
        cycles
            .iter()
            .map(|c| c.insertion.saturating_sub(c.read))
            .collect(),
    );
    let versus = |name: &str, custody: &[Duration], floor: &[Duration]| {
        let at = |p: f64| {
            let (c, f) = (percentile(custody, p), percentile(floor, p));
            format!(
                "custody {} - floor {} = {:+.1} ms ({:.2} x)",
                ms(c),
                ms(f),
                (c.as_secs_f64() - f.as_secs_f64()) * 1000.0,
                c.as_secs_f64() / f.as_secs_f64().max(1e-6)
            )
        };
        println!("  {name:<34} p50: {}   p99: {}", at(50.0), at(99.0));
    };
    println!("custody against the floor (each side's own percentile):");
    versus("removal -> row", &custody_removal, &removal);
    versus(
        "insertion, after the read -> row",
        &custody_after_read,
        &after_read,
    );
}
