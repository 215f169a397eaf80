
-------------------------------------------------------------------------------
-- Pull subscriptions and leases (docs/design.md, docs/consumers.md): consumers outside the
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
