//! Building, caching and copying whole token sets, and [`TokenSet`], the handle tests use.
//!
//! A build runs one worker process per token (the `custody-fixtures worker` subcommand), each
//! with its own empty token directory and `softhsm2.conf`: SoftHSM2 reads SOFTHSM2_CONF at
//! C_Initialize and loads every token of its directory then, so building all tokens in one
//! directory would grow quadratically. Finished token directories are moved into
//! `<set>/tokens`. This module never sets SOFTHSM2_CONF in its own process.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use sha2::{Digest as _, Sha256};

use crate::ca::Ca;
use crate::manifest::{CaManifest, Manifest, TokenManifest, MANIFEST_FORMAT};
use crate::softhsm::{env_vars, utf8_path, write_conf, write_env_file};
use crate::spec::{Bytes, Spec, BUILDER_VERSION};
use crate::token::TokenJob;

/// How to build a set.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The `custody-fixtures` binary, run as `worker` once per token.
    pub worker: PathBuf,
    /// The PKCS#11 module (see [`crate::softhsm_module`]).
    pub module: PathBuf,
    /// Worker processes at once; default: available parallelism.
    pub jobs: usize,
    /// Cache directory: finished sets are kept under `<cache>/<spec hash>-<builder>` (the
    /// builder part changes whenever the binary is rebuilt) and copied from there.
    pub cache: Option<PathBuf>,
    /// Replace `out` if it already holds a fixture set (a `manifest.json`).
    pub force: bool,
    /// Where workers build their tokens before the tokens move into the set. Default:
    /// `/dev/shm` when writable (SoftHSM2 rewrites an object file some 30 times while creating
    /// it, which costs about 7× more on ext4 than on tmpfs), else `<out>/.work`.
    pub work_root: Option<PathBuf>,
}

impl BuildOptions {
    /// Defaults: SoftHSM2's module, one job per core, no cache, no replacing.
    pub fn new(worker: &Path) -> Self {
        Self {
            worker: worker.to_path_buf(),
            module: crate::softhsm_module(),
            jobs: std::thread::available_parallelism().map_or(2, usize::from),
            cache: None,
            force: false,
            work_root: None,
        }
    }
}

/// What [`build_set`] did.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// The set's manifest.
    pub manifest: Manifest,
    /// Whether the set was copied from the cache.
    pub cache_hit: bool,
    /// Wall time of the whole call.
    pub elapsed: Duration,
}

/// Builds `spec` into `out` (which must be absent or empty, or a fixture set with
/// `options.force`), through the cache when one is given.
pub fn build_set(spec: &Spec, out: &Path, options: &BuildOptions) -> anyhow::Result<BuildReport> {
    let started = Instant::now();
    spec.validate()?;
    let hash = spec.hash()?;
    let out = absolute(out)?;
    prepare_out(&out, options.force)?;

    let existed = out.exists();
    let result = match &options.cache {
        None => build_fresh(spec, &hash, &out, options).and_then(|mut manifest| {
            finish_files(&out, &mut manifest, &out)?;
            Ok((manifest, false))
        }),
        Some(cache) => build_cached(spec, &hash, cache, &out, options),
    };
    match result {
        Ok((manifest, cache_hit)) => Ok(BuildReport {
            manifest,
            cache_hit,
            elapsed: started.elapsed(),
        }),
        Err(err) => {
            // Leave `out` as it was (absent or empty), not half-built. Best effort: the build
            // error is the one to report.
            let _ = std::fs::remove_dir_all(&out);
            if existed {
                let _ = std::fs::create_dir(&out);
            }
            Err(err)
        }
    }
}

/// Builds through the cache; returns the copy's manifest and whether it was a cache hit.
fn build_cached(
    spec: &Spec,
    hash: &str,
    cache: &Path,
    out: &Path,
    options: &BuildOptions,
) -> anyhow::Result<(Manifest, bool)> {
    let cache = absolute(cache)?;
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let entry_name = format!("{hash}-{}", builder_fingerprint(&options.worker)?);
    let built = ensure_cached(spec, hash, &cache, &entry_name, options)?;
    if built {
        remove_other_builds(&cache, hash, &entry_name);
    }
    let manifest = copy_set(&cache.join(&entry_name), out)?;
    Ok((manifest, !built))
}

/// Makes sure `<cache>/<entry_name>` holds the built set; returns whether this call built it.
///
/// One process builds an entry at a time (a lock directory holding its pid); the others wait
/// for it, and take over if it died.
fn ensure_cached(
    spec: &Spec,
    hash: &str,
    cache: &Path,
    entry_name: &str,
    options: &BuildOptions,
) -> anyhow::Result<bool> {
    let entry = cache.join(entry_name);
    let lock = cache.join(format!(".lock-{entry_name}"));
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    loop {
        if entry.join("manifest.json").is_file() {
            return Ok(false);
        }
        match std::fs::create_dir(&lock) {
            Ok(()) => {
                // Best effort: without it, waiters judge the lock by its age.
                let _ = std::fs::write(lock.join("pid"), std::process::id().to_string());
                let built = if entry.join("manifest.json").is_file() {
                    Ok(false)
                } else {
                    build_into_cache(spec, hash, cache, entry_name, options).map(|()| true)
                };
                let unlocked = std::fs::remove_dir_all(&lock)
                    .with_context(|| format!("removing the lock {}", lock.display()));
                let built = built?;
                unlocked?;
                return Ok(built);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                if lock_is_stale(&lock) {
                    // Best effort: if another waiter removed it first, create_dir decides.
                    let _ = std::fs::remove_dir_all(&lock);
                    continue;
                }
                ensure!(
                    Instant::now() < deadline,
                    "waited 30 minutes for another build of {} (remove {} if none is running)",
                    entry.display(),
                    lock.display()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => {
                return Err(err).with_context(|| format!("creating the lock {}", lock.display()))
            }
        }
    }
}

/// A lock is stale when its process is gone, or when it has no pid a minute after creation.
fn lock_is_stale(lock: &Path) -> bool {
    match std::fs::read_to_string(lock.join("pid")) {
        Ok(pid) => !pid.trim().is_empty() && !Path::new("/proc").join(pid.trim()).exists(),
        Err(_) => std::fs::metadata(lock)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60)),
    }
}

/// Builds the set into a private directory of the cache and renames it to `entry_name`.
fn build_into_cache(
    spec: &Spec,
    hash: &str,
    cache: &Path,
    entry_name: &str,
    options: &BuildOptions,
) -> anyhow::Result<()> {
    remove_abandoned_builds(cache);
    let entry = cache.join(entry_name);
    let building = cache.join(format!(".building-{entry_name}-{}", std::process::id()));
    if building.exists() {
        std::fs::remove_dir_all(&building)
            .with_context(|| format!("removing {}", building.display()))?;
    }
    let mut manifest = build_fresh(spec, hash, &building, options)?;
    finish_files(&building, &mut manifest, &entry)?;
    if let Err(err) = std::fs::rename(&building, &entry) {
        std::fs::remove_dir_all(&building)
            .with_context(|| format!("removing {}", building.display()))?;
        ensure!(
            entry.join("manifest.json").is_file(),
            "moving the built set into the cache at {}: {err}",
            entry.display()
        );
    }
    Ok(())
}

/// Identifies the builder binary (version, size, modification time), so that a rebuilt
/// `custody-fixtures` never reuses sets cached by an older one even if nobody bumped
/// [`BUILDER_VERSION`].
fn builder_fingerprint(worker: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(worker).with_context(|| format!("reading {}", worker.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    let mut hasher = Sha256::new();
    hasher.update(BUILDER_VERSION.as_bytes());
    hasher.update(meta.len().to_be_bytes());
    hasher.update(modified.to_be_bytes());
    Ok(hex::encode(&hasher.finalize()[..8]))
}

/// Removes `.building-*` directories of processes that no longer run (a killed build).
fn remove_abandoned_builds(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix(".building-")
            .and_then(|rest| rest.rsplit_once('-'))
            .map(|(_, pid)| pid)
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            // Best effort: a leftover only costs disk space.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes entries for the same spec made by other builder binaries (stale after a rebuild).
fn remove_other_builds(cache: &Path, spec_hash: &str, keep: &str) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    let prefix = format!("{spec_hash}-");
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix) && n != keep)
        {
            // Best effort, as above.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Copies the set in `from` to `to` (absent or empty) and rewrites the paths inside its
/// `softhsm2.conf`, `env` and `manifest.json`.
pub fn copy_set(from: &Path, to: &Path) -> anyhow::Result<Manifest> {
    let to = absolute(to)?;
    let mut manifest = Manifest::load(from)?;
    prepare_out(&to, false)?;
    copy_tree(from, &to)?;
    finish_files(&to, &mut manifest, &to)?;
    Ok(manifest)
}

/// Writes `softhsm2.conf`, `env` and `manifest.json` into `at`, naming paths under `target`
/// (the directory the set will be used from).
fn finish_files(at: &Path, manifest: &mut Manifest, target: &Path) -> anyhow::Result<()> {
    manifest.relocate(target);
    write_conf(&at.join("softhsm2.conf"), &target.join("tokens"))?;
    write_env_file(&at.join("env"), &manifest.conf, &manifest.module, target)?;
    manifest.save_to(&at.join("manifest.json"))
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let path =
        std::path::absolute(path).with_context(|| format!("making {} absolute", path.display()))?;
    utf8_path(&path)?;
    Ok(path)
}

/// `out` must be absent or empty; with `force`, a previous fixture set there is removed.
fn prepare_out(out: &Path, force: bool) -> anyhow::Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let mut entries =
        std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
    if entries.next().is_none() {
        return Ok(());
    }
    if force && out.join("manifest.json").is_file() {
        return std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()));
    }
    bail!(
        "{} is not empty; choose a new directory{}",
        out.display(),
        if out.join("manifest.json").is_file() {
            " or pass --force to replace the fixture set in it"
        } else {
            ""
        }
    )
}

fn create_dir(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

fn build_fresh(
    spec: &Spec,
    hash: &str,
    dir: &Path,
    options: &BuildOptions,
) -> anyhow::Result<Manifest> {
    for (sub, mode) in [
        ("", 0o755),
        ("tokens", 0o700),
        ("pins", 0o700),
        ("certs", 0o755),
        ("ca", 0o755),
    ] {
        create_dir(&dir.join(sub), mode)?;
    }
    let (ca, ca_der, ca_pem) = Ca::generate(hash)?;
    let ca_manifest = CaManifest {
        cert_der: dir.join("ca/ca.der"),
        cert_pem: dir.join("ca/ca.pem"),
        key_pkcs8: dir.join("ca/ca-key.pk8"),
        cert_sha256: hex::encode(Sha256::digest(&ca_der)),
    };
    std::fs::write(&ca_manifest.cert_der, &ca_der).context("writing ca/ca.der")?;
    std::fs::write(&ca_manifest.cert_pem, ca_pem).context("writing ca/ca.pem")?;
    write_private(&ca_manifest.key_pkcs8, &ca.pkcs8())?;

    let work = WorkDir::create(dir, options.work_root.as_deref())?;
    let work = work.path();
    let jobs: Vec<TokenJob> = spec
        .tokens
        .iter()
        .enumerate()
        .map(|(index, token)| TokenJob {
            index,
            token: token.clone(),
            spec_hash: hash.to_owned(),
            ca_key_pkcs8: Bytes(ca.pkcs8()),
            conf: work.join(format!("{index:04}/softhsm2.conf")),
            module: options.module.clone(),
            certs_dir: dir.join("certs"),
            module_usage: false,
        })
        .collect();
    let mut tokens = run_workers(jobs, dir, options)?;

    for token in &mut tokens {
        let stem = format!("{:03}-{}", token.index, file_safe(&token.label));
        token.user_pin_file = dir.join(format!("pins/{stem}.user"));
        token.so_pin_file = dir.join(format!("pins/{stem}.so"));
        write_private(&token.user_pin_file, token.user_pin.as_bytes())?;
        write_private(&token.so_pin_file, token.so_pin.as_bytes())?;
    }
    let mut spec_json = serde_json::to_vec_pretty(spec).context("serialising the spec")?;
    spec_json.push(b'\n');
    std::fs::write(dir.join("spec.json"), spec_json).context("writing spec.json")?;

    Ok(Manifest {
        format: MANIFEST_FORMAT,
        builder: BUILDER_VERSION.to_owned(),
        name: spec.name.clone(),
        spec_hash: hash.to_owned(),
        dir: dir.to_path_buf(),
        conf: dir.join("softhsm2.conf"),
        env_file: dir.join("env"),
        module: options.module.clone(),
        ca: ca_manifest,
        tokens,
    })
}

/// Runs the jobs on `options.jobs` threads, one worker process per token; returns the token
/// manifests in spec order.
fn run_workers(
    jobs: Vec<TokenJob>,
    dir: &Path,
    options: &BuildOptions,
) -> anyhow::Result<Vec<TokenManifest>> {
    let count = jobs.len();
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::with_capacity(count));
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.clamp(1, count.max(1)) {
            scope.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let next = match queue.lock() {
                    Ok(mut queue) => queue.pop_front(),
                    Err(_) => None,
                };
                let Some(job) = next else { return };
                match run_worker(&job, dir, options) {
                    Ok(token) => {
                        if let Ok(mut results) = results.lock() {
                            results.push(token);
                        }
                    }
                    Err(err) => {
                        failed.store(true, Ordering::SeqCst);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(err);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(err) = first_error.into_inner().ok().flatten() {
        return Err(err);
    }
    let mut tokens = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a worker thread panicked"))?;
    ensure!(
        tokens.len() == count,
        "built {} of {count} tokens",
        tokens.len()
    );
    tokens.sort_by_key(|token| token.index);
    Ok(tokens)
}

/// Builds one token in a child process with its own token directory, then moves the token into
/// `<dir>/tokens`.
fn run_worker(job: &TokenJob, dir: &Path, options: &BuildOptions) -> anyhow::Result<TokenManifest> {
    let what = || format!("token {} ({})", job.index, job.token.label);
    let work = job
        .conf
        .parent()
        .context("the job's configuration has a directory")?;
    let token_dir = work.join("tokens");
    create_dir(&token_dir, 0o700)?;
    write_conf(&job.conf, &token_dir)?;

    let input = serde_json::to_vec(job).context("serialising the job")?;
    let mut child = Command::new(&options.worker)
        .arg("worker")
        .env("SOFTHSM2_CONF", &job.conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} worker", options.worker.display()))?;
    // The worker reads all of stdin before it writes anything, so this cannot deadlock.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .context("sending the job to the worker")?;
    }
    let output = child.wait_with_output().context("waiting for the worker")?;
    ensure!(
        output.status.success(),
        "building {} failed ({}): {}",
        what(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let mut token: TokenManifest = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading the worker's manifest of {}", what()))?;

    let mut built = std::fs::read_dir(&token_dir)
        .with_context(|| format!("reading {}", token_dir.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", token_dir.display()))?;
    ensure!(
        built.len() == 1,
        "{}: expected one token directory in {}, found {}",
        what(),
        token_dir.display(),
        built.len()
    );
    let built = built.remove(0).path();
    let name = built.file_name().context("a token directory has a name")?;
    let target = dir.join("tokens").join(name);
    if std::fs::rename(&built, &target).is_err() {
        // The work directory is on another file system (tmpfs): copy, then drop the original.
        copy_tree(&built, &target)?;
        std::fs::remove_dir_all(&built).with_context(|| format!("removing {}", built.display()))?;
    }
    token.token_dir = target;
    Ok(token)
}

/// Runs a worker: reads a [`TokenJob`] (JSON) from `input`, builds it, writes the
/// [`TokenManifest`] (JSON) to `output`. For the `custody-fixtures worker` subcommand.
pub fn worker_main(
    mut input: impl std::io::Read,
    mut output: impl std::io::Write,
) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).context("reading the job")?;
    let job: TokenJob = serde_json::from_slice(&bytes).context("parsing the job")?;
    let token = crate::token::build_token(&job)?;
    serde_json::to_writer(&mut output, &token).context("writing the token manifest")?;
    output.flush().context("writing the token manifest")
}

/// The private directory where workers build tokens; removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `<root>/custody-fixtures-<pid>-<n>` under `root`, else under `/dev/shm`, falling
    /// back to `<dir>/.work`.
    fn create(dir: &Path, root: Option<&Path>) -> anyhow::Result<Self> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("custody-fixtures-{}-{n}", std::process::id());
        if let Some(root) = root {
            let path = absolute(root)?.join(name);
            create_dir(&path, 0o700)?;
            return Ok(Self { path });
        }
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let path = shm.join(&name);
            if create_dir(&path, 0o700).is_ok() {
                return Ok(Self { path });
            }
        }
        let path = dir.join(".work");
        create_dir(&path, 0o700)?;
        Ok(Self { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Best effort: a leftover work directory only costs space.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// File-name stem from a label: letters and digits (any script) kept, runs of anything else
/// become `_`.
fn file_safe(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
        if out.chars().count() >= 40 {
            break;
        }
    }
    let out = out.trim_matches('_').to_owned();
    if out.is_empty() {
        "token".to_owned()
    } else {
        out
    }
}

/// Recursive copy keeping permission bits (like `cp -a` for what a set holds: directories,
/// regular files, symbolic links).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mode = std::fs::metadata(from)
        .with_context(|| format!("reading {}", from.display()))?
        .permissions();
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", source.display()))?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(&source)
                .with_context(|| format!("reading {}", source.display()))?;
            std::os::unix::fs::symlink(link, &target)
                .with_context(|| format!("creating {}", target.display()))?;
        } else {
            std::fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
        }
    }
    std::fs::set_permissions(to, mode)
        .with_context(|| format!("setting the mode of {}", to.display()))
}

/// A built token set on disk, as tests use it.
#[derive(Clone, Debug)]
pub struct TokenSet {
    manifest: Manifest,
}

impl TokenSet {
    /// Builds `spec` into `dir` (absent or empty) by running `bin build` (the
    /// `custody-fixtures` binary; integration tests pass `env!("CARGO_BIN_EXE_custody-fixtures")`).
    pub fn build(bin: &Path, spec: &Spec, dir: &Path) -> anyhow::Result<Self> {
        Self::run_builder(bin, spec, dir, None)
    }

    /// Like [`TokenSet::build`], through the cache directory `cache`: the first call for a spec
    /// builds it into `<cache>/<spec hash>`, every call copies it to `dir`. Safe to call from
    /// parallel tests and processes.
    pub fn cached(bin: &Path, spec: &Spec, cache: &Path, dir: &Path) -> anyhow::Result<Self> {
        Self::run_builder(bin, spec, dir, Some(cache))
    }

    /// Opens the set already built in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            manifest: Manifest::load(dir)?,
        })
    }

    /// Copies this set to `dir` (absent or empty); the copy is independent of the original.
    pub fn copy_to(&self, dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            manifest: copy_set(&self.manifest.dir, dir)?,
        })
    }

    fn run_builder(
        bin: &Path,
        spec: &Spec,
        dir: &Path,
        cache: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(bin);
        command.args(["build", "--spec", "-", "--out"]).arg(dir);
        if let Some(cache) = cache {
            command.arg("--cache").arg(cache);
        }
        // Never inherit a SOFTHSM2_CONF that a developer exported: the builder must only see
        // the private configurations it writes itself.
        command
            .env_remove("SOFTHSM2_CONF")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let input = serde_json::to_vec(spec).context("serialising the spec")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).context("sending the spec")?;
        }
        let output = child
            .wait_with_output()
            .context("waiting for custody-fixtures")?;
        ensure!(
            output.status.success(),
            "custody-fixtures build into {} failed ({}): {}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Self::open(&absolute(dir)?)
    }

    /// The set's directory.
    pub fn dir(&self) -> &Path {
        &self.manifest.dir
    }

    /// `<dir>/softhsm2.conf`.
    pub fn conf(&self) -> &Path {
        &self.manifest.conf
    }

    /// The PKCS#11 module the set was built with.
    pub fn module(&self) -> &Path {
        &self.manifest.module
    }

    /// The typed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Environment for a child process that should see this set: SOFTHSM2_CONF and
    /// PKCS11_MODULE. Set it on the child (`Command::envs`), never on the test process.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        env_vars(&self.manifest.conf, &self.manifest.module)
            .into_iter()
            .map(|(name, value)| (OsString::from(name), value.into_os_string()))
            .collect()
    }

    /// A `Command` for `program` with [`TokenSet::env`] set.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env());
        command
    }
}

/// Reads a spec from a JSON file, or from stdin when `path` is `-`.
pub fn read_spec(path: &Path) -> anyhow::Result<Spec> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the spec from stdin")?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    serde_json::from_slice(&bytes).with_context(|| format!("parsing the spec {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_safe_keeps_cyrillic_and_replaces_the_rest() {
        assert_eq!(file_safe("Іваненко І.І."), "Іваненко_І_І");
        assert_eq!(file_safe("\u{fffd}\u{fffd}"), "token");
        assert_eq!(file_safe("bench-007"), "bench_007");
    }
}
