-- evproc 0.2.0 -> 0.3.0 (ALTER EXTENSION evproc UPDATE). Released: never edited once
-- 0.3.0 is released (extension/versions/SHA256SUMS).
-- What a fresh 0.3.0 install makes, t/015_upgrade.pl checks that this script makes too.
\echo Use "ALTER EXTENSION evproc UPDATE TO '0.3.0'" to load this file. \quit

-- Maintenance never waits for a row an application holds (issue 12.2): expired dedup ids
-- and topics with grants of dropped roles are taken SKIP LOCKED, each step of
-- evproc.maintain() leaves what it cannot lock to the next run.
CREATE OR REPLACE FUNCTION evproc.expire_dedup() RETURNS bigint
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    deleted bigint;
    total bigint := 0;
BEGIN
    FOR batch IN 1..10 LOOP
        DELETE FROM evproc.dedup
         WHERE ctid = ANY (ARRAY(SELECT ctid FROM evproc.dedup WHERE expires_at < now()
                                  ORDER BY expires_at LIMIT 10000 FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS deleted = ROW_COUNT;
        total := total + deleted;
        EXIT WHEN deleted < 10000;
    END LOOP;
    RETURN total;
END
$fn$;

CREATE OR REPLACE FUNCTION evproc.forget_dropped_grantees() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    changed integer;
BEGIN
    -- A topic row someone holds (an evproc_alter_topic or evproc_grant in an open
    -- transaction) is skipped, not waited for: the next run removes its grants.
    UPDATE evproc.topic t
       SET publishers = ARRAY(SELECT g FROM unnest(t.publishers) AS g
                               WHERE EXISTS (SELECT 1 FROM pg_authid a WHERE a.oid = g)),
           subscribers = ARRAY(SELECT g FROM unnest(t.subscribers) AS g
                                WHERE EXISTS (SELECT 1 FROM pg_authid a WHERE a.oid = g))
     WHERE t.id IN (SELECT c.id FROM evproc.topic c
                     WHERE EXISTS (SELECT 1 FROM unnest(c.publishers || c.subscribers) AS g
                                    WHERE NOT EXISTS (SELECT 1 FROM pg_authid a WHERE a.oid = g))
                       FOR NO KEY UPDATE SKIP LOCKED);
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END
$fn$;

CREATE OR REPLACE FUNCTION evproc.maintain() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '100ms'
AS $fn$
DECLARE
    newest bigint := (SELECT max(id) FROM evproc.tick);
    u record;
BEGIN
    -- Each step on its own: one that cannot get a lock leaves its work to the next run,
    -- and the others still do theirs. Rows are taken SKIP LOCKED; lock_timeout only
    -- bounds a wait for a table lock (none that an application takes), and is short: the
    -- units this run moved on stay locked, to workers too, until it commits.
    BEGIN
        FOR u IN SELECT p.subscription_id, p.partition, p.tick_id, s.topic_id
                   FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
                  WHERE p.window_tick IS NULL AND p.tick_id > 0 AND p.tick_id < newest
                    FOR UPDATE OF p SKIP LOCKED LOOP
            IF NOT EXISTS (SELECT 1 FROM evproc.window_events(u.topic_id, u.partition, u.tick_id, newest)) THEN
                UPDATE evproc.progress SET tick_id = newest
                 WHERE subscription_id = u.subscription_id AND partition = u.partition;
            END IF;
        END LOOP;
        DELETE FROM evproc.tick
         WHERE ctid = ANY (ARRAY(
               SELECT ctid FROM evproc.tick
                WHERE id > 0 AND id < newest
                  AND id < coalesce((SELECT min(least(nullif(tick_id, 0), window_tick))
                                       FROM evproc.progress), newest)
                  FOR UPDATE SKIP LOCKED));
    EXCEPTION WHEN lock_not_available THEN
        RAISE LOG 'evproc: maintenance skipped the ticks this time: %', SQLERRM;
    END;
    BEGIN
        PERFORM evproc.expire_dedup();
    EXCEPTION WHEN lock_not_available THEN
        RAISE LOG 'evproc: maintenance skipped dedup expiry this time: %', SQLERRM;
    END;
    BEGIN
        PERFORM evproc.forget_dropped_grantees();
    EXCEPTION WHEN lock_not_available THEN
        RAISE LOG 'evproc: maintenance skipped the grants of dropped roles this time: %', SQLERRM;
    END;
    -- Last: a partition drop holds its lock on evproc.log until this commits. Its
    -- failure must not undo the work above.
    BEGIN
        PERFORM evproc.maintain_log();
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'evproc: log partition maintenance failed: %', SQLERRM
            USING DETAIL = format('SQLSTATE %s', SQLSTATE);
    END;
END
$fn$;
