//! The one error type of custody-core.
//!
//! Every variant names a condition a caller can act on; messages end with what to do next
//! where there is something to do. No variant ever carries a PIN.

use std::path::PathBuf;

/// Result with custody-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in custody-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The PKCS#11 module could not be loaded (missing file, not a shared library, no
    /// `C_GetFunctionList`).
    #[error("cannot load PKCS#11 module {path}: {reason}; check the path and that it is a PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so)")]
    ModuleLoad {
        /// The module path as given.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// A PKCS#11 call failed.
    #[error("{op} failed: {rv}")]
    Pkcs11 {
        /// The PKCS#11 function that failed, e.g. `C_GetTokenInfo`.
        op: &'static str,
        /// The return value or binding error, as text.
        rv: String,
    },
    /// The module does not implement a PKCS#11 function (CKR_FUNCTION_NOT_SUPPORTED).
    #[error("{op} is not supported by this PKCS#11 module")]
    NotSupported {
        /// The PKCS#11 function, e.g. `C_WaitForSlotEvent`.
        op: &'static str,
    },
    /// The PIN was rejected by the token. The PIN is never retried automatically.
    #[error("the token rejected the PIN{}; it was not retried. Check the PIN source configured for this carrier", if *retries_low { " (few tries left before it locks)" } else { "" })]
    WrongPin {
        /// The token reports that few tries are left (CKF_USER_PIN_COUNT_LOW / FINAL_TRY).
        retries_low: bool,
    },
    /// The PIN is locked on the token.
    #[error("the PIN is locked on this token; unblock it with the SO PIN before trying again")]
    PinLocked,
    /// The token is not present (removed, or never seen by this module).
    #[error("carrier {0} is not present; plug it in and try again")]
    TokenAbsent(String),
    /// A PIN source (file or environment variable) could not be used.
    #[error("PIN source {source_name}: {reason}")]
    PinSource {
        /// The file path or variable name (never the PIN).
        source_name: String,
        /// Why it was refused.
        reason: String,
    },
    /// The file is not a custody journal; it was not modified.
    #[error("{0} is not a custody journal (it was left untouched); point --journal at a custody journal or at a new file")]
    NotAJournal(PathBuf),
    /// The journal was written by a newer custody; it was not modified.
    #[error("journal schema version {found} is newer than this custody understands ({supported}); upgrade custody (the file was left untouched)")]
    SchemaTooNew {
        /// The schema version in the file.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The journal file carries schema objects custody did not create (or lacks some); it was
    /// not written to.
    #[error("journal {path} holds a schema custody did not create: {object}{}; custody runs only its own schema and changed nothing. Keep the file as evidence, run `custody journal verify`, and restore the journal from a backup (README, \"Backup and restore\")", if *more > 0 { format!(" (and {more} more)") } else { String::new() })]
    ForeignSchema {
        /// The journal file.
        path: PathBuf,
        /// The first object found, e.g. "trigger `x` on orders that custody did not create".
        object: String,
        /// How many more objects differ.
        more: usize,
    },
    /// The journal file is missing while its key file exists: a new, empty journal would hide
    /// the loss of the old one.
    #[error("journal {path} is missing, but its key {key} exists: custody does not start a new, empty journal in its place. Restore the journal from a backup (`cp BACKUP {path}`; README, \"Backup and restore\"); only if this journal is to be abandoned on purpose, move the key file away first")]
    JournalMissing {
        /// The journal path.
        path: PathBuf,
        /// Its key file.
        key: PathBuf,
    },
    /// The file is not a complete custody journal (e.g. a copy of journal.db taken without its
    /// -wal file); it was opened read-only and left untouched.
    #[error("{0} is not a complete custody journal (no custody schema in it; a copy of journal.db taken without its -wal file looks like this). Nothing was written to it; copy journals with `custody journal backup DEST`")]
    JournalIncomplete(PathBuf),
    /// An SQLite error while reading or writing the journal.
    #[error("journal: {0}")]
    Journal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The journal holds data this build cannot interpret.
    #[error("journal is inconsistent: {0}; run `custody journal verify`")]
    JournalCorrupt(String),
    /// A certificate could not be parsed.
    #[error("certificate: {0}")]
    Certificate(#[from] crate::cert::CertError),
    /// An I/O error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The request was refused; the message says why.
    #[error("{0}")]
    Refused(String),
    /// The organisation's database could not be reached (or the connection broke); the local
    /// journal keeps every event and the next sync sends them.
    #[error("the organisation's database {database} cannot be reached: {reason}; the local journal keeps every event and the next sync sends them")]
    FleetUnreachable {
        /// The database, without its password.
        database: String,
        /// What failed.
        reason: String,
    },
    /// The organisation's database presented a TLS certificate that does not verify (not
    /// signed by the CA file, or not naming the host of the URL): the connection was closed
    /// during the handshake, before the user name, the password or any event was sent.
    #[error("the organisation's database {database} presented a certificate that is not accepted ({reason}); nothing was sent: check that ca_file (or sslrootcert) is the CA that signed the server's certificate and that the URL's host is a name in that certificate")]
    FleetUntrusted {
        /// The database, without its password.
        database: String,
        /// Why the certificate was not accepted (OpenSSL's verification result).
        reason: String,
    },
    /// The organisation's database refused a request (a role without the right, an event
    /// that does not continue the chain it holds); the message says why.
    #[error("the organisation's database refused: {0}")]
    FleetRefused(String),
    /// The local journal ends before what the organisation already holds for it.
    #[error("local journal behind the organisation's record at seq {server_seq} (the local journal ends at event #{local_seq}): it was restored from an old backup or truncated; restore the newest backup of this journal (the organisation's database has recorded an alarm)")]
    FleetBehind {
        /// The last event of the local journal.
        local_seq: u64,
        /// The last event the organisation holds for this journal.
        server_seq: u64,
    },
    /// The local journal holds another event than the organisation's record at the same seq.
    #[error("local journal differs from the organisation's record at seq {seq}: the workstation journal was rewritten or forked; keep it as evidence and restore the newest backup (the organisation's database has recorded an alarm)")]
    FleetDiverged {
        /// The first seq known to differ.
        seq: u64,
    },
    /// Any other PostgreSQL error of the organisation's database.
    #[error("the organisation's database: {0}")]
    Fleet(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A provider's revocation status service (CRL or OCSP) gave no usable answer: it could
    /// not be reached, answered garbage, or its answer is not signed by the issuer. Nothing
    /// was recorded for the certificate concerned.
    #[error("{url}: {reason}; nothing was recorded for this certificate")]
    Provider {
        /// The CRL or OCSP URL asked.
        url: String,
        /// What went wrong, with what to do next.
        reason: String,
    },
    /// A destruction order was refused; nothing was touched.
    #[error("order refused: {0}")]
    OrderRejected(#[from] crate::rejection::Rejection),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
