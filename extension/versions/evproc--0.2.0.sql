-- evproc 0.2.0 as released (its install script): never edited. Changes go into update
-- scripts (docs/operations.md, "Upgrading").
\echo Use "CREATE EXTENSION evproc" to load this file. \quit

-- Every object is created with an explicit schema; nothing depends on the caller's search_path.

-------------------------------------------------------------------------------
-- Topics
-------------------------------------------------------------------------------
CREATE TABLE evproc.topic (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE
                   CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
    partitions     integer NOT NULL CHECK (partitions BETWEEN 1 AND 1024),
    retention      interval NOT NULL CHECK (retention > interval '0'),
    dedup_window   interval NOT NULL CHECK (dedup_window >= interval '0'),
    max_pending    bigint CHECK (max_pending > 0),
    payload_schema jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Set when retention drops log partitions holding the topic's events: history
    -- enqueued before it may be incomplete (see extension/retention.sql).
    history_dropped_before timestamptz,
    -- Privileges (README "Security and privileges"): the owner's members may do
    -- anything with the topic; the roles listed (and their members) may publish to it
    -- or own subscriptions of it.
    owner          regrole NOT NULL,
    publishers     regrole[] NOT NULL DEFAULT '{}',
    subscribers    regrole[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE evproc.topic IS 'evproc topics; change them only through evproc_create_topic/alter/drop';

-------------------------------------------------------------------------------
-- The event log: append-only, doubles as the audit history.
-------------------------------------------------------------------------------
CREATE SEQUENCE evproc.event_id_seq AS bigint;

-- No primary key: ids come from evproc.event_id_seq and are unique by construction,
-- and a second btree would be maintained on every enqueue. Lookups by id go through a
-- BRIN index, which suits ids that grow with the physical position of rows.
-- Partitioned by xid so that retention drops whole partitions (DESIGN §6): the
-- partitions, the default partition and their upkeep are in extension/retention.sql.
CREATE TABLE evproc.log (
    id          bigint NOT NULL,
    topic_id    integer NOT NULL,
    partition   integer NOT NULL,
    key         text,
    type        text,
    payload     jsonb NOT NULL,
    headers     jsonb,
    dedup_id    text,
    enqueued_at timestamptz NOT NULL,
    xid         xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
) PARTITION BY RANGE (xid);
ALTER SEQUENCE evproc.event_id_seq OWNED BY evproc.log.id;
-- The snapshot-window index (DESIGN §3) (topic_id, partition, xid, id): a unit (topic,
-- partition) reads exactly the rows whose xid falls in a window; id orders the rows
-- inside one transaction. And a BRIN index on id. Both exist on each partition only
-- (log_pN_window_idx, log_pN_id_brin, made with it; log_default_*), not on evproc.log:
-- an index of the parent would belong to the extension, and pg_restore, attaching the
-- dumped partitions to the parent made by CREATE EXTENSION, would build a copy of it on
-- each of them, then fail to attach the dumped ones (README "Backup and restore").
COMMENT ON TABLE evproc.log IS 'evproc event log (append-only)';

-------------------------------------------------------------------------------
-- Dedup ids: one row per (topic, dedup id) while its window lasts.
-------------------------------------------------------------------------------
CREATE TABLE evproc.dedup (
    topic_id   integer NOT NULL,
    dedup_id   text NOT NULL,
    event_id   bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (topic_id, dedup_id)
);
COMMENT ON TABLE evproc.dedup IS 'evproc dedup ids, expired rows are replaced on reuse';

-- Config tables keep their rows in pg_dump.
SELECT pg_catalog.pg_extension_config_dump('evproc.topic', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.log', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.dedup', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.event_id_seq', '');
-- And its identity sequence: pg_dump sets it only when listed (a restored database
-- would hand out ids its restored rows have).
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('evproc.topic', 'id')::regclass, '');

-------------------------------------------------------------------------------
-- C functions
-------------------------------------------------------------------------------
CREATE FUNCTION evproc.validate_schema(payload_schema jsonb) RETURNS void
    LANGUAGE c STRICT IMMUTABLE AS 'MODULE_PATHNAME', 'evproc_validate_schema';
COMMENT ON FUNCTION evproc.validate_schema(jsonb) IS
    'raises 22023 naming the offending keyword when the JSON Schema subset is invalid';

-- Keeps every backend's topic cache honest, whatever statement changed the table.
CREATE FUNCTION evproc.topic_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_topic_changed';
CREATE TRIGGER topic_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON evproc.topic
    FOR EACH STATEMENT EXECUTE FUNCTION evproc.topic_changed();

CREATE FUNCTION public.evproc_enqueue(topic text, key text, payload jsonb,
                                      type text DEFAULT NULL, dedup_id text DEFAULT NULL,
                                      headers jsonb DEFAULT NULL)
    RETURNS bigint LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'evproc_enqueue';
COMMENT ON FUNCTION public.evproc_enqueue(text, text, jsonb, text, text, jsonb) IS
    'append one event to the topic''s log inside the calling transaction; returns its id '
    '(or the first event''s id when dedup_id was already seen within the window)';

CREATE FUNCTION public.evproc_enqueue_batch(topic text, events jsonb)
    RETURNS bigint[] LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'evproc_enqueue_batch';
COMMENT ON FUNCTION public.evproc_enqueue_batch(text, jsonb) IS
    'append many events given as a JSON array of {key, payload, type, dedup_id, headers}; '
    'returns their ids in input order';

-- Test hook for the C++/PostgreSQL error boundary (see src/boundary_test.cpp).
CREATE FUNCTION evproc.boundary_test(kind text) RETURNS bigint
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'evproc_boundary_test';
REVOKE ALL ON FUNCTION evproc.boundary_test(text) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Topic administration
-------------------------------------------------------------------------------
-- API functions that act on evproc's tables for their caller are C trampolines
-- (src/api_trampoline.cpp): evproc_x(args) calls evproc.x_impl(caller, args) as the
-- extension owner, with the caller taken from the session, never from an argument. Each
-- implementation checks what the caller may do.

-- 42501 unless the caller is a member of the topic's owner role (superusers are).
CREATE FUNCTION evproc.check_topic_owner(caller oid, t evproc.topic, action text) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT pg_has_role(caller, t.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to % topic "%"', action, t.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Only members of its owner role %s may %s it.', t.owner, action);
    END IF;
END
$fn$;

-- EXECUTE is revoked from PUBLIC (extension/privileges.sql): a DBA grants it to the roles
-- that may create topics. The caller owns the new topic.
CREATE FUNCTION public.evproc_create_topic(name text,
                                           partitions integer DEFAULT 16,
                                           retention interval DEFAULT '7 days',
                                           dedup_window interval DEFAULT '1 day',
                                           max_pending bigint DEFAULT NULL,
                                           payload_schema jsonb DEFAULT NULL)
    RETURNS integer LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';

CREATE FUNCTION evproc.create_topic_impl(caller oid, name text, partitions integer,
                                         retention interval, dedup_window interval,
                                         max_pending bigint, payload_schema jsonb)
    RETURNS integer LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    new_id integer;
BEGIN
    PERFORM evproc.check_topic_settings(name, partitions, retention, dedup_window,
                                        max_pending, payload_schema);
    INSERT INTO evproc.topic (name, partitions, retention, dedup_window, max_pending,
                              payload_schema, owner)
    VALUES (name, partitions, retention, dedup_window, max_pending,
            evproc.normalize_schema(payload_schema), caller::regrole)
    RETURNING id INTO new_id;
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'topic "%" already exists', name USING ERRCODE = 'duplicate_object';
END
$fn$;

-- A JSON null schema means "no schema".
CREATE FUNCTION evproc.normalize_schema(payload_schema jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT CASE WHEN jsonb_typeof(payload_schema) = 'null' THEN NULL ELSE payload_schema END $fn$;

CREATE FUNCTION evproc.check_topic_settings(name text, partitions integer,
                                            retention interval, dedup_window interval,
                                            max_pending bigint, payload_schema jsonb)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'topic name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid topic name "%"', name USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use 1 to 63 characters among letters, digits, "_", ".", ":" and "-", starting with a letter or digit.';
    END IF;
    IF partitions IS NULL OR partitions NOT BETWEEN 1 AND 1024 THEN
        RAISE EXCEPTION 'partitions must be between 1 and 1024, got %', coalesce(partitions::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retention IS NULL OR retention <= interval '0' THEN
        RAISE EXCEPTION 'retention must be a positive interval, got %', coalesce(retention::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF dedup_window IS NULL OR dedup_window < interval '0' THEN
        RAISE EXCEPTION 'dedup_window must be a non-negative interval, got %', coalesce(dedup_window::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_pending IS NOT NULL AND max_pending <= 0 THEN
        RAISE EXCEPTION 'max_pending must be positive or NULL (unlimited), got %', max_pending
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF evproc.normalize_schema(payload_schema) IS NOT NULL THEN
        PERFORM evproc.validate_schema(payload_schema);
    END IF;
END
$fn$;

CREATE FUNCTION public.evproc_alter_topic(name text,
                                          partitions integer DEFAULT NULL,
                                          retention interval DEFAULT NULL,
                                          dedup_window interval DEFAULT NULL,
                                          max_pending bigint DEFAULT NULL,
                                          payload_schema jsonb DEFAULT NULL,
                                          clear_max_pending boolean DEFAULT false,
                                          clear_schema boolean DEFAULT false)
    RETURNS void LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';

CREATE FUNCTION evproc.alter_topic_impl(caller oid, name text, partitions integer,
                                        retention interval, dedup_window interval,
                                        max_pending bigint, payload_schema jsonb,
                                        clear_max_pending boolean, clear_schema boolean)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
-- NULL means "keep the current value"; the clear_* flags turn a setting off.
DECLARE
    t evproc.topic;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'topic name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO t FROM evproc.topic AS tp WHERE tp.name = alter_topic_impl.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" does not exist', name USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM evproc.check_topic_owner(caller, t, 'alter');
    IF clear_max_pending AND max_pending IS NOT NULL THEN
        RAISE EXCEPTION 'max_pending and clear_max_pending are mutually exclusive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF clear_schema AND payload_schema IS NOT NULL THEN
        RAISE EXCEPTION 'payload_schema and clear_schema are mutually exclusive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF partitions IS NOT NULL AND partitions <> t.partitions
       AND (EXISTS (SELECT 1 FROM evproc.log e WHERE e.topic_id = t.id)
            OR EXISTS (SELECT 1 FROM evproc.subscription s WHERE s.topic_id = t.id)) THEN
        -- Re-hashing keys would put a key's new events in another partition than its
        -- older ones, and the two partitions are drained independently: order would break.
        RAISE EXCEPTION 'cannot change the partitions of topic "%" once it has events or subscriptions', name
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create a new topic with the desired partitions and move publishers to it.';
    END IF;
    t.partitions   := coalesce(partitions, t.partitions);
    t.retention    := coalesce(retention, t.retention);
    t.dedup_window := coalesce(dedup_window, t.dedup_window);
    t.max_pending  := CASE WHEN clear_max_pending THEN NULL ELSE coalesce(max_pending, t.max_pending) END;
    t.payload_schema := CASE WHEN clear_schema THEN NULL
                             ELSE coalesce(evproc.normalize_schema(payload_schema), t.payload_schema) END;
    PERFORM evproc.check_topic_settings(t.name, t.partitions, t.retention, t.dedup_window,
                                        t.max_pending, t.payload_schema);
    UPDATE evproc.topic AS tp
       SET partitions = t.partitions, retention = t.retention, dedup_window = t.dedup_window,
           max_pending = t.max_pending, payload_schema = t.payload_schema
     WHERE tp.id = t.id;
END
$fn$;

CREATE FUNCTION public.evproc_drop_topic(name text) RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';

CREATE FUNCTION evproc.drop_topic_impl(caller oid, name text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
-- Dropping a topic removes its history and dedup ids: an operator action, not hot path.
DECLARE
    t evproc.topic;
    dropped_id integer;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'topic name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO t FROM evproc.topic AS tp WHERE tp.name = drop_topic_impl.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" does not exist', name USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM evproc.check_topic_owner(caller, t, 'drop');
    dropped_id := t.id;
    IF EXISTS (SELECT 1 FROM evproc.subscription s WHERE s.topic_id = dropped_id) THEN
        RAISE EXCEPTION 'cannot drop topic "%" because subscriptions depend on it', name
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Unsubscribe them first (see evproc_subscriptions).';
    END IF;
    DELETE FROM evproc.topic AS tp WHERE tp.id = dropped_id;
    DELETE FROM evproc.log WHERE topic_id = dropped_id;
    DELETE FROM evproc.dedup WHERE topic_id = dropped_id;
END
$fn$;

-- Inspection of what a topic holds, without exposing internals. Topics' names, settings
-- and grants are not secret: every role may read them (no payloads here).
CREATE VIEW public.evproc_topics AS
SELECT t.name, t.partitions, t.retention, t.dedup_window, t.max_pending,
       t.payload_schema, t.created_at, t.owner, t.publishers, t.subscribers
  FROM evproc.topic t;

-------------------------------------------------------------------------------
-- Snapshot windows (DESIGN §3): the groundwork of delivery.
--
-- A tick is a pg_snapshot. The window between ticks A and B holds exactly the events
-- whose xid is visible in B and not in A: xid in xip(A) and visible in B, or xid in
-- [xmax(A), xmax(B)) and visible in B. Events of a transaction that commits after a
-- higher id was already delivered land in a later window: nothing is skipped, and a long
-- open transaction holds back only its own events.
-------------------------------------------------------------------------------
CREATE TABLE evproc.tick (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    snapshot pg_snapshot NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The shared-memory slots of the (topic, partition) pairs that got commits since the
    -- previous tick (NULL: any may have). A unit's window ends at the first tick after its
    -- position that names its slot, so windows stay about one tick of commits wide.
    dirty    integer[]
);
COMMENT ON TABLE evproc.tick IS 'evproc snapshot ticks; windows between consecutive ticks are delivered in order';

-- Records the current snapshot as a new tick. Must run in its own transaction (the
-- launcher does); inside a transaction that enqueued, its own events would count as
-- committed in the tick.
CREATE FUNCTION evproc.take_tick(dirty integer[] DEFAULT NULL) RETURNS bigint
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO evproc.tick (snapshot, dirty) VALUES (pg_current_snapshot(), dirty) RETURNING id
$fn$;

-- The read of one window, in two parts: 'pending' (xid in xip(A), transactions still
-- open at tick A: point look-ups) and 'range' (xid in [xmax(A), xmax(B)): one range
-- scan), both on the window index, each visible in B. Inside a window events go in id
-- order: an id is taken inside evproc_enqueue, after whatever lock the publishing
-- transaction holds on the entity it publishes about, so for one key id order is the
-- order in which publishers got through that lock, i.e. commit order (an xid is taken
-- at a transaction's first write, possibly before it waits for that lock). The worker
-- merges the two parts by id. Windows are kept about one tick wide (evproc.tick.dirty),
-- so sorting a window's rest at each batch costs little.
-- Parameters: $1 topic_id, $2 partition, $3 xip(A), $4 xmax(A), $5 B, $6 xmax(B), $7 the
-- id cursor, $8 the most rows, $9 the oldest enqueued_at wanted (a subscription that
-- starts inside the history). Bounds are bound as values: written as a
-- join against evproc.tick, the planner would scan from xid 0. Kept in one place so tests
-- EXPLAIN exactly what delivery runs.
-- The log is partitioned by xid, and a generic plan prunes partitions only by bounds on
-- xid compared with parameters: the range part by its bounds, the pending part by
-- [$3[1], $4) (xip is sorted and below xmax(A)). The pending part looks up each xid of
-- xip(A) on its own (`xid = ANY ($3)` next to those bounds would let the planner scan
-- the whole range from the oldest open transaction instead); OFFSET 0 keeps it a look-up
-- per xid, which also prunes to the xid's partition.
CREATE FUNCTION evproc.window_sql(part text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT CASE part
  WHEN 'pending' THEN 'SELECT e.* FROM pg_catalog.unnest($3) AS x(xid),
 LATERAL (SELECT * FROM evproc.log l
           WHERE l.topic_id = $1 AND l.partition = $2 AND l.xid = x.xid
             AND l.xid >= $3[1] AND l.xid < $4
             AND l.id > $7
             AND l.enqueued_at >= $9 AND pg_catalog.pg_visible_in_snapshot(l.xid, $5)
          OFFSET 0) e
 ORDER BY e.id LIMIT $8'
  WHEN 'range' THEN 'SELECT e.* FROM evproc.log e
 WHERE e.topic_id = $1 AND e.partition = $2 AND e.xid >= $4 AND e.xid < $6
   AND e.id > $7
   AND e.enqueued_at >= $9 AND pg_catalog.pg_visible_in_snapshot(e.xid, $5)
 ORDER BY e.id LIMIT $8' END $fn$;

-- The events of one (topic, partition) in the window (from_tick, to_tick], in id order.
CREATE FUNCTION evproc.window_events(topic_id integer, partition integer,
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
    RETURN QUERY EXECUTE format('SELECT w.* FROM ((%s) UNION ALL (%s)) w ORDER BY w.id',
                                evproc.window_sql('pending'), evproc.window_sql('range'))
        USING topic_id, partition, ARRAY(SELECT pg_snapshot_xip(a)), pg_snapshot_xmax(a),
              b, pg_snapshot_xmax(b), 0::bigint, NULL::bigint, '-infinity'::timestamptz;
END
$fn$;

-------------------------------------------------------------------------------
-- Delivery (DESIGN §4, §5): subscriptions, progress per unit, retries, dead letters.
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
    handler              text NOT NULL,
    handler_form         text NOT NULL CHECK (handler_form IN ('batch', 'event')),
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
    CHECK (backoff_cap >= backoff_base)
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
    PRIMARY KEY (subscription_id, partition)
) WITH (fillfactor = 50);

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

-- Wakes the launcher when the calling transaction commits (admin changes use it).
CREATE FUNCTION evproc.wake_at_commit() RETURNS void
    AS 'MODULE_PATHNAME', 'evproc_wake_at_commit' LANGUAGE C STRICT VOLATILE;
-- The same, and the launcher registers the (un)subscription in the metrics at once.
CREATE FUNCTION evproc.subscriptions_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'evproc_subscriptions_changed' LANGUAGE C STRICT VOLATILE;

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
                                        breaker_cooldown interval DEFAULT '30 seconds')
    RETURNS integer LANGUAGE plpgsql
AS $fn$
BEGIN
    IF NOT pg_catalog.has_schema_privilege('evproc', 'USAGE') THEN
        RAISE EXCEPTION 'permission denied for schema evproc, where handlers'' argument type evproc.event lives'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Subscribers (and the roles that own subscriptions) need USAGE on schema evproc.';
    END IF;
    RETURN evproc.subscribe(name, topic, (evproc.resolve_handler(handler)).fn::pg_catalog.regprocedure,
                            batch_size, max_attempts, backoff_base, backoff_cap, handler_timeout,
                            on_dead_letter, start_from, run_as, failure_budget,
                            breaker_min_attempts, breaker_cooldown);
END
$fn$;

CREATE FUNCTION evproc.subscribe(name text, topic text, handler regprocedure,
                                 batch_size integer, max_attempts integer,
                                 backoff_base interval, backoff_cap interval,
                                 handler_timeout interval, on_dead_letter text,
                                 start_from timestamptz, run_as regrole, failure_budget real,
                                 breaker_min_attempts integer, breaker_cooldown interval)
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
                                      breaker_min_attempts integer, breaker_cooldown interval)
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
    IF handler IS NULL THEN
        RAISE EXCEPTION 'handler must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
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
    h := evproc.handler_shape(handler);
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
    IF NOT has_function_privilege(owner_role, handler, 'EXECUTE') THEN
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
        failure_budget, breaker_min_attempts, breaker_cooldown, start_snapshot, start_from)
    VALUES (name, t.id, h.signature, h.form, owner_role, batch_size, max_attempts, backoff_base,
        backoff_cap, handler_timeout, on_dead_letter, failure_budget, breaker_min_attempts,
        breaker_cooldown, CASE WHEN start_from IS NULL THEN start_snapshot END,
        CASE WHEN start_from IS NOT NULL THEN start_from WHEN start_tick = 0 THEN now() END)
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
END
$fn$;

-- Resuming also closes an open circuit breaker and re-checks the handler, so a dropped
-- handler recreated under the same name is picked up.
CREATE FUNCTION public.evproc_resume(name text) RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.resume_impl(caller oid, name text) RETURNS void
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
    PERFORM evproc.wake_at_commit();
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

-- Maintenance, run by the launcher: forget ticks no unit needs and expired dedup ids,
-- then look after the log's partitions (extension/retention.sql).
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
    UPDATE evproc.topic t
       SET publishers = ARRAY(SELECT g FROM unnest(t.publishers) AS g
                               WHERE EXISTS (SELECT 1 FROM pg_authid a WHERE a.oid = g)),
           subscribers = ARRAY(SELECT g FROM unnest(t.subscribers) AS g
                                WHERE EXISTS (SELECT 1 FROM pg_authid a WHERE a.oid = g))
     WHERE EXISTS (SELECT 1 FROM unnest(t.publishers || t.subscribers) AS g
                    WHERE NOT EXISTS (SELECT 1 FROM pg_authid a WHERE a.oid = g));
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END
$fn$;

CREATE FUNCTION evproc.maintain() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    newest bigint := (SELECT max(id) FROM evproc.tick);
    u record;
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
    PERFORM evproc.expire_dedup();
    PERFORM evproc.forget_dropped_grantees();
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
-- Operations (issue 4): dead letters (listing, re-drive, purge) and event status.
-- Appended after delivery.sql by make to form the install script.
-------------------------------------------------------------------------------

-- The filters of evproc_redrive and evproc_purge. An empty id list is a filter that
-- matches nothing (never "no filter": an application that found no ids must not act on
-- every dead letter); a NULL inside it is a caller's bug.
CREATE FUNCTION evproc.check_dead_letter_filters(event_ids bigint[], key text, sqlstate text,
                                                 dead_after timestamptz, dead_before timestamptz)
    RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(event_ids) AS i WHERE i IS NULL) THEN
        RAISE EXCEPTION 'event_ids must not contain NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF key = '' THEN
        RAISE EXCEPTION 'key must not be empty (NULL: any key)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF sqlstate !~ '^[0-9A-Z]{5}$' THEN
        RAISE EXCEPTION 'sqlstate must be five digits or upper-case letters, got %', quote_literal(sqlstate)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF dead_after >= dead_before THEN
        RAISE EXCEPTION 'dead_after (%) must be before dead_before (%)', dead_after, dead_before
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

-- The dead letters of a subscription that pass every filter given (NULL: no filter on
-- it); dead_at in [dead_after, dead_before).
CREATE FUNCTION evproc.dead_letters_matching(subscription_id integer, event_ids bigint[], key text,
                                             sqlstate text, dead_after timestamptz,
                                             dead_before timestamptz)
    RETURNS SETOF evproc.dead_letter
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT d.* FROM evproc.dead_letter d
     WHERE d.subscription_id = dead_letters_matching.subscription_id
       AND (dead_letters_matching.event_ids IS NULL OR d.event_id = ANY (dead_letters_matching.event_ids))
       AND (dead_letters_matching.key IS NULL OR d.key = dead_letters_matching.key)
       AND (dead_letters_matching.sqlstate IS NULL OR d.sqlstate = dead_letters_matching.sqlstate)
       AND (dead_letters_matching.dead_after IS NULL OR d.dead_at >= dead_letters_matching.dead_after)
       AND (dead_letters_matching.dead_before IS NULL OR d.dead_at < dead_letters_matching.dead_before)
$fn$;

-- Locks, in partition order, the progress rows of the units that hold dead letters
-- passing the filters, and returns their partitions. A worker holds its unit's progress
-- row for its whole batch: this waits for batches in flight on those units, and none
-- starts on them until the caller's transaction ends. Callers then read the dead letters
-- again (a batch that committed meanwhile may have changed them) within these units.
CREATE FUNCTION evproc.lock_dead_letter_units(subscription_id integer, event_ids bigint[], key text,
                                              sqlstate text, dead_after timestamptz,
                                              dead_before timestamptz)
    RETURNS integer[] LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT ARRAY(
        SELECT p.partition FROM evproc.progress p
         WHERE p.subscription_id = lock_dead_letter_units.subscription_id
           AND p.partition IN (SELECT m.partition
                                 FROM evproc.dead_letters_matching(lock_dead_letter_units.subscription_id,
                                          lock_dead_letter_units.event_ids, lock_dead_letter_units.key,
                                          lock_dead_letter_units.sqlstate, lock_dead_letter_units.dead_after,
                                          lock_dead_letter_units.dead_before) m)
         ORDER BY p.partition
           FOR UPDATE)
$fn$;

-- Where a unit's holder finds its parked keys: the earliest due head, 'infinity' when
-- only blocked heads are left, NULL when nothing is parked (as the batch leaves it).
CREATE FUNCTION evproc.reset_retry_due(subscription_id integer, partitions integer[])
    RETURNS void LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE evproc.progress p
       SET retry_due_at = (SELECT min(r.next_attempt_at) FROM evproc.retry r
                            WHERE r.subscription_id = p.subscription_id
                              AND r.partition = p.partition AND r.is_head)
     WHERE p.subscription_id = reset_retry_due.subscription_id AND p.partition = ANY (reset_retry_due.partitions)
$fn$;

-------------------------------------------------------------------------------
-- Re-drive: dead letters go back into line.
--
-- The selected dead letters leave evproc.dead_letter and become parked events again
-- (evproc.retry) with attempt 0, due at once, so the unit's holder delivers them before
-- its new events, as it does any due retry. Per key, in event-id order:
--   * a dead letter that still heads its key (the blocked head of an on_dead_letter =
--     'block' key) resumes in its place: unblocked and due now, with the events parked
--     behind it still behind it, in their order;
--   * otherwise, if the key has parked events (a retrying or blocked head, events
--     waiting behind it), the re-driven events join the end of its line, behind them;
--   * otherwise the first re-driven event heads the key, due now, and the others wait
--     behind it.
-- Keyless events each go alone, due now. With 'skip', a key went on past its dead
-- letters: a re-driven event comes after the later events of its key that were
-- delivered meanwhile; its order is kept with everything still to come. A re-driven
-- event that fails again takes the usual path (backoff, then the dead letters after
-- max_attempts more attempts).
-------------------------------------------------------------------------------
CREATE FUNCTION public.evproc_redrive(subscription text, event_ids bigint[] DEFAULT NULL,
                                      key text DEFAULT NULL, sqlstate text DEFAULT NULL,
                                      dead_after timestamptz DEFAULT NULL,
                                      dead_before timestamptz DEFAULT NULL)
    RETURNS bigint LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.redrive_impl(caller oid, subscription text, event_ids bigint[], key text,
                                    sqlstate text, dead_after timestamptz, dead_before timestamptz)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, subscription, exclusive => false);
    topic_name text := (SELECT t.name FROM evproc.topic t WHERE t.id = s.topic_id);
    units integer[];
    touched integer[];
    redriven bigint;
BEGIN
    PERFORM evproc.check_dead_letter_filters(event_ids, redrive_impl.key, redrive_impl.sqlstate,
                                             dead_after, dead_before);
    units := evproc.lock_dead_letter_units(s.id, event_ids, redrive_impl.key,
                                           redrive_impl.sqlstate, dead_after, dead_before);
    IF cardinality(units) = 0 THEN
        RETURN 0;
    END IF;
    -- One statement: every part sees the retry lines as they were before it.
    WITH gone AS (
        DELETE FROM evproc.dead_letter d
         USING evproc.dead_letters_matching(s.id, event_ids, redrive_impl.key,
                                            redrive_impl.sqlstate, dead_after, dead_before) m
         WHERE d.subscription_id = s.id AND d.event_id = m.event_id AND d.partition = ANY (units)
        RETURNING d.event_id, d.partition, d.key,
                  ROW(d.event_id, topic_name, d.key, d.type, d.payload, d.headers, d.enqueued_at,
                      1, false)::evproc.event AS event),
    -- Still in line (the blocked head of a 'block' key): resumes in its place.
    resumed AS (
        UPDATE evproc.retry r
           SET blocked = false, attempt = 0, event = g.event,
               next_attempt_at = CASE WHEN r.is_head THEN now() ELSE 'infinity' END,
               first_failed_at = NULL, last_failed_at = NULL, sqlstate = NULL, message = NULL,
               detail = NULL, hint = NULL, context = NULL
          FROM gone g
         WHERE r.subscription_id = s.id AND r.event_id = g.event_id
        RETURNING r.event_id),
    -- The others go in event-id order per key (seq is taken in that order): the first
    -- heads its key unless the key has a line already; keyless events head themselves.
    queued AS (
        INSERT INTO evproc.retry (subscription_id, partition, key, event_id, event, is_head,
                                  attempt, next_attempt_at)
        SELECT s.id, n.partition, n.key, n.event_id, n.event, n.is_head, 0,
               CASE WHEN n.is_head THEN now() ELSE 'infinity' END
          FROM (SELECT g.event_id, g.partition, g.key, g.event,
                       g.key IS NULL
                       OR (row_number() OVER (PARTITION BY g.key ORDER BY g.event_id) = 1
                           AND NOT EXISTS (SELECT 1 FROM evproc.retry l
                                            WHERE l.subscription_id = s.id
                                              AND l.partition = g.partition AND l.key = g.key)) AS is_head
                  FROM gone g
                 WHERE NOT EXISTS (SELECT 1 FROM evproc.retry x
                                    WHERE x.subscription_id = s.id AND x.event_id = g.event_id)
                 ORDER BY g.partition, g.key, g.event_id) n
        RETURNING 1)
    SELECT count(*), ARRAY(SELECT DISTINCT g2.partition FROM gone g2)
      INTO redriven, touched FROM gone;
    IF redriven > 0 THEN
        -- Re-driven events are pending again (the metrics' lag and max_pending count them).
        PERFORM evproc.note_requeued(s.id, redriven);
        PERFORM evproc.reset_retry_due(s.id, touched);
        PERFORM evproc.wake_at_commit();
    END IF;
    RETURN redriven;
END
$fn$;
COMMENT ON FUNCTION public.evproc_redrive(text, bigint[], text, text, timestamptz, timestamptz) IS
    'put the subscription''s dead letters that pass every filter given back in line (attempt 0, '
    'in key order, blocked keys resume); returns how many';

-------------------------------------------------------------------------------
-- Purge: dead letters are forgotten. A 'block' key whose dead head is purged goes on:
-- the oldest event parked behind it heads the key, due at once. Without any filter it
-- refuses (22023): purging everything takes older_than => 'infinity'.
-------------------------------------------------------------------------------
CREATE FUNCTION public.evproc_purge(subscription text, event_ids bigint[] DEFAULT NULL,
                                    older_than timestamptz DEFAULT NULL)
    RETURNS bigint LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.purge_impl(caller oid, subscription text, event_ids bigint[],
                                  older_than timestamptz)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, subscription, exclusive => false);
    units integer[];
    unblocked integer[];
    purged bigint;
BEGIN
    IF event_ids IS NULL AND older_than IS NULL THEN
        RAISE EXCEPTION 'evproc_purge needs event_ids or older_than' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'To purge every dead letter of the subscription, pass older_than => ''infinity''.';
    END IF;
    PERFORM evproc.check_dead_letter_filters(event_ids, NULL, NULL, NULL, older_than);
    units := evproc.lock_dead_letter_units(s.id, event_ids, NULL, NULL, NULL, older_than);
    IF cardinality(units) = 0 THEN
        RETURN 0;
    END IF;
    WITH gone AS (
        DELETE FROM evproc.dead_letter d
         USING evproc.dead_letters_matching(s.id, event_ids, NULL, NULL, NULL, older_than) m
         WHERE d.subscription_id = s.id AND d.event_id = m.event_id AND d.partition = ANY (units)
        RETURNING d.event_id),
    -- A purged dead letter that blocks its key leaves the line...
    heads AS (
        DELETE FROM evproc.retry r
         USING gone g
         WHERE r.subscription_id = s.id AND r.event_id = g.event_id AND r.blocked
        RETURNING r.partition, r.key),
    -- ... and the oldest event waiting behind it heads the key, due now.
    promoted AS (
        UPDATE evproc.retry r SET is_head = true, next_attempt_at = now()
         WHERE r.subscription_id = s.id
           AND r.event_id IN (SELECT DISTINCT ON (w.partition, w.key) w.event_id
                                FROM evproc.retry w JOIN heads h ON h.partition = w.partition AND h.key = w.key
                               WHERE w.subscription_id = s.id AND NOT w.is_head
                               ORDER BY w.partition, w.key, w.seq)
        RETURNING 1)
    SELECT (SELECT count(*) FROM gone), ARRAY(SELECT DISTINCT h.partition FROM heads h)
      INTO purged, unblocked;
    IF cardinality(unblocked) > 0 THEN
        PERFORM evproc.reset_retry_due(s.id, unblocked);
        PERFORM evproc.wake_at_commit();
    END IF;
    RETURN purged;
END
$fn$;
COMMENT ON FUNCTION public.evproc_purge(text, bigint[], timestamptz) IS
    'delete the subscription''s dead letters given by id and/or dead before older_than '
    '(blocked keys resume); returns how many';

-------------------------------------------------------------------------------
-- Listing dead letters: evproc_dead_letters (the view, every subscription) and
-- evproc_dead_letters(subscription) for one; a summary per subscription.
-------------------------------------------------------------------------------
CREATE FUNCTION public.evproc_dead_letters(subscription text)
    RETURNS SETOF public.evproc_dead_letters
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'evproc_as_owner';
-- 42501 unless the caller is a member of the subscription's owner (subscription_checked).
-- Reads the table, not the view, whose filter would judge the extension owner.
CREATE FUNCTION evproc.dead_letters_impl(caller oid, subscription text)
    RETURNS SETOF public.evproc_dead_letters
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, subscription, exclusive => false);
BEGIN
    RETURN QUERY
    SELECT s.name, d.event_id, d.partition, d.key, d.type, d.payload, d.headers, d.enqueued_at,
           d.attempts, d.sqlstate, d.message, d.detail, d.hint, d.context, d.first_failed_at,
           d.last_failed_at, d.worker_pid, d.dead_at
      FROM evproc.dead_letter d WHERE d.subscription_id = s.id ORDER BY d.event_id;
END
$fn$;

CREATE VIEW public.evproc_dead_letter_summary WITH (security_barrier) AS
WITH per_state AS (
    SELECT d.subscription_id, d.sqlstate, count(*) AS n, min(d.dead_at) AS oldest,
           max(d.dead_at) AS newest
      FROM evproc.dead_letter d GROUP BY d.subscription_id, d.sqlstate),
per_subscription AS (
    SELECT ps.subscription_id, sum(ps.n)::bigint AS dead_letters, min(ps.oldest) AS oldest,
           max(ps.newest) AS newest, jsonb_object_agg(ps.sqlstate, ps.n) AS by_sqlstate
      FROM per_state ps GROUP BY ps.subscription_id)
SELECT sb.name AS subscription, t.name AS topic, sb.on_dead_letter,
       coalesce(ps.dead_letters, 0) AS dead_letters,
       (SELECT count(*) FROM evproc.retry r WHERE r.subscription_id = sb.id AND r.blocked) AS blocked_keys,
       ps.oldest AS oldest_dead_at, ps.newest AS newest_dead_at,
       coalesce(ps.by_sqlstate, '{}') AS by_sqlstate
  FROM evproc.subscription sb
  JOIN evproc.topic t ON t.id = sb.topic_id
  LEFT JOIN per_subscription ps ON ps.subscription_id = sb.id
 WHERE pg_catalog.pg_has_role(sb.owner::oid, 'MEMBER');

-------------------------------------------------------------------------------
-- Event status, per subscription of the event's topic, from the unit's position and the
-- retry and dead-letter rows: there is no per-event delivery row.
--   dead            in the subscription's dead letters (a blocked key's head included)
--   retrying        heads its parked key: attempt (failures so far), next attempt, error
--   waiting         parked behind its key's head, which is retrying (next_attempt_at:
--                   the head's)
--   blocked         parked behind a dead letter of its key (on_dead_letter = 'block')
--   not subscribed  committed before the subscription started (visible in its start
--                   tick), or, for one that started from history, enqueued before
--                   start_from
--   delivered       its unit's position is past it: its transaction is visible in the
--                   snapshot of the unit's tick, or in the window being drained up to
--                   the cursor. delivered_by is the start of the unit's latest batch,
--                   an upper bound of when the batch that delivered it started.
--   pending         none of those yet (also: its transaction has not committed)
-------------------------------------------------------------------------------
CREATE FUNCTION public.evproc_event_status(event_id bigint)
    RETURNS TABLE (subscription text, status text, delivered_by timestamptz, attempt integer,
                   next_attempt_at timestamptz, last_error text, sqlstate text,
                   dead_at timestamptz)
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'evproc_as_owner';
-- Only the caller's subscriptions (those whose owner role it is a member of) are shown.
-- An event exists for a caller who could have learnt its id: a member of its topic's
-- owner, of a role granted 'publish' or 'subscribe' on it (enqueue returns ids, handlers
-- get them), or of an owner of one of its subscriptions. To anyone else an event of
-- another topic is as unknown as an id never used: the answer does not tell them apart.
CREATE FUNCTION evproc.event_status_impl(caller oid, event_id bigint)
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
    -- Through the BRIN index on id (no btree on the log's ids, see evproc.log).
    SELECT * INTO e FROM evproc.log l WHERE l.id = event_status_impl.event_id;
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
COMMENT ON FUNCTION public.evproc_event_status(bigint) IS
    'per subscription of the event''s topic: delivered (by when), pending, retrying, waiting, '
    'blocked, dead or not subscribed';

-------------------------------------------------------------------------------
-- Replay (DESIGN §7): re-deliver retained history to one subscription, in id order
-- (per-key commit order), flagged `replay` in the handler's input and counted apart in
-- the metrics. Appended after delivery.sql by make to form the install script.
--
-- A replay is one unit of work: a worker claims its row FOR UPDATE SKIP LOCKED, like a
-- progress row, reads the next events after its cursor, hands them to the handler, and
-- moves the cursor in the same transaction. It covers the events that existed when it
-- was asked for (ids up to last_id); live delivery goes on meanwhile.
-------------------------------------------------------------------------------
CREATE TABLE evproc.replay (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id integer NOT NULL REFERENCES evproc.subscription (id) ON DELETE CASCADE,
    from_time       timestamptz NOT NULL,  -- events enqueued at or after
    to_time         timestamptz NOT NULL,  -- and before
    key             text,                  -- only this key (NULL: every key)
    last_id         bigint NOT NULL,       -- the newest event id when it was asked for
    cursor_id       bigint NOT NULL DEFAULT 0,   -- every id up to here was looked at
    -- How many ids the next read spans: it grows while reads find nothing (old, dropped
    -- or other topics' ids) and falls back once they find events.
    chunk           bigint NOT NULL DEFAULT 10000,
    state           text NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'done', 'cancelled')),
    delivered       bigint NOT NULL DEFAULT 0,
    failed          bigint NOT NULL DEFAULT 0,
    requested_by    name NOT NULL DEFAULT current_user,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_batch_at   timestamptz,
    finished_at     timestamptz,
    CHECK (from_time <= to_time)
);
CREATE INDEX replay_running_idx ON evproc.replay (subscription_id) WHERE state = 'running';
SELECT pg_catalog.pg_extension_config_dump('evproc.replay', '');
-- And its identity sequence: pg_dump sets it only when listed (a restored database
-- would hand out ids its restored rows have).
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('evproc.replay', 'id')::regclass, '');

-- Starts a replay of the subscription's topic history: events enqueued in
-- [from_time, to_time) (NULL: from the oldest retained, up to now), of one key or all.
-- Returns the replay's id. One replay runs per subscription at a time.
CREATE FUNCTION public.evproc_replay(subscription text, from_time timestamptz DEFAULT NULL,
                                     to_time timestamptz DEFAULT NULL, key text DEFAULT NULL)
    RETURNS integer LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
-- A replay re-reads the topic's history: the subscription's owner must still hold
-- 'subscribe' on the topic (42501; the workers would pause the subscription anyway).
CREATE FUNCTION evproc.replay_impl(caller oid, subscription text, from_time timestamptz,
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

-- Stops a running replay after its current batch (the row lock waits for it). Returns
-- false if it had already finished.
CREATE FUNCTION public.evproc_cancel_replay(replay_id integer) RETURNS boolean
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.cancel_replay_impl(caller oid, replay_id integer) RETURNS boolean
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r evproc.replay;
    s evproc.subscription;
BEGIN
    IF replay_id IS NULL THEN
        RAISE EXCEPTION 'replay_id must not be null' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM evproc.replay WHERE id = replay_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'replay % does not exist', replay_id USING ERRCODE = 'undefined_object';
    END IF;
    -- Key-share, not for-update: a batch of this replay may update the subscription
    -- (breaker) while we wait below for its row lock.
    s := evproc.subscription_checked(caller, (SELECT name FROM evproc.subscription WHERE id = r.subscription_id),
                                    exclusive => false);
    UPDATE evproc.replay SET state = 'cancelled', finished_at = now()
     WHERE id = replay_id AND state = 'running';
    RETURN FOUND;
END
$fn$;

CREATE VIEW public.evproc_replays WITH (security_barrier) AS
SELECT r.id, s.name AS subscription, r.from_time, r.to_time, r.key, r.state,
       r.delivered, r.failed,
       CASE WHEN r.state = 'done' OR r.last_id = 0 THEN 100
            ELSE round(100.0 * least(r.cursor_id, r.last_id) / r.last_id, 1) END AS percent_scanned,
       r.cursor_id, r.last_id, r.requested_by, r.created_at, r.last_batch_at, r.finished_at
  FROM evproc.replay r JOIN evproc.subscription s ON s.id = r.subscription_id
 WHERE pg_catalog.pg_has_role(s.owner::oid, 'MEMBER');
COMMENT ON VIEW public.evproc_replays IS 'replays: progress (ids scanned of the history they cover), counts, state';

-------------------------------------------------------------------------------
-- Storage and retention (DESIGN §6). Appended after delivery.sql by make.
--
-- evproc.log is partitioned by RANGE (xid), one partition per span of xids, each recorded
-- in evproc.log_partition. evproc.maintain() (the launcher, every
-- evproc.maintenance_interval) calls evproc.maintain_log(), which
--  * notes when a partition opens (the xid counter reached it: its xid rate sizes the
--    next ones) and when it closes (every xid below its upper bound has finished: no row
--    can be added any more, and every event in it was enqueued before that moment);
--  * keeps the partition that holds the current xid and the next one created ahead,
--    each about evproc.partition_interval wide at the observed xid rate;
--  * drops a partition once it is closed, older than the retention of every topic with
--    events in it, and below evproc.log_horizon(): every unit of every subscription has
--    passed it. Never a row DELETE, so retention leaves no dead tuples behind.
-- The DEFAULT partition catches rows that no partition covers (a burst that outran
-- maintenance, which then creates partitions above those rows), and is emptied under the
-- same rules. Asking for history older than what was dropped is an error
-- (evproc.check_history_retained), not a silent partial delivery.
--
-- Locks: creating a partition is CREATE TABLE + ATTACH PARTITION, which takes SHARE
-- UPDATE EXCLUSIVE on evproc.log (enqueues and window reads go on) and, briefly, ACCESS
-- EXCLUSIVE on the default partition. Dropping one takes ACCESS EXCLUSIVE on evproc.log
-- until maintenance commits. Both wait at most lock_timeout = 50ms (maintain_log's
-- setting), so an enqueue queues behind them at most that long; on a timeout maintenance
-- leaves the work to its next run.
-------------------------------------------------------------------------------

CREATE TABLE evproc.log_partition (
    name          text PRIMARY KEY,          -- a table in schema evproc
    xid_from      xid8 NOT NULL,
    xid_to        xid8 NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    opened_at     timestamptz,               -- first seen holding the current xid
    closed_at     timestamptz,               -- first seen with every xid below xid_to finished
    topic_ids     integer[],                 -- topics with events in it, noted when closed
    drop_attempts integer NOT NULL DEFAULT 0,  -- lock timeouts while it was due to be dropped
    CHECK (xid_from < xid_to)
);
COMMENT ON TABLE evproc.log_partition IS
    'partitions of evproc.log by xid range; created ahead and dropped by evproc.maintain()';
CREATE SEQUENCE evproc.log_partition_seq AS bigint;

-- Events whose xid no partition covers. Never dropped: emptied with TRUNCATE. Its
-- indexes are named like those of the other partitions. A member of the extension, so
-- its rows are dumped as a configuration table's.
CREATE TABLE evproc.log_default (LIKE evproc.log INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION);
CREATE INDEX log_default_window_idx ON evproc.log_default (topic_id, partition, xid, id);
CREATE INDEX log_default_id_brin ON evproc.log_default USING brin (id);
ALTER TABLE evproc.log ATTACH PARTITION evproc.log_default DEFAULT;
-- CREATE EXTENSION makes no other partition: the launcher's first maintenance does (at
-- once when it finds the extension), and until then events go to the default partition.
-- Partitions made here would clash with those of a dump restored into the new database,
-- by name (log_partition_seq starts again at 1) and by xid range (the dumped database's
-- partition ahead covers the current xids): the restore would fail. They are not
-- members of the extension, so that maintenance can drop them; pg_dump dumps them as
-- tables of their own, attached to evproc.log.

SELECT pg_catalog.pg_extension_config_dump('evproc.log_partition', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.log_partition_seq', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.log_default', '');

-- evproc.partition_interval as an interval (the GUC is defined when the module is loaded;
-- before that, its default).
CREATE FUNCTION evproc.partition_interval() RETURNS interval
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(nullif(current_setting('evproc.partition_interval', true), '')::interval,
                    interval '1 hour')
$fn$;

-- xid8 has no arithmetic; widths are far below 2^63.
CREATE FUNCTION evproc.xid_plus(x xid8, n bigint) RETURNS xid8
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT (x::text::numeric + n)::text::xid8 $fn$;

-- The lowest xid anyone may still read from the log: every event with a lower xid has
-- been handled by every unit of every subscription. A unit at tick A has handled
-- everything visible in A, and what A does not see has xid >= xmin(A); tick 0 ('1:1:',
-- a subscription starting from history) holds back everything. The current snapshot's
-- xmin bounds it too: a running transaction may still add events above it.
-- Whatever else reads old history (replay) belongs here.
-- A running replay reads history by event id, whatever the xid: it holds every partition
-- until it is done or cancelled (evproc_replays).
CREATE FUNCTION evproc.log_horizon() RETURNS xid8
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM evproc.replay r WHERE r.state = 'running') THEN '0'::xid8
           ELSE least(pg_snapshot_xmin(pg_current_snapshot()),
                      (SELECT min(coalesce(pg_snapshot_xmin(t.snapshot), '0'::xid8))
                         FROM evproc.progress p LEFT JOIN evproc.tick t ON t.id = p.tick_id)) END
$fn$;

-- The xid rate (xids a second): the highest observed over the last partition the xid
-- counter went through and over the one it is in; 0 before any was observed.
CREATE FUNCTION evproc.xid_rate(cur xid8) RETURNS numeric
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH passed AS (
        SELECT (p.xid_to::text::numeric - p.xid_from::text::numeric)
               / extract(epoch FROM n.opened_at - p.opened_at) AS rate
          FROM evproc.log_partition p
          JOIN evproc.log_partition n ON n.xid_from = p.xid_to
         WHERE n.opened_at > p.opened_at
         ORDER BY p.xid_from DESC LIMIT 1),
    current AS (
        SELECT (cur::text::numeric - p.xid_from::text::numeric)
               / extract(epoch FROM clock_timestamp() - p.opened_at) AS rate
          FROM evproc.log_partition p
         WHERE p.xid_from <= cur AND p.opened_at < clock_timestamp() - interval '1 second'
         ORDER BY p.xid_from DESC LIMIT 1)
    SELECT coalesce(max(rate), 0)
      FROM (SELECT rate FROM passed UNION ALL SELECT rate FROM current) r
$fn$;

-- Width in xids of a new partition: evproc.partition_interval at the xid rate (at least
-- 100,000 xids).
CREATE FUNCTION evproc.next_partition_width(cur xid8) RETURNS bigint
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT greatest(100000, ceil(evproc.xid_rate(cur)
                                 * extract(epoch FROM evproc.partition_interval())))::bigint
$fn$;

-- How far above the current xid a new partition must start: xids below may be in use
-- by transactions that will enqueue, and one that routes its row before the partition
-- is attached, to the default partition, fails there once the attach commits ("new row
-- violates partition constraint"): the row's xid is then in the new partition's range.
-- Ten seconds of xids at the observed rate (at least 1,000) outlast an attach, which
-- scans the default partition.
CREATE FUNCTION evproc.partition_margin(cur xid8) RETURNS bigint
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT greatest(1000, ceil(evproc.xid_rate(cur) * 10))::bigint
$fn$;

-- Creates and attaches the partition [xid_from, xid_to); returns its name. An empty
-- table with a CHECK constraint matching its bounds is attached with ATTACH PARTITION,
-- which takes SHARE UPDATE EXCLUSIVE on evproc.log (CREATE TABLE ... PARTITION OF would
-- take ACCESS EXCLUSIVE and stop every enqueue meanwhile); it also takes ACCESS
-- EXCLUSIVE on the default partition, which it scans for rows of the new range. The
-- constraint is dropped once the partition bound stands in for it.
CREATE FUNCTION evproc.create_log_partition(xid_from xid8, xid_to xid8) RETURNS text
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    part text := 'log_p' || nextval('evproc.log_partition_seq');
BEGIN
    IF xid_from IS NULL OR xid_to IS NULL OR xid_from >= xid_to THEN
        RAISE EXCEPTION 'invalid log partition bounds [%, %)', xid_from, xid_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('CREATE TABLE evproc.%I (LIKE evproc.log INCLUDING DEFAULTS INCLUDING STORAGE'
                   ' INCLUDING COMPRESSION, CONSTRAINT %I CHECK (xid >= %L::xid8 AND xid < %L::xid8))',
                   part, part || '_bounds', xid_from, xid_to);
    -- The log's indexes (evproc.log has none of its own: see extension/evproc.sql).
    EXECUTE format('CREATE INDEX %I ON evproc.%I (topic_id, partition, xid, id)',
                   part || '_window_idx', part);
    EXECUTE format('CREATE INDEX %I ON evproc.%I USING brin (id)', part || '_id_brin', part);
    EXECUTE format('ALTER TABLE evproc.log ATTACH PARTITION evproc.%I FOR VALUES FROM (%L) TO (%L)',
                   part, xid_from, xid_to);
    EXECUTE format('ALTER TABLE evproc.%I DROP CONSTRAINT %I', part, part || '_bounds');
    INSERT INTO evproc.log_partition (name, xid_from, xid_to, opened_at)
    VALUES (part, xid_from, xid_to,
            CASE WHEN xid_from <= pg_current_xact_id() THEN clock_timestamp() END);
    RAISE LOG 'evproc: created log partition evproc.% (xids [%, %))', part, xid_from, xid_to;
    RETURN part;
END
$fn$;

-- Notes partitions the xid counter reached (opened_at) and partitions whose xids have all
-- finished (closed_at, with the topics that have events in them: they cannot change any
-- more). closed_at is read after the snapshot that saw them finished, so every event in
-- the partition was enqueued before it.
CREATE FUNCTION evproc.close_log_partitions() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    p record;
    topics integer[];
    closed integer := 0;
BEGIN
    UPDATE evproc.log_partition SET opened_at = clock_timestamp()
     WHERE opened_at IS NULL AND xid_from <= pg_current_xact_id();
    FOR p IN SELECT name FROM evproc.log_partition
              WHERE closed_at IS NULL AND xid_to <= pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY xid_from LOOP
        -- One probe per topic on the partition's window index.
        EXECUTE format('SELECT ARRAY(SELECT t.id FROM evproc.topic t WHERE EXISTS'
                       ' (SELECT 1 FROM evproc.%I e WHERE e.topic_id = t.id) ORDER BY t.id)', p.name)
           INTO topics;
        UPDATE evproc.log_partition SET closed_at = clock_timestamp(), topic_ids = topics
         WHERE name = p.name;
        closed := closed + 1;
    END LOOP;
    RETURN closed;
END
$fn$;

-- Keeps a partition ahead of the current xid: one starting above it. It starts where
-- the last one ends, or, when that is less than evproc.partition_margin() above the
-- current xid (a fresh install, or a burst that outran maintenance), that far above it:
-- the xids in between may be in use by transactions about to enqueue, which must not
-- find their rows' xids in a partition attached under them. Their rows, and those of any
-- xid no partition holds, go to the default partition. Returns how many it made; a lock
-- it cannot get within lock_timeout, or a row that reached the default partition
-- meanwhile (ATTACH refuses a range the default partition holds rows of), leaves the
-- rest to the next run.
CREATE FUNCTION evproc.ensure_log_partitions() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cur xid8 := pg_current_xact_id();
    last evproc.log_partition;
    margin bigint;
    lo xid8;
    hi xid8;
    created integer := 0;
BEGIN
    FOR attempt IN 1..2 LOOP
        SELECT * INTO last FROM evproc.log_partition ORDER BY xid_to DESC LIMIT 1;
        EXIT WHEN last.name IS NOT NULL AND last.xid_from > cur;  -- one ahead exists
        margin := evproc.partition_margin(cur);
        IF last.xid_from <= cur AND cur < last.xid_to THEN
            -- The usual case, the counter in the last partition: at most half its width,
            -- so that the next one follows it without a gap while the counter is in its
            -- first half (a partition is sized for partition_interval at the rate).
            margin := least(margin, (last.xid_to::text::numeric - last.xid_from::text::numeric) / 2);
        END IF;
        -- greatest() skips the NULL of no partition yet.
        lo := greatest(last.xid_to, evproc.xid_plus(cur, margin));
        hi := evproc.xid_plus(lo, evproc.next_partition_width(cur));
        BEGIN
            PERFORM evproc.create_log_partition(lo, hi);
        EXCEPTION WHEN lock_not_available OR check_violation THEN
            RAISE LOG 'evproc: could not create the log partition [%, %) now: %; retrying at the next maintenance',
                lo, hi, SQLERRM;
            EXIT;
        END;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$fn$;

-- Partitions that may be dropped now: closed, every topic with events in them past its
-- retention since they closed, and below the log horizon.
CREATE FUNCTION evproc.due_log_partitions() RETURNS SETOF evproc.log_partition
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT p.* FROM evproc.log_partition p
     WHERE p.closed_at IS NOT NULL
       AND p.xid_to <= (SELECT evproc.log_horizon())
       AND NOT EXISTS (SELECT 1 FROM evproc.topic t
                        WHERE t.id = ANY (p.topic_ids) AND p.closed_at >= clock_timestamp() - t.retention)
$fn$;

-- Whether the rows of the default partition may all go: every one below the log horizon,
-- and every topic's newest one past its retention since it was enqueued (no close time is
-- known for rows there).
CREATE FUNCTION evproc.log_default_due() RETURNS boolean
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT (SELECT max(xid) FROM evproc.log_default) < (SELECT evproc.log_horizon())
       AND NOT EXISTS (SELECT 1 FROM (SELECT topic_id, max(enqueued_at) AS newest
                                        FROM evproc.log_default GROUP BY topic_id) d
                         JOIN evproc.topic t ON t.id = d.topic_id
                        WHERE d.newest >= clock_timestamp() - t.retention)
$fn$;

-- Drops the due partitions (and empties the default partition when due); returns how
-- many partitions went. History bounds: a topic that had events in a dropped partition
-- has incomplete history before the partition's close time.
-- evproc_subscribe reads a topic's history bound under FOR SHARE on the topic's row, so
-- the rows of the topics involved are locked first (FOR NO KEY UPDATE: it conflicts with
-- that, not with the key-share locks of foreign keys), then evproc.log, and the due
-- partitions are chosen again with everything locked: a subscription that started from
-- history meanwhile is either seen (its units hold the horizon) or waits and then sees
-- the new bound.
CREATE FUNCTION evproc.drop_log_partitions() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    due text[] := ARRAY(SELECT name FROM evproc.due_log_partitions());
    p evproc.log_partition;
    dropped integer := 0;
    attempts integer;
BEGIN
    IF cardinality(due) > 0 THEN
        BEGIN
            PERFORM 1 FROM evproc.topic
              WHERE id IN (SELECT unnest(topic_ids) FROM evproc.log_partition WHERE name = ANY (due))
              ORDER BY id FOR NO KEY UPDATE;
            LOCK TABLE evproc.log IN ACCESS EXCLUSIVE MODE;
            FOR p IN SELECT * FROM evproc.due_log_partitions() ORDER BY xid_from LOOP
                CONTINUE WHEN p.name <> ALL (due);  -- its topics are not locked
                EXECUTE format('DROP TABLE evproc.%I', p.name);
                DELETE FROM evproc.log_partition WHERE name = p.name;
                RAISE LOG 'evproc: dropped log partition evproc.% (xids [%, %), closed at %)',
                    p.name, p.xid_from, p.xid_to, p.closed_at;
                UPDATE evproc.topic
                   SET history_dropped_before = greatest(history_dropped_before, p.closed_at)
                 WHERE id = ANY (p.topic_ids);
                dropped := dropped + 1;
            END LOOP;
        EXCEPTION WHEN lock_not_available THEN
            UPDATE evproc.log_partition SET drop_attempts = drop_attempts + 1 WHERE name = ANY (due);
            SELECT max(drop_attempts) INTO attempts FROM evproc.log_partition WHERE name = ANY (due);
            IF attempts % 30 = 10 THEN
                RAISE WARNING 'evproc: % log partition(s) due for dropping could not lock evproc.log within 50ms % times in a row: transactions that enqueue or deliver hold it longer (see pg_locks)',
                    cardinality(due), attempts
                    USING HINT = 'Look for long transactions that enqueued and for slow handlers: SELECT pid, xact_start, query FROM pg_stat_activity WHERE pid IN (SELECT pid FROM pg_locks WHERE relation = ''evproc.log''::regclass);';
            ELSE
                RAISE LOG 'evproc: could not lock evproc.log to drop % partition(s) (attempt %); retrying at the next maintenance',
                    cardinality(due), attempts;
            END IF;
        END;
    END IF;
    RETURN dropped + evproc.empty_log_default();
END
$fn$;

-- Empties the default partition when all its rows are due, locking (after the topics'
-- rows, as above) only the default partition: enqueues routed elsewhere go on. Under
-- that lock no transaction is still writing to it, so the rows judged are final. Returns
-- 1 when it emptied it.
CREATE FUNCTION evproc.empty_log_default() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM evproc.log_default) OR NOT evproc.log_default_due() THEN
        RETURN 0;
    END IF;
    BEGIN
        PERFORM 1 FROM evproc.topic WHERE id IN (SELECT topic_id FROM evproc.log_default)
          ORDER BY id FOR NO KEY UPDATE;
        LOCK TABLE evproc.log_default IN ACCESS EXCLUSIVE MODE;
        IF NOT evproc.log_default_due() THEN
            RETURN 0;
        END IF;
        -- Every event of the topic enqueued up to its newest one here may be gone.
        UPDATE evproc.topic t
           SET history_dropped_before = greatest(t.history_dropped_before, d.newest + interval '1 microsecond')
          FROM (SELECT topic_id, max(enqueued_at) AS newest FROM evproc.log_default GROUP BY topic_id) d
         WHERE t.id = d.topic_id;
        TRUNCATE evproc.log_default;
        RAISE LOG 'evproc: emptied evproc.log_default';
        RETURN 1;
    EXCEPTION WHEN lock_not_available THEN
        RAISE LOG 'evproc: could not lock evproc.log_default to empty it; retrying at the next maintenance';
        RETURN 0;
    END;
END
$fn$;

-- The log's upkeep, called last by evproc.maintain(): its locks on evproc.log last until
-- maintenance commits. One run at a time: a second one meanwhile skips. Its LOG lines
-- (partitions created, dropped, lock retries) go to the server log one line each.
CREATE FUNCTION evproc.maintain_log() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '50ms'
    SET log_error_verbosity = terse
AS $fn$
BEGIN
    BEGIN
        LOCK TABLE evproc.log_partition IN SHARE ROW EXCLUSIVE MODE;
    EXCEPTION WHEN lock_not_available THEN
        RETURN;
    END;
    PERFORM evproc.close_log_partitions();
    PERFORM evproc.ensure_log_partitions();
    PERFORM evproc.drop_log_partitions();
END
$fn$;

-- Expired dedup ids, off the hot path: batches of at most 10,000 rows found through
-- dedup_expiry_idx (without it each run would read the whole table to find the few rows
-- that expired since the last one), at most 10 batches per run.
CREATE INDEX dedup_expiry_idx ON evproc.dedup (expires_at);
CREATE FUNCTION evproc.expire_dedup() RETURNS bigint
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    deleted bigint;
    total bigint := 0;
BEGIN
    FOR batch IN 1..10 LOOP
        DELETE FROM evproc.dedup
         WHERE ctid = ANY (ARRAY(SELECT ctid FROM evproc.dedup WHERE expires_at < now()
                                  ORDER BY expires_at LIMIT 10000));
        GET DIAGNOSTICS deleted = ROW_COUNT;
        total := total + deleted;
        EXIT WHEN deleted < 10000;
    END LOOP;
    RETURN total;
END
$fn$;

-- Raises 22023 when history of the topic enqueued at or after from_ts is no longer
-- complete (retention dropped some of it). '-infinity' asks for whatever is retained.
CREATE FUNCTION evproc.check_history_retained(topic_id integer, from_ts timestamptz)
    RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t record;
BEGIN
    SELECT tp.name, tp.retention, tp.history_dropped_before INTO t
      FROM evproc.topic tp WHERE tp.id = check_history_retained.topic_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic with id % does not exist', topic_id USING ERRCODE = 'undefined_object';
    END IF;
    IF from_ts IS NULL THEN
        RAISE EXCEPTION 'the start of the history must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF from_ts <> '-infinity' AND from_ts < t.history_dropped_before THEN
        RAISE EXCEPTION 'history of topic "%" before % is no longer retained', t.name, t.history_dropped_before
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Events from %s were asked for; the retention of the topic is %s.', from_ts, t.retention),
                  HINT = format('The earliest retained history starts at %s: start there or later, or from ''-infinity'' for all retained events.',
                                t.history_dropped_before);
    END IF;
END
$fn$;

-- The log's partitions for operators: size, state, and what keeps each one.
CREATE VIEW public.evproc_log_partitions AS
SELECT p.name, p.xid_from, p.xid_to,
       pg_catalog.pg_total_relation_size(pg_catalog.to_regclass(format('evproc.%I', p.name))) AS bytes,
       p.created_at, p.opened_at, p.closed_at,
       ARRAY(SELECT t.name FROM evproc.topic t WHERE t.id = ANY (p.topic_ids) ORDER BY t.name) AS topics,
       p.closed_at + (SELECT max(t.retention) FROM evproc.topic t WHERE t.id = ANY (p.topic_ids)) AS retained_until,
       CASE WHEN p.opened_at IS NULL THEN 'ahead'
            WHEN p.closed_at IS NULL THEN 'open'
            WHEN p.closed_at + (SELECT max(t.retention) FROM evproc.topic t
                                 WHERE t.id = ANY (p.topic_ids)) > now() THEN 'retention'
            WHEN p.xid_to > evproc.log_horizon()
                 THEN CASE WHEN EXISTS (SELECT 1 FROM evproc.replay r WHERE r.state = 'running')
                           THEN 'replay' ELSE 'subscriptions' END
            WHEN p.drop_attempts > 0 THEN 'lock'
            ELSE 'due' END AS held_by,
       p.drop_attempts
  FROM evproc.log_partition p;

-------------------------------------------------------------------------------
-- Monitoring (DESIGN §5, §7): views over shared-memory counters, rates and latency
-- histograms (src/metrics.hpp), never a count over the event log.
-- Appended after delivery.sql by make to form the install script.
-------------------------------------------------------------------------------
CREATE FUNCTION evproc.topic_stats(OUT topic_id integer, OUT published bigint,
                                   OUT publish_rate float8, OUT pending bigint,
                                   OUT dedup_hits bigint, OUT rejected_full bigint,
                                   OUT rejected_invalid bigint)
    RETURNS SETOF record AS 'MODULE_PATHNAME', 'evproc_topic_stats' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION evproc.subscription_stats(OUT subscription_id integer, OUT pending bigint,
                                          OUT delivered bigint, OUT failed bigint, OUT dead bigint,
                                          OUT replayed bigint, OUT requeued bigint,
                                          OUT delivered_rate float8, OUT failed_rate float8,
                                          OUT replayed_rate float8, OUT latency_samples bigint,
                                          OUT latency_p50_ms float8, OUT latency_p95_ms float8,
                                          OUT latency_p99_ms float8, OUT topic_id integer)
    RETURNS SETOF record AS 'MODULE_PATHNAME', 'evproc_subscription_stats' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION evproc.worker_stats(OUT worker integer, OUT pid integer, OUT state text,
                                    OUT subscription_id integer, OUT partition integer,
                                    OUT batches bigint, OUT events bigint,
                                    OUT state_since timestamptz, OUT last_error text,
                                    OUT last_error_at timestamptz)
    RETURNS SETOF record AS 'MODULE_PATHNAME', 'evproc_worker_stats' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION evproc.sync_stats_registry(subscription_ids integer[], topic_ids integer[])
    RETURNS integer[] AS 'MODULE_PATHNAME', 'evproc_sync_stats_registry' LANGUAGE C VOLATILE;
CREATE FUNCTION evproc.set_pending(subscription_id integer, pending bigint)
    RETURNS boolean AS 'MODULE_PATHNAME', 'evproc_set_pending' LANGUAGE C VOLATILE;
CREATE FUNCTION evproc.note_requeued(subscription_id integer, events bigint)
    RETURNS void AS 'MODULE_PATHNAME', 'evproc_note_requeued' LANGUAGE C VOLATILE;
CREATE FUNCTION evproc.forget_stats()
    RETURNS void AS 'MODULE_PATHNAME', 'evproc_forget_stats' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION evproc.sync_stats_registry(integer[], integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION evproc.forget_stats() FROM PUBLIC;
REVOKE ALL ON FUNCTION evproc.set_pending(integer, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION evproc.note_requeued(integer, bigint) FROM PUBLIC;

-- The backlog of one subscription, counted: events committed after each unit's position
-- (less those of its current window it already handled) and parked events (a dead head
-- that blocks its key is a dead letter, not pending). Run once per subscription per
-- server life, when it is registered; from then on the counters keep the figure.
CREATE FUNCTION evproc.count_pending(subscription_id integer) RETURNS bigint
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT coalesce((SELECT sum(c.n)
                   FROM evproc.progress p
                   JOIN evproc.subscription s ON s.id = p.subscription_id
                   JOIN evproc.tick a ON a.id = p.tick_id
                   LEFT JOIN evproc.tick w ON w.id = p.window_tick
                  CROSS JOIN LATERAL (
                        SELECT count(*) AS n FROM evproc.log e
                         WHERE e.topic_id = s.topic_id AND e.partition = p.partition
                           AND e.xid >= pg_snapshot_xmin(a.snapshot)
                           AND NOT pg_visible_in_snapshot(e.xid, a.snapshot)
                           AND e.enqueued_at >= coalesce(p.history_from, '-infinity')
                           AND NOT (w.id IS NOT NULL AND e.id <= p.cursor_id
                                    AND pg_visible_in_snapshot(e.xid, w.snapshot))) c
                  WHERE p.subscription_id = count_pending.subscription_id), 0)::bigint
     + (SELECT count(*) FROM evproc.retry r
         WHERE r.subscription_id = count_pending.subscription_id
           AND NOT (r.is_head AND r.blocked))
$fn$;

-- Keeps the shared-memory registry in step with evproc.subscription and counts the
-- backlog of newly registered subscriptions. The launcher runs it every second; tests
-- run it by hand. Returns how many subscriptions were counted.
CREATE FUNCTION evproc.sync_stats() RETURNS integer
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
    RETURN counted;
END
$fn$;
REVOKE ALL ON FUNCTION evproc.sync_stats() FROM PUBLIC;

-- How long the oldest pending commit of a subscription has waited: a unit with work
-- waits since the first tick after its position (the tick that first saw that commit).
-- SECURITY DEFINER (search_path pinned): a monitoring role reads the figure, not the
-- progress and tick tables behind it.
CREATE FUNCTION evproc.lag_seconds(subscription_id integer) RETURNS float8
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT coalesce(extract(epoch FROM now() - min(nt.taken_at))::float8, 0)
  FROM evproc.progress p
  JOIN evproc.subscription s ON s.id = p.subscription_id
 CROSS JOIN LATERAL (SELECT t.taken_at FROM evproc.tick t WHERE t.id > p.tick_id
                      ORDER BY t.id LIMIT 1) nt
 WHERE p.subscription_id = lag_seconds.subscription_id
   AND (p.window_tick IS NOT NULL OR p.tick_id < evproc.dirty_tick(s.topic_id, p.partition))
$fn$;

-- The counters of the subscriptions the caller may see: those whose owner role it is a
-- member of, or all for members of pg_monitor (counts and latencies, no payloads). The
-- raw evproc.subscription_stats() and lag_seconds() show every subscription by id, so
-- only pg_monitor executes them (extension/privileges.sql); the view reads this one,
-- which runs as the extension owner on behalf of its caller (src/api_trampoline.cpp).
CREATE FUNCTION evproc.visible_subscription_stats()
    RETURNS TABLE (subscription_id integer, pending bigint, delivered bigint, failed bigint,
                   dead bigint, replayed bigint, requeued bigint, delivered_rate float8,
                   failed_rate float8, replayed_rate float8, latency_samples bigint,
                   latency_p50_ms float8, latency_p95_ms float8, latency_p99_ms float8,
                   lag_seconds float8)
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION evproc.visible_subscription_stats_impl(caller oid)
    RETURNS TABLE (subscription_id integer, pending bigint, delivered bigint, failed bigint,
                   dead bigint, replayed bigint, requeued bigint, delivered_rate float8,
                   failed_rate float8, replayed_rate float8, latency_samples bigint,
                   latency_p50_ms float8, latency_p95_ms float8, latency_p99_ms float8,
                   lag_seconds float8)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT s.id, st.pending, st.delivered, st.failed, st.dead, st.replayed,
       st.requeued, st.delivered_rate, st.failed_rate, st.replayed_rate, st.latency_samples,
       st.latency_p50_ms, st.latency_p95_ms, st.latency_p99_ms,
       CASE WHEN st.pending = 0 THEN 0 ELSE evproc.lag_seconds(s.id) END
  FROM evproc.subscription s
  LEFT JOIN evproc.subscription_stats() st ON st.subscription_id = s.id
 WHERE pg_has_role(caller, s.owner, 'MEMBER') OR pg_has_role(caller, 'pg_monitor', 'USAGE')
$fn$;

-- Per topic, the pending count of its slowest subscription (what max_pending compares):
-- one figure per topic, so anyone who may read evproc_topic_stats may have it.
CREATE FUNCTION evproc.topic_pending(OUT topic_id integer, OUT pending bigint)
    RETURNS SETOF record
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT ss.topic_id, max(ss.pending) FROM evproc.subscription_stats() ss GROUP BY ss.topic_id
$fn$;

-- Rows of the subscriptions whose owner role the querying user is a member of; members
-- of pg_monitor see every row (no payloads here). See extension/privileges.sql.
CREATE VIEW public.evproc_subscription_stats WITH (security_barrier) AS
SELECT s.name AS subscription, t.name AS topic,
       CASE WHEN s.paused THEN 'paused'
            WHEN s.breaker_open_until > now() THEN 'cooling down'
            ELSE 'active' END AS state,
       CASE WHEN s.breaker_open_until > now() THEN 'open' ELSE 'closed' END AS breaker,
       s.breaker_open_until,
       st.pending AS lag_events,
       st.lag_seconds,
       st.delivered, st.failed, st.dead, st.replayed, st.requeued,
       round(st.delivered_rate::numeric, 2) AS delivered_per_second,
       round(st.failed_rate::numeric, 2) AS failed_per_second,
       round(st.replayed_rate::numeric, 2) AS replayed_per_second,
       (SELECT count(*) FROM evproc.retry r
         WHERE r.subscription_id = s.id AND NOT (r.is_head AND r.blocked)) AS retries_pending,
       (SELECT count(*) FROM evproc.dead_letter d WHERE d.subscription_id = s.id) AS dead_letters,
       round(st.latency_p50_ms::numeric, 2) AS latency_p50_ms,
       round(st.latency_p95_ms::numeric, 2) AS latency_p95_ms,
       round(st.latency_p99_ms::numeric, 2) AS latency_p99_ms,
       st.latency_samples
  FROM evproc.subscription s
  JOIN evproc.topic t ON t.id = s.topic_id
  LEFT JOIN evproc.visible_subscription_stats() st ON st.subscription_id = s.id
 WHERE pg_catalog.pg_has_role(s.owner::oid, 'MEMBER')
    OR pg_catalog.pg_has_role('pg_monitor', 'USAGE');
COMMENT ON VIEW public.evproc_subscription_stats IS
    'per subscription: lag, totals since the server started, rates and latency percentiles over the last minute';

CREATE VIEW public.evproc_topic_stats AS
SELECT t.name AS topic, t.partitions,
       coalesce(st.published, 0) AS published,
       round(coalesce(st.publish_rate, 0)::numeric, 2) AS published_per_second,
       coalesce((SELECT tp.pending FROM evproc.topic_pending() tp
                  WHERE tp.topic_id = t.id), 0) AS pending,
       t.max_pending,
       coalesce(st.dedup_hits, 0) AS dedup_hits,
       coalesce(st.rejected_full, 0) AS rejected_full,
       coalesce(st.rejected_invalid, 0) AS rejected_invalid,
       (SELECT count(*) FROM evproc.subscription s WHERE s.topic_id = t.id) AS subscriptions
  FROM evproc.topic t
  LEFT JOIN evproc.topic_stats() st ON st.topic_id = t.id;
COMMENT ON VIEW public.evproc_topic_stats IS
    'per topic: events published since the server started, rate over the last minute, pending (slowest subscription), dedup hits, rejections';

CREATE VIEW public.evproc_workers AS
SELECT w.worker, w.pid, w.state, s.name AS subscription, w.partition, w.batches, w.events,
       w.state_since, w.last_error, w.last_error_at
  FROM evproc.worker_stats() w
  LEFT JOIN evproc.subscription s ON s.id = w.subscription_id;
COMMENT ON VIEW public.evproc_workers IS 'the delivery workers serving this database';

-- Every figure as (name, labels, value) rows, in Prometheus naming.
CREATE VIEW public.evproc_metrics AS
SELECT m.name, m.labels, m.value
  FROM public.evproc_topic_stats ts
 CROSS JOIN LATERAL (VALUES
       ('evproc_published_total', jsonb_build_object('topic', ts.topic), ts.published::float8),
       ('evproc_published_per_second', jsonb_build_object('topic', ts.topic), ts.published_per_second::float8),
       ('evproc_topic_pending', jsonb_build_object('topic', ts.topic), ts.pending::float8),
       ('evproc_dedup_hits_total', jsonb_build_object('topic', ts.topic), ts.dedup_hits::float8),
       ('evproc_rejected_total', jsonb_build_object('topic', ts.topic, 'reason', 'max_pending'), ts.rejected_full::float8),
       ('evproc_rejected_total', jsonb_build_object('topic', ts.topic, 'reason', 'invalid'), ts.rejected_invalid::float8)
       ) AS m(name, labels, value)
UNION ALL
SELECT m.name, m.labels, m.value
  FROM public.evproc_subscription_stats ss
 CROSS JOIN LATERAL (VALUES
       ('evproc_lag_events', jsonb_build_object('subscription', ss.subscription), ss.lag_events::float8),
       ('evproc_lag_seconds', jsonb_build_object('subscription', ss.subscription), ss.lag_seconds::float8),
       ('evproc_delivered_total', jsonb_build_object('subscription', ss.subscription), ss.delivered::float8),
       ('evproc_failed_total', jsonb_build_object('subscription', ss.subscription), ss.failed::float8),
       ('evproc_dead_total', jsonb_build_object('subscription', ss.subscription), ss.dead::float8),
       ('evproc_replayed_total', jsonb_build_object('subscription', ss.subscription), ss.replayed::float8),
       ('evproc_delivered_per_second', jsonb_build_object('subscription', ss.subscription), ss.delivered_per_second::float8),
       ('evproc_failed_per_second', jsonb_build_object('subscription', ss.subscription), ss.failed_per_second::float8),
       ('evproc_retries_pending', jsonb_build_object('subscription', ss.subscription), ss.retries_pending::float8),
       ('evproc_dead_letters', jsonb_build_object('subscription', ss.subscription), ss.dead_letters::float8),
       ('evproc_latency_seconds', jsonb_build_object('subscription', ss.subscription, 'quantile', '0.5'), ss.latency_p50_ms::float8 / 1000),
       ('evproc_latency_seconds', jsonb_build_object('subscription', ss.subscription, 'quantile', '0.95'), ss.latency_p95_ms::float8 / 1000),
       ('evproc_latency_seconds', jsonb_build_object('subscription', ss.subscription, 'quantile', '0.99'), ss.latency_p99_ms::float8 / 1000),
       ('evproc_breaker_open', jsonb_build_object('subscription', ss.subscription), (ss.breaker = 'open')::int::float8),
       ('evproc_paused', jsonb_build_object('subscription', ss.subscription), (ss.state = 'paused')::int::float8)
       ) AS m(name, labels, value)
UNION ALL
SELECT 'evproc_workers', jsonb_build_object('state', w.state), count(*)::float8
  FROM public.evproc_workers w GROUP BY w.state
UNION ALL
SELECT 'evproc_worker_batches_total', jsonb_build_object('worker', w.worker::text), w.batches::float8
  FROM public.evproc_workers w;
COMMENT ON VIEW public.evproc_metrics IS 'every evproc figure as (name, labels, value), Prometheus style';

-- Monitoring reads names and counts, no payloads: PostgreSQL's monitoring role may read it.
GRANT SELECT ON public.evproc_subscription_stats, public.evproc_topic_stats,
                public.evproc_workers, public.evproc_metrics TO pg_monitor;

-- A re-created extension starts with fresh counters (ids start from 1 again).
SELECT evproc.forget_stats();

-------------------------------------------------------------------------------
-- Privileges (README "Security and privileges"). Appended last by make: it also settles
-- who may execute everything defined before it.
--
-- The model:
--  * evproc's tables belong to the extension owner; nobody else gets privileges on them.
--    API functions that change or read them for a caller are C trampolines
--    (src/api_trampoline.cpp) into evproc.<name>_impl(caller oid, ...), run as the
--    extension owner with a pinned search_path; each checks the caller it was given by
--    the trampoline (the session's current user), never an argument.
--  * Topics: creating one takes EXECUTE on evproc_create_topic (revoked from PUBLIC
--    below: a DBA grants it); its creator owns it. Members of a topic's owner role may
--    alter, drop, grant and revoke on it, publish to it and subscribe to it.
--  * 'publish' and 'subscribe' are granted per topic to roles (and so to their members)
--    with evproc_grant and taken back with evproc_revoke.
--  * Subscriptions belong to their owner role (run_as): its members act on them and see
--    their rows, dead letters and payloads; nobody else does (superusers excepted).
--  * Views show every role only its own subscriptions' rows (security_barrier); topic
--    names, settings and grants are not secret; pg_monitor sees every monitoring row.
-------------------------------------------------------------------------------

-- 'publish' or 'subscribe' on a topic, for a role and its members. Only members of the
-- topic's owner role (and superusers) may grant or revoke. Returns whether anything
-- changed (false: the role held it already / did not hold it).
CREATE FUNCTION public.evproc_grant(topic text, role regrole, privilege text) RETURNS boolean
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION public.evproc_revoke(topic text, role regrole, privilege text) RETURNS boolean
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';

-- The topic row a grant or revoke changes, locked, after the checks every one makes.
CREATE FUNCTION evproc.topic_for_grant(caller oid, topic text, role regrole, privilege text,
                                       action text)
    RETURNS evproc.topic LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic;
BEGIN
    IF privilege IS NULL OR privilege NOT IN ('publish', 'subscribe') THEN
        RAISE EXCEPTION 'privilege must be ''publish'' or ''subscribe'', got %', coalesce(quote_literal(privilege), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'topic name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO t FROM evproc.topic AS tp WHERE tp.name = topic_for_grant.topic FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" does not exist', topic USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM evproc.check_topic_owner(caller, t, action);
    RETURN t;
END
$fn$;

CREATE FUNCTION evproc.grant_impl(caller oid, topic text, role regrole, privilege text)
    RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic := evproc.topic_for_grant(caller, topic, role, privilege, 'grant privileges on');
BEGIN
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

-- Revoking 'subscribe' does not drop subscriptions: the workers pause those whose owner
-- no longer holds it, at their next batch.
CREATE FUNCTION evproc.revoke_impl(caller oid, topic text, role regrole, privilege text)
    RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic := evproc.topic_for_grant(caller, topic, role, privilege, 'revoke privileges on');
BEGIN
    IF role <> ALL (CASE privilege WHEN 'publish' THEN t.publishers ELSE t.subscribers END) THEN
        RETURN false;
    END IF;
    UPDATE evproc.topic
       SET publishers = CASE privilege WHEN 'publish' THEN array_remove(publishers, role) ELSE publishers END,
           subscribers = CASE privilege WHEN 'subscribe' THEN array_remove(subscribers, role) ELSE subscribers END
     WHERE id = t.id;
    RETURN true;
END
$fn$;

-- Nothing in schema evproc is executable by PUBLIC (implementations, internals that
-- change state or read evproc's tables) except what callers reach on their own rights:
-- the subscribe wrapper's handler resolution (reads pg_proc) and its trampoline, and the
-- functions the monitoring views call as the querying user: per-topic counters, and the
-- per-subscription figures filtered to the caller's subscriptions. Roles still need
-- USAGE on schema evproc to call any of them by name.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA evproc FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    evproc.resolve_handler(text),
    evproc.handler_shape(oid),
    evproc.subscribe(text, text, regprocedure, integer, integer, interval, interval, interval,
                     text, timestamptz, regrole, real, integer, interval),
    evproc.library_version(),
    evproc.topic_stats(),
    evproc.topic_pending(),
    evproc.visible_subscription_stats()
    TO PUBLIC;
-- Every subscription's counters by id, and the workers' state with their last error
-- (whose message may quote a payload): for monitoring, which sees every row anyway.
GRANT EXECUTE ON FUNCTION
    evproc.subscription_stats(),
    evproc.worker_stats(),
    evproc.lag_seconds(integer)
    TO pg_monitor;

-- Creating topics is for the roles a DBA chooses:
--   GRANT EXECUTE ON FUNCTION evproc_create_topic(text, integer, interval, interval, bigint, jsonb) TO app_admin;
REVOKE EXECUTE ON FUNCTION public.evproc_create_topic(text, integer, interval, interval, bigint, jsonb)
    FROM PUBLIC;

-- Every role may read the views; each view shows it only what it may see.
GRANT SELECT ON public.evproc_topics, public.evproc_topic_stats, public.evproc_subscriptions,
                public.evproc_subscription_stats, public.evproc_dead_letters,
                public.evproc_dead_letter_summary, public.evproc_replays
    TO PUBLIC;
