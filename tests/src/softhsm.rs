//! SoftHSM2 plumbing shared by the builder and the tests: where the module is, the per-set
//! `softhsm2.conf` and `env` files, and fresh directories for tests.
//!
//! Nothing here sets SOFTHSM2_CONF in the current process: tests run in parallel threads of one
//! process, so the configuration is only ever passed in a child's environment.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, ensure, Context as _};

/// The configuration template (`softhsm-fixtures/softhsm2.conf.in`); `@TOKENDIR@` is replaced.
pub const CONF_TEMPLATE: &str = include_str!("../../softhsm-fixtures/softhsm2.conf.in");

/// Module paths tried, in order, after the SOFTHSM2_MODULE variable.
pub const MODULE_CANDIDATES: [&str; 2] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
];

/// The SoftHSM2 PKCS#11 module: `$SOFTHSM2_MODULE`, else the first of
/// [`MODULE_CANDIDATES`] that exists, else the first candidate (so the error names a path).
pub fn softhsm_module() -> PathBuf {
    if let Some(path) = std::env::var_os("SOFTHSM2_MODULE").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(MODULE_CANDIDATES[0]))
}

/// The text of a `softhsm2.conf` whose token directory is `token_dir`.
pub fn render_conf(token_dir: &Path) -> anyhow::Result<String> {
    let token_dir = utf8_path(token_dir)?;
    ensure!(
        !token_dir.contains(['\n', '\r']),
        "{token_dir:?}: SoftHSM2 cannot read a token directory with a line break in its path"
    );
    Ok(CONF_TEMPLATE.replace("@TOKENDIR@", token_dir))
}

/// Writes a `softhsm2.conf` at `path` whose token directory is `token_dir`.
pub fn write_conf(path: &Path, token_dir: &Path) -> anyhow::Result<()> {
    write_atomic(path, render_conf(token_dir)?.as_bytes())
}

/// The variables a child process needs to see the set in `dir`: SOFTHSM2_CONF and
/// PKCS11_MODULE.
pub fn env_vars(conf: &Path, module: &Path) -> Vec<(String, PathBuf)> {
    vec![
        ("SOFTHSM2_CONF".to_owned(), conf.to_path_buf()),
        ("PKCS11_MODULE".to_owned(), module.to_path_buf()),
    ]
}

/// Writes an `env` file at `path`: `export` lines for a POSIX shell naming the set in `set_dir`.
pub fn write_env_file(
    path: &Path,
    conf: &Path,
    module: &Path,
    set_dir: &Path,
) -> anyhow::Result<()> {
    let mut text =
        String::from("# custody SoftHSM2 fixture set: source this file, then run PKCS#11 tools\n");
    for (name, value) in env_vars(conf, module)
        .into_iter()
        .chain([("CUSTODY_FIXTURES".to_owned(), set_dir.to_path_buf())])
    {
        text.push_str(&format!(
            "export {name}={}\n",
            shell_quote(utf8_path(&value)?)
        ));
    }
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so readers
/// never see a half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    temp.push(format!(".tmp-{}-{n}", std::process::id()));
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, bytes).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path)
        .with_context(|| format!("renaming {} to {}", temp.display(), path.display()))
}

/// A fresh, empty directory `base/name` for one test: removed first if a previous run left it,
/// so target/tmp does not grow. `name` must be unique among concurrently running tests and a
/// single path component.
pub fn temp_dir(base: &Path, name: &str) -> anyhow::Result<PathBuf> {
    ensure!(
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']),
        "temp_dir name {name:?} must be one path component"
    );
    let dir = base.join(name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", dir.display())),
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Where the program `name` is on PATH, if it is.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

pub(crate) fn utf8_path(path: &Path) -> anyhow::Result<&str> {
    match path.to_str() {
        Some(text) => Ok(text),
        None => bail!("{} is not UTF-8; fixture paths must be", path.display()),
    }
}

/// Single-quotes `text` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_names_the_token_dir_and_file_backend() -> anyhow::Result<()> {
        let conf = render_conf(Path::new("/x/y z/tokens"))?;
        assert!(conf.contains("directories.tokendir = /x/y z/tokens\n"));
        assert!(conf.contains("objectstore.backend = file\n"));
        assert!(conf.contains("log.level = ERROR\n"));
        assert!(render_conf(Path::new("/x\n/tokens")).is_err());
        Ok(())
    }

    #[test]
    fn shell_quote_escapes_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn temp_dir_rejects_paths() {
        assert!(temp_dir(Path::new("/nonexistent"), "../x").is_err());
        assert!(temp_dir(Path::new("/nonexistent"), "").is_err());
    }
}
