//! Revocation requests the provider has not confirmed: `custody status --unconfirmed DAYS`.

use custody_core::journal::Journal;
use serde::Serialize;

use crate::output::Table;

/// A revocation request still unconfirmed after the window.
#[derive(Debug, Clone, Serialize)]
pub struct Unconfirmed {
    /// Carrier key.
    pub carrier: String,
    /// Carrier serial.
    pub serial: String,
    /// SHA-256 of the certificate (empty: the carrier held no known certificate).
    pub certificate: String,
    /// Date of the request (YYYY-MM-DD).
    pub requested_on: String,
    /// The request's reference.
    pub reference: String,
    /// Days since the request.
    pub days: i64,
}

/// Requests made `days` or more days before `today` and not confirmed.
pub fn unconfirmed(
    journal: &Journal,
    today: time::Date,
    days: i64,
) -> anyhow::Result<Vec<Unconfirmed>> {
    let iso = time::macros::format_description!("[year]-[month]-[day]");
    let mut out = Vec::new();
    for r in journal.revocation_states()? {
        let (Some(on), None) = (&r.requested_on, &r.confirmed_on) else {
            continue;
        };
        let Ok(date) = time::Date::parse(on, iso) else {
            continue;
        };
        let age = (today - date).whole_days();
        if age >= days {
            out.push(Unconfirmed {
                carrier: r.carrier,
                serial: r.serial,
                certificate: r.cert_sha256,
                requested_on: on.clone(),
                reference: r.requested_ref.unwrap_or_default(),
                days: age,
            });
        }
    }
    Ok(out)
}

/// Prints the list.
pub fn print(list: &[Unconfirmed], days: i64) {
    if list.is_empty() {
        println!("No revocation request is unconfirmed after {days} day(s).");
        return;
    }
    println!(
        "Revocation requests unconfirmed after {days} day(s) (`custody revocation check` asks the provider):"
    );
    let mut t = Table::new(&["SERIAL", "CERTIFICATE", "REQUESTED", "DAYS", "REFERENCE"]);
    for u in list {
        t.row(vec![
            u.serial.clone(),
            if u.certificate.is_empty() {
                "(carrier)".into()
            } else {
                u.certificate[..16.min(u.certificate.len())].to_owned()
            },
            u.requested_on.clone(),
            u.days.to_string(),
            u.reference.clone(),
        ]);
    }
    t.print();
}
