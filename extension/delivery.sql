
-------------------------------------------------------------------------------
-- Delivery (docs/design.md): subscriptions, progress per unit, retries, dead letters.
-- Appended to evproc.sql by make to form the install script.
-------------------------------------------------------------------------------

-- What a handler receives, one per event: batch handlers take evproc.event[], per-event
-- handlers take evproc.event. attempt counts from 1; replay marks re-delivered history.
CREATE TYPE evproc.event AS (
    id          bigint,
    topic       text,
    key         text,
    type        text,
    payload     jsonb,
    headers     jsonb,
    enqueued_at timestamptz,
    attempt     integer,
    replay      boolean
);

-- A tick that sees nothing: units that start from retained history start here.
INSERT INTO evproc.tick (id, snapshot, taken_at) OVERRIDING SYSTEM VALUE
VALUES (0, '1:1:', '-infinity');

CREATE TABLE evproc.subscription (
    id                   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                 text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
    topic_id             integer NOT NULL REFERENCES evproc.topic (id),
    -- Schema-qualified signature, resolved at each batch: it survives pg_dump and
    -- pg_upgrade (unlike a regprocedure column) and a dropped handler is noticed.
    -- NULL for a pull subscription (handler_form 'pull'): consumers outside the database
    -- read it with leases (extension/lease.sql), the workers leave it alone.
    handler              text,
    handler_form         text NOT NULL CHECK (handler_form IN ('batch', 'event', 'pull')),
    owner                regrole NOT NULL,
    batch_size           integer NOT NULL CHECK (batch_size BETWEEN 1 AND 10000),
    max_attempts         integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 1000),
    backoff_base         interval NOT NULL CHECK (backoff_base > interval '0'),
    backoff_cap          interval NOT NULL,
    handler_timeout      interval NOT NULL CHECK (handler_timeout > interval '0'),
    on_dead_letter       text NOT NULL CHECK (on_dead_letter IN ('skip', 'block')),
    -- Circuit breaker: above this failure ratio over the last minute (and at least
    -- breaker_min_attempts attempts), the subscription pauses for breaker_cooldown.
    failure_budget       real NOT NULL CHECK (failure_budget > 0 AND failure_budget <= 1),
    breaker_min_attempts integer NOT NULL CHECK (breaker_min_attempts >= 1),
    breaker_cooldown     interval NOT NULL CHECK (breaker_cooldown > interval '0'),
    paused               boolean NOT NULL DEFAULT false,
    paused_reason        text,
    breaker_open_until   timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- Where it started, for evproc_event_status: events visible in start_snapshot (the
    -- start tick's) or enqueued before start_from (history_from) were never its own.
    start_snapshot       pg_snapshot,
    start_from           timestamptz,
    CHECK (backoff_cap >= backoff_base),
    -- How long a consumer's lease lasts unless its read asks otherwise (pull only).
    lease_duration       interval NOT NULL DEFAULT '30 seconds',
    CONSTRAINT subscription_pull_check CHECK ((handler IS NULL) = (handler_form = 'pull')),
    CONSTRAINT subscription_lease_duration_check
        CHECK (lease_duration > interval '0' AND lease_duration <= interval '1 day'),
    -- The function the owner chose: bound when subscribing and when resuming, in the
    -- extension whose oid is handler_bound_in. A batch runs the handler only while its
    -- name still resolves to handler_oid: a function dropped and created again under the
    -- name (by the owner of its schema, say) pauses the subscription until a member of
    -- its owner role resumes it. A restore (pg_dump) makes a new extension with new
    -- function oids: the first batch after it binds the name again (handler_bound_in
    -- differs), as do subscriptions made before 0.3.0 (NULL).
    handler_oid          oid,
    handler_bound_in     oid
);
COMMENT ON TABLE evproc.subscription IS 'evproc subscriptions; change them only through evproc_subscribe/pause/resume/unsubscribe';

-- One row per unit of work (subscription, partition); a worker holds a unit by locking
-- its row. The only row updated on the hot path, once per batch: fillfactor leaves room
-- for HOT updates.
CREATE TABLE evproc.progress (
    subscription_id integer NOT NULL REFERENCES evproc.subscription (id) ON DELETE CASCADE,
    partition       integer NOT NULL,
    tick_id         bigint NOT NULL,   -- everything visible in this tick is handled
    window_tick     bigint,            -- the tick of the window being drained, if any
    cursor_id       bigint,            -- last id handled inside that window
    history_from    timestamptz,       -- window from tick 0: skip events enqueued before
    retry_due_at    timestamptz,       -- earliest due parked key ('infinity': only blocked)
    batches         bigint NOT NULL DEFAULT 0,
    delivered       bigint NOT NULL DEFAULT 0,
    last_batch_at   timestamptz,
    -- A pull subscription's unit held by a consumer's lease (evproc.lease) until it is
    -- acknowledged or leased_until passes; no other read claims it meanwhile.
    lease_id        text,
    leased_until    timestamptz,
    -- Whether the unit may have work (docs/design.md "Claiming a unit"): set by the
    -- launcher's tick for the units of the slots that got commits, by subscribing and
    -- resuming, and for every unit when the launcher starts; cleared by the worker whose
    -- batch found nothing left up to the newest tick. Workers claim only ready units and
    -- units whose retries are due. Pull subscriptions' units are never ready.
    ready           boolean NOT NULL DEFAULT true,
    slot            integer            -- the unit's commit-stamp slot (evproc.slot_of)
) WITH (fillfactor = 50);
-- A unit's row by its key. Not unique (subscribing inserts each unit once): a unique
-- index makes every update that is not HOT look at each version of the key, and under a
-- transaction held open none can be pruned (docs/performance.md "Under a transaction held
-- open"); the workers' look-ups by key read it backwards, newest version first.
CREATE INDEX progress_unit_idx ON evproc.progress (subscription_id, partition);
-- The claim reads these two instead of every unit; neither holds last_batch_at, which
-- every batch changes, so a batch's update of its row stays HOT (the claim sorts the
-- few ready units it finds).
CREATE INDEX progress_ready_idx ON evproc.progress (subscription_id, partition) WHERE ready;
CREATE INDEX progress_retry_due_idx ON evproc.progress (retry_due_at) WHERE retry_due_at IS NOT NULL;
-- The launcher's tick finds the units of the slots that got commits.
CREATE INDEX progress_slot_idx ON evproc.progress (slot);
-- The subscriptions the launcher's tick marks units of (kFlagReady in
-- src/delivery_statements.hpp): with thousands
-- of paused or pull subscriptions, reading only the active push ones keeps the tick's
-- cost to theirs (issue 18: the tick read every subscription, 0.8 ms a tick at 2,000).
CREATE INDEX subscription_active_idx ON evproc.subscription (id)
    WHERE NOT paused AND handler IS NOT NULL;

-- Parked events: a failed event heads its key (is_head) and waits for its next attempt;
-- later events of that key wait behind it in seq order. Rows exist only while parked.
CREATE SEQUENCE evproc.retry_seq AS bigint;
CREATE TABLE evproc.retry (
    subscription_id integer NOT NULL REFERENCES evproc.subscription (id) ON DELETE CASCADE,
    partition       integer NOT NULL,
    key             text,
    event_id        bigint NOT NULL,
    seq             bigint NOT NULL DEFAULT nextval('evproc.retry_seq'),
    event           evproc.event NOT NULL,
    is_head         boolean NOT NULL,
    blocked         boolean NOT NULL DEFAULT false,
    attempt         integer NOT NULL DEFAULT 0,        -- failed attempts so far
    next_attempt_at timestamptz NOT NULL,
    first_failed_at timestamptz,
    last_failed_at  timestamptz,
    sqlstate        text,
    message         text,
    detail          text,
    hint            text,
    context         text,
    PRIMARY KEY (subscription_id, event_id)
);
ALTER SEQUENCE evproc.retry_seq OWNED BY evproc.retry.seq;
CREATE INDEX retry_unit_idx ON evproc.retry (subscription_id, partition, key, seq);
CREATE INDEX retry_head_idx ON evproc.retry (subscription_id, partition, next_attempt_at)
    WHERE is_head;

CREATE TABLE evproc.dead_letter (
    subscription_id integer NOT NULL REFERENCES evproc.subscription (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL,
    partition       integer NOT NULL,
    key             text,
    type            text,
    payload         jsonb NOT NULL,
    headers         jsonb,
    enqueued_at     timestamptz NOT NULL,
    attempts        integer NOT NULL,
    sqlstate        text NOT NULL,
    message         text,
    detail          text,
    hint            text,
    context         text,
    first_failed_at timestamptz NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    worker_pid      integer NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, event_id)
);
-- Purge older_than, re-drive by time range, the summary's oldest and newest.
CREATE INDEX dead_letter_age_idx ON evproc.dead_letter (subscription_id, dead_at);

SELECT pg_catalog.pg_extension_config_dump('evproc.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.progress', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.retry', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.retry_seq', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.dead_letter', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.tick', 'WHERE id > 0');
-- And the identity sequences: pg_dump sets them only when listed (a restored database
-- would hand out ids its restored rows have; the launcher's first tick would fail).
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('evproc.tick', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('evproc.subscription', 'id')::regclass, '');

-------------------------------------------------------------------------------
-- C functions of delivery
-------------------------------------------------------------------------------
-- The newest tick at which (topic, partition) may have gained events (shared memory;
-- conservative: never lower than the truth). Workers skip units at or past it. Where no
-- launcher ticks for this database, every unit may have work.
CREATE FUNCTION evproc.dirty_tick(topic_id integer, partition integer) RETURNS bigint
    AS 'MODULE_PATHNAME', 'evproc_dirty_tick' LANGUAGE C STRICT STABLE PARALLEL SAFE;
-- The shared-memory slot of (topic, partition) whose stamp says it got commits
-- (evproc.progress.slot).
CREATE FUNCTION evproc.slot_of(topic_id integer, partition integer) RETURNS integer
    AS 'MODULE_PATHNAME', 'evproc_slot_of' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

-- Wakes the launcher when the calling transaction commits (admin changes use it).
CREATE FUNCTION evproc.wake_at_commit() RETURNS void
    AS 'MODULE_PATHNAME', 'evproc_wake_at_commit' LANGUAGE C STRICT VOLATILE;
-- The same, and the maintenance worker registers the (un)subscription in the metrics at
-- once.
CREATE FUNCTION evproc.subscriptions_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'evproc_subscriptions_changed' LANGUAGE C STRICT VOLATILE;
-- The topics some subscription delivers now, with their partition counts (set by
-- evproc.sync_stats()): a commit on another topic does not wake the launcher, whose
-- next tick, or one a second, takes its partitions (src/commit_wake.cpp).
CREATE FUNCTION evproc.set_deliverable(topic_ids integer[], partitions integer[]) RETURNS void
    AS 'MODULE_PATHNAME', 'evproc_set_deliverable' LANGUAGE C VOLATILE;

-- One batch of delivery in the calling transaction (see src/manual_delivery.cpp).
CREATE FUNCTION evproc.deliver_batch(OUT worked boolean, OUT subscription text,
                                     OUT partition integer, OUT delivered bigint,
                                     OUT failed bigint, OUT dead bigint, OUT paused boolean)
    AS 'MODULE_PATHNAME', 'evproc_deliver_batch' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION evproc.deliver_batch() FROM PUBLIC;

-- Is evproc loaded through shared_preload_libraries (so that a launcher runs)?
CREATE FUNCTION evproc.preloaded() RETURNS boolean
    AS 'MODULE_PATHNAME', 'evproc_preloaded' LANGUAGE C STRICT STABLE;

-- The version of the library the server runs (loaded at its start); the extension's
-- version is pg_extension.extversion. README "Upgrading".
CREATE FUNCTION evproc.library_version() RETURNS text
    AS 'MODULE_PATHNAME', 'evproc_library_version' LANGUAGE C STRICT STABLE;

-------------------------------------------------------------------------------
-- Subscription administration
-------------------------------------------------------------------------------
-- What a handler must be: a function of one argument of type evproc.event[] (batch
-- form) or evproc.event (per-event form) returning a single value. 42P13 otherwise.
-- Returns its form and its schema-qualified signature.
CREATE FUNCTION evproc.handler_shape(fn oid, OUT form text, OUT signature text)
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    p pg_catalog.pg_proc;
BEGIN
    SELECT * INTO p FROM pg_catalog.pg_proc WHERE oid = fn;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'handler function with oid % does not exist', fn USING ERRCODE = 'undefined_function';
    END IF;
    IF p.prokind <> 'f' OR p.proretset OR p.pronargs <> 1
       OR p.proargtypes[0] NOT IN ('evproc.event'::regtype, 'evproc.event[]'::regtype) THEN
        RAISE EXCEPTION 'handler % must be a function of one argument of type evproc.event[] or evproc.event returning a single value',
                        fn::regprocedure USING ERRCODE = 'invalid_function_definition';
    END IF;
    form := CASE WHEN p.proargtypes[0] = 'evproc.event[]'::regtype THEN 'batch' ELSE 'event' END;
    signature := format('%I.%I(%s)', (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = p.pronamespace),
                        p.proname, CASE form WHEN 'batch' THEN 'evproc.event[]' ELSE 'evproc.event' END);
END
$fn$;

-- Resolves a handler name or signature to a function that takes evproc.event[] (batch
-- form) or evproc.event (per-event form). 42883 when nothing by that name exists,
-- 42P13 when it exists with the wrong shape.
-- No SET search_path: a bare handler name is looked up in the caller's search_path, and
-- stored schema-qualified. It runs as its caller and reads only pg_proc: whatever it
-- answers, evproc.subscribe_impl checks the function again.
CREATE FUNCTION evproc.resolve_handler(handler text, OUT fn oid, OUT form text, OUT signature text)
    LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
    shape record;
BEGIN
    IF handler IS NULL OR handler = '' THEN
        RAISE EXCEPTION 'handler must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.strpos(handler, '(') > 0 THEN
        fn := pg_catalog.to_regprocedure(handler);
    ELSE
        fn := coalesce(pg_catalog.to_regprocedure(handler || '(evproc.event[])'),
                       pg_catalog.to_regprocedure(handler || '(evproc.event)'));
        IF fn IS NULL AND pg_catalog.to_regproc(handler) IS NOT NULL THEN
            RAISE EXCEPTION 'handler % must take one argument of type evproc.event[] or evproc.event', handler
                USING ERRCODE = 'invalid_function_definition';
        END IF;
    END IF;
    IF fn IS NULL THEN
        RAISE EXCEPTION 'handler function % does not exist', handler USING ERRCODE = 'undefined_function',
            HINT = 'Create f(evproc.event[]) (batch form) or f(evproc.event) (per-event form) first.';
    END IF;
    shape := evproc.handler_shape(fn);
    form := shape.form;
    signature := shape.signature;
END
$fn$;

CREATE FUNCTION evproc.check_subscription_settings(
    batch_size integer, max_attempts integer, backoff_base interval, backoff_cap interval,
    handler_timeout interval, on_dead_letter text, failure_budget real,
    breaker_min_attempts integer, breaker_cooldown interval)
    RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 10000, got %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_attempts IS NULL OR max_attempts NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 1000, got %', coalesce(max_attempts::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF backoff_base IS NULL OR backoff_base <= interval '0' OR backoff_cap IS NULL OR backoff_cap < backoff_base THEN
        RAISE EXCEPTION 'backoff_base must be positive and backoff_cap at least backoff_base, got % and %',
                        coalesce(backoff_base::text, 'NULL'), coalesce(backoff_cap::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF handler_timeout IS NULL OR handler_timeout <= interval '0' OR handler_timeout > interval '1 day' THEN
        RAISE EXCEPTION 'handler_timeout must be between 0 and 1 day, got %', coalesce(handler_timeout::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF on_dead_letter IS NULL OR on_dead_letter NOT IN ('skip', 'block') THEN
        RAISE EXCEPTION 'on_dead_letter must be ''skip'' or ''block'', got %', coalesce(quote_literal(on_dead_letter), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF failure_budget IS NULL OR NOT (failure_budget > 0 AND failure_budget <= 1) THEN
        RAISE EXCEPTION 'failure_budget must be in (0, 1], got %', coalesce(failure_budget::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF breaker_min_attempts IS NULL OR breaker_min_attempts < 1 THEN
        RAISE EXCEPTION 'breaker_min_attempts must be at least 1, got %', coalesce(breaker_min_attempts::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF breaker_cooldown IS NULL OR breaker_cooldown <= interval '0' THEN
        RAISE EXCEPTION 'breaker_cooldown must be a positive interval, got %', coalesce(breaker_cooldown::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

-- start_from: NULL (default) delivers events committed from now on; a timestamp starts
-- from the retained history enqueued at or after it ('-infinity': all of it).
-- A SECURITY INVOKER wrapper without SET search_path, so that the handler name resolves
-- as the caller would; everything else is done by evproc.subscribe (a trampoline to
-- evproc.subscribe_impl), which the caller could also call directly with any function:
-- the implementation checks the handler again.
-- handler NULL makes a pull subscription: the workers leave it alone, consumers read it
-- with evproc_read and a lease of lease_duration (extension/lease.sql).
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

-- Whether `role` may own a subscription of the topic (its handler sees the payloads): a
-- member of the topic's owner or of a role granted 'subscribe'.
CREATE FUNCTION evproc.may_subscribe(role oid, t evproc.topic) RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_has_role(role, t.owner, 'MEMBER')
        OR EXISTS (SELECT 1 FROM unnest(t.subscribers) AS g(grantee)
                    WHERE pg_has_role(role, g.grantee, 'MEMBER'))
$fn$;

-- The owner (run_as, default the caller) must be a role the caller is a member of, not a
-- superuser, able to use schema evproc and execute the handler, and hold 'subscribe' on
-- the topic. A caller who may grant 'subscribe' (a member of the topic's owner)
-- subscribes on the topic's behalf: the owner is granted 'subscribe' with it, so that
-- every subscription's owner holds the privilege the workers check at each batch.
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

-- The subscription a caller acts on: 22023 for a null or empty name, 42704 when unknown,
-- 42501 unless the caller is a member of its owner role (superusers are). exclusive locks the row FOR
-- UPDATE (changes to the subscription itself: pause, resume, one replay at a time);
-- otherwise FOR KEY SHARE, which keeps it from being dropped without conflicting with the
-- updates a worker makes to the row in the middle of a batch (breaker, pause on a broken
-- handler): callers that go on to wait for a batch's locks (unsubscribe, re-drive, purge,
-- cancelling a replay) would deadlock with that worker if they held the row FOR UPDATE
-- (test/isolation/specs/redrive_vs_batch.spec).
CREATE FUNCTION evproc.subscription_checked(caller oid, name text, exclusive boolean) RETURNS evproc.subscription
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'subscription name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF exclusive THEN
        SELECT * INTO s FROM evproc.subscription AS sb WHERE sb.name = subscription_checked.name FOR UPDATE;
    ELSE
        SELECT * INTO s FROM evproc.subscription AS sb WHERE sb.name = subscription_checked.name FOR KEY SHARE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', name USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_has_role(caller, s.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for subscription "%"', name USING ERRCODE = 'insufficient_privilege',
            DETAIL = format('Only members of its owner role %s may act on it.', s.owner);
    END IF;
    RETURN s;
END
$fn$;

CREATE FUNCTION public.evproc_pause(name text, reason text DEFAULT 'paused by operator')
    RETURNS void LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.pause_impl(caller oid, name text, reason text)
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

-- Resuming also closes an open circuit breaker and re-checks the handler, so a dropped
-- handler recreated under the same name is picked up: resuming binds the subscription
-- to the function the name now resolves to (see evproc.subscription.handler_oid).
CREATE FUNCTION public.evproc_resume(name text) RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.resume_impl(caller oid, name text) RETURNS void
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

CREATE FUNCTION public.evproc_unsubscribe(name text) RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.unsubscribe_impl(caller oid, name text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => false);
BEGIN
    -- Waits for the batches in flight (live units, then replays) to commit.
    PERFORM 1 FROM evproc.progress WHERE subscription_id = s.id ORDER BY partition FOR UPDATE;
    PERFORM 1 FROM evproc.replay WHERE subscription_id = s.id ORDER BY id FOR UPDATE;
    DELETE FROM evproc.subscription WHERE id = s.id;
    PERFORM evproc.subscriptions_changed();
END
$fn$;

-- Views over subscriptions show the rows of subscriptions whose owner role the querying
-- user is a member of (superusers: all). security_barrier: a caller's own functions in
-- WHERE run only on rows that passed that filter.
CREATE VIEW public.evproc_subscriptions WITH (security_barrier) AS
SELECT s.name, t.name AS topic, s.handler, s.handler_form, s.owner, s.batch_size,
       s.max_attempts, s.backoff_base, s.backoff_cap, s.handler_timeout, s.on_dead_letter,
       CASE WHEN s.paused THEN 'paused'
            WHEN s.breaker_open_until > now() THEN 'cooling down'
            ELSE 'active' END AS state,
       CASE WHEN s.paused THEN s.paused_reason
            WHEN s.breaker_open_until > now() THEN s.paused_reason END AS reason,
       s.breaker_open_until,
       (SELECT sum(p.delivered) FROM evproc.progress p WHERE p.subscription_id = s.id)::bigint AS delivered,
       (SELECT count(*) FROM evproc.retry r WHERE r.subscription_id = s.id) AS parked,
       (SELECT count(*) FROM evproc.dead_letter d WHERE d.subscription_id = s.id) AS dead_letters,
       s.created_at
  FROM evproc.subscription s JOIN evproc.topic t ON t.id = s.topic_id
 WHERE pg_catalog.pg_has_role(s.owner::oid, 'MEMBER');

CREATE VIEW public.evproc_dead_letters WITH (security_barrier) AS
SELECT s.name AS subscription, d.event_id, d.partition, d.key, d.type, d.payload, d.headers,
       d.enqueued_at, d.attempts, d.sqlstate, d.message, d.detail, d.hint, d.context,
       d.first_failed_at, d.last_failed_at, d.worker_pid, d.dead_at
  FROM evproc.dead_letter d JOIN evproc.subscription s ON s.id = d.subscription_id
 WHERE pg_catalog.pg_has_role(s.owner::oid, 'MEMBER');

-- Maintenance, run by the maintenance worker (src/maintenance_worker.cpp): forget ticks
-- no unit needs and expired dedup ids, then look after the log's partitions
-- (extension/retention.sql). No statement of it waits for a row an application holds
-- (a dedup id being enqueued again, a topic being altered, a unit being delivered or
-- re-driven): such rows are skipped and left to the next run.
-- Idle units are first moved to the newest tick when their window holds nothing, so a
-- quiet partition does not pin old ticks forever.
-- Grants to roles that no longer exist. PostgreSQL does not track evproc's grants (a
-- regrole in an array), so DROP ROLE leaves them, and a role created later may be given
-- the same OID: maintenance removes them within seconds of the drop. Returns how many
-- topics changed.
CREATE FUNCTION evproc.forget_dropped_grantees() RETURNS integer
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

CREATE FUNCTION evproc.maintain() RETURNS void
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
