//! The documentation holds together: every relative link and anchor in the README, the docs/
//! pages and BENCHMARKS.md leads somewhere; every README section the code, the packaging and
//! the error messages send a reader to exists; the README opens with the two set-up commands
//! and states the minimum Rust version that Cargo.toml declares.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The Markdown files a reader navigates: the README, BENCHMARKS.md, the fixtures' README and
/// every page under docs/.
fn markdown_files() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![
        root.join("README.md"),
        root.join("BENCHMARKS.md"),
        root.join("softhsm-fixtures/README.md"),
    ];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("docs/ is readable") {
            let path = entry.expect("a docs/ entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, every character that is not a letter, a digit,
/// a space, `-` or `_` dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The headings of a Markdown text, as written (without the `#`s).
fn headings(text: &str) -> Vec<String> {
    prose_lines(text)
        .into_iter()
        .filter_map(|line| {
            let rest = line.trim_start_matches('#');
            (rest.len() < line.len() && rest.starts_with(' ')).then(|| rest.trim().to_string())
        })
        .collect()
}

/// The anchors a Markdown text defines: one per heading, a repeated one numbered as GitHub
/// does (`-1`, `-2`).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for heading in headings(text) {
        let base = slug(&heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The targets of the inline links and images of a Markdown text (outside code).
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        // Inline code spans hold examples, not links.
        let mut prose = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                prose.push_str(part);
            }
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            targets.push(target.to_string());
            rest = &after[end..];
        }
    }
    targets
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let root = root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = fs::read_to_string(&file).expect("a Markdown file is UTF-8");
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a file has a directory").join(path)
            };
            if !dest.exists() {
                broken.push(format!(
                    "{shown}: {target}: {} does not exist",
                    dest.display()
                ));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            let Ok(dest_text) = fs::read_to_string(&dest) else {
                broken.push(format!(
                    "{shown}: {target}: an anchor into a file that is not text"
                ));
                continue;
            };
            if !anchors(&dest_text).contains(anchor) {
                broken.push(format!(
                    "{shown}: {target}: no heading with the anchor #{anchor}"
                ));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} relative links found: is the link parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The places outside the docs that send a reader to a README section by name, such as
/// `(README, "Backup and restore")` in an error message or `"Fuzzing"` in a comment.
fn readme_section_references(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (marker, quote) in [
        ("README, \\\"", "\\\""),
        ("README \\\"", "\\\""),
        ("README, \"", "\""),
        ("README \"", "\""),
    ] {
        let mut rest = text;
        while let Some(at) = rest.find(marker) {
            let after = &rest[at + marker.len()..];
            if let Some(end) = after.find(quote) {
                names.push(after[..end].to_string());
            }
            rest = after;
        }
    }
    // `see "Running as a service" in README.md`
    let mut rest = text;
    while let Some(at) = rest.find("\" in README.md") {
        if let Some(start) = rest[..at].rfind('"') {
            names.push(rest[start + 1..at].to_string());
        }
        rest = &rest[at + 1..];
    }
    names
}

#[test]
fn every_readme_section_named_by_the_code_exists() {
    let root = root();
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let sections: BTreeSet<String> = headings(&readme).into_iter().collect();
    let mut references = Vec::new();
    let mut dirs = vec![
        root.join("core"),
        root.join("agent"),
        root.join("tests"),
        root.join("packaging"),
        root.join("softhsm-fixtures"),
        root.join("fault-pkcs11"),
        root.join("bench"),
    ];
    let mut files = vec![root.join("Cargo.toml"), root.join("fuzz/Cargo.toml")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("a source directory is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| {
                ["rs", "sh", "toml", "service", "conf", "in"].contains(&e.to_str().unwrap_or(""))
            }) {
                files.push(path);
            }
        }
    }
    let mut missing = Vec::new();
    for file in files {
        // This file names sections in its own messages and examples.
        if file.ends_with("tests/tests/docs.rs") {
            continue;
        }
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for name in readme_section_references(&text) {
            references.push(name.clone());
            if !sections.contains(&name) {
                missing.push(format!(
                    "{}: README section \"{name}\" does not exist",
                    file.strip_prefix(&root).unwrap_or(&file).display()
                ));
            }
        }
    }
    // The error messages that tell an administrator to restore from a backup are among them.
    assert!(
        references.iter().any(|r| r == "Backup and restore"),
        "no reference to README \"Backup and restore\" found: {references:?}"
    );
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn the_readme_starts_with_the_two_set_up_commands() {
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut blocks = readme.split("```").skip(1).step_by(2);
    let first = blocks.next().expect("the README has a code block");
    let commands: Vec<&str> = first
        .lines()
        .skip(1)
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(
        commands,
        ["./softhsm-fixtures/demo.sh", "./tests/run.sh"],
        "the README's first code block must be the demo and the test suite, nothing else"
    );
    let before: &str = readme.split("```").next().unwrap_or("");
    assert!(
        before.lines().count() < 25,
        "the set-up commands are not on the README's first screen"
    );
    assert!(
        readme.contains("../shared/testdata"),
        "the README must say that the tests read ../shared/testdata"
    );
}

#[test]
fn the_readme_states_the_minimum_rust_version_of_cargo_toml() {
    let root = root();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let declared = manifest
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "rust-version").then(|| value.trim().trim_matches('"').to_string())
        })
        .expect("Cargo.toml declares rust-version");
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let stated: Vec<&str> = readme
        .split("Rust ")
        .skip(1)
        .filter_map(|after| {
            let version = after.split_whitespace().next()?;
            after[version.len()..]
                .trim_start()
                .starts_with("or newer")
                .then_some(version)
        })
        .collect();
    assert_eq!(
        stated,
        [declared.as_str()],
        "the README must state the minimum Rust version once, as Cargo.toml's rust-version"
    );
}

#[test]
fn the_link_checker_finds_a_broken_anchor() {
    let text = "# Title\n\n## Backup and restore\n\n```\n## not a heading\n```\n";
    let defined = anchors(text);
    assert!(defined.contains("backup-and-restore"));
    assert!(!defined.contains("not-a-heading"));
    assert_eq!(
        slug("What \"removed\" means in the journal"),
        "what-removed-means-in-the-journal"
    );
    assert_eq!(
        slug("`custody status [--overdue] [--running] [--expiring WINDOW]`"),
        "custody-status---overdue---running---expiring-window"
    );
    assert_eq!(
        link_targets("see [a](x.md#y) and `[b](not-a-link)` and ![img](p.png)"),
        ["x.md#y", "p.png"]
    );
}
