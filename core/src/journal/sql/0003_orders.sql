-- Schema 2: destruction orders. The events order_received, order_rejected, wipe_started,
-- wipe_completed and wipe_failed are the source of truth; this table is their current state,
-- updated in the same transaction. Only orders whose signatures verified are here: a rejected
-- forgery must never block or shadow a real order with the same id.
CREATE TABLE orders (
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
) STRICT;
CREATE INDEX orders_by_state ON orders (state);
