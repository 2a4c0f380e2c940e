-- Schema 4: a row of the mandated form for every key set custody has seen, issued or not.
--
-- A scan that shows a key set custody had not seen numbers it at once: the last event of
-- that carrier's scan step carries the row (`key_set_row` in its data), so the number is in
-- the hash chain from the moment the keys were first seen. `issued` fills columns 4 of that
-- row (issued_seq); a key set issued without such a row (seen before schema 4) gets its row
-- from the `issued` event, as before.
--   origin: seen (numbered by a scan), issued (numbered at issuance), imported (paper)
CREATE TABLE form_rows_v4 (
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
) STRICT;
INSERT INTO form_rows_v4
    SELECT row_no, origin, seq, carrier, generated_at, generated_source, manufacturer, model,
           serial, issued_on, holder_name, holder_position, holder_tax_number, key_set,
           ack_status, ack_seq, imported, CASE origin WHEN 'issued' THEN seq END
    FROM form_rows;
DROP TABLE form_rows;
ALTER TABLE form_rows_v4 RENAME TO form_rows;
CREATE INDEX form_rows_by_carrier ON form_rows (carrier, seq);
