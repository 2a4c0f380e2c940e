// The latest journal schema as SQLite stores it: (type, name, table, SQL).
// Written by `CUSTODY_WRITE_SCHEMA=1 cargo test -p custody-core --lib stored_schema`.
[
    ("index", "carriers_by_serial", "carriers", Some(r##"CREATE INDEX carriers_by_serial ON carriers (serial)"##)),
    ("index", "certificates_by_sha256", "certificates", Some(r##"CREATE INDEX certificates_by_sha256 ON certificates (sha256)"##)),
    ("index", "events_by_carrier", "events", Some(r##"CREATE INDEX events_by_carrier ON events (carrier, seq)"##)),
    ("index", "events_by_kind", "events", Some(r##"CREATE INDEX events_by_kind ON events (kind, seq)"##)),
    ("index", "form_rows_by_carrier", "form_rows", Some(r##"CREATE INDEX form_rows_by_carrier ON form_rows (carrier, seq)"##)),
    ("index", "form_rows_by_holder", "form_rows", Some(r##"CREATE INDEX form_rows_by_holder ON form_rows (holder_id)"##)),
    ("index", "keys_by_carrier", "keys", Some(r##"CREATE INDEX keys_by_carrier ON keys (carrier)"##)),
    ("index", "orders_by_state", "orders", Some(r##"CREATE INDEX orders_by_state ON orders (state)"##)),
    ("index", "sqlite_autoindex_carrier_snapshots_1", "carrier_snapshots", None),
    ("index", "sqlite_autoindex_carriers_1", "carriers", None),
    ("index", "sqlite_autoindex_certificate_files_1", "certificate_files", None),
    ("index", "sqlite_autoindex_certificates_1", "certificates", None),
    ("index", "sqlite_autoindex_form_rows_1", "form_rows", None),
    ("index", "sqlite_autoindex_holders_1", "holders", None),
    ("index", "sqlite_autoindex_meta_1", "meta", None),
    ("index", "sqlite_autoindex_orders_1", "orders", None),
    ("index", "sqlite_autoindex_revocations_1", "revocations", None),
    ("table", "carrier_snapshots", "carrier_snapshots", Some(r##"CREATE TABLE carrier_snapshots (
    carrier  TEXT PRIMARY KEY REFERENCES carriers (carrier),
    sha256   TEXT NOT NULL,             -- digest of the snapshot without its slot id
    snapshot TEXT NOT NULL              -- JSON CarrierSnapshot
) STRICT"##)),
    ("table", "carriers", "carriers", Some(r##"CREATE TABLE carriers (
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
) STRICT"##)),
    ("table", "certificate_files", "certificate_files", Some(r##"CREATE TABLE certificate_files (
    sha256      TEXT PRIMARY KEY,
    der         BLOB NOT NULL,
    carrier     TEXT,
    holder_name TEXT,
    seq         INTEGER NOT NULL
) STRICT"##)),
    ("table", "certificates", "certificates", Some(r##"CREATE TABLE certificates (
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
) STRICT"##)),
    ("table", "checkpoints", "checkpoints", Some(r##"CREATE TABLE checkpoints (
    seq        INTEGER PRIMARY KEY,              -- the `checkpoint` event
    count      INTEGER NOT NULL,                 -- events covered: 1..count
    head_hash  TEXT NOT NULL,                    -- hex hash of event #count
    at         TEXT NOT NULL,
    public_key TEXT NOT NULL,                    -- hex, 32 bytes
    signature  TEXT NOT NULL                     -- hex, 64 bytes
) STRICT"##)),
    ("table", "events", "events", Some(r##"CREATE TABLE events (
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
) STRICT"##)),
    ("table", "form_rows", "form_rows", Some(r##"CREATE TABLE "form_rows" (
    row_no            INTEGER PRIMARY KEY,
    origin            TEXT NOT NULL CHECK (origin IN ('seen', 'issued', 'imported')),
    seq               INTEGER NOT NULL UNIQUE,   -- the event that created the row
    carrier           TEXT,                      -- carrier key (seen and issued rows)
    generated_at      TEXT,                      -- column 2: RFC 3339 UTC, or YYYY-MM-DD
    generated_source  TEXT,                      -- key_attribute | certificate | first_seen
    manufacturer      TEXT,                      -- column 3
    model             TEXT,
    serial            TEXT,
    issued_on         TEXT,                      -- column 4: YYYY-MM-DD
    holder_name       TEXT,
    holder_position   TEXT,
    holder_tax_number TEXT,
    key_set           TEXT NOT NULL,             -- JSON: keys and certificates (as seen or handed over)
    ack_status        TEXT,                      -- NULL | verified | not_verified
    ack_seq           INTEGER,
    imported          TEXT,                      -- JSON: the paper journal's text (imported rows)
    issued_seq        INTEGER                    -- the `issued` event, NULL until issued
, holder_id TEXT) STRICT"##)),
    ("table", "holders", "holders", Some(r##"CREATE TABLE holders (
    holder_id     TEXT PRIMARY KEY,         -- tax:NNNNNNNNNN, else doc:NUMBER
    full_name     TEXT NOT NULL,
    position      TEXT,
    unit          TEXT,
    tax_number    TEXT,                     -- RNOKPP
    eid_document  TEXT,                     -- e-ID document (ID card, passport) number
    recorded_seq  INTEGER NOT NULL,         -- the first holder_recorded event
    updated_seq   INTEGER NOT NULL          -- the last one
) STRICT"##)),
    ("table", "keys", "keys", Some(r##"CREATE TABLE keys (
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
) STRICT"##)),
    ("table", "meta", "meta", Some(r##"CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT"##)),
    ("table", "orders", "orders", Some(r##"CREATE TABLE orders (
    order_id     TEXT PRIMARY KEY,
    sha256       TEXT NOT NULL,      -- SHA-256 of the signed document: same id + other hash = conflict
    serial       TEXT NOT NULL,      -- target serial as ordered
    carrier      TEXT,               -- carrier key once the target was matched
    holder       TEXT NOT NULL,
    dismissed    TEXT NOT NULL,      -- YYYY-MM-DD
    method       TEXT NOT NULL,      -- reinit | destroy-keys
    responsible  TEXT NOT NULL,
    not_after    TEXT NOT NULL,      -- UTC
    state        TEXT NOT NULL CHECK (state IN ('received', 'started', 'completed', 'failed', 'rejected')),
    received_seq INTEGER NOT NULL,   -- the order_received event
    started_seq  INTEGER,            -- the last wipe_started event
    outcome_seq  INTEGER,            -- the last wipe_completed / wipe_failed / order_rejected event
    document     TEXT NOT NULL       -- the signed JSON, exactly as signed
) STRICT"##)),
    ("table", "revocations", "revocations", Some(r##"CREATE TABLE revocations (
    carrier        TEXT NOT NULL,
    cert_sha256    TEXT NOT NULL,                -- '' when the carrier holds no known certificate
    requested_on   TEXT,
    requested_ref  TEXT,
    requested_seq  INTEGER,
    confirmed_on   TEXT,
    confirmed_ref  TEXT,
    confirmed_seq  INTEGER,
    PRIMARY KEY (carrier, cert_sha256)
) STRICT"##)),
    ("trigger", "checkpoints_no_delete", "checkpoints", Some(r##"CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'journal checkpoints are append-only'); END"##)),
    ("trigger", "checkpoints_no_update", "checkpoints", Some(r##"CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'journal checkpoints are append-only'); END"##)),
    ("trigger", "events_no_delete", "events", Some(r##"CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'journal events are append-only'); END"##)),
    ("trigger", "events_no_update", "events", Some(r##"CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'journal events are append-only'); END"##)),
]
