
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
COMMENT ON FUNCTION public.evproc_event_status(bigint) IS
    'per subscription of the event''s topic: delivered (by when), pending, retrying, waiting, '
    'blocked, dead or not subscribed';
