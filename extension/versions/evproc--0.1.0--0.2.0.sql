-- evproc 0.1.0 -> 0.2.0 (ALTER EXTENSION evproc UPDATE). Released: never edited.
-- What a fresh 0.2.0 install makes, t/015_upgrade.pl checks that this script makes too.
\echo Use "ALTER EXTENSION evproc UPDATE TO '0.2.0'" to load this file. \quit

-------------------------------------------------------------------------------
-- The library's version, next to the extension's (README "Upgrading").
-------------------------------------------------------------------------------
CREATE FUNCTION evproc.library_version() RETURNS text
    AS 'MODULE_PATHNAME', 'evproc_library_version' LANGUAGE C STRICT STABLE;
REVOKE EXECUTE ON FUNCTION evproc.library_version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evproc.library_version() TO PUBLIC;

-------------------------------------------------------------------------------
-- Dead letters: an index for purge older_than, re-drive by time range and the summary.
-------------------------------------------------------------------------------
CREATE INDEX dead_letter_age_idx ON evproc.dead_letter (subscription_id, dead_at);

-------------------------------------------------------------------------------
-- Grants to dropped roles: maintenance removes them (a new role may get the same OID).
-------------------------------------------------------------------------------
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
REVOKE EXECUTE ON FUNCTION evproc.forget_dropped_grantees() FROM PUBLIC;

CREATE OR REPLACE FUNCTION evproc.maintain() RETURNS void
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
-- Log partitions start above the current xid by a margin: an enqueue whose row was
-- routed to the default partition before an attach must still fit there after it.
-------------------------------------------------------------------------------
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
CREATE OR REPLACE FUNCTION evproc.next_partition_width(cur xid8) RETURNS bigint
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

CREATE OR REPLACE FUNCTION evproc.ensure_log_partitions() RETURNS integer
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
REVOKE EXECUTE ON FUNCTION evproc.xid_rate(xid8), evproc.partition_margin(xid8) FROM PUBLIC;

-------------------------------------------------------------------------------
-- evproc_event_status: an event of a topic the caller has nothing to do with is as
-- unknown to it as an id never used.
-------------------------------------------------------------------------------
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

-------------------------------------------------------------------------------
-- Monitoring: per-subscription counters only for the caller's subscriptions (all for
-- pg_monitor); the raw counters by id and the workers' last errors for pg_monitor only.
-------------------------------------------------------------------------------
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

CREATE FUNCTION evproc.topic_pending(OUT topic_id integer, OUT pending bigint)
    RETURNS SETOF record
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT ss.topic_id, max(ss.pending) FROM evproc.subscription_stats() ss GROUP BY ss.topic_id
$fn$;

CREATE OR REPLACE VIEW public.evproc_subscription_stats WITH (security_barrier) AS
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

CREATE OR REPLACE VIEW public.evproc_topic_stats AS
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

-- As extension/privileges.sql leaves them in a fresh install.
REVOKE EXECUTE ON FUNCTION evproc.visible_subscription_stats(), evproc.topic_pending(),
                           evproc.visible_subscription_stats_impl(oid)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evproc.visible_subscription_stats(), evproc.topic_pending() TO PUBLIC;
REVOKE EXECUTE ON FUNCTION evproc.subscription_stats(), evproc.worker_stats(),
                           evproc.lag_seconds(integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evproc.subscription_stats(), evproc.worker_stats(),
                          evproc.lag_seconds(integer)
    TO pg_monitor;
