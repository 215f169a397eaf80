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
-------------------------------------------------------------------------------
-- Pull subscriptions and leases (issue 14, extension/lease.sql, docs/consumers.md):
-- a subscription without a handler is read by consumers outside the database.
-------------------------------------------------------------------------------
-- The tables changed below are locked first, all at once, and never waited for long
-- while holding some: running workers lock them in other orders (a live unit's claim
-- takes progress before subscription, a replay's claim replay first), so an update that
-- waited for one while holding another could deadlock with a batch. A lock wait shorter
-- than deadlock_timeout gives up and tries again.
DO $lock$
DECLARE
    previous text := pg_catalog.current_setting('lock_timeout');
BEGIN
    FOR attempt IN 1..3000 LOOP
        BEGIN
            PERFORM pg_catalog.set_config('lock_timeout', '100ms', true);
            LOCK TABLE evproc.progress, evproc.replay, evproc.subscription IN ACCESS EXCLUSIVE MODE;
            PERFORM pg_catalog.set_config('lock_timeout', previous, true);
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_catalog.pg_sleep(0.01);
        END;
    END LOOP;
    RAISE EXCEPTION 'could not lock evproc''s subscription tables for the update'
        USING ERRCODE = 'lock_not_available', HINT = 'Pause the busiest subscriptions and try again.';
END
$lock$;
ALTER TABLE evproc.subscription ALTER COLUMN handler DROP NOT NULL;
ALTER TABLE evproc.subscription DROP CONSTRAINT subscription_handler_form_check;
ALTER TABLE evproc.subscription
    ADD CONSTRAINT subscription_handler_form_check CHECK (handler_form IN ('batch', 'event', 'pull'));
ALTER TABLE evproc.subscription ADD COLUMN lease_duration interval NOT NULL DEFAULT '30 seconds';
ALTER TABLE evproc.subscription
    ADD CONSTRAINT subscription_pull_check CHECK ((handler IS NULL) = (handler_form = 'pull'));
ALTER TABLE evproc.subscription
    ADD CONSTRAINT subscription_lease_duration_check
        CHECK (lease_duration > interval '0' AND lease_duration <= interval '1 day');
ALTER TABLE evproc.progress ADD COLUMN lease_id text;
ALTER TABLE evproc.progress ADD COLUMN leased_until timestamptz;
ALTER TABLE evproc.replay ADD COLUMN lease_id text;
ALTER TABLE evproc.replay ADD COLUMN leased_until timestamptz;

-- evproc_subscribe takes lease_duration (and handler NULL): new signatures.
DROP FUNCTION public.evproc_subscribe(text, text, text, integer, integer, interval, interval,
                                      interval, text, timestamptz, regrole, real, integer, interval);
DROP FUNCTION evproc.subscribe(text, text, regprocedure, integer, integer, interval, interval,
                               interval, text, timestamptz, regrole, real, integer, interval);
DROP FUNCTION evproc.subscribe_impl(oid, text, text, regprocedure, integer, integer, interval,
                                    interval, interval, text, timestamptz, regrole, real, integer,
                                    interval);
CREATE FUNCTION public.evproc_subscribe(name text, topic text, handler text,
                                        batch_size integer DEFAULT 100,
                                        max_attempts integer DEFAULT 10,
                                        backoff_base interval DEFAULT '1 second',
                                        backoff_cap interval DEFAULT '10 minutes',
                                        handler_timeout interval DEFAULT '30 seconds',
                                        on_dead_letter text DEFAULT 'skip',
                                        start_from timestamptz DEFAULT NULL,
                                        run_as regrole DEFAULT NULL,
                                        failure_budget real DEFAULT 0.5,
                                        breaker_min_attempts integer DEFAULT 20,
                                        breaker_cooldown interval DEFAULT '30 seconds',
                                        lease_duration interval DEFAULT '30 seconds')
    RETURNS integer LANGUAGE plpgsql
AS $fn$
BEGIN
    IF NOT pg_catalog.has_schema_privilege('evproc', 'USAGE') THEN
        RAISE EXCEPTION 'permission denied for schema evproc, where handlers'' argument type evproc.event lives'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Subscribers (and the roles that own subscriptions) need USAGE on schema evproc.';
    END IF;
    -- IS NULL, not an operator: this function runs on the caller's search_path.
    RETURN evproc.subscribe(name, topic,
                            CASE WHEN handler IS NULL THEN NULL
                                 ELSE (evproc.resolve_handler(handler)).fn::pg_catalog.regprocedure END,
                            batch_size, max_attempts, backoff_base, backoff_cap, handler_timeout,
                            on_dead_letter, start_from, run_as, failure_budget,
                            breaker_min_attempts, breaker_cooldown, lease_duration);
END
$fn$;

CREATE FUNCTION evproc.subscribe(name text, topic text, handler regprocedure,
                                 batch_size integer, max_attempts integer,
                                 backoff_base interval, backoff_cap interval,
                                 handler_timeout interval, on_dead_letter text,
                                 start_from timestamptz, run_as regrole, failure_budget real,
                                 breaker_min_attempts integer, breaker_cooldown interval,
                                 lease_duration interval DEFAULT '30 seconds')
    RETURNS integer LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';

CREATE FUNCTION evproc.subscribe_impl(caller oid, name text, topic text, handler regprocedure,
                                      batch_size integer, max_attempts integer,
                                      backoff_base interval, backoff_cap interval,
                                      handler_timeout interval, on_dead_letter text,
                                      start_from timestamptz, run_as regrole, failure_budget real,
                                      breaker_min_attempts integer, breaker_cooldown interval,
                                      lease_duration interval DEFAULT '30 seconds')
    RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic;
    h record;
    owner_role regrole := coalesce(run_as, caller::regrole);
    start_tick bigint;
    start_snapshot pg_snapshot;
    new_id integer;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'subscription name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid subscription name "%"', name USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use 1 to 63 characters among letters, digits, "_", ".", ":" and "-", starting with a letter or digit.';
    END IF;
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'topic must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lease_duration IS NULL OR lease_duration <= interval '0' OR lease_duration > interval '1 day' THEN
        RAISE EXCEPTION 'lease_duration must be between 0 and 1 day, got %', coalesce(lease_duration::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- FOR UPDATE, not FOR SHARE: granting 'subscribe' below updates the row.
    SELECT * INTO t FROM evproc.topic AS tp WHERE tp.name = topic FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" does not exist', topic USING ERRCODE = 'undefined_object';
    END IF;
    -- Under the row lock: retention updates the bound with the row locked.
    IF start_from IS NOT NULL THEN
        PERFORM evproc.check_history_retained(t.id, start_from);
    END IF;
    -- Checked again here, not trusted from evproc.resolve_handler: the caller may call
    -- evproc.subscribe with any function.
    -- No handler: a pull subscription, read by consumers (extension/lease.sql).
    IF handler IS NULL THEN
        SELECT 'pull' AS form, NULL::text AS signature INTO h;
    ELSE
        h := evproc.handler_shape(handler);
    END IF;
    PERFORM evproc.check_subscription_settings(batch_size, max_attempts, backoff_base, backoff_cap,
        handler_timeout, on_dead_letter, failure_budget, breaker_min_attempts, breaker_cooldown);
    -- Handlers run as the owner, never as a superuser (a handler's code must not gain
    -- powers by being called from a superuser background worker).
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = owner_role) THEN
        RAISE EXCEPTION 'subscription owner % is a superuser; handlers never run as a superuser', owner_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Pass run_as => a non-superuser role that may execute the handler.';
    END IF;
    IF NOT pg_has_role(caller, owner_role, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to create a subscription owned by %', owner_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT has_schema_privilege(owner_role, 'evproc', 'USAGE') THEN
        RAISE EXCEPTION 'role % may not use schema evproc, where the handler''s argument type evproc.event lives', owner_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT USAGE ON SCHEMA evproc TO %s;', owner_role);
    END IF;
    IF handler IS NOT NULL AND NOT has_function_privilege(owner_role, handler, 'EXECUTE') THEN
        RAISE EXCEPTION 'role % may not execute handler %', owner_role, handler
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT evproc.may_subscribe(owner_role, t) THEN
        IF NOT pg_has_role(caller, t.owner, 'MEMBER') THEN
            RAISE EXCEPTION 'permission denied to subscribe to topic "%" as %', t.name, owner_role
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'Handlers see the topic''s payloads: the subscription''s owner needs the ''subscribe'' privilege on the topic.',
                      HINT = format('A member of the topic''s owner role grants it: SELECT evproc_grant(%L, %L, ''subscribe'');',
                                    t.name, owner_role);
        END IF;
        UPDATE evproc.topic SET subscribers = subscribers || owner_role WHERE id = t.id;
    END IF;
    -- The key-share lock keeps maintenance from deleting the start tick before our
    -- progress rows commit (maintenance skips locked ticks).
    SELECT id, snapshot INTO start_tick, start_snapshot FROM evproc.tick ORDER BY id DESC LIMIT 1 FOR KEY SHARE;
    INSERT INTO evproc.subscription (name, topic_id, handler, handler_form, owner, batch_size,
        max_attempts, backoff_base, backoff_cap, handler_timeout, on_dead_letter,
        failure_budget, breaker_min_attempts, breaker_cooldown, start_snapshot, start_from,
        lease_duration)
    VALUES (name, t.id, h.signature, h.form, owner_role, batch_size, max_attempts, backoff_base,
        backoff_cap, handler_timeout, on_dead_letter, failure_budget, breaker_min_attempts,
        breaker_cooldown, CASE WHEN start_from IS NULL THEN start_snapshot END,
        CASE WHEN start_from IS NOT NULL THEN start_from WHEN start_tick = 0 THEN now() END,
        lease_duration)
    RETURNING id INTO new_id;
    -- From history: the window from tick 0 (sees nothing) holds all retained events.
    -- From now: the newest tick (tick 0 with history_from = now() before the first tick).
    INSERT INTO evproc.progress (subscription_id, partition, tick_id, history_from)
    SELECT new_id, p,
           CASE WHEN start_from IS NULL THEN start_tick ELSE 0 END,
           CASE WHEN start_from IS NOT NULL THEN start_from
                WHEN start_tick = 0 THEN now() END
      FROM generate_series(0, t.partitions - 1) AS p;
    IF NOT evproc.preloaded() THEN
        RAISE WARNING 'evproc is not in shared_preload_libraries: subscription "%" will receive events once it is', name;
    END IF;
    PERFORM evproc.subscriptions_changed();
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'subscription "%" already exists', name USING ERRCODE = 'duplicate_object';
END
$fn$;
REVOKE EXECUTE ON FUNCTION evproc.subscribe_impl(oid, text, text, regprocedure, integer, integer,
    interval, interval, interval, text, timestamptz, regrole, real, integer, interval, interval)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION evproc.subscribe(text, text, regprocedure, integer, integer, interval,
    interval, interval, text, timestamptz, regrole, real, integer, interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evproc.subscribe(text, text, regprocedure, integer, integer, interval,
    interval, interval, text, timestamptz, regrole, real, integer, interval, interval) TO PUBLIC;

CREATE OR REPLACE FUNCTION evproc.resume_impl(caller oid, name text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => true);
    h record;
BEGIN
    -- A pull subscription has no handler to re-check.
    IF s.handler IS NULL THEN
        SELECT s.handler_form AS form, NULL::text AS signature INTO h;
    ELSE
        h := evproc.resolve_handler(s.handler);
    END IF;
    UPDATE evproc.subscription
       SET paused = false, paused_reason = NULL, breaker_open_until = NULL,
           handler = h.signature, handler_form = h.form
     WHERE id = s.id;
    PERFORM evproc.wake_at_commit();
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
    -- Expired leases first: their units become free (and may then be moved below).
    BEGIN
        PERFORM evproc.expire_leases();
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'evproc: expiring leases failed: %', SQLERRM
            USING DETAIL = format('SQLSTATE %s', SQLSTATE);
    END;
    BEGIN
        -- A leased unit is not moved: the ack moves it to where its read left it.
        FOR u IN SELECT p.subscription_id, p.partition, p.tick_id, s.topic_id
                   FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
                  WHERE p.window_tick IS NULL AND p.tick_id > 0 AND p.tick_id < newest
                    AND p.lease_id IS NULL
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

-------------------------------------------------------------------------------
-- Pull subscriptions and leases (DESIGN §12, docs/consumers.md): consumers outside the
-- database read a pull subscription (a subscription without a handler) in batches under
-- a lease, then acknowledge or fail what they read. Appended to the install script by
-- make, after delivery, operations and replay, before the privileges.
--
-- A lease is a row, never session state: read, ack, nack and extend may run on different
-- connections, behind transaction-mode poolers. A read claims units (subscription,
-- partition) no live lease holds, exactly as a worker claims one (row lock on the
-- progress row, SKIP LOCKED), reads their due retries and window events as a worker
-- reads a batch, records what it handed out in evproc.lease, marks the units leased
-- (progress.lease_id, leased_until) and returns; the units stay where they were. An ack
-- writes the outcome as a worker writes a batch's (delivered, or for nacked events the
-- retry line, backoff and dead letters) and moves the units to where the read left
-- them. An expired lease is written the same way with every event it handed out failed
-- ("lease expired"): an expiry is a failed attempt.
-------------------------------------------------------------------------------

-- One unit a lease holds: where its position was before the read and where the read
-- left it (the ack moves it there). history_from: the unit's start in the history. A
-- replay of the subscription (partition -1) is held like a unit: its id and its cursor
-- before and after, the span of its next read and whether it is done after the read.
CREATE TYPE evproc.lease_unit AS (
    partition     integer,
    tick_before   bigint,
    window_before bigint,
    cursor_before bigint,
    tick_after    bigint,
    window_after  bigint,
    cursor_after  bigint,
    history_from  timestamptz,
    replay_id     integer,
    replay_chunk  bigint,
    replay_done   boolean
);

-- One event a read took from its units, in the order the outcome is written. handed_out
-- false: an event of a key parked before the read, which waits behind its key (it joins
-- the retry line when the lease ends) and was not returned. failed_attempts and
-- first_failed_at: of a retry, before this delivery. from_replay: read by the replay.
CREATE TYPE evproc.lease_event AS (
    event_id        bigint,
    partition       integer,
    key             text,
    from_retry      boolean,
    failed_attempts integer,
    first_failed_at timestamptz,
    enqueued_at     timestamptz,
    handed_out      boolean,
    from_replay     boolean
);

-- A consumer's failure of one event (evproc_nack), written when the lease ends.
CREATE TYPE evproc.lease_nack AS (
    event_id    bigint,
    message     text,
    retry_after interval,
    nacked_at   timestamptz
);

CREATE TABLE evproc.lease (
    id              text PRIMARY KEY,
    subscription_id integer NOT NULL REFERENCES evproc.subscription (id) ON DELETE CASCADE,
    units           evproc.lease_unit[] NOT NULL,
    events          evproc.lease_event[] NOT NULL,
    nacks           evproc.lease_nack[] NOT NULL DEFAULT '{}',
    read_at         timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    -- Who read it (application_name and pid of the reading session), for operators.
    reader          text
);
COMMENT ON TABLE evproc.lease IS 'evproc leases of pull subscriptions; change them only through evproc_read/ack/nack/extend';
-- Reads look for their subscription's expired leases first.
CREATE INDEX lease_expiry_idx ON evproc.lease (subscription_id, expires_at);
SELECT pg_catalog.pg_extension_config_dump('evproc.lease', '');

-- The pull subscription a consumer acts on, not locked (a read may wait for events, and
-- must not keep pause, resume or unsubscribe waiting meanwhile): 22023 for a null or
-- empty name, 42704 when unknown, 42501 unless the caller is a member of its owner role
-- (superusers are), 42809 when it has a handler (the workers deliver it).
CREATE FUNCTION evproc.consumer_subscription(caller oid, name text) RETURNS evproc.subscription
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'subscription name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO s FROM evproc.subscription AS sb WHERE sb.name = consumer_subscription.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', name USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_has_role(caller, s.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for subscription "%"', name USING ERRCODE = 'insufficient_privilege',
            DETAIL = format('Only members of its owner role %s may act on it.', s.owner);
    END IF;
    IF s.handler_form <> 'pull' THEN
        RAISE EXCEPTION 'subscription "%" has a handler: only pull subscriptions are read by consumers', name
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Subscribe with handler NULL to make a pull subscription.';
    END IF;
    RETURN s;
END
$fn$;

-- The caller's live lease, locked: EV001 when it is unknown (acknowledged, taken over
-- after it expired, of another subscription, or never read) or expired. The lock orders
-- an ack against the read that would take the lease over once it expired: whichever
-- locks the row first wins, the other finds it gone.
CREATE FUNCTION evproc.lease_checked(caller oid, subscription text, lease text, action text)
    RETURNS evproc.lease LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.consumer_subscription(caller, subscription);
    l evproc.lease;
BEGIN
    IF lease IS NULL OR lease = '' THEN
        RAISE EXCEPTION 'lease must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO l FROM evproc.lease AS ls
     WHERE ls.id = lease_checked.lease AND ls.subscription_id = s.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cannot % lease "%" of subscription "%": it is unknown', action, lease, subscription
            USING ERRCODE = 'EV001',
                  DETAIL = 'It was acknowledged already, or expired and its units were read again, or was never read from this subscription.',
                  HINT = 'Treat its events as redelivered: a later read hands out again what was not acknowledged, with attempt + 1.';
    END IF;
    IF l.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'cannot % lease "%" of subscription "%": it expired at %', action, lease, subscription, l.expires_at
            USING ERRCODE = 'EV001',
                  DETAIL = 'An expired lease counts as a failed attempt of each of its events.',
                  HINT = 'Treat its events as redelivered: a later read hands them out again with attempt + 1. Read fewer events or extend the lease (evproc_extend) for slow work.';
    END IF;
    RETURN l;
END
$fn$;

-------------------------------------------------------------------------------
-- The consumer API: trampolines (src/api_trampoline.cpp) into the implementations.
-------------------------------------------------------------------------------
-- The next events of the subscription under a new lease, at most max_events, in per-key
-- commit order, due retries first; every row carries the lease's id. lease: how long it
-- lasts (default: the subscription's lease_duration). wait: when nothing is there,
-- how long to wait for events to commit (woken at commit, not by polling); the answer
-- may come back empty before that (a retry falls due or a lease expires meanwhile).
CREATE FUNCTION public.evproc_read(subscription text, max_events integer DEFAULT 100,
                                   lease interval DEFAULT NULL, wait interval DEFAULT '0')
    RETURNS TABLE (lease text, id bigint, key text, type text, payload jsonb, headers jsonb,
                   enqueued_at timestamptz, attempt integer, replay boolean)
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.read_impl(caller oid, subscription text, max_events integer,
                                 lease interval, wait interval)
    RETURNS TABLE (lease text, id bigint, key text, type text, payload jsonb, headers jsonb,
                   enqueued_at timestamptz, attempt integer, replay boolean)
    LANGUAGE c VOLATILE SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'evproc_lease_read';
COMMENT ON FUNCTION public.evproc_read(text, integer, interval, interval) IS
    'the next events of a pull subscription under a lease (one lease per call); '
    'acknowledge them with evproc_ack, fail one with evproc_nack';

-- Ends the lease: every event it handed out is delivered, except nacked ones and the
-- later events of their keys in the lease, which take the retry line in order. Returns
-- how many were delivered. In the consumer's own transaction, with its own writes, for
-- exactly-once effects in this database.
CREATE FUNCTION public.evproc_ack(subscription text, lease text) RETURNS integer
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.ack_impl(caller oid, subscription text, lease text) RETURNS integer
    LANGUAGE c VOLATILE SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'evproc_lease_ack';
COMMENT ON FUNCTION public.evproc_ack(text, text) IS
    'ends a lease: its events are delivered, except nacked ones (retry line, dead letters)';

-- Fails one event of a live lease with the consumer's error; written when the lease
-- ends (evproc_ack, or its expiry): the event's key parks with backoff (or retry_after),
-- or after max_attempts the event is a dead letter with the error as its message.
CREATE FUNCTION public.evproc_nack(subscription text, lease text, event_id bigint, error text,
                                   retry_after interval DEFAULT NULL) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.nack_impl(caller oid, subscription text, lease text, event_id bigint,
                                 error text, retry_after interval)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    l evproc.lease := evproc.lease_checked(caller, subscription, lease, 'nack');
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF retry_after < interval '0' OR retry_after > interval '1 day' THEN
        RAISE EXCEPTION 'retry_after must be between 0 and 1 day, got %', retry_after
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unnest(l.events) e
                    WHERE e.event_id = nack_impl.event_id AND e.handed_out) THEN
        RAISE EXCEPTION 'event % is not in lease "%"', event_id, lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A second nack of the same event replaces the first.
    UPDATE evproc.lease
       SET nacks = ARRAY(SELECT n FROM unnest(nacks) n WHERE n.event_id <> nack_impl.event_id)
                   || ROW(event_id, coalesce(error, 'nacked by consumer'), retry_after,
                          clock_timestamp())::evproc.lease_nack
     WHERE id = l.id;
END
$fn$;
COMMENT ON FUNCTION public.evproc_nack(text, text, bigint, text, interval) IS
    'fails one event of a lease with the consumer''s error (retry with backoff or retry_after, '
    'dead letter after max_attempts), written when the lease ends';

-- Pushes a live lease's expiry to now + lease; returns the new expiry.
CREATE FUNCTION public.evproc_extend(subscription text, lease text, lease_for interval)
    RETURNS timestamptz LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.extend_impl(caller oid, subscription text, lease text, lease_for interval)
    RETURNS timestamptz LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    l evproc.lease := evproc.lease_checked(caller, subscription, lease, 'extend');
    until timestamptz;
BEGIN
    IF lease_for IS NULL OR lease_for <= interval '0' OR lease_for > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be between 0 and 1 day, got %', coalesce(lease_for::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    until := clock_timestamp() + lease_for;
    UPDATE evproc.lease SET expires_at = until WHERE id = l.id;
    UPDATE evproc.progress SET leased_until = until
     WHERE subscription_id = l.subscription_id AND lease_id = l.id;
    RETURN until;
END
$fn$;
COMMENT ON FUNCTION public.evproc_extend(text, text, interval) IS
    'pushes a live lease''s expiry out (slow work); returns the new expiry';

-- Expired leases of every pull subscription are written off by the launcher's
-- maintenance too (reads do it for their own subscription first), so that event status,
-- lag and dead letters do not wait for the next read. Returns how many.
CREATE FUNCTION evproc.expire_leases() RETURNS integer
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'evproc_expire_leases';

-- Live leases of the caller's subscriptions (superusers: all), for operators.
CREATE VIEW public.evproc_leases WITH (security_barrier) AS
SELECT s.name AS subscription, l.id AS lease,
       ARRAY(SELECT u.partition FROM unnest(l.units) u WHERE u.partition >= 0
              ORDER BY u.partition) AS partitions,
       (SELECT u.replay_id FROM unnest(l.units) u WHERE u.partition < 0) AS replay,
       (SELECT count(*) FROM unnest(l.events) e WHERE e.handed_out) AS events,
       pg_catalog.cardinality(l.nacks) AS nacked,
       l.read_at, l.expires_at, l.expires_at <= pg_catalog.clock_timestamp() AS expired, l.reader
  FROM evproc.lease l JOIN evproc.subscription s ON s.id = l.subscription_id
 WHERE pg_catalog.pg_has_role(s.owner::oid, 'MEMBER');

REVOKE EXECUTE ON FUNCTION evproc.consumer_subscription(oid, text),
                           evproc.lease_checked(oid, text, text, text),
                           evproc.read_impl(oid, text, integer, interval, interval),
                           evproc.ack_impl(oid, text, text),
                           evproc.nack_impl(oid, text, text, bigint, text, interval),
                           evproc.extend_impl(oid, text, text, interval),
                           evproc.expire_leases()
    FROM PUBLIC;
GRANT SELECT ON public.evproc_leases TO PUBLIC;

-- Window reads cost in proportion to the batch (issue 17): evproc.window_events is planned
-- as the workers plan the window's parts and can stop after `most` events; maintenance
-- asks it for one event only.
DROP FUNCTION evproc.window_events(integer, integer, bigint, bigint);
-- The events of one (topic, partition) in the window (from_tick, to_tick], in id order:
-- those the workers' window read (its two parts) finds; with `most`, only the first that
-- many. Planned as the workers plan the parts (sorts and JIT off: see ReadWindow in
-- src/delivery_read.cpp), so that each transaction is read in index order.
CREATE FUNCTION evproc.window_events(topic_id integer, partition integer,
                                     from_tick bigint, to_tick bigint, most bigint DEFAULT NULL)
    RETURNS SETOF evproc.log
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET enable_sort = off SET jit = off
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
        'SELECT l.* FROM (SELECT p.id FROM (%s) p UNION ALL SELECT r.id FROM (%s) r '
        'ORDER BY 1 LIMIT $8) w JOIN evproc.log l ON l.id = w.id AND l.topic_id = $1 '
        'AND l.partition = $2 ORDER BY l.id',
        evproc.statement_sql('window_pending'), evproc.statement_sql('window_range'))
        USING topic_id, partition, ARRAY(SELECT pg_snapshot_xip(a)), pg_snapshot_xmax(a),
              b, pg_snapshot_xmax(b), 0::bigint, most, '-infinity'::timestamptz, ''::text,
              NULL::integer;
END
$fn$;
REVOKE EXECUTE ON FUNCTION evproc.window_events(integer, integer, bigint, bigint, bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION evproc.maintain() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '100ms'
AS $fn$
DECLARE
    newest bigint := (SELECT max(id) FROM evproc.tick);
    u record;
    looked boolean := false;
BEGIN
    -- Each step on its own: one that cannot get a lock leaves its work to the next run,
    -- and the others still do theirs. Rows are taken SKIP LOCKED; lock_timeout only
    -- bounds a wait for a table lock (none that an application takes), and is short: the
    -- units this run moved on stay locked, to workers too, until it commits.
    -- Expired leases first: their units become free (and may then be moved below).
    BEGIN
        PERFORM evproc.expire_leases();
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'evproc: expiring leases failed: %', SQLERRM
            USING DETAIL = format('SQLSTATE %s', SQLSTATE);
    END;
    BEGIN
        -- A leased unit is not moved: the ack moves it to where its read left it. A unit
        -- looked at here stays locked until this run commits, and a worker that finds it
        -- locked skips it and may go to sleep: so at most 64 units a run, least advanced
        -- first, and the workers look again when this commits (docs/design.md, "Idle units
        -- cost nothing"). Before, every idle unit was locked at once, and events committed
        -- meanwhile waited for the next commit on their partition.
        FOR u IN SELECT p.subscription_id, p.partition, p.tick_id, s.topic_id
                   FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
                  WHERE p.window_tick IS NULL AND p.tick_id > 0 AND p.tick_id < newest
                    AND p.lease_id IS NULL
                  ORDER BY p.tick_id LIMIT 64
                    FOR UPDATE OF p SKIP LOCKED LOOP
            looked := true;
            -- One event is enough to know: its first (reading the whole backlog would hold
            -- the unit's lock for as long).
            IF NOT EXISTS (SELECT 1 FROM evproc.window_events(u.topic_id, u.partition, u.tick_id, newest, 1)) THEN
                UPDATE evproc.progress SET tick_id = newest
                 WHERE subscription_id = u.subscription_id AND partition = u.partition;
            END IF;
        END LOOP;
        IF looked THEN
            PERFORM evproc.wake_at_commit();
        END IF;
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


-- Handlers are bound by oid (issue 12.3): a function dropped and created again under the
-- handler's name is not run. Existing subscriptions bind at their first batch. (Before
-- the sinks' column, as in a fresh install.)
ALTER TABLE evproc.subscription ADD COLUMN handler_oid oid, ADD COLUMN handler_bound_in oid;

-------------------------------------------------------------------------------
-- Sinks (DESIGN §12, docs/sinks.md): a subscription whose events the sink workers
-- ("evproc sink N" background processes, src/sink_worker.cpp) deliver outside the
-- database — an HTTP endpoint (webhook), a broker — instead of a SQL handler. Appended
-- to the install script by make before the privileges.
--
-- Security: a sink makes the server open connections, so only roles a superuser allowed
-- (evproc_allow_sinks) may create or change one, and every destination must be allowed
-- by the superuser setting evproc.sink_allowed_destinations (checked when subscribing
-- and again on the address each connection actually goes to). A sink's secrets (signing
-- secrets, credential headers, passwords) are shown only to members of the
-- subscription's owner role: other roles (pg_monitor) see them masked.
-------------------------------------------------------------------------------

-- The sink's options ({"type": "webhook", ...}); NULL for handler and pull subscriptions.
ALTER TABLE evproc.subscription ADD COLUMN sink jsonb
    CONSTRAINT subscription_sink_check CHECK (sink IS NULL OR pg_catalog.jsonb_typeof(sink) = 'object');

-- Roles a superuser allowed to create sinks (their members may too).
CREATE TABLE evproc.sink_creator (
    role       regrole PRIMARY KEY,
    allowed_by regrole NOT NULL,
    allowed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE evproc.sink_creator IS 'roles allowed to create evproc sinks; change only through evproc_allow_sinks/evproc_disallow_sinks';
SELECT pg_catalog.pg_extension_config_dump('evproc.sink_creator', '');

-- Per sink subscription, what its requests did (written with each batch's outcome).
CREATE TABLE evproc.sink_stats (
    subscription_id  integer PRIMARY KEY REFERENCES evproc.subscription (id) ON DELETE CASCADE,
    requests         bigint NOT NULL DEFAULT 0,
    answers_2xx      bigint NOT NULL DEFAULT 0,
    answers_3xx      bigint NOT NULL DEFAULT 0,
    answers_4xx      bigint NOT NULL DEFAULT 0,
    answers_5xx      bigint NOT NULL DEFAULT 0,
    transport_errors bigint NOT NULL DEFAULT 0,
    bytes_sent       bigint NOT NULL DEFAULT 0,
    bytes_received   bigint NOT NULL DEFAULT 0,
    -- Request latency histogram (core/latency.hpp's buckets).
    latency_buckets  bigint[] NOT NULL DEFAULT '{}',
    last_error       text,
    last_error_at    timestamptz,
    updated_at       timestamptz
) WITH (fillfactor = 50);
SELECT pg_catalog.pg_extension_config_dump('evproc.sink_stats', '');

-- The sink checked for its type's options (22023 naming the option) and the allow-list;
-- superuser: whether superuser-only options are allowed. Returns it unchanged.
CREATE FUNCTION evproc.validate_sink(sink jsonb, superuser boolean) RETURNS jsonb
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'evproc_validate_sink';
-- The sink as roles other than its owner see it: secrets replaced by '********'.
CREATE FUNCTION evproc.mask_sink(sink jsonb) RETURNS jsonb
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'evproc_mask_sink';
-- The latency (ms) at fraction of a sink_stats histogram; NULL when empty.
CREATE FUNCTION evproc.sink_latency_ms(buckets bigint[], fraction float8) RETURNS float8
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'evproc_sink_latency_ms';

-- Whether role may create or change sinks: a superuser, or a member of a role a
-- superuser allowed.
CREATE FUNCTION evproc.may_create_sinks(who oid) RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = may_create_sinks.who), false)
        OR EXISTS (SELECT 1 FROM evproc.sink_creator c
                    WHERE pg_has_role(may_create_sinks.who, c.role, 'MEMBER'))
$fn$;

-- The checks of a sink a caller creates or changes: 42501 unless the caller may create
-- sinks, 22023 for a bad option or a destination not allowed.
CREATE FUNCTION evproc.checked_sink(caller oid, sink jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT evproc.may_create_sinks(caller) THEN
        RAISE EXCEPTION 'permission denied to create sinks'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A sink makes the server open network connections: only roles a superuser allowed may create or change one.',
                  HINT = format('A superuser allows it: SELECT evproc_allow_sinks(%L);', caller::regrole);
    END IF;
    RETURN evproc.validate_sink(sink, coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = caller), false));
END
$fn$;

-- Sink subscriptions: evproc_subscribe(name, topic, NULL, sink => '{"type": ...}', ...)
-- with every setting of a subscription (batch size, attempts, backoff, breaker,
-- on_dead_letter, start_from, run_as). This overload is chosen by the sink argument; the
-- subscription is made as a pull subscription (extension/lease.sql) whose consumer is a
-- sink worker, then given its sink. handler must be NULL; handler_timeout is not used.
CREATE FUNCTION public.evproc_subscribe(name text, topic text, handler text, sink jsonb,
                                        batch_size integer DEFAULT 100,
                                        max_attempts integer DEFAULT 10,
                                        backoff_base interval DEFAULT '1 second',
                                        backoff_cap interval DEFAULT '10 minutes',
                                        handler_timeout interval DEFAULT '30 seconds',
                                        on_dead_letter text DEFAULT 'skip',
                                        start_from timestamptz DEFAULT NULL,
                                        run_as regrole DEFAULT NULL,
                                        failure_budget real DEFAULT 0.5,
                                        breaker_min_attempts integer DEFAULT 20,
                                        breaker_cooldown interval DEFAULT '30 seconds')
    RETURNS integer LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.subscribe_impl(caller oid, name text, topic text, handler text, sink jsonb,
                                      batch_size integer, max_attempts integer,
                                      backoff_base interval, backoff_cap interval,
                                      handler_timeout interval, on_dead_letter text,
                                      start_from timestamptz, run_as regrole, failure_budget real,
                                      breaker_min_attempts integer, breaker_cooldown interval)
    RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    checked jsonb;
    new_id integer;
BEGIN
    IF handler IS NOT NULL THEN
        RAISE EXCEPTION 'a sink subscription has no handler, got %', quote_literal(handler)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass handler NULL with sink => ''{"type": ...}''.';
    END IF;
    IF sink IS NOT NULL THEN
        checked := evproc.checked_sink(caller, sink);
    END IF;
    new_id := evproc.subscribe_impl(caller, name, topic, NULL::regprocedure, batch_size, max_attempts,
                                    backoff_base, backoff_cap, handler_timeout, on_dead_letter,
                                    start_from, run_as, failure_budget, breaker_min_attempts,
                                    breaker_cooldown);
    UPDATE evproc.subscription SET sink = checked WHERE id = new_id;
    RETURN new_id;
END
$fn$;
COMMENT ON FUNCTION public.evproc_subscribe(text, text, text, jsonb, integer, integer, interval, interval,
                                            interval, text, timestamptz, regrole, real, integer, interval) IS
    'subscribes a sink (handler NULL, sink => ''{"type": "webhook", ...}''): the sink workers deliver the topic';

-- Allows a role (and its members) to create sinks; superusers only. Returns whether
-- anything changed.
CREATE FUNCTION public.evproc_allow_sinks(role regrole) RETURNS boolean
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.allow_sinks_impl(caller oid, role regrole) RETURNS boolean
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = caller), false) THEN
        RAISE EXCEPTION 'only superusers may allow roles to create sinks' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO evproc.sink_creator (role, allowed_by) VALUES (role, caller::regrole)
        ON CONFLICT DO NOTHING;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION public.evproc_allow_sinks(regrole) IS
    'allows a role and its members to create evproc sinks (superusers only)';

-- Takes it back; existing sinks keep running (pause or unsubscribe them). Superusers only.
CREATE FUNCTION public.evproc_disallow_sinks(role regrole) RETURNS boolean
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.disallow_sinks_impl(caller oid, role regrole) RETURNS boolean
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = caller), false) THEN
        RAISE EXCEPTION 'only superusers may disallow roles to create sinks' USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM evproc.sink_creator c WHERE c.role = disallow_sinks_impl.role;
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION public.evproc_disallow_sinks(regrole) IS
    'takes back evproc_allow_sinks (existing sinks keep running)';

-- Checks a sink without creating anything: the sink as its owner would see it, or the
-- error evproc_subscribe would raise (42501, 22023 naming the option).
CREATE FUNCTION public.evproc_check_sink(sink jsonb) RETURNS jsonb
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.check_sink_impl(caller oid, sink jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN evproc.checked_sink(caller, sink);
END
$fn$;
COMMENT ON FUNCTION public.evproc_check_sink(jsonb) IS
    'checks sink options as evproc_subscribe would (42501, 22023 naming the option)';

-- Replaces a sink subscription's options (all of them: pass the whole sink object); the
-- sink workers use them from their next batch. Same checks as when subscribing.
CREATE FUNCTION public.evproc_alter_sink(name text, sink jsonb) RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.alter_sink_impl(caller oid, name text, sink jsonb) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => true);
BEGIN
    IF s.sink IS NULL THEN
        RAISE EXCEPTION 'subscription "%" is not a sink', name USING ERRCODE = 'wrong_object_type',
            HINT = 'Subscribe with handler NULL and sink => ''{"type": ...}'' to make a sink subscription.';
    END IF;
    IF sink IS NULL THEN
        RAISE EXCEPTION 'sink must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    UPDATE evproc.subscription SET sink = evproc.checked_sink(caller, alter_sink_impl.sink)
     WHERE id = s.id;
    PERFORM evproc.subscriptions_changed();
END
$fn$;
COMMENT ON FUNCTION public.evproc_alter_sink(text, jsonb) IS
    'replaces a sink subscription''s options (checked as when subscribing)';

-- Sink subscriptions with their options (secrets masked unless the viewer is a member of
-- the owner role) and what their requests did. Rows: the viewer's own subscriptions, or
-- all for pg_monitor (masked).
CREATE VIEW public.evproc_sinks WITH (security_barrier) AS
SELECT s.name AS subscription, t.name AS topic, s.sink ->> 'type' AS type,
       CASE WHEN pg_catalog.pg_has_role(s.owner::oid, 'MEMBER') THEN s.sink
            ELSE evproc.mask_sink(s.sink) END AS sink,
       CASE WHEN s.paused THEN 'paused'
            WHEN s.breaker_open_until > pg_catalog.now() THEN 'cooling down'
            ELSE 'active' END AS state,
       s.paused_reason,
       CASE WHEN s.breaker_open_until > pg_catalog.now() THEN 'open' ELSE 'closed' END AS breaker,
       coalesce(st.requests, 0) AS requests,
       coalesce(st.answers_2xx, 0) AS answers_2xx,
       coalesce(st.answers_3xx, 0) AS answers_3xx,
       coalesce(st.answers_4xx, 0) AS answers_4xx,
       coalesce(st.answers_5xx, 0) AS answers_5xx,
       coalesce(st.transport_errors, 0) AS transport_errors,
       coalesce(st.bytes_sent, 0) AS bytes_sent,
       coalesce(st.bytes_received, 0) AS bytes_received,
       evproc.sink_latency_ms(st.latency_buckets, 0.5) AS latency_p50_ms,
       evproc.sink_latency_ms(st.latency_buckets, 0.99) AS latency_p99_ms,
       st.last_error, st.last_error_at
  FROM evproc.subscription s
  JOIN evproc.topic t ON t.id = s.topic_id
  LEFT JOIN evproc.sink_stats st ON st.subscription_id = s.id
 WHERE s.sink IS NOT NULL
   AND (pg_catalog.pg_has_role(s.owner::oid, 'MEMBER')
        OR pg_catalog.pg_has_role('pg_monitor', 'MEMBER'));

-- Events a sink's destination refused (a 4xx other than 408/409/425/429): dead letters at
-- once, not after max_attempts. Called by the sink worker right after the ack of their
-- lease, which parked them (they were nacked) at the head of their keys: each leaves the
-- retry line for the dead letters with the answer as context (message: the status line;
-- context: the answer's status, headers and first kilobytes as JSON; SQLSTATE EV100);
-- then, as for any dead letter, its key continues (on_dead_letter 'skip') or stays
-- parked behind it ('block').
-- Dead letters a sink made count in the shared metrics as delivery's do (dead, and so
-- out of the lag) once the calling transaction commits: src/metrics_local.cpp NoteDead.
CREATE FUNCTION evproc.note_dead(subscription_id integer, events bigint)
    RETURNS void AS 'MODULE_PATHNAME', 'evproc_note_dead' LANGUAGE C VOLATILE;

CREATE FUNCTION evproc.sink_dead_now(sub_id integer, event_ids bigint[],
                                     messages text[], contexts text[]) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription;
    r record;
    moved integer := 0;
    partitions integer[] := '{}';
BEGIN
    SELECT * INTO s FROM evproc.subscription sb WHERE sb.id = sink_dead_now.sub_id;
    FOR r IN SELECT rt.*, x.message AS refusal, x.context AS answer
               FROM evproc.retry rt
               JOIN unnest(event_ids, messages, contexts) AS x(event_id, message, context)
                 ON x.event_id = rt.event_id
              WHERE rt.subscription_id = sink_dead_now.sub_id AND rt.is_head
              ORDER BY rt.seq LOOP
        INSERT INTO evproc.dead_letter AS d (subscription_id, event_id, partition, key, type, payload,
               headers, enqueued_at, attempts, sqlstate, message, detail, hint, context,
               first_failed_at, last_failed_at, worker_pid)
        VALUES (s.id, r.event_id, r.partition, r.key, (r.event).type, (r.event).payload,
                (r.event).headers, (r.event).enqueued_at, greatest(r.attempt, 1), 'EV100', r.refusal,
                'The sink''s destination refused the event: it is not retried.',
                'Fix the event or the receiver, then re-drive it with evproc_redrive.',
                nullif(r.answer, ''), coalesce(r.first_failed_at, now()),
                coalesce(r.last_failed_at, now()), pg_backend_pid())
        ON CONFLICT (subscription_id, event_id) DO UPDATE
           SET attempts = excluded.attempts, sqlstate = excluded.sqlstate, message = excluded.message,
               detail = excluded.detail, hint = excluded.hint, context = excluded.context,
               last_failed_at = excluded.last_failed_at, worker_pid = excluded.worker_pid,
               dead_at = now();
        IF s.on_dead_letter = 'block' THEN
            UPDATE evproc.retry SET blocked = true, next_attempt_at = 'infinity'
             WHERE retry.subscription_id = s.id AND retry.event_id = r.event_id;
        ELSE
            DELETE FROM evproc.retry WHERE retry.subscription_id = s.id AND retry.event_id = r.event_id;
            UPDATE evproc.retry SET is_head = true, next_attempt_at = now()
             WHERE retry.subscription_id = s.id
               AND retry.event_id = (SELECT n.event_id FROM evproc.retry n
                                      WHERE n.subscription_id = s.id AND n.partition = r.partition
                                        AND n.key IS NOT DISTINCT FROM r.key
                                      ORDER BY n.seq LIMIT 1);
        END IF;
        partitions := partitions || r.partition;
        moved := moved + 1;
    END LOOP;
    IF moved > 0 THEN
        PERFORM evproc.note_dead(s.id, moved);
        PERFORM evproc.reset_retry_due(s.id, partitions);
    END IF;
    RETURN moved;
END
$fn$;

-- A sink subscription's events are read only by the sink workers: a consumer's
-- evproc_read of one is refused (42809) when its lease would be recorded.
CREATE FUNCTION evproc.in_sink_worker() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'evproc_in_sink_worker';
CREATE FUNCTION evproc.lease_of_sink_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription;
BEGIN
    SELECT * INTO s FROM evproc.subscription sb WHERE sb.id = NEW.subscription_id;
    IF s.sink IS NOT NULL AND NOT evproc.in_sink_worker() THEN
        RAISE EXCEPTION 'subscription "%" is a sink: the sink workers deliver it', s.name
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Consumers read pull subscriptions (handler NULL, no sink).';
    END IF;
    RETURN NEW;
END
$fn$;
CREATE TRIGGER lease_of_sink_check BEFORE INSERT ON evproc.lease
    FOR EACH ROW EXECUTE FUNCTION evproc.lease_of_sink_check();

-- This file comes after the privileges (extension/privileges.sql): it settles its own.
-- Nothing of it in schema evproc is for PUBLIC but what the evproc_sinks view calls as
-- the querying user (masking and percentiles: no table access).
REVOKE EXECUTE ON FUNCTION
    evproc.validate_sink(jsonb, boolean),
    evproc.may_create_sinks(oid),
    evproc.checked_sink(oid, jsonb),
    evproc.allow_sinks_impl(oid, regrole),
    evproc.disallow_sinks_impl(oid, regrole),
    evproc.check_sink_impl(oid, jsonb),
    evproc.alter_sink_impl(oid, text, jsonb),
    evproc.subscribe_impl(oid, text, text, text, jsonb, integer, integer, interval, interval,
                          interval, text, timestamptz, regrole, real, integer, interval),
    evproc.note_dead(integer, bigint),
    evproc.sink_dead_now(integer, bigint[], text[], text[]),
    evproc.in_sink_worker(),
    evproc.lease_of_sink_check()
    FROM PUBLIC;
GRANT SELECT ON public.evproc_sinks TO PUBLIC;

-- subscribe_impl and resume_impl bind the handler's oid (issue 12.3), as a fresh install has them.
CREATE OR REPLACE FUNCTION evproc.subscribe_impl(caller oid, name text, topic text, handler regprocedure,
                                      batch_size integer, max_attempts integer,
                                      backoff_base interval, backoff_cap interval,
                                      handler_timeout interval, on_dead_letter text,
                                      start_from timestamptz, run_as regrole, failure_budget real,
                                      breaker_min_attempts integer, breaker_cooldown interval,
                                      lease_duration interval DEFAULT '30 seconds')
    RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic;
    h record;
    owner_role regrole := coalesce(run_as, caller::regrole);
    start_tick bigint;
    start_snapshot pg_snapshot;
    new_id integer;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'subscription name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid subscription name "%"', name USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use 1 to 63 characters among letters, digits, "_", ".", ":" and "-", starting with a letter or digit.';
    END IF;
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'topic must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lease_duration IS NULL OR lease_duration <= interval '0' OR lease_duration > interval '1 day' THEN
        RAISE EXCEPTION 'lease_duration must be between 0 and 1 day, got %', coalesce(lease_duration::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- FOR UPDATE, not FOR SHARE: granting 'subscribe' below updates the row.
    SELECT * INTO t FROM evproc.topic AS tp WHERE tp.name = topic FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" does not exist', topic USING ERRCODE = 'undefined_object';
    END IF;
    -- Under the row lock: retention updates the bound with the row locked.
    IF start_from IS NOT NULL THEN
        PERFORM evproc.check_history_retained(t.id, start_from);
    END IF;
    -- Checked again here, not trusted from evproc.resolve_handler: the caller may call
    -- evproc.subscribe with any function.
    -- No handler: a pull subscription, read by consumers (extension/lease.sql).
    IF handler IS NULL THEN
        SELECT 'pull' AS form, NULL::text AS signature INTO h;
    ELSE
        h := evproc.handler_shape(handler);
    END IF;
    PERFORM evproc.check_subscription_settings(batch_size, max_attempts, backoff_base, backoff_cap,
        handler_timeout, on_dead_letter, failure_budget, breaker_min_attempts, breaker_cooldown);
    -- Handlers run as the owner, never as a superuser (a handler's code must not gain
    -- powers by being called from a superuser background worker).
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = owner_role) THEN
        RAISE EXCEPTION 'subscription owner % is a superuser; handlers never run as a superuser', owner_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Pass run_as => a non-superuser role that may execute the handler.';
    END IF;
    IF NOT pg_has_role(caller, owner_role, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to create a subscription owned by %', owner_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT has_schema_privilege(owner_role, 'evproc', 'USAGE') THEN
        RAISE EXCEPTION 'role % may not use schema evproc, where the handler''s argument type evproc.event lives', owner_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT USAGE ON SCHEMA evproc TO %s;', owner_role);
    END IF;
    IF handler IS NOT NULL AND NOT has_function_privilege(owner_role, handler, 'EXECUTE') THEN
        RAISE EXCEPTION 'role % may not execute handler %', owner_role, handler
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT evproc.may_subscribe(owner_role, t) THEN
        IF NOT pg_has_role(caller, t.owner, 'MEMBER') THEN
            RAISE EXCEPTION 'permission denied to subscribe to topic "%" as %', t.name, owner_role
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'Handlers see the topic''s payloads: the subscription''s owner needs the ''subscribe'' privilege on the topic.',
                      HINT = format('A member of the topic''s owner role grants it: SELECT evproc_grant(%L, %L, ''subscribe'');',
                                    t.name, owner_role);
        END IF;
        UPDATE evproc.topic SET subscribers = subscribers || owner_role WHERE id = t.id;
    END IF;
    -- The key-share lock keeps maintenance from deleting the start tick before our
    -- progress rows commit (maintenance skips locked ticks).
    SELECT id, snapshot INTO start_tick, start_snapshot FROM evproc.tick ORDER BY id DESC LIMIT 1 FOR KEY SHARE;
    INSERT INTO evproc.subscription (name, topic_id, handler, handler_form, owner, batch_size,
        max_attempts, backoff_base, backoff_cap, handler_timeout, on_dead_letter,
        failure_budget, breaker_min_attempts, breaker_cooldown, start_snapshot, start_from,
        lease_duration, handler_oid, handler_bound_in)
    VALUES (name, t.id, h.signature, h.form, owner_role, batch_size, max_attempts, backoff_base,
        backoff_cap, handler_timeout, on_dead_letter, failure_budget, breaker_min_attempts,
        breaker_cooldown, CASE WHEN start_from IS NULL THEN start_snapshot END,
        CASE WHEN start_from IS NOT NULL THEN start_from WHEN start_tick = 0 THEN now() END,
        lease_duration, handler, (SELECT e.oid FROM pg_extension e WHERE e.extname = 'evproc'))
    RETURNING id INTO new_id;
    -- From history: the window from tick 0 (sees nothing) holds all retained events.
    -- From now: the newest tick (tick 0 with history_from = now() before the first tick).
    INSERT INTO evproc.progress (subscription_id, partition, tick_id, history_from)
    SELECT new_id, p,
           CASE WHEN start_from IS NULL THEN start_tick ELSE 0 END,
           CASE WHEN start_from IS NOT NULL THEN start_from
                WHEN start_tick = 0 THEN now() END
      FROM generate_series(0, t.partitions - 1) AS p;
    IF NOT evproc.preloaded() THEN
        RAISE WARNING 'evproc is not in shared_preload_libraries: subscription "%" will receive events once it is', name;
    END IF;
    PERFORM evproc.subscriptions_changed();
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'subscription "%" already exists', name USING ERRCODE = 'duplicate_object';
END
$fn$;
CREATE OR REPLACE FUNCTION evproc.resume_impl(caller oid, name text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => true);
    h record;
BEGIN
    -- A pull subscription has no handler to re-check.
    IF s.handler IS NULL THEN
        SELECT s.handler_form AS form, NULL::text AS signature, NULL::oid AS fn INTO h;
    ELSE
        h := evproc.resolve_handler(s.handler);
    END IF;
    UPDATE evproc.subscription
       SET paused = false, paused_reason = NULL, breaker_open_until = NULL,
           handler = h.signature, handler_form = h.form, handler_oid = h.fn,
           handler_bound_in = (SELECT e.oid FROM pg_extension e WHERE e.extname = 'evproc')
     WHERE id = s.id;
    PERFORM evproc.wake_at_commit();
END
$fn$;

-- Ticks that scale with batches (issue 13): the topics' slots some subscription delivers,
-- kept in shared memory; pausing and resuming sync it at once.
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
    h record;
BEGIN
    -- A pull subscription has no handler to re-check.
    IF s.handler IS NULL THEN
        SELECT s.handler_form AS form, NULL::text AS signature, NULL::oid AS fn INTO h;
    ELSE
        h := evproc.resolve_handler(s.handler);
    END IF;
    UPDATE evproc.subscription
       SET paused = false, paused_reason = NULL, breaker_open_until = NULL,
           handler = h.signature, handler_form = h.form, handler_oid = h.fn,
           handler_bound_in = (SELECT e.oid FROM pg_extension e WHERE e.extname = 'evproc')
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

-------------------------------------------------------------------------------
-- Claiming a unit costs what the units with work cost, not every unit (issue 18;
-- docs/design.md "Claiming a unit").
-------------------------------------------------------------------------------
ALTER TABLE evproc.progress ADD COLUMN ready boolean NOT NULL DEFAULT true,
                            ADD COLUMN slot integer;
CREATE FUNCTION evproc.slot_of(topic_id integer, partition integer) RETURNS integer
    AS 'MODULE_PATHNAME', 'evproc_slot_of' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
REVOKE ALL ON FUNCTION evproc.slot_of(integer, integer) FROM PUBLIC;
UPDATE evproc.progress p
   SET slot = evproc.slot_of(s.topic_id, p.partition),
       ready = NOT s.paused AND s.handler IS NOT NULL
  FROM evproc.subscription s WHERE s.id = p.subscription_id;
CREATE INDEX progress_ready_idx ON evproc.progress (subscription_id, partition) WHERE ready;
CREATE INDEX progress_retry_due_idx ON evproc.progress (retry_due_at) WHERE retry_due_at IS NOT NULL;
CREATE INDEX progress_slot_idx ON evproc.progress (slot);
-- The unit's key is no longer unique (see extension/delivery.sql).
ALTER TABLE evproc.progress DROP CONSTRAINT progress_pkey;
CREATE INDEX progress_unit_idx ON evproc.progress (subscription_id, partition);
CREATE OR REPLACE FUNCTION evproc.subscribe_impl(caller oid, name text, topic text, handler regprocedure,
                                      batch_size integer, max_attempts integer,
                                      backoff_base interval, backoff_cap interval,
                                      handler_timeout interval, on_dead_letter text,
                                      start_from timestamptz, run_as regrole, failure_budget real,
                                      breaker_min_attempts integer, breaker_cooldown interval,
                                      lease_duration interval DEFAULT '30 seconds')
    RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic;
    h record;
    owner_role regrole := coalesce(run_as, caller::regrole);
    start_tick bigint;
    start_snapshot pg_snapshot;
    new_id integer;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'subscription name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid subscription name "%"', name USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use 1 to 63 characters among letters, digits, "_", ".", ":" and "-", starting with a letter or digit.';
    END IF;
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'topic must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lease_duration IS NULL OR lease_duration <= interval '0' OR lease_duration > interval '1 day' THEN
        RAISE EXCEPTION 'lease_duration must be between 0 and 1 day, got %', coalesce(lease_duration::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- FOR UPDATE, not FOR SHARE: granting 'subscribe' below updates the row.
    SELECT * INTO t FROM evproc.topic AS tp WHERE tp.name = topic FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" does not exist', topic USING ERRCODE = 'undefined_object';
    END IF;
    -- Under the row lock: retention updates the bound with the row locked.
    IF start_from IS NOT NULL THEN
        PERFORM evproc.check_history_retained(t.id, start_from);
    END IF;
    -- Checked again here, not trusted from evproc.resolve_handler: the caller may call
    -- evproc.subscribe with any function.
    -- No handler: a pull subscription, read by consumers (extension/lease.sql).
    IF handler IS NULL THEN
        SELECT 'pull' AS form, NULL::text AS signature INTO h;
    ELSE
        h := evproc.handler_shape(handler);
    END IF;
    PERFORM evproc.check_subscription_settings(batch_size, max_attempts, backoff_base, backoff_cap,
        handler_timeout, on_dead_letter, failure_budget, breaker_min_attempts, breaker_cooldown);
    -- Handlers run as the owner, never as a superuser (a handler's code must not gain
    -- powers by being called from a superuser background worker).
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = owner_role) THEN
        RAISE EXCEPTION 'subscription owner % is a superuser; handlers never run as a superuser', owner_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Pass run_as => a non-superuser role that may execute the handler.';
    END IF;
    IF NOT pg_has_role(caller, owner_role, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to create a subscription owned by %', owner_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT has_schema_privilege(owner_role, 'evproc', 'USAGE') THEN
        RAISE EXCEPTION 'role % may not use schema evproc, where the handler''s argument type evproc.event lives', owner_role
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT USAGE ON SCHEMA evproc TO %s;', owner_role);
    END IF;
    IF handler IS NOT NULL AND NOT has_function_privilege(owner_role, handler, 'EXECUTE') THEN
        RAISE EXCEPTION 'role % may not execute handler %', owner_role, handler
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT evproc.may_subscribe(owner_role, t) THEN
        IF NOT pg_has_role(caller, t.owner, 'MEMBER') THEN
            RAISE EXCEPTION 'permission denied to subscribe to topic "%" as %', t.name, owner_role
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'Handlers see the topic''s payloads: the subscription''s owner needs the ''subscribe'' privilege on the topic.',
                      HINT = format('A member of the topic''s owner role grants it: SELECT evproc_grant(%L, %L, ''subscribe'');',
                                    t.name, owner_role);
        END IF;
        UPDATE evproc.topic SET subscribers = subscribers || owner_role WHERE id = t.id;
    END IF;
    -- The key-share lock keeps maintenance from deleting the start tick before our
    -- progress rows commit (maintenance skips locked ticks).
    SELECT id, snapshot INTO start_tick, start_snapshot FROM evproc.tick ORDER BY id DESC LIMIT 1 FOR KEY SHARE;
    INSERT INTO evproc.subscription (name, topic_id, handler, handler_form, owner, batch_size,
        max_attempts, backoff_base, backoff_cap, handler_timeout, on_dead_letter,
        failure_budget, breaker_min_attempts, breaker_cooldown, start_snapshot, start_from,
        lease_duration, handler_oid, handler_bound_in)
    VALUES (name, t.id, h.signature, h.form, owner_role, batch_size, max_attempts, backoff_base,
        backoff_cap, handler_timeout, on_dead_letter, failure_budget, breaker_min_attempts,
        breaker_cooldown, CASE WHEN start_from IS NULL THEN start_snapshot END,
        CASE WHEN start_from IS NOT NULL THEN start_from WHEN start_tick = 0 THEN now() END,
        lease_duration, handler, (SELECT e.oid FROM pg_extension e WHERE e.extname = 'evproc'))
    RETURNING id INTO new_id;
    -- From history: the window from tick 0 (sees nothing) holds all retained events.
    -- From now: the newest tick (tick 0 with history_from = now() before the first tick).
    -- A push subscription's units are ready: each is looked at once.
    INSERT INTO evproc.progress (subscription_id, partition, tick_id, history_from, ready, slot)
    SELECT new_id, p,
           CASE WHEN start_from IS NULL THEN start_tick ELSE 0 END,
           CASE WHEN start_from IS NOT NULL THEN start_from
                WHEN start_tick = 0 THEN now() END,
           handler IS NOT NULL, evproc.slot_of(t.id, p)
      FROM generate_series(0, t.partitions - 1) AS p;
    IF NOT evproc.preloaded() THEN
        RAISE WARNING 'evproc is not in shared_preload_libraries: subscription "%" will receive events once it is', name;
    END IF;
    PERFORM evproc.subscriptions_changed();
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'subscription "%" already exists', name USING ERRCODE = 'duplicate_object';
END
$fn$;
CREATE OR REPLACE FUNCTION evproc.pause_impl(caller oid, name text, reason text)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => true);
BEGIN
    UPDATE evproc.subscription SET paused = true, paused_reason = coalesce(reason, 'paused by operator')
     WHERE id = s.id;
    -- Its units leave the claim's index. One held by a batch is skipped, not waited for
    -- (the batch may be updating the subscription row we hold): maintenance clears it.
    UPDATE evproc.progress p SET ready = false
     WHERE (p.subscription_id, p.partition) IN
           (SELECT q.subscription_id, q.partition FROM evproc.progress q
             WHERE q.subscription_id = s.id AND q.ready FOR UPDATE SKIP LOCKED);
    PERFORM evproc.subscriptions_changed();  -- its topic's commits stop waking the launcher
END
$fn$;
CREATE OR REPLACE FUNCTION evproc.resume_impl(caller oid, name text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => true);
    h record;
BEGIN
    -- A pull subscription has no handler to re-check.
    IF s.handler IS NULL THEN
        SELECT s.handler_form AS form, NULL::text AS signature, NULL::oid AS fn INTO h;
    ELSE
        h := evproc.resolve_handler(s.handler);
        -- Every unit is looked at once: commits while paused marked none ready. A unit
        -- held by someone is skipped, not waited for (a batch may be updating the
        -- subscription row we hold). Its holder leaves it ready if it has work: a batch
        -- compares its position with the slot's newest stamp (commits while paused
        -- were stamped too), maintenance marks ready a unit whose window is not empty.
        UPDATE evproc.progress p SET ready = true
         WHERE (p.subscription_id, p.partition) IN
               (SELECT q.subscription_id, q.partition FROM evproc.progress q
                 WHERE q.subscription_id = s.id AND NOT q.ready FOR UPDATE SKIP LOCKED);
    END IF;
    UPDATE evproc.subscription
       SET paused = false, paused_reason = NULL, breaker_open_until = NULL,
           handler = h.signature, handler_form = h.form, handler_oid = h.fn,
           handler_bound_in = (SELECT e.oid FROM pg_extension e WHERE e.extname = 'evproc')
     WHERE id = s.id;
    PERFORM evproc.subscriptions_changed();  -- its topic's commits wake the launcher again
END
$fn$;
CREATE OR REPLACE FUNCTION evproc.maintain() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '100ms'
AS $fn$
DECLARE
    newest bigint := (SELECT max(id) FROM evproc.tick);
    u record;
    empty boolean;
    looked boolean := false;
    bound bigint;
    kept bigint;
BEGIN
    -- Each step on its own: one that cannot get a lock leaves its work to the next run,
    -- and the others still do theirs. Rows are taken SKIP LOCKED; lock_timeout only
    -- bounds a wait for a table lock (none that an application takes), and is short: the
    -- units this run moved on stay locked, to workers too, until it commits.
    -- Expired leases first: their units become free (and may then be moved below).
    BEGIN
        PERFORM evproc.expire_leases();
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'evproc: expiring leases failed: %', SQLERRM
            USING DETAIL = format('SQLSTATE %s', SQLSTATE);
    END;
    BEGIN
        -- A leased unit is not moved: the ack moves it to where its read left it. A unit
        -- locked here stays locked until this run commits, and a worker or reader that
        -- finds it locked skips it and may go to sleep. So the units are looked at without
        -- a lock (at most 64 a run, least advanced first), and only a unit that is moved
        -- (its window is empty) or marked ready is locked, SKIP LOCKED and only if it is
        -- still where it was looked at; a unit with events is never held. The workers look
        -- again when this commits (docs/design.md, "Idle units cost nothing"). Before,
        -- every unit looked at stayed locked for the rest of the run, and events committed
        -- meanwhile waited for it (the p99 of every delivery path, at each run).
        FOR u IN SELECT p.subscription_id, p.partition, p.tick_id, s.topic_id, p.ready,
                        NOT s.paused AND s.handler IS NOT NULL AS active
                   FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
                  WHERE p.window_tick IS NULL AND p.tick_id > 0 AND p.tick_id < newest
                    AND p.lease_id IS NULL
                  ORDER BY p.tick_id LIMIT 64 LOOP
            -- One event is enough to know: its first. Everything visible in the newest
            -- tick is visible to this run, so an empty answer stays true for as long as
            -- the unit stays at u.tick_id, which the locking look below checks again.
            -- First the cheap look: no event of the unit's partition with an xid at or
            -- above the xmin of its tick's snapshot, so none in any window from there
            -- (one descent of the window index, with a kept plan). Most idle units
            -- (topics without events) are settled by it; the window read, planned at
            -- each call (about 1 ms), is for the others.
            empty := EXISTS (SELECT 1 FROM evproc.tick t
                              WHERE t.id = u.tick_id
                                AND NOT EXISTS (SELECT 1 FROM evproc.log l
                                                 WHERE l.topic_id = u.topic_id
                                                   AND l.partition = u.partition
                                                   AND l.xid >= pg_catalog.pg_snapshot_xmin(t.snapshot)));
            IF NOT empty THEN
                empty := NOT EXISTS (SELECT 1 FROM evproc.window_events(u.topic_id, u.partition, u.tick_id, newest, 1));
            END IF;
            IF empty THEN
                UPDATE evproc.progress SET tick_id = newest
                 WHERE (subscription_id, partition) IN
                       (SELECT q.subscription_id, q.partition FROM evproc.progress q
                         WHERE q.subscription_id = u.subscription_id AND q.partition = u.partition
                           AND q.tick_id = u.tick_id AND q.window_tick IS NULL
                           AND q.lease_id IS NULL
                           FOR UPDATE SKIP LOCKED);
                looked := looked OR FOUND;
            ELSIF NOT u.ready AND u.active THEN
                -- Work the launcher's tick could not mark while someone held the unit
                -- (docs/design.md "Claiming a unit").
                UPDATE evproc.progress SET ready = true
                 WHERE (subscription_id, partition) IN
                       (SELECT q.subscription_id, q.partition FROM evproc.progress q
                         WHERE q.subscription_id = u.subscription_id AND q.partition = u.partition
                           AND NOT q.ready
                           FOR UPDATE SKIP LOCKED);
                looked := looked OR FOUND;
            END IF;
        END LOOP;
        -- Units of paused subscriptions that a batch held when they were paused leave the
        -- claim's index (the ready ones are few: this reads that index).
        UPDATE evproc.progress p SET ready = false
         WHERE (p.subscription_id, p.partition) IN
               (SELECT q.subscription_id, q.partition
                  FROM evproc.progress q JOIN evproc.subscription s ON s.id = q.subscription_id
                 WHERE q.ready AND (s.paused OR s.handler IS NULL)
                   FOR UPDATE OF q SKIP LOCKED FOR SHARE OF s SKIP LOCKED);
        IF looked THEN
            PERFORM evproc.wake_at_commit();
        END IF;
        -- Ticks below every unit's position serve only subscriptions still to come that
        -- start from history (start_from, at tick 0): one a second is kept, so that
        -- history comes in windows of about a second of transactions rather than one
        -- window of everything retained (docs/design.md "Where such windows come from").
        -- A kept tick names every slot (dirty NULL: any window may end there). Only the
        -- ticks since the newest kept one are looked at; those older than every topic's
        -- retention go.
        bound := coalesce((SELECT min(least(nullif(tick_id, 0), window_tick))
                             FROM evproc.progress), newest);
        IF bound > newest THEN
            bound := newest;
        END IF;
        kept := coalesce((SELECT max(id) FROM evproc.tick
                           WHERE id > 0 AND id < bound AND dirty IS NULL), 1);
        DELETE FROM evproc.tick
         WHERE ctid = ANY (ARRAY(
               SELECT ctid FROM evproc.tick
                WHERE id = ANY (ARRAY(
                      SELECT w.id
                        FROM (SELECT t.id, pg_catalog.date_trunc('second', t.taken_at) AS second,
                                     pg_catalog.lead(pg_catalog.date_trunc('second', t.taken_at))
                                         OVER (ORDER BY t.id) AS next_second
                                FROM evproc.tick t
                               WHERE t.id >= kept AND t.id < bound) w
                       WHERE w.next_second = w.second
                      UNION ALL
                      SELECT t.id FROM evproc.tick t
                       WHERE t.id > 0 AND t.id < bound
                         AND t.taken_at < pg_catalog.now() - (SELECT coalesce(max(tp.retention), interval '0')
                                                                FROM evproc.topic tp)))
                  FOR UPDATE SKIP LOCKED));
        UPDATE evproc.tick SET dirty = NULL
         WHERE id >= kept AND id > 0 AND id < bound AND dirty IS NOT NULL;
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
    BEGIN
        PERFORM evproc.summarize_log_ids();
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'evproc: summarizing the log''s id indexes failed: %', SQLERRM
            USING DETAIL = format('SQLSTATE %s', SQLSTATE);
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

-- evproc_event_status finds an event by id through the BRIN index on id of each log
-- partition (there is no btree on the log's ids, see evproc.log). A page range that is
-- not summarized yet is read whole at every such look-up, and only VACUUM (or
-- autosummarize, by autovacuum, up to a minute later) would summarize it: between two
-- vacuums every event enqueued since the last one is read at every look-up (51 ms at
-- 150,000 events, 135 ms at 600,000, bench/idle_subs). Maintenance summarizes the new
-- ranges of the partitions that can still grow or just stopped: the default one, those
-- not closed (an empty one costs a look at its first page) and those closed within the
-- hour. A partition VACUUM holds (it summarizes them itself) is skipped, never waited
-- for. Returns the number of ranges summarized.
CREATE FUNCTION evproc.summarize_log_ids() RETURNS bigint
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '10ms'
AS $fn$
DECLARE
    part text;
    total bigint := 0;
BEGIN
    FOR part IN SELECT 'log_default'
                UNION ALL
                SELECT p.name FROM evproc.log_partition p
                 WHERE p.closed_at IS NULL OR p.closed_at > now() - interval '1 hour' LOOP
        BEGIN
            total := total + coalesce(brin_summarize_new_values(
                         pg_catalog.to_regclass(format('evproc.%I', part || '_id_brin'))), 0);
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION evproc.summarize_log_ids() FROM PUBLIC;

-- An event of the log by id, for evproc_event_status: through the BRIN index on id of
-- each partition (there is no btree on the log's ids, see evproc.log), whose ranges
-- maintenance keeps summarized (evproc.summarize_log_ids). The planner prices a BRIN
-- scan as if any range could match and prefers a full scan of the window index, which
-- reads the index entry of every event retained (evproc_event_status took 51 ms at
-- 150,000 events and 135 ms at 600,000 in bench/idle_subs). Plain index and sequential
-- scans are off for this one statement: each partition reads the range or two of 128
-- pages that can hold the id.
CREATE FUNCTION evproc.log_event(event_id bigint) RETURNS SETOF evproc.log
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    SET enable_indexscan = off SET enable_seqscan = off
AS $fn$ SELECT * FROM evproc.log l WHERE l.id = log_event.event_id $fn$;
REVOKE ALL ON FUNCTION evproc.log_event(bigint) FROM PUBLIC;

-- evproc_event_status finds the event through evproc.log_event.
CREATE OR REPLACE FUNCTION evproc.event_status_impl(caller oid, event_id bigint)
    RETURNS TABLE (subscription text, status text, delivered_by timestamptz, attempt integer,
                   next_attempt_at timestamptz, last_error text, sqlstate text,
                   dead_at timestamptz)
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e evproc.log;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event_id must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO e FROM evproc.log_event(event_status_impl.event_id);
    IF FOUND AND NOT EXISTS (
           SELECT 1 FROM evproc.topic t
            WHERE t.id = e.topic_id
              AND (pg_has_role(caller, t.owner, 'MEMBER')
                   OR EXISTS (SELECT 1 FROM unnest(t.publishers || t.subscribers) AS g(grantee)
                               WHERE pg_has_role(caller, g.grantee, 'MEMBER'))
                   OR EXISTS (SELECT 1 FROM evproc.subscription sb
                               WHERE sb.topic_id = t.id
                                 AND pg_has_role(caller, sb.owner, 'MEMBER')))) THEN
        e := NULL;
    END IF;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'event % does not exist or is no longer retained', event_id
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN QUERY
    SELECT sb.name::text, st.status,
           CASE st.status WHEN 'delivered' THEN p.last_batch_at END,
           CASE WHEN st.status = 'dead' THEN d.attempts
                WHEN r.event_id IS NOT NULL THEN r.attempt END,
           CASE st.status WHEN 'retrying' THEN r.next_attempt_at
                          WHEN 'waiting' THEN h.next_attempt_at END,
           CASE st.status WHEN 'dead' THEN d.message WHEN 'retrying' THEN r.message END,
           CASE st.status WHEN 'dead' THEN d.sqlstate WHEN 'retrying' THEN r.sqlstate END,
           d.dead_at
      FROM evproc.subscription sb
      JOIN evproc.progress p ON p.subscription_id = sb.id AND p.partition = e.partition
      LEFT JOIN evproc.tick tt ON tt.id = p.tick_id
      LEFT JOIN evproc.tick wt ON wt.id = p.window_tick
      LEFT JOIN evproc.dead_letter d ON d.subscription_id = sb.id AND d.event_id = e.id
      LEFT JOIN evproc.retry r ON r.subscription_id = sb.id AND r.event_id = e.id
      LEFT JOIN LATERAL (SELECT hd.blocked, hd.next_attempt_at FROM evproc.retry hd
                          WHERE hd.subscription_id = sb.id AND hd.partition = e.partition
                            AND hd.key = e.key AND hd.is_head
                          LIMIT 1) h ON NOT r.is_head
     CROSS JOIN LATERAL (SELECT CASE
             WHEN d.event_id IS NOT NULL THEN 'dead'
             WHEN r.blocked OR h.blocked THEN 'blocked'
             WHEN r.is_head THEN 'retrying'
             WHEN r.event_id IS NOT NULL THEN 'waiting'
             WHEN pg_visible_in_snapshot(e.xid, sb.start_snapshot)
                  OR e.enqueued_at < sb.start_from THEN 'not subscribed'
             WHEN pg_visible_in_snapshot(e.xid, tt.snapshot)
                  OR (e.id <= p.cursor_id AND pg_visible_in_snapshot(e.xid, wt.snapshot)) THEN 'delivered'
             ELSE 'pending' END AS status) st
     WHERE sb.topic_id = e.topic_id AND pg_has_role(caller, sb.owner, 'MEMBER')
     ORDER BY sb.name;
END
$fn$;

-- The subscriptions the launcher's tick marks units of (kFlagReady in
-- src/delivery_statements.hpp): with thousands
-- of paused or pull subscriptions, reading only the active push ones keeps the tick's
-- cost to theirs (issue 18: the tick read every subscription, 0.8 ms a tick at 2,000).
CREATE INDEX subscription_active_idx ON evproc.subscription (id)
    WHERE NOT paused AND handler IS NOT NULL;

-- The sink workers read their subscriptions at each wake (a tick, a lease's end): through
-- this, not every subscription of the database.
CREATE INDEX subscription_sink_idx ON evproc.subscription (id) WHERE sink IS NOT NULL;
