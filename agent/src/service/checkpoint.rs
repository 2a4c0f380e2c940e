//! The daily checkpoint, as a [`Task`] of the service: a signed checkpoint of the whole
//! journal whenever the newest one is older than `[service] checkpoint_interval` (24 h by
//! default, at most 24 h), so a journal kept by the service is never more than a day ahead
//! of its last signature. The age is looked at once a minute (more often when the interval
//! is shorter), one indexed query; the checkpoint itself is one journal transaction.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::worker::{Task, TaskContext};

/// The default and longest age of the newest checkpoint.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often the newest checkpoint's age is looked at (at most).
const LOOK: Duration = Duration::from_secs(60);

/// The checkpoint task.
#[derive(Debug)]
pub struct CheckpointTask {
    max_age: Duration,
    last_look: Option<Instant>,
}

impl CheckpointTask {
    /// A task keeping the newest checkpoint younger than `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age: max_age.min(MAX_AGE),
            last_look: None,
        }
    }

    fn due(&self, now: Instant) -> bool {
        let period = LOOK.min(self.max_age);
        self.last_look
            .is_none_or(|t| now.saturating_duration_since(t) >= period)
    }
}

impl Task for CheckpointTask {
    fn name(&self) -> &str {
        "checkpoint"
    }

    fn run(&mut self, cx: &mut TaskContext<'_>) -> anyhow::Result<()> {
        let now = Instant::now();
        if !self.due(now) {
            return Ok(());
        }
        self.last_look = Some(now);
        let max_age = time::Duration::try_from(self.max_age)?;
        let actor = cx.state.actor().clone();
        let written =
            cx.state
                .journal()
                .checkpoint_if_due(&actor, OffsetDateTime::now_utc(), max_age)?;
        if let Some(cp) = written {
            tracing::info!(
                seq = cp.seq,
                count = cp.count,
                head = %cp.head_hash,
                "checkpoint written"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_is_looked_at_once_a_minute_or_once_an_interval() {
        let start = Instant::now();
        let mut task = CheckpointTask::new(Duration::from_secs(48 * 3600));
        assert_eq!(task.max_age, MAX_AGE, "never more than a day");
        assert!(task.due(start));
        task.last_look = Some(start);
        assert!(!task.due(start + Duration::from_secs(59)));
        assert!(task.due(start + LOOK));
        let mut short = CheckpointTask::new(Duration::from_secs(2));
        short.last_look = Some(start);
        assert!(!short.due(start + Duration::from_secs(1)));
        assert!(short.due(start + Duration::from_secs(2)));
    }
}
