//! custody's scan benchmark: for each token-set size N tokens × K key pairs with
//! certificates, runs interleaved, in one process tree and one run:
//! `custody scan` into a fresh journal, `custody scan` of an unchanged state (steady state),
//! the floor (`custody-floor`: the same PKCS#11 reads and nothing else), and OpenSC's
//! `pkcs11-tool` (`-L`, then `-O` per slot). Prints medians, ratios, peak RSS and the slope of
//! the steady-state cost in tokens × objects.
//!
//! Usage: `custody-bench --custody BIN --floor BIN --fixtures BIN --dir DIR
//!         [--sizes 1x1,10x5,100x5,100x20] [--runs 5] [--tool-runs 3]`
//! (see bench/scan.sh, which builds the release binaries and passes them in).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use custody_tests::{build_set, BuildOptions, Spec, TokenSet};

/// The benchmark's options (`custody-bench --help`).
#[derive(Parser)]
#[command(about = "custody's scan benchmark against the PKCS#11 floor and pkcs11-tool")]
struct Args {
    /// The `custody` binary measured.
    #[arg(long, value_name = "BIN")]
    custody: PathBuf,
    /// The `custody-floor` binary (the same PKCS#11 reads and nothing else).
    #[arg(long, value_name = "BIN")]
    floor: PathBuf,
    /// The `custody-fixtures` binary.
    #[arg(long, value_name = "BIN")]
    fixtures: PathBuf,
    /// Working directory (token sets and their cache).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Token-set sizes, N tokens x K key pairs with certificates, comma-separated.
    #[arg(
        long,
        value_name = "NxK,...",
        value_delimiter = ',',
        value_parser = size,
        default_value = "1x1,1x5,1x20,10x1,10x5,10x20,100x1,100x5,100x20"
    )]
    sizes: Vec<(usize, usize)>,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Runs of pkcs11-tool (slow: it reloads every token per call).
    #[arg(long, default_value_t = 3)]
    tool_runs: usize,
}

/// One `NxK` size.
fn size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (n, k) = s
        .split_once('x')
        .with_context(|| format!("size {s:?} is not NxK"))?;
    Ok((n.parse()?, k.parse()?))
}

/// Wall time and peak RSS (KiB) of one command, measured around it; RSS from GNU time.
struct Sample {
    wall: Duration,
    rss_kib: u64,
}

fn measure(set: &TokenSet, program: &Path, args: &[&str]) -> anyhow::Result<Sample> {
    let rss_file = set.dir().join(".rss");
    let start = Instant::now();
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(program)
        .args(args)
        .envs(set.env())
        .env("CUSTODY_CONFIG", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running /usr/bin/time (Debian package time)")?;
    let wall = start.elapsed();
    ensure!(
        status.success() || status.code() == Some(1),
        "{} {args:?} failed: {status}",
        program.display()
    );
    let rss_kib = std::fs::read_to_string(&rss_file)?
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    Ok(Sample { wall, rss_kib })
}

/// pkcs11-tool as an administrator would script it: list the slots, then list the objects
/// of each slot.
fn pkcs11_tool(set: &TokenSet) -> anyhow::Result<Sample> {
    let module = set.module().display().to_string();
    let start = Instant::now();
    let listing = Command::new("pkcs11-tool")
        .args(["--module", &module, "-L"])
        .envs(set.env())
        .output()?;
    let text = String::from_utf8_lossy(&listing.stdout);
    let slots: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Slot "))
        .filter(|l| !l.contains("uninitialized"))
        .filter_map(|l| l.split(['(', ')']).nth(1).map(str::to_owned))
        .collect();
    let mut rss = 0;
    let mut listed = 0;
    for slot in &slots {
        let s = measure(
            set,
            Path::new("/usr/bin/pkcs11-tool"),
            &["--module", &module, "--slot", slot, "-O"],
        )?;
        rss = rss.max(s.rss_kib);
        listed += 1;
    }
    ensure!(listed > 0, "pkcs11-tool listed no slots");
    Ok(Sample {
        wall: start.elapsed(),
        rss_kib: rss,
    })
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

struct Row {
    n: usize,
    k: usize,
    fresh: Duration,
    steady: Duration,
    floor: Duration,
    tool: Option<Duration>,
    rss_custody: u64,
    rss_floor: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !Path::new("/usr/bin/time").exists() {
        bail!("/usr/bin/time is missing: apt-get install time");
    }
    std::fs::create_dir_all(&args.dir)?;
    let mut rows = Vec::new();
    println!(
        "{:>8} {:>11} {:>11} {:>9} {:>12} {:>8} {:>8} {:>9} {:>10} {:>9}",
        "tokens×K",
        "fresh ms",
        "steady ms",
        "floor ms",
        "pkcs11-tool",
        "steady/",
        "fresh/",
        "tool/",
        "RSS custody",
        "RSS floor"
    );
    println!(
        "{:>8} {:>11} {:>11} {:>9} {:>12} {:>8} {:>8} {:>9} {:>10} {:>9}",
        "", "", "", "", "ms", "floor", "floor", "steady", "KiB", "KiB"
    );
    for &(n, k) in &args.sizes {
        let set_dir = args.dir.join(format!("set-{n}x{k}"));
        let set = if set_dir.join("manifest.json").exists() {
            TokenSet::open(&set_dir)?
        } else {
            let mut options = BuildOptions::new(&args.fixtures);
            options.cache = Some(args.dir.join("cache"));
            build_set(&Spec::bench(n, k), &set_dir, &options)?;
            TokenSet::open(&set_dir)?
        };
        let module = set.module().display().to_string();
        let fresh_journal = set.dir().join("fresh.db");
        let steady_journal = set.dir().join("steady.db");
        // A fresh journal is made without its key too: custody refuses a journal whose key
        // is there while the journal is not.
        let remove = |p: &Path| {
            for suffix in ["", "-wal", "-shm", ".key"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
            }
        };
        remove(&steady_journal);
        let j = steady_journal.display().to_string();
        let f = fresh_journal.display().to_string();
        measure(
            &set,
            &args.custody,
            &["--journal", &j, "--module", &module, "scan"],
        )?;
        // Warm the page cache once for every contender.
        measure(&set, &args.floor, &[&module])?;
        let (mut fresh, mut steady, mut floor, mut tool) = (vec![], vec![], vec![], vec![]);
        let (mut rss_c, mut rss_f) = (0, 0);
        for run in 0..args.runs {
            remove(&fresh_journal);
            let s = measure(
                &set,
                &args.custody,
                &["--journal", &f, "--module", &module, "scan"],
            )?;
            fresh.push(s.wall);
            rss_c = rss_c.max(s.rss_kib);
            let s = measure(
                &set,
                &args.custody,
                &["--journal", &j, "--module", &module, "scan"],
            )?;
            steady.push(s.wall);
            rss_c = rss_c.max(s.rss_kib);
            let s = measure(&set, &args.floor, &[&module])?;
            floor.push(s.wall);
            rss_f = rss_f.max(s.rss_kib);
            if run < args.tool_runs {
                tool.push(pkcs11_tool(&set)?.wall);
            }
        }
        let row = Row {
            n,
            k,
            fresh: median(&mut fresh),
            steady: median(&mut steady),
            floor: median(&mut floor),
            tool: (!tool.is_empty()).then(|| median(&mut tool)),
            rss_custody: rss_c,
            rss_floor: rss_f,
        };
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "{:>8} {:>11} {:>11} {:>9} {:>12} {:>8.2} {:>8.2} {:>9} {:>10} {:>9}",
            format!("{n}×{k}"),
            ms(row.fresh),
            ms(row.steady),
            ms(row.floor),
            row.tool.map(ms).unwrap_or_else(|| "-".into()),
            ratio(row.steady, row.floor),
            ratio(row.fresh, row.floor),
            row.tool
                .map(|t| format!("{:.1}", ratio(t, row.steady)))
                .unwrap_or_else(|| "-".into()),
            row.rss_custody,
            row.rss_floor
        );
        rows.push(row);
    }
    // Slope: least squares of steady-state time over tokens × objects (2 objects per key pair
    // visible without login: certificate and public key).
    if rows.len() >= 2 {
        let pts: Vec<(f64, f64, f64)> = rows
            .iter()
            .map(|r| {
                let objects = (r.n * r.k * 2) as f64;
                (
                    objects,
                    r.steady.as_secs_f64() * 1e3,
                    r.floor.as_secs_f64() * 1e3,
                )
            })
            .collect();
        let fit = |ys: &dyn Fn(&(f64, f64, f64)) -> f64| {
            let n = pts.len() as f64;
            let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
            let my = pts.iter().map(ys).sum::<f64>() / n;
            let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (ys(p) - my)).sum();
            let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
            let slope = sxy / sxx;
            let intercept = my - slope * mx;
            let ss_tot: f64 = pts.iter().map(|p| (ys(p) - my).powi(2)).sum();
            let ss_res: f64 = pts
                .iter()
                .map(|p| (ys(p) - intercept - slope * p.0).powi(2))
                .sum();
            (slope * 1000.0, intercept, 1.0 - ss_res / ss_tot)
        };
        let (s, i, r2) = fit(&|p| p.1);
        let (fs, fi, fr2) = fit(&|p| p.2);
        println!();
        println!("steady scan: {s:.1} µs per object + {i:.1} ms (R² {r2:.4})");
        println!("floor:       {fs:.1} µs per object + {fi:.1} ms (R² {fr2:.4})");
    }
    Ok(())
}
