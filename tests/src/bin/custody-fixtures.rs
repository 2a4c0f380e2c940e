//! `custody-fixtures`: builds SoftHSM2 token sets for the demo, the tests and the benchmarks.
//!
//! ```text
//! custody-fixtures build (--set demo|edge|bench:N:K | --spec FILE|-) --out DIR [--cache DIR]
//! custody-fixtures spec --set NAME          # print a named set's spec as JSON
//! ```
//!
//! The hidden `worker` subcommand builds one token; `build` runs it once per token. The hidden
//! `provision` subcommand makes one carrier on any PKCS#11 module (the implementation tests).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use custody_tests::{build_set, set, BuildOptions, Spec};

#[derive(Parser)]
#[command(
    version,
    about = "Build SoftHSM2 token sets for custody's demo, tests and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a token set into a directory.
    Build(BuildArgs),
    /// Print the spec of a named set as JSON (a starting point for --spec files).
    Spec {
        /// demo, edge or bench:N:K.
        #[arg(long)]
        set: String,
        /// Directory of real Ukrainian .cer files for the demo set.
        #[arg(long)]
        ua_certs: Option<PathBuf>,
    },
    /// Build one token from a job on stdin (used by `build`; SOFTHSM2_CONF must be the job's).
    #[command(hide = true)]
    Worker,
    /// Make one carrier on any PKCS#11 module from a job on stdin (the implementation's
    /// configuration is in the environment); prints the slot id and manifest as JSON.
    #[command(hide = true)]
    Provision,
}

#[derive(Args)]
struct BuildArgs {
    /// Named set: demo, edge, or bench:N:K.
    #[arg(long, conflicts_with = "spec", required_unless_present = "spec")]
    set: Option<String>,
    /// Spec file (JSON), or - for stdin.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Output directory (absent or empty).
    #[arg(long)]
    out: PathBuf,
    /// Keep finished sets under this directory and copy from there.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Directory of real Ukrainian .cer files for the demo set
    /// (default: ../shared/testdata/ua-certs beside the repository, when present).
    #[arg(long)]
    ua_certs: Option<PathBuf>,
    /// Build the demo set without the real Ukrainian certificates.
    #[arg(long, conflicts_with = "ua_certs")]
    no_ua_certs: bool,
    /// Worker processes at once (default: number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// PKCS#11 module (default: $SOFTHSM2_MODULE, else SoftHSM2's usual paths).
    #[arg(long)]
    module: Option<PathBuf>,
    /// Replace the fixture set already in --out.
    #[arg(long)]
    force: bool,
    /// Where workers build tokens before moving them into --out (default: /dev/shm when
    /// writable, else OUT/.work).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("custody-fixtures: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Build(args) => build(args),
        Cmd::Spec { set, ua_certs } => {
            let spec = Spec::from_name(&set, ua_certs.as_deref())?;
            let json = serde_json::to_string_pretty(&spec)?;
            writeln!(std::io::stdout(), "{json}").context("writing the spec")
        }
        Cmd::Worker => set::worker_main(std::io::stdin().lock(), std::io::stdout().lock()),
        Cmd::Provision => {
            let job: custody_tests::token::ProvisionJob =
                serde_json::from_reader(std::io::stdin().lock()).context("parsing the job")?;
            let (slot, manifest) = custody_tests::token::provision(&job)?;
            let json = serde_json::json!({ "slot": slot, "token": manifest });
            writeln!(std::io::stdout(), "{json}").context("writing the manifest")
        }
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let spec = match (&args.set, &args.spec) {
        (Some(name), _) if name == "demo" && args.no_ua_certs => Spec::demo_with(None)?,
        (Some(name), _) => Spec::from_name(name, args.ua_certs.as_deref())?,
        (None, Some(path)) => set::read_spec(path)?,
        (None, None) => anyhow::bail!("give --set NAME or --spec FILE"),
    };
    let worker = std::env::current_exe().context("finding this program's path")?;
    let mut options = BuildOptions::new(&worker);
    options.cache = args.cache;
    options.force = args.force;
    options.work_root = args.work_dir;
    if let Some(jobs) = args.jobs {
        options.jobs = jobs;
    }
    if let Some(module) = args.module {
        options.module = module;
    }
    let report = build_set(&spec, &args.out, &options)?;
    let manifest = &report.manifest;
    let objects: usize = manifest.tokens.iter().map(|t| t.objects.len()).sum();
    // A closed stdout (`| head`) is no reason to fail a finished build.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "{}: {} tokens, {objects} objects in {:.2} s{} -> {}",
        manifest.name.as_deref().unwrap_or("spec"),
        manifest.tokens.len(),
        report.elapsed.as_secs_f64(),
        if report.cache_hit {
            " (copied from cache)"
        } else {
            ""
        },
        manifest.dir.display()
    );
    let _ = writeln!(stdout, "export SOFTHSM2_CONF={}", manifest.conf.display());
    Ok(())
}
