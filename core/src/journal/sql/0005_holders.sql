-- Schema 5: holders as people. The `holder_recorded` events (one per new or changed person,
-- from HR's lists) are the source of truth; this table is their current state. An issuance
-- links its form row to the holder record (form_rows.holder_id).
CREATE TABLE holders (
    holder_id     TEXT PRIMARY KEY,         -- tax:NNNNNNNNNN, else doc:NUMBER
    full_name     TEXT NOT NULL,
    position      TEXT,
    unit          TEXT,
    tax_number    TEXT,                     -- RNOKPP
    eid_document  TEXT,                     -- e-ID document (ID card, passport) number
    recorded_seq  INTEGER NOT NULL,         -- the first holder_recorded event
    updated_seq   INTEGER NOT NULL          -- the last one
) STRICT;
ALTER TABLE form_rows ADD COLUMN holder_id TEXT;
CREATE INDEX form_rows_by_holder ON form_rows (holder_id);
