-- The fleet's roles, created when missing and granted their rights; run by every
-- `custody fleet init` after the migrations (roles belong to the cluster, not to the
-- database, so a restored database needs them again). Names start with the database's:
--   <db>_admin    enrolls agents (CREATEROLE), reads everything
--   <db>_auditor  reads everything, writes nothing
--   <db>_agent    the group of every agent's login role (`custody fleet enroll-agent`):
--                 INSERT of its own journal's events and sync reports, read of its own rows
DO $$
DECLARE
    db      text := current_database();
    admin   text := db || '_admin';
    auditor text := db || '_auditor';
    agent   text := db || '_agent';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = admin) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN CREATEROLE', admin);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = auditor) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', auditor);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = agent) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', agent);
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I', db, admin, auditor, agent);
    EXECUTE format('GRANT USAGE ON SCHEMA custody TO %I, %I, %I', admin, auditor, agent);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA custody TO %I, %I', admin, auditor);
    EXECUTE format('GRANT INSERT ON custody.agents TO %I', admin);
    EXECUTE format('GRANT SELECT, INSERT ON custody.events, custody.sync_reports TO %I', agent);
    EXECUTE format('GRANT SELECT ON custody.journals, custody.checkpoints, custody.alarms, custody.agents TO %I', agent);
    EXECUTE format('GRANT USAGE ON SEQUENCE custody.sync_reports_id_seq TO %I', agent);
    EXECUTE format('GRANT EXECUTE ON FUNCTION custody.owns(uuid, name), custody.reads_all(), custody.agent_of(name) TO %I, %I, %I',
                   admin, auditor, agent);
    EXECUTE format('GRANT EXECUTE ON FUNCTION custody.register_journal(uuid, text) TO %I', agent);
    EXECUTE format('GRANT EXECUTE ON FUNCTION custody.chain_hash(bytea, uuid, bigint, text, text, text, text, text, text, text), custody.field(bytea), custody.digest(bytea, text) TO %I, %I',
                   admin, auditor);
END $$;
