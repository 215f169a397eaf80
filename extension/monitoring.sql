
-------------------------------------------------------------------------------
-- Monitoring (docs/design.md): views over shared-memory counters, rates and latency
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
-- backlog of newly registered subscriptions, and tells commits which topics some
-- subscription delivers now (evproc.set_deliverable). The maintenance worker runs it
-- every second and when subscriptions change; tests run it by hand. Returns how many
-- subscriptions were counted.
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
    PERFORM evproc.set_deliverable(coalesce(array_agg(t.id), '{}'), coalesce(array_agg(t.partitions), '{}'))
       FROM evproc.topic t
      WHERE EXISTS (SELECT 1 FROM evproc.subscription s
                     WHERE s.topic_id = t.id AND NOT s.paused
                       AND (s.breaker_open_until IS NULL OR s.breaker_open_until <= now()));
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
