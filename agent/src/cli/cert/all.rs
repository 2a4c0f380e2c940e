//! `custody cert export --all --dir DIR`: the certificate of every key set a person holds
//! now, one file each, for registry work.
//!
//! File names are made from the row number, the holder's name reduced to letters, digits and
//! `_` (at most 48 characters), and the certificate's fingerprint: `0012-Коваль_Марія-
//! 87638df7d34b.cer`, so a hostile name (`../`, `/`, control characters, a leading dot) can
//! never leave the directory or hide a file. Existing files are refused before anything is
//! written (unless --force); files are written mode 0600 without following links.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use serde::Serialize;

use super::{pem, CertExportArgs};
use crate::cli::issue::refused;
use crate::cli::Context;
use crate::output::json;
use crate::Exit;

/// One file written.
#[derive(Debug, Serialize)]
struct Written {
    file: std::path::PathBuf,
    format: &'static str,
    row_no: u64,
    holder: String,
    holder_id: Option<String>,
    tax_number: Option<String>,
    carrier: String,
    sha256: String,
    not_after: Option<String>,
}

/// The holder's name as a file-name part: letters and digits kept, runs of anything else
/// one `_`, at most 48 characters, never empty.
pub(super) fn safe_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out: String = out.trim_end_matches('_').chars().take(48).collect();
    let out = out.trim_end_matches('_').to_owned();
    if out.is_empty() {
        "holder".into()
    } else {
        out
    }
}

pub(super) fn run(ctx: &Context, args: &CertExportArgs) -> anyhow::Result<Exit> {
    let Some(dir) = &args.dir else {
        anyhow::bail!("--all needs --dir DIR");
    };
    let journal = ctx.open_existing_journal()?;
    let held = journal.held_certificates()?;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return refused(
                ctx,
                custody_core::Error::Refused(format!(
                    "{} is not a directory (or is a symbolic link); give a directory",
                    dir.display()
                )),
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        }
        Err(e) => anyhow::bail!("{}: {e}", dir.display()),
    }
    let formats: &[&'static str] = if args.both {
        &["der", "pem"]
    } else if args.pem {
        &["pem"]
    } else {
        &["der"]
    };
    let mut plan = Vec::new();
    for c in &held {
        for format in formats {
            let ext = if *format == "der" { "cer" } else { "pem" };
            let name = format!(
                "{:04}-{}-{}.{ext}",
                c.row_no,
                safe_name(&c.holder_name),
                &c.sha256[..c.sha256.len().min(12)]
            );
            plan.push((dir.join(name), *format, c));
        }
    }
    if !args.force {
        if let Some((path, _, _)) = plan.iter().find(|(p, _, _)| p.symlink_metadata().is_ok()) {
            return refused(
                ctx,
                custody_core::Error::Refused(format!(
                    "{} exists; nothing was written. Choose an empty directory or pass --force",
                    path.display()
                )),
            );
        }
    }
    let mut written = Vec::new();
    for (path, format, c) in &plan {
        let bytes = if *format == "der" {
            c.der.clone()
        } else {
            pem(&c.der)
        };
        write_file(path, &bytes)?;
        written.push(Written {
            file: path.clone(),
            format,
            row_no: c.row_no,
            holder: c.holder_name.clone(),
            holder_id: c.holder_id.clone(),
            tax_number: c.tax_number.clone(),
            carrier: c.carrier.clone(),
            sha256: c.sha256.clone(),
            not_after: c.not_after.clone(),
        });
    }
    if ctx.global.json {
        json(&serde_json::json!({ "ok": true, "dir": dir, "files": written }))?;
    } else {
        for w in &written {
            println!("{}  {} (row {})", w.file.display(), w.holder, w.row_no);
        }
        println!(
            "Wrote {} file(s) of {} certificate(s) held now to {}.",
            written.len(),
            held.len(),
            dir.display()
        );
    }
    Ok(Exit::Ok)
}

/// Writes a certificate file: mode 0600, a link planted at its name not followed (see
/// `custody_core::file::write_private`).
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    custody_core::file::write_private(path, bytes)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_inside_the_directory() {
        assert_eq!(
            safe_name("Коваль Мар'яна Петрівна"),
            "Коваль_Мар_яна_Петрівна"
        );
        assert_eq!(safe_name("../../etc/passwd"), "etc_passwd");
        assert_eq!(safe_name(".hidden\u{0}\n/x"), "hidden_x");
        assert_eq!(safe_name("///"), "holder");
        assert_eq!(safe_name(&"я".repeat(100)).chars().count(), 48);
    }
}
