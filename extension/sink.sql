
-------------------------------------------------------------------------------
-- Sinks (docs/design.md, docs/sinks.md): a subscription whose events the sink workers
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
-- The sink workers read their subscriptions at each wake (a tick, a lease's end): through
-- this, not every subscription of the database.
CREATE INDEX subscription_sink_idx ON evproc.subscription (id) WHERE sink IS NOT NULL;

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
