//! The fleet at scale: `--agents` workstation journals of `--per-agent` events each, with
//! real rows of the mandated form, loaded the way agents load them, then the organisation's
//! commands timed on the whole.
//!
//! **What each journal holds.** One carrier's life is first made for real, by the `custody`
//! binary on a SoftHSM2 token (`scan`, `issue`, `order create` + `order sign`, `wipe
//! --order`): its events are the template. Each agent's journal is then written with the
//! journal's own code (`Journal::open`, `Journal::write`, so every hash is the chain code's):
//! `--carriers` lives of the template, each under a serial, order id and form row number of
//! its own, their checkpoints signed anew by the journal's own key; then notes up to
//! `--per-agent` events. (A replayed `order_received` keeps the template order's signature,
//! which covers the template's serial; nothing on the organisation's side re-checks it.)
//!
//! **How it is loaded.** Each agent is enrolled (its own login role) and its journal pushed
//! by `Fleet::sync`, what `custody sync` runs (row-level security, the server's chain check of
//! every event, batches of 1,000), by `--workers` threads at once.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use custody_core::event::EventKind;
use custody_core::fleet::{Database, Fleet, SyncOptions};
use custody_core::journal::Journal;
use custody_tests::postgres::Postgres;
use custody_tests::{Profile, Spec, TokenSet, TokenSpec};

use super::{actor, add_notes, fresh_fleet, remove_journal, run_custody, Args};

/// One event of the template carrier's life.
struct Step {
    kind: EventKind,
    carrier: Option<String>,
    data: String,
}

/// The template: a carrier's life as the `custody` binary journaled it.
struct Template {
    steps: Vec<Step>,
    serial: String,
    order_id: String,
    row_no: u64,
}

const ORDER_ID: &str = "ord-bench-template";

fn toml_string(path: &Path) -> String {
    format!(
        "\"{}\"",
        path.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

/// Enrols, issues and destroys one SoftHSM2 carrier with the real binary; its events after
/// the journal's creation are the template.
fn make_template(args: &Args) -> anyhow::Result<Template> {
    let dir = args.dir.join("template");
    std::fs::create_dir_all(&dir)?;
    let spec = Spec::new().token(TokenSpec::new("Іваненко І.І.").ec_key_cert(
        "01",
        "signing key",
        Profile::ua_person(),
    ));
    let set = TokenSet::build(&args.fixtures, &spec, &dir.join("set"))?;
    let token = &set.manifest().tokens[0];
    let key = dir.join("hr_ed25519");
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "hr@example.org",
            "-f",
        ])
        .arg(&key)
        .output()
        .context("running ssh-keygen (Debian package openssh-client)")?;
    ensure!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let signers = dir.join("allowed_signers");
    std::fs::write(&signers, format!("hr@example.org {}", public.trim()))?;
    let config = dir.join("custody.toml");
    std::fs::write(
        &config,
        format!("[orders]\nallowed_signers = {}\n", toml_string(&signers)),
    )?;
    let journal = dir.join("template.db");
    let run = |cli: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(&args.custody)
            .envs(set.env())
            .env("CUSTODY_CONFIG", &config)
            .arg("--journal")
            .arg(&journal)
            .arg("--module")
            .arg(set.module())
            .args(cli)
            .output()?;
        ensure!(
            out.status.success(),
            "custody {cli:?}: exit {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&["scan"])?;
    run(&["issue", "--carrier", &token.serial, "--date", "2026-03-02"])?;
    let holder = {
        let j = Journal::open_read_only(&journal)?;
        let issued = j
            .chain_events(0, 10_000)?
            .into_iter()
            .find(|e| e.kind == EventKind::Issued.as_str())
            .context("the template's issue wrote no `issued` event")?;
        let data: serde_json::Value = serde_json::from_str(&issued.data)?;
        data["holder"]["name"]
            .as_str()
            .context("no holder name in the `issued` event")?
            .to_owned()
    };
    let order = dir.join("order.json");
    let text = run(&[
        "order",
        "create",
        "--carrier",
        &token.serial,
        "--holder",
        &holder,
        "--dismissed",
        "2026-11-23",
        "--method",
        "reinit",
        "--responsible",
        "Коваленко Ольга Петрівна",
        "--reason",
        "Наказ № 17-к",
        "--id",
        ORDER_ID,
    ])?;
    std::fs::write(&order, text)?;
    let path = |p: &Path| p.to_str().map(str::to_owned).context("a path in UTF-8");
    run(&["order", "sign", &path(&order)?, "--key", &path(&key)?])?;
    run(&[
        "wipe",
        "--order",
        &path(&order)?,
        "--so-pin-file",
        &path(&token.so_pin_file)?,
    ])?;
    let j = Journal::open_read_only(&journal)?;
    let events = j.chain_events(1, 100_000)?;
    let mut row_no = None;
    let mut steps = Vec::new();
    for e in events {
        let kind: EventKind = e
            .kind
            .parse()
            .map_err(|_| anyhow::anyhow!("unknown kind {}", e.kind))?;
        if kind == EventKind::Issued {
            let data: serde_json::Value = serde_json::from_str(&e.data)?;
            row_no = data["row_no"].as_u64();
        }
        steps.push(Step {
            kind,
            carrier: e.carrier,
            data: e.data,
        });
    }
    for wanted in [
        EventKind::CarrierEnrolled,
        EventKind::Issued,
        EventKind::OrderReceived,
        EventKind::WipeCompleted,
    ] {
        ensure!(
            steps.iter().any(|s| s.kind == wanted),
            "the template has no {wanted:?} event"
        );
    }
    Ok(Template {
        steps,
        serial: token.serial.clone(),
        order_id: ORDER_ID.into(),
        row_no: row_no.context("the template's `issued` event has no row_no")?,
    })
}

/// Sets every `row_no` equal to `from` in `v` to `to`.
fn renumber(v: &mut serde_json::Value, from: u64, to: u64) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if k == "row_no" && x.as_u64() == Some(from) {
                    *x = to.into();
                } else {
                    renumber(x, from, to);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for x in items {
                renumber(x, from, to);
            }
        }
        _ => {}
    }
}

/// A serial of the template serial's length and case, unique to (agent, carrier).
fn serial_for(template: &str, agent: usize, carrier: usize) -> String {
    let hex = format!(
        "{:0width$x}",
        ((agent as u64 + 1) << 20) | carrier as u64,
        width = template.len()
    );
    if template.chars().any(|c| c.is_ascii_uppercase()) {
        hex.to_ascii_uppercase()
    } else {
        hex
    }
}

/// Writes agent `index`'s journal: creation checkpoint, `carriers` lives, notes up to `total`.
fn write_journal(
    path: &Path,
    template: &Template,
    index: usize,
    carriers: usize,
    total: usize,
) -> anyhow::Result<Journal> {
    let host = format!("ws-{index:04}");
    let who = actor(&host);
    let mut journal = Journal::open(path)?;
    let key = journal.journal_key()?;
    for c in 0..carriers {
        let serial = serial_for(&template.serial, index, c);
        let order_id = format!("ord-{index:04}-{c:03}");
        journal.write(&who, time::OffsetDateTime::now_utc(), |w| {
            for step in &template.steps {
                if step.kind == EventKind::Checkpoint {
                    w.checkpoint(&key)?;
                    continue;
                }
                let text = step
                    .data
                    .replace(&template.serial, &serial)
                    .replace(&template.order_id, &order_id);
                let mut data: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| custody_core::Error::JournalCorrupt(e.to_string()))?;
                renumber(&mut data, template.row_no, c as u64 + 1);
                let carrier = step
                    .carrier
                    .as_ref()
                    .map(|k| k.replace(&template.serial, &serial));
                w.append(step.kind, carrier.as_deref(), &data)?;
            }
            Ok(())
        })?;
    }
    let (head, _) = journal.head()?;
    ensure!(
        head as usize <= total,
        "{carriers} carriers' lives make {head} events, more than --per-agent {total}"
    );
    add_notes(&mut journal, total - head as usize, &host)?;
    Ok(journal)
}

/// Loads the fleet, then times `custody fleet verify`, `form` (HTML and CSV) and `status`.
pub(crate) fn run(pg: &Postgres, args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let template = make_template(args)?;
    println!(
        "template: one carrier enrolled, issued and destroyed by custody on SoftHSM2: {} events ({}) in {:.1} s",
        template.steps.len(),
        template
            .steps
            .iter()
            .map(|s| s.kind.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
    let (db, _) = fresh_fleet(pg, "fleet")?;
    let url = pg.url("postgres", &db);
    let next = AtomicUsize::new(0);
    let made = Mutex::new(Duration::ZERO);
    let synced = Mutex::new(Duration::ZERO);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.workers.max(1) {
            s.spawn(|| {
                let work = || -> anyhow::Result<()> {
                    let mut owner = Fleet::connect(&Database::parse(&url)?)?;
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= args.agents || failure.lock().map_or(true, |f| f.is_some()) {
                            return Ok(());
                        }
                        let name = format!("ws-{i:04}");
                        let path = args.dir.join(format!("{name}.db"));
                        let t = Instant::now();
                        let journal =
                            write_journal(&path, &template, i, args.carriers, args.per_agent)?;
                        let t_made = t.elapsed();
                        let t = Instant::now();
                        let enrolled = owner.enroll_agent(&name, false)?;
                        let agent = Database::parse(&pg.url(&enrolled.role, &db))?
                            .with_password(&enrolled.password);
                        let report = Fleet::connect(&agent)?.sync(
                            &journal,
                            &SyncOptions {
                                batch: 1000,
                                host: name.clone(),
                            },
                        )?;
                        let t_synced = t.elapsed();
                        ensure!(
                            report.server_seq as usize == args.per_agent,
                            "{name}: the organisation holds {} events",
                            report.server_seq
                        );
                        drop(journal);
                        remove_journal(&path);
                        if let (Ok(mut m), Ok(mut y)) = (made.lock(), synced.lock()) {
                            *m += t_made;
                            *y += t_synced;
                        }
                        if (i + 1).is_multiple_of(100) {
                            eprintln!(
                                "  {} agents loaded ({:.0} s)",
                                i + 1,
                                start.elapsed().as_secs_f64()
                            );
                        }
                    }
                };
                if let Err(e) = work() {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let wall = start.elapsed();
    let total = args.agents * args.per_agent;
    let (made, synced) = (
        made.into_inner().unwrap_or_default(),
        synced.into_inner().unwrap_or_default(),
    );
    println!(
        "{} agents x {} events = {total} events ({} carriers' lives each, {} form rows in all) loaded by {} workers in {:.1} s: \
         journals written {:.1} s, enroll + sync {:.1} s ({:.0} events/s per worker)",
        args.agents,
        args.per_agent,
        args.carriers,
        args.agents * args.carriers,
        args.workers.max(1),
        wall.as_secs_f64(),
        made.as_secs_f64(),
        synced.as_secs_f64(),
        total as f64 / synced.as_secs_f64().max(1e-9),
    );
    {
        let mut c = pg.client(&db)?;
        let size: String = c
            .query_one(
                "SELECT pg_size_pretty(pg_database_size(current_database()))",
                &[],
            )?
            .get(0);
        let alarms: i64 = c
            .query_one("SELECT count(*) FROM custody.alarms", &[])?
            .get(0);
        ensure!(alarms == 0, "the load raised {alarms} alarm(s)");
        println!("database size {size}, no alarm");
    }
    // A serial of the last carrier of the last agent, as the form must show it.
    let last = serial_for(
        &template.serial,
        args.agents.saturating_sub(1),
        args.carriers.saturating_sub(1),
    );
    measure(args, &url, total, &last)?;
    pg.client("postgres")?
        .batch_execute(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))?;
    Ok(())
}

fn measure(args: &Args, url: &str, total: usize, serial: &str) -> anyhow::Result<()> {
    let (took, out) = run_custody(args, &["--json", "fleet", "verify", "--database", url], 0)?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let r = &v["verify"];
    ensure!(
        v["ok"] == true && r["events"].as_u64() == Some(total as u64),
        "fleet verify: {}",
        r
    );
    println!(
        "custody fleet verify: {total} events, {} checkpoints, {} journals in {:.1} s: {:.0} events/s (whole process); chain {} ms ({} events/s), checkpoints {} ms",
        r["checkpoints"],
        args.agents,
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        r["chain_ms"],
        r["events_per_second"],
        r["checkpoint_ms"]
    );
    let rows = args.agents * args.carriers;
    for (format, ext) in [("html", "html"), ("csv", "csv")] {
        let out = args.dir.join(format!("fleet-form.{ext}"));
        let (took, _) = run_custody(
            args,
            &[
                "fleet",
                "form",
                "--database",
                url,
                "--format",
                format,
                "--out",
                out.to_str().unwrap_or_default(),
            ],
            0,
        )?;
        let text = std::fs::read_to_string(&out)?;
        if format == "csv" {
            let found = text.lines().count().saturating_sub(1);
            ensure!(found == rows, "the CSV form has {found} rows, not {rows}");
            ensure!(
                rows == 0 || text.to_lowercase().contains(&serial.to_lowercase()),
                "the CSV form does not show serial {serial}"
            );
        } else {
            ensure!(
                text.contains("ws-0000/1") && text.contains("Коваленко"),
                "the HTML form lacks the first agent's first row or its destruction"
            );
        }
        println!(
            "custody fleet form --format {format}: {rows} rows from {total} events in {:.1} s ({} KiB)",
            took.as_secs_f64(),
            text.len() / 1024
        );
        let _ = std::fs::remove_file(out);
    }
    for json in [true, false] {
        let mut cli = vec!["fleet", "status", "--database", url];
        if json {
            cli.insert(0, "--json");
        }
        let (took, out) = run_custody(args, &cli, 0)?;
        if json {
            let v: serde_json::Value = serde_json::from_str(&out)?;
            let journals = v["status"]["journals"].as_array().map_or(0, Vec::len);
            if journals != args.agents {
                bail!(
                    "fleet status lists {journals} journals, not {}",
                    args.agents
                );
            }
        }
        println!(
            "custody fleet status{}: {} agents in {:.1} s",
            if json { " --json" } else { "" },
            args.agents,
            took.as_secs_f64()
        );
    }
    Ok(())
}
