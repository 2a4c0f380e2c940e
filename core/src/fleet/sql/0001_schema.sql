-- Fleet schema 1: the organisation's journal. Every workstation journal's events, as the
-- agents synced them, checked by the server itself; the checkpoints they signed; the alarms
-- raised when an agent pushed a history that does not continue the one already held.
--
-- Access (see roles.sql): agents INSERT their own journal's events and sync reports and read
-- their own rows (row-level security); nobody UPDATEs or DELETEs; the auditor reads all.

CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA custody;

-- Enrolled agents and their login roles (`custody fleet enroll-agent`).
CREATE TABLE custody.agents (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    role        name NOT NULL UNIQUE,
    enrolled_at timestamptz NOT NULL DEFAULT now()
);

-- Workstation journals, registered by their agent at its first sync.
CREATE TABLE custody.journals (
    journal_id    uuid PRIMARY KEY,
    agent         text NOT NULL REFERENCES custody.agents (name),
    host          text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- The events, exactly as hashed by the workstation (see journal::chain):
-- hash = SHA-256(prev_hash || canonical bytes), checked by custody.events_check().
CREATE TABLE custody.events (
    journal_id  uuid NOT NULL REFERENCES custody.journals (journal_id),
    seq         bigint NOT NULL CHECK (seq >= 1),
    at          text NOT NULL,
    kind        text NOT NULL,
    carrier     text,
    os_user     text NOT NULL,
    operator    text,
    host        text NOT NULL,
    data        text NOT NULL,
    prev_hash   bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash        bytea NOT NULL CHECK (length(hash) = 32),
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journal_id, seq)
);
CREATE INDEX events_by_kind ON custody.events (kind);

-- Every checkpoint an agent synced: the witness its own journal cannot be. Filled by the
-- server from `checkpoint` events (custody.events_check()), never by the agents directly.
CREATE TABLE custody.checkpoints (
    journal_id  uuid NOT NULL REFERENCES custody.journals (journal_id),
    seq         bigint NOT NULL,
    count       bigint NOT NULL,
    head_hash   text NOT NULL,
    at          text NOT NULL,
    public_key  text NOT NULL,
    signature   text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journal_id, seq),
    FOREIGN KEY (journal_id, seq) REFERENCES custody.events (journal_id, seq)
);

-- What each agent said of its local journal at the end of a sync.
CREATE TABLE custody.sync_reports (
    id          bigserial PRIMARY KEY,
    journal_id  uuid NOT NULL REFERENCES custody.journals (journal_id),
    local_seq   bigint NOT NULL,
    local_hash  bytea NOT NULL,
    server_seq  bigint,
    reported_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_reports_by_journal ON custody.sync_reports (journal_id, id);

-- Refused pushes and histories that went backwards, raised by the server.
CREATE TABLE custody.alarms (
    id         bigserial PRIMARY KEY,
    journal_id uuid NOT NULL,
    seq        bigint NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('fork', 'rewritten', 'gap', 'behind', 'checkpoint')),
    detail     text NOT NULL,
    raised_by  name NOT NULL DEFAULT session_user,
    raised_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alarms_by_journal ON custody.alarms (journal_id);

-- Append-only, for everyone including the owner: no UPDATE, DELETE or TRUNCATE.
CREATE FUNCTION custody.append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the organisation''s journal is append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON custody.events
    FOR EACH ROW EXECUTE FUNCTION custody.append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON custody.events
    FOR EACH STATEMENT EXECUTE FUNCTION custody.append_only();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON custody.checkpoints
    FOR EACH ROW EXECUTE FUNCTION custody.append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON custody.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION custody.append_only();
CREATE TRIGGER alarms_append_only BEFORE UPDATE OR DELETE ON custody.alarms
    FOR EACH ROW EXECUTE FUNCTION custody.append_only();
CREATE TRIGGER alarms_no_truncate BEFORE TRUNCATE ON custody.alarms
    FOR EACH STATEMENT EXECUTE FUNCTION custody.append_only();
CREATE TRIGGER sync_reports_append_only BEFORE UPDATE OR DELETE ON custody.sync_reports
    FOR EACH ROW EXECUTE FUNCTION custody.append_only();

-- One field of the canonical bytes: a 4-byte big-endian length and the bytes.
CREATE FUNCTION custody.field(b bytea) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN int4send(length(b)) || b;

-- The hash of one event, as journal::chain computes it: SHA-256 of prev_hash, then the
-- fields journal_id, seq (decimal), at, kind, carrier ('' when none), os_user, operator
-- ('' when none), host, data, each as custody.field() of its UTF-8 bytes.
CREATE FUNCTION custody.chain_hash(prev bytea, journal_id uuid, seq bigint, at text, kind text,
        carrier text, os_user text, operator text, host text, data text) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN custody.digest(
        prev
        || custody.field(convert_to(journal_id::text, 'UTF8'))
        || custody.field(convert_to(seq::text, 'UTF8'))
        || custody.field(convert_to(at, 'UTF8'))
        || custody.field(convert_to(kind, 'UTF8'))
        || custody.field(convert_to(coalesce(carrier, ''), 'UTF8'))
        || custody.field(convert_to(os_user, 'UTF8'))
        || custody.field(convert_to(coalesce(operator, ''), 'UTF8'))
        || custody.field(convert_to(host, 'UTF8'))
        || custody.field(convert_to(data, 'UTF8')),
        'sha256');

-- The agent a login role belongs to (NULL for roles that are not agents).
CREATE FUNCTION custody.agent_of(r name) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, custody
    RETURN (SELECT name FROM custody.agents WHERE role = r);

-- True when journal `j` belongs to the agent whose login role is `r`.
CREATE FUNCTION custody.owns(j uuid, r name) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, custody
    RETURN EXISTS (SELECT 1 FROM custody.journals jn JOIN custody.agents a ON a.name = jn.agent
                   WHERE jn.journal_id = j AND a.role = r);

-- An agent registers a journal of its own; a journal another agent registered is refused.
CREATE FUNCTION custody.register_journal(j uuid, h text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, custody AS $$
DECLARE
    me    text := custody.agent_of(session_user);
    owner text;
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'role % is not an enrolled agent', session_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'enroll it with `custody fleet enroll-agent NAME`';
    END IF;
    SELECT agent INTO owner FROM custody.journals WHERE journal_id = j;
    IF owner IS NULL THEN
        INSERT INTO custody.journals (journal_id, agent, host) VALUES (j, me, h);
    ELSIF owner <> me THEN
        RAISE EXCEPTION 'journal % belongs to agent %, not to %', j, owner, me
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- The server's check of every event pushed. A row that is already held with the same hash
-- is skipped (sync is idempotent). A row that does not continue the chain held for its
-- journal is skipped and an alarm recorded; the statement itself succeeds, so the alarm is
-- committed with it (an exception would roll the alarm back with the refused row).
CREATE FUNCTION custody.events_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, custody AS $$
DECLARE
    me       text := custody.agent_of(session_user);
    held     bytea;
    prev     bytea;
    computed bytea;
    cp       jsonb;
    cp_head  bytea;
BEGIN
    IF me IS NOT NULL AND NOT custody.owns(NEW.journal_id, session_user) THEN
        RAISE EXCEPTION 'agent % may not write events of journal %', me, NEW.journal_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT hash INTO held FROM custody.events WHERE journal_id = NEW.journal_id AND seq = NEW.seq;
    IF FOUND THEN
        IF held = NEW.hash THEN
            RETURN NULL;
        END IF;
        INSERT INTO custody.alarms (journal_id, seq, kind, detail) VALUES (NEW.journal_id, NEW.seq, 'fork',
            format('event #%s pushed with hash %s, but the organisation holds #%s with hash %s: the workstation journal was rewritten or forked',
                   NEW.seq, encode(NEW.hash, 'hex'), NEW.seq, encode(held, 'hex')));
        RETURN NULL;
    END IF;
    IF NEW.seq = 1 THEN
        prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    ELSE
        SELECT hash INTO prev FROM custody.events WHERE journal_id = NEW.journal_id AND seq = NEW.seq - 1;
        IF NOT FOUND THEN
            INSERT INTO custody.alarms (journal_id, seq, kind, detail) VALUES (NEW.journal_id, NEW.seq, 'gap',
                format('event #%s pushed, but the organisation does not hold #%s', NEW.seq, NEW.seq - 1));
            RETURN NULL;
        END IF;
    END IF;
    IF NEW.prev_hash <> prev THEN
        INSERT INTO custody.alarms (journal_id, seq, kind, detail) VALUES (NEW.journal_id, NEW.seq, 'fork',
            format('event #%s has prev_hash %s, but the organisation holds #%s with hash %s: a forked chain',
                   NEW.seq, encode(NEW.prev_hash, 'hex'), NEW.seq - 1, encode(prev, 'hex')));
        RETURN NULL;
    END IF;
    computed := custody.chain_hash(prev, NEW.journal_id, NEW.seq, NEW.at, NEW.kind, NEW.carrier,
                                   NEW.os_user, NEW.operator, NEW.host, NEW.data);
    IF computed <> NEW.hash THEN
        INSERT INTO custody.alarms (journal_id, seq, kind, detail) VALUES (NEW.journal_id, NEW.seq, 'rewritten',
            format('event #%s: its contents hash to %s, not to the hash %s it carries: the row was altered',
                   NEW.seq, encode(computed, 'hex'), encode(NEW.hash, 'hex')));
        RETURN NULL;
    END IF;
    NEW.received_at := now();
    IF NEW.kind = 'checkpoint' THEN
        BEGIN
            cp := NEW.data::jsonb;
        EXCEPTION WHEN others THEN
            cp := NULL;
        END;
        IF cp IS NULL OR jsonb_typeof(cp -> 'count') <> 'number' OR (cp ->> 'count')::numeric >= NEW.seq
           OR cp ->> 'head_hash' IS NULL OR cp ->> 'at' IS NULL OR cp ->> 'public_key' IS NULL
           OR cp ->> 'signature' IS NULL THEN
            INSERT INTO custody.alarms (journal_id, seq, kind, detail) VALUES (NEW.journal_id, NEW.seq, 'checkpoint',
                format('checkpoint event #%s does not hold a well-formed checkpoint', NEW.seq));
        ELSE
            IF (cp ->> 'count')::bigint = 0 THEN
                cp_head := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
            ELSE
                SELECT hash INTO cp_head FROM custody.events
                 WHERE journal_id = NEW.journal_id AND seq = (cp ->> 'count')::bigint;
            END IF;
            IF cp_head IS DISTINCT FROM decode(cp ->> 'head_hash', 'hex') THEN
                INSERT INTO custody.alarms (journal_id, seq, kind, detail) VALUES (NEW.journal_id, NEW.seq, 'checkpoint',
                    format('checkpoint event #%s signs head %s of event #%s, which the organisation holds with hash %s',
                           NEW.seq, cp ->> 'head_hash', cp ->> 'count', encode(cp_head, 'hex')));
            END IF;
            -- Recorded after the event row itself (custody.events_witness()).
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER events_check BEFORE INSERT ON custody.events
    FOR EACH ROW EXECUTE FUNCTION custody.events_check();

-- The checkpoint table row of an accepted `checkpoint` event (after the event exists, for
-- the foreign key).
CREATE FUNCTION custody.events_witness() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, custody AS $$
DECLARE
    cp jsonb;
BEGIN
    BEGIN
        cp := NEW.data::jsonb;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
    IF jsonb_typeof(cp -> 'count') = 'number' AND cp ->> 'head_hash' IS NOT NULL AND cp ->> 'at' IS NOT NULL
       AND cp ->> 'public_key' IS NOT NULL AND cp ->> 'signature' IS NOT NULL THEN
        INSERT INTO custody.checkpoints (journal_id, seq, count, head_hash, at, public_key, signature)
        VALUES (NEW.journal_id, NEW.seq, (cp ->> 'count')::bigint, cp ->> 'head_hash', cp ->> 'at',
                cp ->> 'public_key', cp ->> 'signature');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER events_witness AFTER INSERT ON custody.events
    FOR EACH ROW WHEN (NEW.kind = 'checkpoint') EXECUTE FUNCTION custody.events_witness();

-- A sync report: what the agent's local journal holds. A local journal that ends before
-- the organisation's record, or holds another event at its own head, raises an alarm.
CREATE FUNCTION custody.sync_reports_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, custody AS $$
DECLARE
    me   text := custody.agent_of(session_user);
    head bigint;
    held bytea;
BEGIN
    IF me IS NOT NULL AND NOT custody.owns(NEW.journal_id, session_user) THEN
        RAISE EXCEPTION 'agent % may not report on journal %', me, NEW.journal_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT max(seq) INTO head FROM custody.events WHERE journal_id = NEW.journal_id;
    NEW.server_seq := coalesce(head, 0);
    NEW.reported_at := now();
    IF NEW.local_seq < NEW.server_seq THEN
        INSERT INTO custody.alarms (journal_id, seq, kind, detail) VALUES (NEW.journal_id, NEW.server_seq, 'behind',
            format('the workstation journal ends at event #%s, but the organisation holds events up to #%s: it was restored from an old backup or truncated',
                   NEW.local_seq, NEW.server_seq));
    END IF;
    IF NEW.local_seq >= 1 THEN
        SELECT hash INTO held FROM custody.events WHERE journal_id = NEW.journal_id AND seq = NEW.local_seq;
        IF FOUND AND held <> NEW.local_hash THEN
            INSERT INTO custody.alarms (journal_id, seq, kind, detail) VALUES (NEW.journal_id, NEW.local_seq, 'fork',
                format('the workstation journal holds event #%s with hash %s, the organisation with hash %s',
                       NEW.local_seq, encode(NEW.local_hash, 'hex'), encode(held, 'hex')));
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER sync_reports_check BEFORE INSERT ON custody.sync_reports
    FOR EACH ROW EXECUTE FUNCTION custody.sync_reports_check();

-- Row-level security: an agent sees and writes only its own journal's rows; the auditor
-- and admin roles (see roles.sql) read everything.
CREATE FUNCTION custody.reads_all() RETURNS boolean
    LANGUAGE sql STABLE
    RETURN pg_has_role(current_user, current_database() || '_auditor', 'MEMBER')
        OR pg_has_role(current_user, current_database() || '_admin', 'MEMBER');

ALTER TABLE custody.journals ENABLE ROW LEVEL SECURITY;
ALTER TABLE custody.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE custody.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE custody.sync_reports ENABLE ROW LEVEL SECURITY;
ALTER TABLE custody.alarms ENABLE ROW LEVEL SECURITY;
ALTER TABLE custody.agents ENABLE ROW LEVEL SECURITY;

CREATE POLICY read ON custody.agents FOR SELECT
    USING ((SELECT custody.reads_all()) OR role = current_user);
CREATE POLICY read ON custody.journals FOR SELECT
    USING ((SELECT custody.reads_all()) OR custody.owns(journal_id, current_user));
CREATE POLICY read ON custody.events FOR SELECT
    USING ((SELECT custody.reads_all()) OR custody.owns(journal_id, current_user));
CREATE POLICY write ON custody.events FOR INSERT
    WITH CHECK (custody.owns(journal_id, current_user));
CREATE POLICY read ON custody.checkpoints FOR SELECT
    USING ((SELECT custody.reads_all()) OR custody.owns(journal_id, current_user));
CREATE POLICY read ON custody.sync_reports FOR SELECT
    USING ((SELECT custody.reads_all()) OR custody.owns(journal_id, current_user));
CREATE POLICY write ON custody.sync_reports FOR INSERT
    WITH CHECK (custody.owns(journal_id, current_user));
CREATE POLICY read ON custody.alarms FOR SELECT
    USING ((SELECT custody.reads_all()) OR custody.owns(journal_id, current_user));

REVOKE ALL ON ALL TABLES IN SCHEMA custody FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA custody FROM PUBLIC;
