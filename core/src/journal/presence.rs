//! Presence bookkeeping for a long-running watcher: `last_seen` of carriers that are still
//! present, written outside the hash chain (like the `last_seen` updates of
//! [`Journal::record_scan`] for unchanged carriers). Appends no event.

use rusqlite::params;
use time::OffsetDateTime;

use super::{db_err, timestamp, Journal};
use crate::error::Result;

impl Journal {
    /// Sets `last_seen` of each named carrier that the journal holds as present to `now`, in
    /// one transaction; returns how many rows changed. Carriers not present are left alone.
    pub fn touch_seen(&mut self, carriers: &[String], now: OffsetDateTime) -> Result<usize> {
        let at = timestamp(now);
        let tx = self.conn.transaction().map_err(db_err)?;
        let mut changed = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE carriers SET last_seen = ?1 WHERE carrier = ?2 AND present = 1",
                )
                .map_err(db_err)?;
            for key in carriers {
                changed += stmt.execute(params![at, key]).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::CarrierId;
    use crate::inventory::{CarrierSnapshot, Login, ModuleInfo, ModuleScan, TokenFlags};
    use crate::journal::Actor;

    fn scan(serials: &[&str]) -> ModuleScan {
        let carriers = serials
            .iter()
            .map(|s| CarrierSnapshot {
                id: CarrierId {
                    manufacturer: "M".into(),
                    model: "X".into(),
                    serial: (*s).into(),
                    discriminator: None,
                },
                label: format!("label {s}"),
                strings_lossy: false,
                serial_weak: false,
                flags: TokenFlags {
                    token_initialized: true,
                    ..TokenFlags::default()
                },
                hardware_version: "1.0".into(),
                firmware_version: "1.0".into(),
                module: "/m.so".into(),
                slot: 1,
                certificates: Vec::new(),
                public_keys: Vec::new(),
                private_keys: None,
                login: Login::NotAttempted,
            })
            .collect();
        ModuleScan::read(
            ModuleInfo {
                path: "/m.so".into(),
                manufacturer: "M".into(),
                description: "d".into(),
                version: "1.0".into(),
            },
            carriers,
            Vec::new(),
            serials.len(),
            None,
        )
    }

    #[test]
    fn touch_seen_updates_present_carriers_only_and_appends_nothing() {
        let dir = std::env::temp_dir().join(format!("custody-touch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mut j = Journal::open(&dir.join("j.db")).unwrap_or_else(|e| panic!("{e}"));
        let actor = Actor::current(None);
        let t0 = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20000);
        j.record_scan(&[scan(&["a", "b"])], &actor, t0)
            .unwrap_or_else(|e| panic!("{e}"));
        // b is removed at t1
        let t1 = t0 + time::Duration::seconds(10);
        j.record_scan(&[scan(&["a"])], &actor, t1)
            .unwrap_or_else(|e| panic!("{e}"));
        let events = j.events().unwrap_or_else(|e| panic!("{e}")).len();
        let t2 = t0 + time::Duration::seconds(60);
        let changed = j
            .touch_seen(&["M/X/a".into(), "M/X/b".into(), "M/X/zz".into()], t2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(changed, 1);
        let rows = j.carriers().unwrap_or_else(|e| panic!("{e}"));
        let seen = |k: &str| {
            rows.iter()
                .find(|r| r.carrier == k)
                .map(|r| r.last_seen.clone())
                .unwrap_or_default()
        };
        assert_eq!(seen("M/X/a"), timestamp(t2));
        assert_eq!(seen("M/X/b"), timestamp(t0));
        assert_eq!(j.events().unwrap_or_else(|e| panic!("{e}")).len(), events);
        assert!(j.verify().unwrap_or_else(|e| panic!("{e}")).ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
