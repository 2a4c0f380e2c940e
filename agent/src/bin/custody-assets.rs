//! `custody-assets DIR`: writes the man pages and shell completions generated from the
//! command line's own definition, for packaging (`packaging/deb.sh`) and installs from source.
//!
//! Layout written: `DIR/man/custody.1`, `DIR/man/custody-<sub>.1` (one page per subcommand,
//! nested ones as `custody-journal-verify.1`), `DIR/completions/custody.bash`,
//! `DIR/completions/_custody` (zsh) and `DIR/completions/custody.fish`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::Shell;
use custody_agent::cli::Cli;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: custody-assets DIR   (writes DIR/man and DIR/completions)");
        return ExitCode::from(2);
    };
    match write_assets(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("custody-assets: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn write_assets(dir: &Path) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    let man = dir.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    write_man_pages(&cmd, "custody", &man)?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for (shell, file) in [
        (Shell::Bash, "custody.bash"),
        (Shell::Zsh, "_custody"),
        (Shell::Fish, "custody.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "custody", &mut out);
        let path = completions.join(file);
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One page for `cmd` named `name`, then one for each visible subcommand, recursively.
fn write_man_pages(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    let page = cmd.clone().name(name.to_owned());
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
