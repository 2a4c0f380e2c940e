//! How long processes waited for a CPU while a test timed them: the kernel's run delay of
//! every thread (the second field of `/proc/PID/task/TID/schedstat`: nanoseconds runnable
//! but not running), summed over processes and their descendants.
//!
//! A test that bounds a latency ("within one poll interval + 1 s") measures what the code
//! does, not how busy the machine is: on a machine shared with other test suites (load
//! average 12 on 2 CPUs) a process may wait longer for a CPU than the whole slack. Such a
//! test adds [`RunDelay::waited`] of the processes on the measured path (the service and the
//! daemons it calls) to its bound. That addition is only time those processes could not run,
//! so a service that misses its poll (a row one interval late) still fails the test on an
//! idle machine as on a busy one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Run delays of the threads of some processes (and their descendants), at one moment.
#[derive(Debug, Clone)]
pub struct RunDelay {
    pids: Vec<u32>,
    before: BTreeMap<u32, u64>,
}

impl RunDelay {
    /// Starts counting for `pids` and every process descended from them.
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            before: threads(pids),
        }
    }

    /// The time the threads of those processes waited for a CPU since [`Self::start`]:
    /// threads that started meanwhile count in full; threads that ended are not counted.
    pub fn waited(&self) -> Duration {
        let now = threads(&self.pids);
        let total: u64 = now
            .iter()
            .map(|(tid, delay)| delay.saturating_sub(self.before.get(tid).copied().unwrap_or(0)))
            .sum();
        Duration::from_nanos(total)
    }
}

/// Thread id -> run delay (ns), for `pids` and their descendants.
fn threads(pids: &[u32]) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for pid in tree(pids) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue; // ended meanwhile
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            if let Some(delay) = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|t| t.split_whitespace().nth(1)?.parse().ok())
            {
                out.insert(tid, delay);
            }
        }
    }
    out
}

/// `pids` and every process descended from them (from each process's parent in
/// `/proc/PID/stat`).
fn tree(pids: &[u32]) -> BTreeSet<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let parent = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found: BTreeSet<u32> = BTreeSet::new();
    let mut queue: Vec<u32> = pids.to_vec();
    while let Some(pid) = queue.pop() {
        if found.insert(pid) {
            queue.extend(children.get(&pid).into_iter().flatten());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_child_that_waits_for_a_cpu_is_counted_and_an_idle_one_is_not() {
        // Positive control first: more spinning threads than CPUs must wait for one.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let me = std::process::id();
        let delay = RunDelay::start(&[me]);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinners: Vec<_> = (0..cpus * 3)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let waited = delay.waited();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in spinners {
            let _ = s.join();
        }
        assert!(
            waited >= Duration::from_millis(100),
            "{} spinning threads on {cpus} CPU(s) waited only {waited:?}",
            cpus * 3
        );
        // A sleeping child process is in the tree and waits for nothing.
        let mut child = std::process::Command::new("sleep")
            .arg("1")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(tree(&[me]).contains(&child.id()));
        let idle = RunDelay::start(&[child.id()]);
        std::thread::sleep(Duration::from_millis(200));
        assert!(idle.waited() < Duration::from_millis(50));
        let _ = child.kill();
        let _ = child.wait();
    }
}
