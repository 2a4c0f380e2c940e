//! Revocation of a carrier's certificates with the qualified trust service provider.
//!
//! Events written here: `revocation_requested`, `revocation_confirmed` ([`RevocationData`]).

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keyset::KeySet;
use super::query::resolve_carrier;
use super::{db_err, Actor, EventKind, Journal};
use crate::error::{Error, Result};
use crate::revocation::Evidence;

/// The step with the qualified trust service provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationStep {
    /// Revocation was requested from the provider.
    Requested,
    /// The provider confirmed the revocation.
    Confirmed,
}

impl RevocationStep {
    /// The event kind.
    pub fn kind(self) -> EventKind {
        match self {
            Self::Requested => EventKind::RevocationRequested,
            Self::Confirmed => EventKind::RevocationConfirmed,
        }
    }
}

/// What `custody revocation requested|confirmed` asks for.
#[derive(Debug, Clone, Default)]
pub struct RevocationRequest {
    /// Carrier serial or key.
    pub carrier: String,
    /// A certificate fingerprint (SHA-256 hex, at least 8 characters; colons allowed);
    /// default: every certificate of the carrier.
    pub cert: Option<String>,
    /// The reference: the request's or the provider's letter number, ticket, etc.
    pub reference: String,
    /// Date of the step; default: today (UTC).
    pub date: Option<time::Date>,
    /// The provider's answers that prove the step (a confirmation found by
    /// `custody revocation check`); empty when recorded by hand.
    pub evidence: Vec<Evidence>,
}

/// The data of a `revocation_requested` / `revocation_confirmed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationData {
    /// SHA-256 of the certificates concerned (empty: the carrier holds no known certificate).
    pub certificates: Vec<String>,
    /// The reference.
    pub reference: String,
    /// Date, YYYY-MM-DD.
    pub date: String,
    /// The provider's verified answers (CRL or OCSP) when custody asked the provider itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

/// What recording a revocation step did.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationRecord {
    /// The event.
    pub seq: u64,
    /// The step.
    pub step: RevocationStep,
    /// The carrier key.
    pub carrier: String,
    /// What was recorded.
    pub data: RevocationData,
}

fn date_text(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl Journal {
    /// Records a revocation step for a carrier's certificates. Refused: unknown carrier, a
    /// fingerprint that matches none (or several) of its certificates, a step already
    /// recorded for every certificate concerned.
    pub fn record_revocation(
        &mut self,
        step: RevocationStep,
        req: &RevocationRequest,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<RevocationRecord> {
        if req.reference.trim().is_empty() {
            return Err(Error::Refused(
                "the reference is empty; give the letter or ticket number with --ref".into(),
            ));
        }
        self.write(actor, now, |w| {
            let carrier = resolve_carrier(w.tx(), req.carrier.trim())?;
            // The certificates on the carrier as its events record them (see `carrier`).
            let mut known: Vec<String> = super::carrier::recorded(w.tx(), &carrier.carrier)?
                .map(|r| r.certificates.into_iter().map(|c| c.sha256).collect())
                .unwrap_or_default();
            let sets: Vec<String> = {
                let mut stmt = w
                    .tx()
                    .prepare("SELECT key_set FROM form_rows WHERE carrier = ?1")
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map([&carrier.carrier], |r| r.get::<_, String>(0))
                    .map_err(db_err)?;
                rows.collect::<std::result::Result<_, _>>().map_err(db_err)?
            };
            for s in sets {
                if let Ok(ks) = serde_json::from_str::<KeySet>(&s) {
                    known.extend(ks.certificates.into_iter().map(|c| c.sha256));
                }
            }
            known.sort();
            known.dedup();
            let certificates = match &req.cert {
                Some(fpr) => {
                    let want: String = fpr
                        .chars()
                        .filter(|c| !matches!(c, ':' | ' '))
                        .flat_map(char::to_lowercase)
                        .collect();
                    if want.len() < 8 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(Error::Refused(format!(
                            "{fpr:?} is not a certificate fingerprint: give at least 8 hex characters of its SHA-256"
                        )));
                    }
                    let hits: Vec<String> =
                        known.iter().filter(|k| k.starts_with(&want)).cloned().collect();
                    match hits.len() {
                        1 => hits,
                        0 => return Err(Error::Refused(format!(
                            "no certificate of carrier {} has the fingerprint {fpr}; `custody journal show {}` lists them",
                            carrier.serial, carrier.serial
                        ))),
                        _ => return Err(Error::Refused(format!(
                            "the fingerprint {fpr} matches several certificates; give more characters"
                        ))),
                    }
                }
                None => known.clone(),
            };
            let rows: Vec<String> = if certificates.is_empty() {
                vec![String::new()]
            } else {
                certificates.clone()
            };
            let date = date_text(req.date.unwrap_or_else(|| now.date()));
            let reference = req.reference.trim().to_owned();
            let mut fresh = 0;
            for sha in &rows {
                let state: Option<(Option<i64>, Option<i64>)> = w
                    .tx()
                    .query_row(
                        "SELECT requested_seq, confirmed_seq FROM revocations WHERE carrier = ?1 AND cert_sha256 = ?2",
                        params![carrier.carrier, sha],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(db_err)?;
                let done = matches!(
                    (step, state),
                    (RevocationStep::Requested, Some((Some(_), _)))
                        | (RevocationStep::Confirmed, Some((_, Some(_))))
                );
                if !done {
                    fresh += 1;
                }
            }
            if fresh == 0 {
                return Err(Error::Refused(format!(
                    "revocation {} is already recorded for {} of carrier {}; nothing recorded",
                    match step {
                        RevocationStep::Requested => "request",
                        RevocationStep::Confirmed => "confirmation",
                    },
                    if certificates.is_empty() { "the carrier".to_owned() } else { format!("{} certificate(s)", certificates.len()) },
                    carrier.serial
                )));
            }
            let data = RevocationData {
                certificates,
                reference,
                date,
                evidence: req.evidence.clone(),
            };
            let seq = w.append(step.kind(), Some(&carrier.carrier), &data)?;
            for sha in &rows {
                record_revocation_row(w.tx(), step, &carrier.carrier, sha, &data, seq)?;
            }
            Ok(RevocationRecord {
                seq,
                step,
                carrier: carrier.carrier,
                data,
            })
        })
    }
}

/// A certificate whose revocation was requested (or confirmed), from the revocations table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevocationState {
    /// The carrier key.
    pub carrier: String,
    /// The carrier serial.
    pub serial: String,
    /// SHA-256 of the certificate (`''`: the carrier held no known certificate).
    pub cert_sha256: String,
    /// Date of the request (YYYY-MM-DD), when requested.
    pub requested_on: Option<String>,
    /// The request's reference.
    pub requested_ref: Option<String>,
    /// Date of the confirmation, when confirmed.
    pub confirmed_on: Option<String>,
    /// The confirmation's reference.
    pub confirmed_ref: Option<String>,
}

impl Journal {
    /// Every certificate with a revocation request or confirmation, oldest request first.
    pub fn revocation_states(&self) -> Result<Vec<RevocationState>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.carrier, COALESCE(c.serial, ''), r.cert_sha256, r.requested_on,
                        r.requested_ref, r.confirmed_on, r.confirmed_ref
                 FROM revocations r LEFT JOIN carriers c ON c.carrier = r.carrier
                 ORDER BY r.requested_on, r.carrier, r.cert_sha256",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RevocationState {
                    carrier: r.get(0)?,
                    serial: r.get(1)?,
                    cert_sha256: r.get(2)?,
                    requested_on: r.get(3)?,
                    requested_ref: r.get(4)?,
                    confirmed_on: r.get(5)?,
                    confirmed_ref: r.get(6)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }
}

/// Records one revocation step of one certificate (`''` for the whole carrier) in the
/// revocations table; the first request and the first confirmation are kept. Also used to
/// rebuild a journal from its events (`replica`).
pub(crate) fn record_revocation_row(
    conn: &rusqlite::Connection,
    step: RevocationStep,
    carrier: &str,
    sha: &str,
    data: &RevocationData,
    seq: u64,
) -> Result<()> {
    let sql = match step {
        RevocationStep::Requested => {
            "INSERT INTO revocations (carrier, cert_sha256, requested_on, requested_ref, requested_seq)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (carrier, cert_sha256) DO UPDATE SET requested_on = excluded.requested_on,
               requested_ref = excluded.requested_ref, requested_seq = excluded.requested_seq
             WHERE requested_seq IS NULL"
        }
        RevocationStep::Confirmed => {
            "INSERT INTO revocations (carrier, cert_sha256, confirmed_on, confirmed_ref, confirmed_seq)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (carrier, cert_sha256) DO UPDATE SET confirmed_on = excluded.confirmed_on,
               confirmed_ref = excluded.confirmed_ref, confirmed_seq = excluded.confirmed_seq
             WHERE confirmed_seq IS NULL"
        }
    };
    conn.execute(
        sql,
        params![carrier, sha, data.date, data.reference, seq as i64],
    )
    .map_err(db_err)?;
    Ok(())
}
