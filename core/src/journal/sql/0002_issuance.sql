-- Schema 2: the mandated form (one row per issued or imported key set), revocation
-- tracking, signed checkpoints, and certificates kept for export.

-- One row of the mandated form per issued key set ("№ п/п" = row_no). The number is
-- stored when the row is created (issued or imported) and never reused: meta
-- 'last_row_no' remembers the highest number ever handed out.
CREATE TABLE form_rows (
    row_no            INTEGER PRIMARY KEY,
    origin            TEXT NOT NULL CHECK (origin IN ('issued', 'imported')),
    seq               INTEGER NOT NULL UNIQUE,   -- the `issued` / `imported` event
    carrier           TEXT,                      -- carrier key (issued rows)
    generated_at      TEXT,                      -- column 2: RFC 3339 UTC, or YYYY-MM-DD
    generated_source  TEXT,                      -- key_attribute | certificate | first_seen
    manufacturer      TEXT,                      -- column 3
    model             TEXT,
    serial            TEXT,
    issued_on         TEXT,                      -- column 4: YYYY-MM-DD
    holder_name       TEXT,
    holder_position   TEXT,
    holder_tax_number TEXT,
    key_set           TEXT NOT NULL,             -- JSON: keys and certificates handed over
    ack_status        TEXT,                      -- NULL | verified | not_verified
    ack_seq           INTEGER,
    imported          TEXT                       -- JSON: the paper journal's text (imported rows)
) STRICT;
CREATE INDEX form_rows_by_carrier ON form_rows (carrier, seq);

-- Revocation of a carrier's certificates with the qualified trust service provider.
CREATE TABLE revocations (
    carrier        TEXT NOT NULL,
    cert_sha256    TEXT NOT NULL,                -- '' when the carrier holds no known certificate
    requested_on   TEXT,
    requested_ref  TEXT,
    requested_seq  INTEGER,
    confirmed_on   TEXT,
    confirmed_ref  TEXT,
    confirmed_seq  INTEGER,
    PRIMARY KEY (carrier, cert_sha256)
) STRICT;

-- Signed checkpoints: (journal_id, count, head_hash, at) signed with the workstation's
-- Ed25519 journal key. Each is also a `checkpoint` event; verify compares the two.
CREATE TABLE checkpoints (
    seq        INTEGER PRIMARY KEY,              -- the `checkpoint` event
    count      INTEGER NOT NULL,                 -- events covered: 1..count
    head_hash  TEXT NOT NULL,                    -- hex hash of event #count
    at         TEXT NOT NULL,
    public_key TEXT NOT NULL,                    -- hex, 32 bytes
    signature  TEXT NOT NULL                     -- hex, 64 bytes
) STRICT;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'journal checkpoints are append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'journal checkpoints are append-only'); END;

-- Certificates (DER) read from carriers when they were issued, for `custody cert export`.
CREATE TABLE certificate_files (
    sha256      TEXT PRIMARY KEY,
    der         BLOB NOT NULL,
    carrier     TEXT,
    holder_name TEXT,
    seq         INTEGER NOT NULL
) STRICT;
