-- evproc 0.2.0 -> 0.3.0 (ALTER EXTENSION evproc UPDATE). Released: never edited once
-- 0.3.0 is released (extension/versions/SHA256SUMS).
-- What a fresh 0.3.0 install makes, t/015_upgrade.pl checks that this script makes too.
\echo Use "ALTER EXTENSION evproc UPDATE TO '0.3.0'" to load this file. \quit

-- Issue 12.6: evproc_grant refuses an OID that is no role (42704), and evproc_revoke one
-- that is neither a role nor granted.
CREATE OR REPLACE FUNCTION evproc.grant_impl(caller oid, topic text, role regrole, privilege text)
    RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic := evproc.topic_for_grant(caller, topic, role, privilege, 'grant privileges on');
BEGIN
    -- A regrole argument may be any OID ('999999', 0::oid::regrole): only a role that
    -- exists is granted anything (a later role could be given that OID).
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = role) THEN
        RAISE EXCEPTION 'role with OID % does not exist', role::oid USING ERRCODE = 'undefined_object';
    END IF;
    IF role = ANY (CASE privilege WHEN 'publish' THEN t.publishers ELSE t.subscribers END) THEN
        RETURN false;
    END IF;
    UPDATE evproc.topic
       SET publishers = CASE privilege WHEN 'publish' THEN publishers || role ELSE publishers END,
           subscribers = CASE privilege WHEN 'subscribe' THEN subscribers || role ELSE subscribers END
     WHERE id = t.id;
    RETURN true;
END
$fn$;
CREATE OR REPLACE FUNCTION evproc.revoke_impl(caller oid, topic text, role regrole, privilege text)
    RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic := evproc.topic_for_grant(caller, topic, role, privilege, 'revoke privileges on');
BEGIN
    IF role <> ALL (CASE privilege WHEN 'publish' THEN t.publishers ELSE t.subscribers END) THEN
        -- A grant to a role dropped since stays as its OID and is revoked by it (above);
        -- an OID that is neither a role nor granted is a mistake, not "nothing to do".
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = role) THEN
            RAISE EXCEPTION 'role with OID % does not exist', role::oid USING ERRCODE = 'undefined_object';
        END IF;
        RETURN false;
    END IF;
    UPDATE evproc.topic
       SET publishers = CASE privilege WHEN 'publish' THEN array_remove(publishers, role) ELSE publishers END,
           subscribers = CASE privilege WHEN 'subscribe' THEN array_remove(subscribers, role) ELSE subscribers END
     WHERE id = t.id;
    RETURN true;
END
$fn$;

-- Issue 12.7: evproc_replay applies enqueue's key limit (512 bytes, 22001).
CREATE OR REPLACE FUNCTION evproc.replay_impl(caller oid, subscription text, from_time timestamptz,
                                   to_time timestamptz, key text)
    RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, subscription, exclusive => true);
    t evproc.topic := (SELECT tp FROM evproc.topic tp WHERE tp.id = s.topic_id);
    running integer;
    new_id integer;
BEGIN
    IF NOT evproc.may_subscribe(s.owner, t) THEN
        RAISE EXCEPTION 'permission denied to replay topic "%" to subscription "%"', t.name, subscription
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Its owner %s no longer holds the ''subscribe'' privilege on the topic.', s.owner);
    END IF;
    IF key = '' THEN
        RAISE EXCEPTION 'key must not be empty (NULL replays every key)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The key limit enqueue applies (kMaxKeyBytes in src/settings.hpp): no stored key is
    -- longer, and the replay row and every scan it drives stay small.
    IF octet_length(key) > 512 THEN
        RAISE EXCEPTION 'key is too long: % bytes, the limit is 512', octet_length(key)
            USING ERRCODE = 'string_data_right_truncation';
    END IF;
    IF from_time > coalesce(to_time, now()) THEN
        RAISE EXCEPTION 'replay from % is after its end %', from_time, coalesce(to_time, now())
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Share-locks the topic row before checking the history bound, as subscribing does:
    -- retention locks it before dropping a partition, so no drop slips in between.
    PERFORM 1 FROM evproc.topic WHERE id = s.topic_id FOR SHARE;
    IF from_time IS NOT NULL THEN
        PERFORM evproc.check_history_retained(s.topic_id, from_time);
    END IF;
    SELECT r.id INTO running FROM evproc.replay r
     WHERE r.subscription_id = s.id AND r.state = 'running';
    IF FOUND THEN
        RAISE EXCEPTION 'a replay of subscription "%" is already running (id %)', subscription, running
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait for it (evproc_replays) or cancel it with evproc_cancel_replay.';
    END IF;
    INSERT INTO evproc.replay (subscription_id, from_time, to_time, key, last_id, requested_by)
    VALUES (s.id, coalesce(from_time, '-infinity'), coalesce(to_time, now()), key,
            (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM evproc.event_id_seq),
            (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = caller))
    RETURNING id INTO new_id;
    PERFORM evproc.wake_at_commit();
    RETURN new_id;
END
$fn$;
-- Delivery's statements are written whole in the library (src/delivery_statements.hpp);
-- evproc.statement_sql(name) returns them for the tests, and evproc.window_events runs
-- the window's two parts from there. evproc.window_sql(), which held the window's text
-- for the library to wrap, goes.
-- The text of a statement the delivery workers prepare, by name (src/delivery_statements.hpp,
-- where each is written whole: the claims, the window's two parts, the writes). The
-- regression tests EXPLAIN exactly what the workers run.
CREATE FUNCTION evproc.statement_sql(name text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'evproc_statement_sql';

-- The events of one (topic, partition) in the window (from_tick, to_tick], in id order:
-- those the workers' window read (its two parts) finds.
CREATE OR REPLACE FUNCTION evproc.window_events(topic_id integer, partition integer,
                                     from_tick bigint, to_tick bigint)
    RETURNS SETOF evproc.log
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    a pg_snapshot;
    b pg_snapshot;
BEGIN
    SELECT snapshot INTO a FROM evproc.tick WHERE id = from_tick;
    SELECT snapshot INTO b FROM evproc.tick WHERE id = to_tick;
    IF a IS NULL OR b IS NULL OR from_tick >= to_tick THEN
        RAISE EXCEPTION 'no window between ticks % and %', from_tick, to_tick
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT l.* FROM evproc.log l WHERE l.topic_id = $1 AND l.partition = $2 AND l.id IN ('
        'SELECT p.id FROM (%s) p UNION ALL SELECT r.id FROM (%s) r) ORDER BY l.id',
        evproc.statement_sql('window_pending'), evproc.statement_sql('window_range'))
        USING topic_id, partition, ARRAY(SELECT pg_snapshot_xip(a)), pg_snapshot_xmax(a),
              b, pg_snapshot_xmax(b), 0::bigint, NULL::bigint, '-infinity'::timestamptz, ''::text;
END
$fn$;
REVOKE EXECUTE ON FUNCTION evproc.statement_sql(text) FROM PUBLIC;
DROP FUNCTION evproc.window_sql(text);
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

-- Commits on topics that no subscription delivers now (paused, breaker open, none) do
-- not wake the launcher (issue 13): evproc.sync_stats() tells them which topics some
-- subscription delivers, and pausing or resuming has the maintenance worker sync at once.
-- The topics some subscription delivers now, with their partition counts (set by
-- evproc.sync_stats()): a commit on another topic does not wake the launcher, whose
-- next tick, or one a second, takes its partitions (src/commit_wake.cpp).
CREATE FUNCTION evproc.set_deliverable(topic_ids integer[], partitions integer[]) RETURNS void
    AS 'MODULE_PATHNAME', 'evproc_set_deliverable' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION evproc.set_deliverable(integer[], integer[]) FROM PUBLIC;
CREATE OR REPLACE FUNCTION evproc.pause_impl(caller oid, name text, reason text)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => true);
BEGIN
    UPDATE evproc.subscription SET paused = true, paused_reason = coalesce(reason, 'paused by operator')
     WHERE id = s.id;
    PERFORM evproc.subscriptions_changed();  -- its topic's commits stop waking the launcher
END
$fn$;
CREATE OR REPLACE FUNCTION evproc.resume_impl(caller oid, name text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => true);
    h record := evproc.resolve_handler(s.handler);
BEGIN
    UPDATE evproc.subscription
       SET paused = false, paused_reason = NULL, breaker_open_until = NULL,
           handler = h.signature, handler_form = h.form
     WHERE id = s.id;
    PERFORM evproc.subscriptions_changed();  -- its topic's commits wake the launcher again
END
$fn$;
CREATE OR REPLACE FUNCTION evproc.sync_stats() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    unready integer[];
    sub integer;
    counted integer := 0;
BEGIN
    SELECT evproc.sync_stats_registry(coalesce(array_agg(s.id ORDER BY s.id), '{}'),
                                      coalesce(array_agg(s.topic_id ORDER BY s.id), '{}'))
      INTO unready FROM evproc.subscription s;
    FOREACH sub IN ARRAY unready LOOP
        IF evproc.set_pending(sub, evproc.count_pending(sub)) THEN
            counted := counted + 1;
        END IF;
    END LOOP;
    PERFORM evproc.set_deliverable(coalesce(array_agg(t.id), '{}'), coalesce(array_agg(t.partitions), '{}'))
       FROM evproc.topic t
      WHERE EXISTS (SELECT 1 FROM evproc.subscription s
                     WHERE s.topic_id = t.id AND NOT s.paused
                       AND (s.breaker_open_until IS NULL OR s.breaker_open_until <= now()));
    RETURN counted;
END
$fn$;
