//! The background service behind `custody watch`: [`run`] until a shutdown future resolves.
//!
//! Parts: the worker thread ([`crate::worker`]) owns the modules and the journal; the
//! [`Watcher`] ([`crate::watch`]) polls it every interval; after each poll the state record
//! ([`crate::state`]) is updated and every [`Task`] runs once. Shutdown goes through
//! [`crate::shutdown`]: the poll in hand and its journal transaction are finished, the worker
//! records `last_seen` of the carriers present and finalises the modules, then `run` returns.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use custody_core::journal::{timestamp, Actor};
use time::OffsetDateTime;

use crate::config::{Config, Reinit};
use crate::shutdown::Coordinator;
use crate::state::{ModuleState, ServiceState, StateFile};
use crate::watch::{TokenEvent, Watcher};
use crate::worker::{self, PollReport, PresentCarrier, WorkerConfig, WorkerHandle};

/// What the service runs with.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The configuration (PIN sources, spool, …).
    pub config: Config,
    /// The journal file.
    pub journal: PathBuf,
    /// The modules and their re-initialisation policy.
    pub modules: Vec<(PathBuf, Reinit)>,
    /// Poll interval.
    pub interval: Duration,
    /// Who the service's events are recorded as.
    pub actor: Actor,
}

/// The future a [`Task`] returns.
pub type TaskFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// Work the service does once every interval, after the carriers were polled: this is
/// where the order spool and deadline tracking plug in ([`tasks`]). Tasks run one after
/// another on the service's async thread; anything that touches a module or the journal
/// goes through [`WorkerHandle::call`]. An error is logged and the service carries on.
pub trait Task: Send {
    /// A short name for logs.
    fn name(&self) -> &str;
    /// One round of work.
    fn run<'a>(&'a mut self, cx: &'a TaskContext<'a>) -> TaskFuture<'a>;
}

/// What a [`Task`] gets each round.
#[derive(Debug)]
pub struct TaskContext<'a> {
    /// The worker (modules and journal).
    pub worker: &'a WorkerHandle,
    /// The configuration.
    pub config: &'a Config,
    /// The poll that just finished.
    pub poll: &'a PollReport,
    /// The carriers present after it.
    pub present: &'a [PresentCarrier],
}

/// The tasks the service runs every interval, in order. Add the order spool here.
pub fn tasks(_config: &Config) -> Vec<Box<dyn Task>> {
    Vec::new()
}

/// Runs the service until `shutdown` resolves (or the worker fails). Returns `Ok` after a
/// clean shutdown.
pub async fn run(cfg: ServiceConfig, shutdown: impl Future) -> anyhow::Result<()> {
    let coordinator = Coordinator::new();
    let (_, worker_done) = coordinator.part();
    let (worker, worker_exit) = worker::start(
        WorkerConfig {
            journal: cfg.journal.clone(),
            modules: cfg.modules.clone(),
            config: cfg.config.clone(),
            actor: cfg.actor.clone(),
        },
        worker_done,
    )
    .await?;
    tracing::info!(
        journal = %cfg.journal.display(),
        modules = cfg.modules.len(),
        interval_ms = cfg.interval.as_millis() as u64,
        "watching"
    );
    let mut state = StateFile::new(StateFile::path_for(&cfg.journal));
    let mut record = ServiceState {
        pid: std::process::id(),
        started_at: timestamp(OffsetDateTime::now_utc()),
        stopped_at: None,
        journal: cfg.journal.display().to_string(),
        interval_ms: cfg.interval.as_millis() as u64,
        check_period_ms: 0,
        modules: Vec::new(),
        present: Vec::new(),
    };
    let mut tasks = tasks(&cfg.config);
    let (mut listen, loop_done) = coordinator.part();
    let mut watcher = Watcher::new(worker.clone(), cfg.interval, cfg.modules.len());
    let config = cfg.config.clone();
    tokio::pin!(shutdown);
    let result = {
        let watching = async {
            let mut result = Ok(());
            while let Some(report) = watcher.next(&mut listen).await {
                let report = match report {
                    Ok(r) => r,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                log_report(&report);
                update_record(&mut record, &report, watcher.schedule());
                if let Err(e) = state.poll(&record) {
                    tracing::warn!(cause = %format!("{e:#}"), "service state not updated");
                }
                let cx = TaskContext {
                    worker: &worker,
                    config: &config,
                    poll: &report,
                    present: &record.present,
                };
                for task in &mut tasks {
                    if let Err(e) = task.run(&cx).await {
                        tracing::error!(task = task.name(), cause = %format!("{e:#}"), "task failed");
                    }
                }
            }
            drop(loop_done);
            result
        };
        tokio::pin!(watching);
        tokio::select! {
            r = &mut watching => r,
            _ = &mut shutdown => {
                tracing::info!("stopping: finishing the poll in hand");
                coordinator.trigger();
                watching.await
            }
        }
    };
    drop(watcher);
    drop(worker);
    coordinator.finished().await;
    let worker_result = worker_exit
        .await
        .map_err(|_| anyhow::anyhow!("the worker thread ended abnormally (it panicked)"))
        .and_then(|r| r);
    record.stopped_at = Some(timestamp(OffsetDateTime::now_utc()));
    if let Err(e) = state.write(&record) {
        tracing::warn!(cause = %format!("{e:#}"), "service state not updated");
    }
    result.and(worker_result)?;
    tracing::info!("stopped");
    Ok(())
}

fn log_report(report: &PollReport) {
    for event in &report.events {
        match event {
            TokenEvent::Inserted {
                carrier,
                module,
                slot,
            } => {
                tracing::info!(%carrier, %module, slot, "carrier inserted");
            }
            TokenEvent::Removed {
                carrier,
                module,
                slot,
            } => {
                tracing::info!(%carrier, %module, slot, "carrier removed");
            }
            TokenEvent::Changed {
                carrier,
                module,
                slot,
            } => {
                tracing::info!(%carrier, %module, slot, "carrier changed");
            }
        }
    }
    for e in &report.recorded {
        tracing::info!(seq = e.seq, kind = %e.kind, carrier = %e.carrier, "recorded");
    }
}

fn update_record(
    record: &mut ServiceState,
    report: &PollReport,
    schedule: &crate::watch::Schedule,
) {
    if let Some(present) = &report.present {
        record.present = present.clone();
    }
    record.check_period_ms = schedule.check_period().as_millis() as u64;
    record.modules = report
        .modules
        .iter()
        .enumerate()
        .map(|(i, m)| ModuleState {
            path: m.path.clone(),
            loaded: m.loaded,
            error: m.error.clone(),
            reinit_period_ms: schedule.reinit_period(i).map(|d| d.as_millis() as u64),
            poll_cost_us: schedule.poll_cost(i).as_micros() as u64,
        })
        .collect();
}
