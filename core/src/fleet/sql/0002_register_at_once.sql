-- Fleet schema 2: two syncs of the same new journal at once (two `custody sync` processes,
-- or `custody watch` and a `custody sync` by hand) both registered it: both found no owner,
-- both inserted, and the second failed on the primary key. The insert now yields to a
-- registration made in between, then the owner is read again and checked as before.

CREATE OR REPLACE FUNCTION custody.register_journal(j uuid, h text) RETURNS void
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
    INSERT INTO custody.journals (journal_id, agent, host) VALUES (j, me, h)
        ON CONFLICT (journal_id) DO NOTHING;
    SELECT agent INTO owner FROM custody.journals WHERE journal_id = j;
    IF owner <> me THEN
        RAISE EXCEPTION 'journal % belongs to agent %, not to %', j, owner, me
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;
