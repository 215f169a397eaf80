
-------------------------------------------------------------------------------
-- Replay (docs/design.md): re-deliver retained history to one subscription, in id order
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
    CHECK (from_time <= to_time),
    -- A pull subscription's replay is read by consumers: held by a lease like a unit
    -- (extension/lease.sql).
    lease_id        text,
    leased_until    timestamptz
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
