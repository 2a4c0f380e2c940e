//! The server side through custody-core: schema, roles and row-level security, the
//! server's chain check, sync and its faults.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use custody_core::fleet::{Database, Fleet};
use custody_core::journal::Journal;
use custody_core::Error;
use custody_tests::postgres::{Options, Postgres};

use super::{actor, add_notes, copy_journal, dir, opts, raw_agent, TestFleet, TestResult};

#[test]
fn init_is_idempotent_and_creates_the_roles() -> TestResult {
    let pg = Postgres::shared()?;
    let fleet = TestFleet::new(pg, "init")?;
    let report = fleet.owner()?.init()?;
    ensure!(report.from_version == report.version, "{report:?}");
    let mut c = pg.client(&fleet.db)?;
    for role in ["admin", "auditor", "agent"] {
        let name = format!("{}_{role}", fleet.db);
        let n = c
            .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])?
            .len();
        ensure!(n == 1, "role {name} missing");
    }
    Ok(())
}

#[test]
fn sync_pushes_every_event_once_and_the_server_hash_agrees() -> TestResult {
    let pg = Postgres::shared()?;
    let fleet = TestFleet::new(pg, "sync")?;
    let agent = fleet.agent("ws1")?;
    let dir = dir("fleet_sync")?;
    let mut journal = Journal::open(&dir.join("journal.db"))?;
    add_notes(&mut journal, 2500, "перша")?;
    journal.checkpoint(&actor(), time::OffsetDateTime::now_utc())?;
    add_notes(&mut journal, 10, "друга")?;
    let mut f = Fleet::connect(&agent)?;
    let report = f.sync(&journal, &opts(1000))?;
    ensure!(report.pushed == 2512 && report.batches == 3, "{report:?}");
    ensure!(report.server_seq == 2512 && report.local_seq == 2512);
    let cp = report.checkpoint.context("the checkpoint is held")?;
    ensure!(cp.checkpoint().count == 2501 && cp.checkpoint().seq == 2502);
    // Idempotent. (A new journal starts with its own signed checkpoint: event 1.)
    let again = f.sync(&journal, &opts(1000))?;
    ensure!(again.pushed == 0 && again.server_seq == 2512, "{again:?}");
    let cmp = f.compare(&journal)?;
    ensure!(cmp.ok() && cmp.registered, "{cmp:?}");
    let verify = fleet.owner()?.verify()?;
    ensure!(
        verify.ok() && verify.events == 2512 && verify.checkpoints == 2,
        "{verify:?}"
    );
    ensure!(fleet.owner()?.alarms(None)?.is_empty());
    Ok(())
}

#[test]
fn an_agent_can_only_insert_its_own_journal() -> TestResult {
    let pg = Postgres::shared()?;
    let fleet = TestFleet::new(pg, "rls")?;
    let dir = dir("fleet_rls")?;
    let mut owner = fleet.owner()?;
    let a = owner.enroll_agent("ws-a", false)?;
    let b = owner.enroll_agent("ws-b", false)?;
    let db_a = Database::parse(&pg.url(&a.role, &fleet.db))?.with_password(&a.password);
    let db_b = Database::parse(&pg.url(&b.role, &fleet.db))?.with_password(&b.password);
    let mut ja = Journal::open(&dir.join("a.db"))?;
    let mut jb = Journal::open(&dir.join("b.db"))?;
    add_notes(&mut ja, 5, "a")?;
    add_notes(&mut jb, 5, "b")?;
    Fleet::connect(&db_a)?.sync(&ja, &opts(100))?;
    Fleet::connect(&db_b)?.sync(&jb, &opts(100))?;
    use secrecy::ExposeSecret;
    let mut raw = raw_agent(pg, &fleet.db, &db_a, a.password.expose_secret())?;
    let (own, other) = (ja.journal_id().to_owned(), jb.journal_id().to_owned());
    // Positive control: the agent reads its own events.
    let mine = raw.query(
        "SELECT seq FROM custody.events WHERE journal_id = $1::text::uuid",
        &[&own],
    )?;
    ensure!(mine.len() == 6, "own events visible: {}", mine.len());
    let theirs = raw.query(
        "SELECT seq FROM custody.events WHERE journal_id = $1::text::uuid",
        &[&other],
    )?;
    ensure!(theirs.is_empty(), "another agent's events are visible");
    for (what, sql) in [
        (
            "update",
            "UPDATE custody.events SET data = '{}' WHERE journal_id = $1::text::uuid",
        ),
        (
            "delete",
            "DELETE FROM custody.events WHERE journal_id = $1::text::uuid",
        ),
        (
            "checkpoint update",
            "UPDATE custody.checkpoints SET at = '' WHERE journal_id = $1::text::uuid",
        ),
        (
            "alarm delete",
            "DELETE FROM custody.alarms WHERE journal_id = $1::text::uuid",
        ),
        (
            "journal move",
            "UPDATE custody.journals SET agent = 'ws-a' WHERE journal_id = $1::text::uuid",
        ),
    ] {
        for j in [&own, &other] {
            let e = raw.execute(sql, &[j]);
            let code = e.as_ref().err().and_then(|e| e.code()).cloned();
            ensure!(
                code == Some(postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
                "{what} on {j} was not refused: {e:?}"
            );
        }
    }
    let truncate = raw.batch_execute("TRUNCATE custody.events");
    ensure!(truncate.is_err(), "truncate was not refused");
    // Writing the other journal's next event, with a correct chain: refused.
    let next = jb.chain_events(6, 1)?;
    ensure!(next.is_empty());
    add_notes(&mut jb, 1, "b")?;
    let e = &jb.chain_events(6, 1)?[0];
    let r = raw.execute(
        "INSERT INTO custody.events (journal_id, seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash)
         VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[&other, &(e.seq as i64), &e.at, &e.kind, &e.carrier, &e.os_user, &e.operator, &e.host, &e.data, &&e.prev_hash[..], &&e.hash[..]],
    );
    ensure!(
        r.as_ref().err().and_then(|e| e.code())
            == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "writing another journal was not refused: {r:?}"
    );
    // Nor can it claim the other journal as its own, or raise alarms by hand.
    let r = raw.execute(
        "SELECT custody.register_journal($1::text::uuid, 'x')",
        &[&other],
    );
    ensure!(
        r.is_err(),
        "registering another agent's journal was not refused"
    );
    let r = raw.execute(
        "INSERT INTO custody.alarms (journal_id, seq, kind, detail) VALUES ($1::text::uuid, 1, 'fork', 'x')",
        &[&other],
    );
    ensure!(r.is_err(), "an agent inserted an alarm");
    // The server holds B's 6 events (its creation checkpoint and 5 notes), unchanged.
    let verify = fleet.owner()?.verify()?;
    ensure!(verify.ok() && verify.events == 12, "{verify:?}");
    ensure!(fleet.owner()?.alarms(None)?.is_empty());
    Ok(())
}

#[test]
fn a_forked_chain_is_refused_and_the_alarm_kept() -> TestResult {
    let pg = Postgres::shared()?;
    let fleet = TestFleet::new(pg, "fork")?;
    let agent = fleet.agent("ws1")?;
    let dir = dir("fleet_fork")?;
    let path = dir.join("journal.db");
    let fork = dir.join("fork.db");
    {
        let mut j = Journal::open(&path)?;
        add_notes(&mut j, 20, "shared")?;
    }
    copy_journal(&path, &fork)?;
    let mut j = Journal::open(&path)?;
    add_notes(&mut j, 5, "original")?;
    Fleet::connect(&agent)?.sync(&j, &opts(100))?;
    // The fork: same journal id, the same 20 events, then 7 others.
    let mut forked = Journal::open(&fork)?;
    add_notes(&mut forked, 7, "forged")?;
    let e = Fleet::connect(&agent)?
        .sync(&forked, &opts(100))
        .map(|_| ())
        .expect_err("refused");
    ensure!(matches!(e, Error::FleetDiverged { seq: 26 }), "{e}");
    let alarms = fleet.owner()?.alarms(None)?;
    ensure!(
        alarms.iter().any(|a| a.kind == "fork" && a.seq == 27),
        "no fork alarm at #27: {alarms:?}"
    );
    // Pushed by hand past the client's own check: refused by the server, alarm kept.
    let mut raw = {
        let mut owner = fleet.owner()?;
        let again = owner.enroll_agent("ws1", true)?;
        use secrecy::ExposeSecret;
        let db = Database::parse(&pg.url(&again.role, &fleet.db))?.with_password(&again.password);
        (
            raw_agent(pg, &fleet.db, &db, again.password.expose_secret())?,
            db,
        )
    };
    let e = &forked.chain_events(26, 1)?[0];
    let n = raw.0.execute(
        "INSERT INTO custody.events (journal_id, seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash)
         VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[&forked.journal_id(), &(e.seq as i64), &e.at, &e.kind, &e.carrier, &e.os_user, &e.operator, &e.host, &e.data, &&e.prev_hash[..], &&e.hash[..]],
    )?;
    ensure!(n == 0, "the forked event #27 was stored");
    // A rewritten row (hash no longer matches its contents) at the next seq: refused.
    let mut next = j.chain_events(25, 1)?[0].clone();
    next.seq = 27;
    next.prev_hash = j.event_hash(26)?.context("#26")?;
    next.data = "{\"text\":\"altered\"}".into();
    let n = raw.0.execute(
        "INSERT INTO custody.events (journal_id, seq, at, kind, carrier, os_user, operator, host, data, prev_hash, hash)
         VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[&j.journal_id(), &(next.seq as i64), &next.at, &next.kind, &next.carrier, &next.os_user, &next.operator, &next.host, &next.data, &&next.prev_hash[..], &&next.hash[..]],
    )?;
    ensure!(
        n == 0,
        "a row whose hash does not match its contents was stored"
    );
    let alarms = fleet.owner()?.alarms(None)?;
    ensure!(
        alarms.iter().any(|a| a.kind == "rewritten" && a.seq == 27),
        "{alarms:?}"
    );
    let forks = alarms
        .iter()
        .filter(|a| a.kind == "fork" && a.seq == 27)
        .count();
    ensure!(forks == 2, "{alarms:?}");
    // The genuine journal still syncs and verifies; the organisation's record is intact.
    add_notes(&mut j, 3, "after")?;
    let r = Fleet::connect(&raw.1)?.sync(&j, &opts(100))?;
    ensure!(r.server_seq == 29, "{r:?}");
    ensure!(fleet.owner()?.verify()?.ok());
    Ok(())
}

#[test]
fn a_rolled_back_local_journal_is_detected() -> TestResult {
    let pg = Postgres::shared()?;
    let fleet = TestFleet::new(pg, "rollback")?;
    let agent = fleet.agent("ws1")?;
    let dir = dir("fleet_rollback")?;
    let path = dir.join("journal.db");
    let backup = dir.join("backup.db");
    {
        let mut j = Journal::open(&path)?;
        add_notes(&mut j, 30, "before backup")?;
    }
    copy_journal(&path, &backup)?;
    {
        let mut j = Journal::open(&path)?;
        add_notes(&mut j, 12, "after backup")?;
        Fleet::connect(&agent)?.sync(&j, &opts(100))?;
    }
    // The old backup is restored over the journal.
    copy_journal(&backup, &path)?;
    let j = Journal::open(&path)?;
    let e = Fleet::connect(&agent)?
        .sync(&j, &opts(100))
        .map(|_| ())
        .expect_err("refused");
    ensure!(
        e.to_string()
            .contains("local journal behind the organisation's record at seq 43"),
        "{e}"
    );
    let cmp = Fleet::connect(&agent)?.compare(&j)?;
    ensure!(
        cmp.behind() && !cmp.ok() && cmp.server_seq == 43 && cmp.local_seq == 31,
        "{cmp:?}"
    );
    let alarms = fleet.owner()?.alarms(None)?;
    ensure!(
        alarms.iter().any(|a| a.kind == "behind" && a.seq == 43),
        "{alarms:?}"
    );
    // Truncated and then grown past the organisation's head: a fork, refused.
    drop(j);
    let mut j = Journal::open(&path)?;
    add_notes(&mut j, 20, "new history")?;
    let e = Fleet::connect(&agent)?
        .sync(&j, &opts(100))
        .map(|_| ())
        .expect_err("refused");
    ensure!(matches!(e, Error::FleetDiverged { seq: 43 }), "{e}");
    Ok(())
}

/// The race behind two syncs of a new journal at once, made certain: a registration of the
/// journal is left uncommitted while a sync registers the same journal. The sync waits for
/// it and then goes on; before schema 2 it failed on the journals' primary key.
#[test]
fn a_journal_registered_by_a_concurrent_sync_is_not_an_error() -> TestResult {
    use secrecy::ExposeSecret;
    let pg = Postgres::shared()?;
    let fleet = TestFleet::new(pg, "register")?;
    let enrolled = fleet.owner()?.enroll_agent("ws1", false)?;
    let agent =
        Database::parse(&pg.url(&enrolled.role, &fleet.db))?.with_password(&enrolled.password);
    let dir = dir("fleet_register")?;
    let mut j = Journal::open(&dir.join("journal.db"))?;
    add_notes(&mut j, 10, "ws1")?;
    let id = j.journal_id().to_owned();
    drop(j);
    let mut first = raw_agent(pg, &fleet.db, &agent, enrolled.password.expose_secret())?;
    let mut tx = first.transaction()?;
    tx.execute(
        "SELECT custody.register_journal($1::text::uuid, 'ws-test')",
        &[&id],
    )?;
    let path = dir.join("journal.db");
    let second = {
        let agent = agent.clone();
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let j = Journal::open(&path)?;
            Ok(Fleet::connect(&agent)?.sync(&j, &opts(100))?.pushed)
        })
    };
    // The sync is waiting on the uncommitted registration (a lock wait the server shows).
    let mut watcher = pg.client(&fleet.db)?;
    let started = std::time::Instant::now();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND wait_event_type = 'Lock' AND query LIKE '%register_journal%'",
                &[],
            )?
            .get(0);
        if waiting == 1 {
            break;
        }
        ensure!(
            !second.is_finished(),
            "the sync did not wait for the registration in progress: {:?}",
            second.join().map_err(|_| anyhow::anyhow!("panicked"))?
        );
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the sync never reached the registration"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tx.commit()?;
    let pushed = second.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    ensure!(pushed == 11, "pushed {pushed}");
    let verify = fleet.owner()?.verify()?;
    ensure!(verify.ok() && verify.events == 11, "{verify:?}");
    ensure!(fleet.owner()?.alarms(None)?.is_empty());
    Ok(())
}

#[test]
fn two_agents_sync_at_once() -> TestResult {
    let pg = Postgres::shared()?;
    let fleet = TestFleet::new(pg, "concurrent")?;
    let dir = dir("fleet_concurrent")?;
    let mut handles = Vec::new();
    for name in ["ws1", "ws2"] {
        let agent = fleet.agent(name)?;
        let path = dir.join(format!("{name}.db"));
        let mut j = Journal::open(&path)?;
        add_notes(&mut j, 3000, name)?;
        drop(j);
        handles.push(std::thread::spawn(move || -> anyhow::Result<u64> {
            // Two processes of the same agent at once too.
            let a = std::thread::scope(|s| {
                let t = s.spawn(|| {
                    let j = Journal::open(&path)?;
                    Fleet::connect(&agent).and_then(|mut f| f.sync(&j, &opts(200)))
                });
                let j = Journal::open(&path)?;
                let mine = Fleet::connect(&agent).and_then(|mut f| f.sync(&j, &opts(300)));
                Ok::<_, Error>((mine, t.join()))
            })?;
            let (x, y) = a;
            let y = y.map_err(|_| anyhow::anyhow!("sync thread panicked"))?;
            Ok(x?.pushed + y?.pushed)
        }));
    }
    for h in handles {
        let pushed = h.join().map_err(|_| anyhow::anyhow!("panicked"))??;
        ensure!(
            pushed == 3001,
            "each event pushed exactly once, got {pushed}"
        );
    }
    let verify = fleet.owner()?.verify()?;
    ensure!(verify.ok() && verify.events == 6002, "{verify:?}");
    Ok(())
}

#[test]
fn the_database_killed_mid_sync_loses_and_duplicates_nothing() -> TestResult {
    let mut pg = Postgres::start(&Options::default())?;
    let db = pg.database("killed")?;
    let owner_db = Database::parse(&pg.url("postgres", &db))?;
    Fleet::connect(&owner_db)?.init()?;
    let enrolled = Fleet::connect(&owner_db)?.enroll_agent("ws1", false)?;
    let agent = Database::parse(&pg.url(&enrolled.role, &db))?.with_password(&enrolled.password);
    let dir = dir("fleet_killed")?;
    let mut j = Journal::open(&dir.join("journal.db"))?;
    add_notes(&mut j, 20_000, "many")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let syncing = {
        let agent = agent.clone();
        let path = dir.join("journal.db");
        std::thread::spawn(move || -> anyhow::Result<String> {
            let j = Journal::open(&path)?;
            let mut f = Fleet::connect(&agent)?;
            tx.send(())?;
            Ok(match f.sync(&j, &opts(50)) {
                Ok(r) => format!("completed: {r:?}"),
                Err(e) => e.to_string(),
            })
        })
    };
    rx.recv()?;
    std::thread::sleep(Duration::from_millis(700));
    pg.kill()?;
    let outcome = syncing.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    ensure!(
        outcome.contains("cannot be reached"),
        "the sync was not interrupted: {outcome}"
    );
    // While it is down, the journal keeps growing.
    add_notes(&mut j, 100, "while down")?;
    let e = Fleet::connect(&agent).map(|_| ()).expect_err("refused");
    ensure!(matches!(e, Error::FleetUnreachable { .. }), "{e}");
    pg.restart()?;
    let mut owner = Fleet::connect(&owner_db)?;
    let held_after_crash = owner.verify()?.events;
    ensure!(
        held_after_crash > 0 && held_after_crash < 20_000,
        "held {held_after_crash}"
    );
    let report = Fleet::connect(&agent)?.sync(&j, &opts(1000))?;
    ensure!(report.pushed == 20_101 - held_after_crash, "{report:?}");
    let verify = owner.verify()?;
    ensure!(verify.ok() && verify.events == 20_101, "{verify:?}");
    ensure!(owner.alarms(None)?.is_empty());
    Ok(())
}
