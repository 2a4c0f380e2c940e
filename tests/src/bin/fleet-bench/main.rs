//! `fleet-bench`: the benchmark of the organisation's journal (run by `bench/fleet.sh`),
//! on a private PostgreSQL cluster with fsync on, in one run:
//!
//! 1. **sync vs COPY**: one workstation journal of `--events` events pushed by
//!    `Fleet::sync` (what `custody sync` runs: an agent role, row-level security, the
//!    server's pgcrypto chain check, batches of 1,000) into a fresh database, next to a raw
//!    `COPY` of the same rows, read from the same journal, into the same table of another
//!    fresh database (as the owner; the table's triggers, the chain check, fire for COPY
//!    too), and a COPY into a table of the same columns without triggers (the bare floor).
//!    `--rounds` alternating rounds, medians.
//! 2. **a fleet** (`scale`): `--agents` agents × `--per-agent` events, each journal holding
//!    `--carriers` carriers' lives (enrolled, issued, destroyed: real rows of the form) made
//!    with the journal's own code from a template the `custody` binary journaled on SoftHSM2,
//!    enrolled and pushed by `Fleet::sync` from `--workers` threads; then `custody fleet
//!    verify` (rate), `custody fleet form` (HTML and CSV) and `custody fleet status` timed.
//! 3. **idle cost**: `custody watch` on an empty SoftHSM2 for `--idle` seconds with
//!    `[fleet] interval = --sync-interval` and, at the same time, without `[fleet]`: CPU
//!    time of each, and the difference per hour.
//!
//! ```text
//! fleet-bench --custody BIN --fixtures BIN --dir DIR [--events 100000] [--rounds 3]
//!             [--agents 1000] [--per-agent 1000] [--carriers 10] [--workers 2] [--idle 60]
//!             [--sync-interval 10]
//! ```
//!
//! `--rounds 0`, `--agents 0` or `--idle 0` leaves the part out.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod scale;

use anyhow::{ensure, Context as _};
use clap::Parser;
use custody_core::event::EventKind;
use custody_core::fleet::{Database, Fleet, SyncOptions};
use custody_core::journal::{Actor, Journal};
use custody_tests::bench::cpu_time;
use custody_tests::postgres::{Options, Postgres};

/// The benchmark's options (`fleet-bench --help`).
#[derive(Parser)]
#[command(about = "The organisation's journal benchmark: sync vs COPY, a fleet, the idle cost")]
struct Args {
    /// The `custody` binary measured.
    #[arg(long, value_name = "BIN")]
    custody: PathBuf,
    /// The `custody-fixtures` binary.
    #[arg(long, value_name = "BIN")]
    fixtures: PathBuf,
    /// Working directory (emptied first).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Events of the workstation journal synced against COPY.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Alternating rounds of sync and COPY (0 leaves the part out).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Agents of the fleet (0 leaves the part out).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Events per agent.
    #[arg(long, default_value_t = 1000)]
    per_agent: usize,
    /// Carriers' lives per agent's journal.
    #[arg(long, default_value_t = 10)]
    carriers: usize,
    /// Threads that make and push the agents' journals.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Seconds of `custody watch` for the idle cost (0 leaves the part out).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    idle: u64,
    /// `[fleet] interval` in seconds for the idle cost.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    sync_interval: u64,
}

fn actor(host: &str) -> Actor {
    Actor {
        os_user: "operator".into(),
        operator: Some("Петренко Петро Петрович".into()),
        host: host.into(),
    }
}

/// A journal of `total` events: its creation checkpoint and notes, 1,000 per transaction.
fn make_journal(path: &Path, total: usize, host: &str) -> anyhow::Result<Journal> {
    let mut journal = Journal::open(path)?;
    let left = total.saturating_sub(journal.head()?.0 as usize);
    add_notes(&mut journal, left, host)?;
    Ok(journal)
}

/// Appends `count` notes, 1,000 per transaction.
fn add_notes(journal: &mut Journal, count: usize, host: &str) -> anyhow::Result<()> {
    let mut left = count;
    let mut n = 0usize;
    while left > 0 {
        let chunk = left.min(1000);
        journal.write(&actor(host), time::OffsetDateTime::now_utc(), |w| {
            for _ in 0..chunk {
                n += 1;
                w.append(
                    EventKind::Note,
                    None,
                    &serde_json::json!({
                        "text": format!("Носій № {n:08} видано, акт № {n}"),
                        "carrier": format!("Алмаз-1К {n:08}"),
                    }),
                )?;
            }
            Ok(())
        })?;
        left -= chunk;
    }
    Ok(())
}

/// Removes a journal's files.
fn remove_journal(path: &Path) {
    for suffix in ["", "-wal", "-shm", ".key", ".fleet.json"] {
        let mut f = path.as_os_str().to_owned();
        f.push(suffix);
        let _ = std::fs::remove_file(f);
    }
}

fn fresh_fleet(pg: &Postgres, hint: &str) -> anyhow::Result<(String, Fleet)> {
    let db = pg.database(hint)?;
    let mut owner = Fleet::connect(&Database::parse(&pg.url("postgres", &db))?)?;
    owner.init()?;
    Ok((db, owner))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One COPY of the journal's events into `table`, as the owner, read from the journal.
fn copy_rows(pg: &Postgres, db: &str, journal: &Journal, table: &str) -> anyhow::Result<Duration> {
    use std::io::Write as _;
    let mut client = pg.client(db)?;
    let id = journal.journal_id().to_string();
    let start = Instant::now();
    let mut tx = client.transaction()?;
    let mut w = tx.copy_in(&format!(
        "COPY {table} (journal_id, seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash) FROM STDIN"
    ))?;
    let mut after = 0;
    let mut line = String::new();
    loop {
        let events = journal.chain_events(after, 10_000)?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for e in &events {
            line.clear();
            let field = |s: &str, out: &mut String| {
                for c in s.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\t' => out.push_str("\\t"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        c => out.push(c),
                    }
                }
            };
            let opt = |s: &Option<String>, out: &mut String| match s {
                Some(s) => field(s, out),
                None => out.push_str("\\N"),
            };
            line.push_str(&id);
            line.push('\t');
            line.push_str(&e.seq.to_string());
            line.push('\t');
            field(&e.at, &mut line);
            line.push('\t');
            field(&e.kind, &mut line);
            line.push('\t');
            opt(&e.carrier, &mut line);
            line.push('\t');
            field(&e.os_user, &mut line);
            line.push('\t');
            opt(&e.operator, &mut line);
            line.push('\t');
            field(&e.host, &mut line);
            line.push('\t');
            field(&e.data, &mut line);
            line.push_str("\t\\\\x");
            line.push_str(&hex::encode(e.prev_hash));
            line.push_str("\t\\\\x");
            line.push_str(&hex::encode(e.hash));
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
    }
    w.finish()?;
    tx.commit()?;
    Ok(start.elapsed())
}

fn count(pg: &Postgres, db: &str, table: &str) -> anyhow::Result<i64> {
    Ok(pg
        .client(db)?
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])?
        .get(0))
}

fn sync_vs_copy(pg: &Postgres, args: &Args) -> anyhow::Result<()> {
    let path = args.dir.join("workstation.db");
    let t = Instant::now();
    let journal = make_journal(&path, args.events, "ws-bench")?;
    println!(
        "a workstation journal of {} events made in {:.1} s",
        args.events,
        t.elapsed().as_secs_f64()
    );
    let (mut sync_rates, mut copy_rates, mut bare_rates) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        // sync, as the agent.
        let (db, mut owner) = fresh_fleet(pg, "sync")?;
        let enrolled = owner.enroll_agent("ws-bench", false)?;
        let agent =
            Database::parse(&pg.url(&enrolled.role, &db))?.with_password(&enrolled.password);
        let start = Instant::now();
        let mut fleet = Fleet::connect(&agent)?;
        let report = fleet.sync(
            &journal,
            &SyncOptions {
                batch: 1000,
                host: "ws-bench".into(),
            },
        )?;
        let sync = start.elapsed();
        ensure!(report.pushed as usize == args.events && report.server_seq as usize == args.events);
        // COPY into the same table, as the owner (the chain check fires for COPY too).
        let (db2, mut owner2) = fresh_fleet(pg, "copy")?;
        owner2.enroll_agent("ws-bench", false)?;
        pg.client(&db2)?.execute(
            "INSERT INTO custody.journals (journal_id, agent, host) VALUES ($1::text::uuid, 'ws-bench', 'ws-bench')",
            &[&journal.journal_id().to_string()],
        )?;
        let copy = copy_rows(pg, &db2, &journal, "custody.events")?;
        ensure!(count(pg, &db2, "custody.events")? as usize == args.events);
        ensure!(
            count(pg, &db2, "custody.alarms")? == 0,
            "COPY rows refused by the chain check"
        );
        // The bare floor: a table of the same columns, no trigger, no foreign key.
        pg.client(&db2)?.batch_execute(
            "CREATE TABLE bare (LIKE custody.events INCLUDING DEFAULTS); ALTER TABLE bare ADD PRIMARY KEY (journal_id, seq)",
        )?;
        let bare = copy_rows(pg, &db2, &journal, "bare")?;
        let n = args.events as f64;
        let (s, c, b) = (
            n / sync.as_secs_f64(),
            n / copy.as_secs_f64(),
            n / bare.as_secs_f64(),
        );
        println!(
            "round {round}: sync {s:.0} events/s ({} batches), COPY into custody.events {c:.0} events/s, COPY into a bare table {b:.0} events/s",
            report.batches
        );
        sync_rates.push(s);
        copy_rates.push(c);
        bare_rates.push(b);
        for name in [&db, &db2] {
            pg.client("postgres")?
                .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))?;
        }
    }
    let (s, c, b) = (median(sync_rates), median(copy_rates), median(bare_rates));
    println!(
        "sync throughput: {s:.0} events/s; raw COPY of the same rows into the same table: {c:.0} events/s; sync/COPY = {:.0} % (goal >= 50 %): {}",
        100.0 * s / c,
        if s / c >= 0.5 { "MET" } else { "MISSED" }
    );
    println!(
        "  (COPY into a table without the chain check: {b:.0} events/s; the server's check costs COPY {:.0} %)",
        100.0 * (1.0 - c / b)
    );
    drop(journal);
    remove_journal(&path);
    Ok(())
}

/// Runs the `custody` binary with no configuration; it must exit with `code`.
fn run_custody(args: &Args, cli: &[&str], code: i32) -> anyhow::Result<(Duration, String)> {
    let start = Instant::now();
    let out = Command::new(&args.custody)
        .env("CUSTODY_CONFIG", "/dev/null")
        .args(cli)
        .output()?;
    let took = start.elapsed();
    ensure!(
        out.status.code() == Some(code),
        "custody {cli:?}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn idle_cost(pg: &Postgres, args: &Args) -> anyhow::Result<()> {
    let (db, mut owner) = fresh_fleet(pg, "idle")?;
    let enrolled = owner.enroll_agent("ws-idle", false)?;
    let dir = args.dir.join("idle");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens"))?;
    let softhsm = dir.join("softhsm2.conf");
    std::fs::write(
        &softhsm,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )?;
    let password = dir.join("fleet.password");
    {
        use secrecy::ExposeSecret as _;
        std::fs::write(&password, enrolled.password.expose_secret())?;
        std::fs::set_permissions(
            &password,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
    }
    let with = dir.join("with.toml");
    std::fs::write(
        &with,
        format!(
            "[fleet]\ndatabase = \"{}\"\npassword_file = \"{}\"\ninterval = \"{}s\"\n",
            pg.url(&enrolled.role, &db),
            password.display(),
            args.sync_interval
        ),
    )?;
    let without = dir.join("without.toml");
    std::fs::write(&without, "")?;
    let start = |name: &str, config: &Path| -> anyhow::Result<Running> {
        let journal = dir.join(format!("{name}.db"));
        make_journal(&journal, 100, name)?;
        let child = Command::new(&args.custody)
            .arg("--journal")
            .arg(&journal)
            .args(["--module", "/usr/lib/softhsm/libsofthsm2.so", "watch"])
            .env("SOFTHSM2_CONF", &softhsm)
            .env("CUSTODY_CONFIG", config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
            .spawn()?;
        Ok(Running(child))
    };
    let a = start("with", &with)?;
    let b = start("without", &without)?;
    // Past the start and the first sync (which pushes the 100 events).
    std::thread::sleep(Duration::from_secs(5));
    let state = dir.join("with.fleet.json");
    let text = std::fs::read_to_string(&state).with_context(|| {
        format!(
            "the service with [fleet] wrote no {}: {}",
            state.display(),
            std::fs::read_to_string(dir.join("with.log")).unwrap_or_default()
        )
    })?;
    ensure!(text.contains("last_success"), "first sync failed: {text}");
    let (a0, b0, t0) = (cpu_time(a.0.id())?, cpu_time(b.0.id())?, Instant::now());
    std::thread::sleep(Duration::from_secs(args.idle));
    let (a1, b1, t1) = (cpu_time(a.0.id())?, cpu_time(b.0.id())?, Instant::now());
    let secs = (t1 - t0).as_secs_f64();
    let (ca, cb) = ((a1 - a0).as_secs_f64(), (b1 - b0).as_secs_f64());
    let added = ca - cb;
    println!(
        "idle over {secs:.0} s (SoftHSM2, no token, journal unchanged): custody watch with [fleet] interval {}s {:.1} ms CPU, without [fleet] {:.1} ms CPU",
        args.sync_interval,
        ca * 1000.0,
        cb * 1000.0,
    );
    println!(
        "  added by [fleet]: {:.1} ms CPU per hour ({:.4} % of a CPU) at a {}s interval",
        added / secs * 3600.0 * 1000.0,
        added / secs * 100.0,
        args.sync_interval
    );
    drop((a, b));
    pg.client("postgres")?
        .batch_execute(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    // Absolute: the configuration files written for `custody watch` need absolute paths.
    args.dir = args.dir.canonicalize()?;
    let pg = Postgres::start(&Options {
        durable: true,
        ..Options::default()
    })?;
    let version = pg
        .client("postgres")?
        .query_one("SELECT version()", &[])?
        .get::<_, String>(0);
    println!(
        "custody fleet benchmark on {}, {} CPU(s), fsync on",
        version.split(" on ").next().unwrap_or(&version),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if args.rounds > 0 {
        sync_vs_copy(&pg, &args)?;
    }
    if args.agents > 0 {
        scale::run(&pg, &args)?;
    }
    if args.idle > 0 {
        idle_cost(&pg, &args)?;
    }
    Ok(())
}
