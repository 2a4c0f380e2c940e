-- Schema 1: the event chain, journal identity, and the current state of carriers.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Append-only, hash-chained events: the source of truth.
-- hash = SHA-256(prev_hash || canonical bytes of the row), see journal::chain.
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY,      -- 1, 2, 3 ... without gaps
    at        TEXT NOT NULL,            -- UTC, RFC 3339, milliseconds
    kind      TEXT NOT NULL,
    carrier   TEXT,                     -- carrier key, or NULL
    os_user   TEXT NOT NULL,
    operator  TEXT,
    host      TEXT NOT NULL,
    data      TEXT NOT NULL,            -- JSON, exactly the bytes hashed
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
) STRICT;
CREATE INDEX events_by_carrier ON events (carrier, seq);
CREATE INDEX events_by_kind ON events (kind, seq);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'journal events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'journal events are append-only'); END;

-- Current state, rebuilt from events in the same transaction that appends them.
CREATE TABLE carriers (
    carrier         TEXT PRIMARY KEY,   -- manufacturer/model/serial[#discriminator]
    manufacturer    TEXT NOT NULL,
    model           TEXT NOT NULL,
    serial          TEXT NOT NULL,
    label           TEXT NOT NULL,
    module          TEXT NOT NULL,
    present         INTEGER NOT NULL,
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,      -- bookkeeping, not chained
    last_slot       INTEGER,
    enrolled_seq    INTEGER NOT NULL
) STRICT;
CREATE INDEX carriers_by_serial ON carriers (serial);

-- The last snapshot of each carrier, the basis of the next diff. Kept apart from `carriers`
-- so that the bookkeeping update of an unchanged scan rewrites a small row only.
CREATE TABLE carrier_snapshots (
    carrier  TEXT PRIMARY KEY REFERENCES carriers (carrier),
    sha256   TEXT NOT NULL,             -- digest of the snapshot without its slot id
    snapshot TEXT NOT NULL              -- JSON CarrierSnapshot
) STRICT;

CREATE TABLE certificates (
    carrier     TEXT NOT NULL REFERENCES carriers (carrier),
    sha256      TEXT NOT NULL,
    cka_id      BLOB NOT NULL,
    label       BLOB NOT NULL,
    subject     TEXT,
    holder_name TEXT,
    tax_number  TEXT,
    org_code    TEXT,
    not_before  TEXT,
    not_after   TEXT,
    added_seq   INTEGER NOT NULL,
    PRIMARY KEY (carrier, sha256, cka_id)
) STRICT;
CREATE INDEX certificates_by_sha256 ON certificates (sha256);

CREATE TABLE keys (
    carrier           TEXT NOT NULL REFERENCES carriers (carrier),
    class             TEXT NOT NULL,
    cka_id            BLOB NOT NULL,
    key_type          INTEGER NOT NULL,
    public_key_sha256 TEXT,
    local             INTEGER,
    never_extractable INTEGER,
    always_sensitive  INTEGER,
    start_date        TEXT,
    added_seq         INTEGER NOT NULL
) STRICT;
CREATE INDEX keys_by_carrier ON keys (carrier);
