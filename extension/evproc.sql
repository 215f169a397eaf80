-- evproc extension script, the version the Makefile names (EXTVERSION); make builds
-- extension/evproc--<version>.sql from this file and the parts it lists.
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
-- Partitioned by xid so that retention drops whole partitions (docs/design.md): the
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
-- The snapshot-window index (docs/design.md) (topic_id, partition, xid, id): a unit (topic,
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
-- Snapshot windows (docs/design.md): the groundwork of delivery.
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

-- The text of a statement the delivery workers prepare, by name (src/delivery_statements.hpp,
-- where each is written whole: the claims, the window's two parts, the writes). The
-- regression tests EXPLAIN exactly what the workers run.
CREATE FUNCTION evproc.statement_sql(name text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'evproc_statement_sql';

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
