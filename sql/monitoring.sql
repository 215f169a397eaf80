-- Monitoring and backpressure: shared-memory counters, rates, latency percentiles and
-- the pending count that max_pending is checked against. The launcher serves another
-- database here, so the registry is synced by hand with evproc.sync_stats().
\i sql/include/try.sql

CREATE ROLE evproc_mon_app;
GRANT USAGE ON SCHEMA evproc TO evproc_mon_app;
CREATE TABLE mon_seen (id bigint, n int);
GRANT INSERT ON mon_seen TO evproc_mon_app;

\i sql/include/drain.sql

-- Fails for payloads with "fail": the poison path counts failures and dead letters.
CREATE FUNCTION mon_handle(e evproc.event) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  IF e.payload ? 'fail' THEN
    RAISE EXCEPTION 'poison %', e.id USING ERRCODE = 'data_exception';
  END IF;
  INSERT INTO mon_seen VALUES (e.id, (e.payload->>'n')::int);
END $fn$;

CREATE FUNCTION pg_temp.sub_stats(name text)
  RETURNS TABLE (lag_events bigint, delivered bigint, failed bigint, dead bigint,
                 samples bigint, has_p99 boolean)
  LANGUAGE sql AS $fn$
  SELECT lag_events, delivered, failed, dead, latency_samples, latency_p99_ms IS NOT NULL
    FROM evproc_subscription_stats WHERE subscription = name $fn$;
CREATE FUNCTION pg_temp.topic_stats(name text)
  RETURNS TABLE (published bigint, pending bigint, dedup_hits bigint, rejected_full bigint,
                 rejected_invalid bigint)
  LANGUAGE sql AS $fn$
  SELECT published, pending, dedup_hits, rejected_full, rejected_invalid
    FROM evproc_topic_stats WHERE topic = name $fn$;

-------------------------------------------------------------------------------
-- Registration: a subscription is counted once, then followed by counters.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('mon.orders', partitions => 2, max_pending => 5) > 0 AS created;
SELECT evproc_subscribe('mon_sub', 'mon.orders', 'mon_handle', max_attempts => 1,
                        run_as => 'evproc_mon_app') > 0 AS subscribed;
SELECT * FROM pg_temp.sub_stats('mon_sub');  -- not registered yet: no counts
SELECT evproc.sync_stats() AS counted;
SELECT evproc.sync_stats() AS counted_again;  -- already known: nothing to count
SELECT * FROM pg_temp.sub_stats('mon_sub');

-- Committed events count; rolled-back ones (whole or savepoint) do not.
SELECT evproc_enqueue('mon.orders', 'k' || n, jsonb_build_object('n', n)) > 0 AS enqueued
  FROM generate_series(1, 2) n;
BEGIN;
SELECT evproc_enqueue('mon.orders', 'gone', '{"n": 100}') > 0 AS enqueued;
ROLLBACK;
BEGIN;
SELECT evproc_enqueue('mon.orders', 'kept', '{"n": 3}') > 0 AS enqueued;
SAVEPOINT s;
SELECT evproc_enqueue('mon.orders', 'gone', '{"n": 101}') > 0 AS enqueued;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT * FROM pg_temp.topic_stats('mon.orders');
SELECT * FROM pg_temp.sub_stats('mon_sub');

-- Dedup hits and malformed events are counted per topic.
SELECT evproc_enqueue('mon.orders', 'd', '{"n": 4}', dedup_id => 'once')
     = evproc_enqueue('mon.orders', 'd', '{"n": 4}', dedup_id => 'once') AS deduplicated;
SELECT pg_temp.try($$SELECT evproc_enqueue('mon.orders', 'x', '[1]')$$);
SELECT * FROM pg_temp.topic_stats('mon.orders');

-------------------------------------------------------------------------------
-- Backpressure: max_pending 5, four pending.
-------------------------------------------------------------------------------
-- One more fits; the sixth is refused with 53400 naming depth and limit, and so is a
-- batch that would pass the limit. A transaction's own uncommitted events count.
SELECT evproc_enqueue('mon.orders', 'k5', '{"n": 5}') > 0 AS fifth_fits;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT evproc_enqueue('mon.orders', 'k6', '{"n": 6}');
\set VERBOSITY terse
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('mon.orders', '[{"key": "b", "payload": {}}]')$$);
SELECT * FROM pg_temp.topic_stats('mon.orders');
-- Unlimited topics are never refused.
SELECT evproc_create_topic('mon.free', partitions => 1) > 0 AS created;
SELECT count(evproc_enqueue('mon.free', NULL, '{}')) AS enqueued FROM generate_series(1, 20);

-- Delivery drains the topic: pending falls to zero and publishing resumes by itself.
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT * FROM pg_temp.sub_stats('mon_sub');
SELECT * FROM pg_temp.topic_stats('mon.orders');
SELECT evproc_enqueue('mon.orders', 'k6', '{"n": 6}') > 0 AS accepted_again;

-- Within one transaction the limit counts what it already enqueued.
BEGIN;
SELECT count(evproc_enqueue('mon.orders', 'k' || n, '{}')) AS enqueued FROM generate_series(7, 10) n;
SELECT pg_temp.try($$SELECT evproc_enqueue('mon.orders', 'k11', '{}')$$);
ROLLBACK;

-- A failed delivery counts as failed and dead (max_attempts 1), not pending.
SELECT evproc_enqueue('mon.orders', 'p', '{"fail": true}') > 0 AS poison;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT * FROM pg_temp.sub_stats('mon_sub');
-- A re-driven dead letter is pending again once its transaction commits.
BEGIN;
SELECT evproc_redrive('mon_sub') AS redriven;
SELECT lag_events AS before_commit FROM evproc_subscription_stats WHERE subscription = 'mon_sub';
COMMIT;
SELECT lag_events AS after_commit FROM evproc_subscription_stats WHERE subscription = 'mon_sub';

-------------------------------------------------------------------------------
-- A subscription from history is registered with its whole backlog counted.
-------------------------------------------------------------------------------
SELECT evproc_subscribe('mon_history', 'mon.free', 'mon_handle', start_from => '-infinity',
                        run_as => 'evproc_mon_app') > 0 AS subscribed;
SELECT evproc.sync_stats() AS counted;
SELECT lag_events, lag_seconds >= 0 AS lag_seconds_known
  FROM evproc_subscription_stats WHERE subscription = 'mon_history';
SELECT pending FROM evproc_topic_stats WHERE topic = 'mon.free';
SELECT evproc.count_pending(id) FROM evproc.subscription WHERE name = 'mon_history';
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT lag_events, lag_seconds, delivered FROM evproc_subscription_stats WHERE subscription = 'mon_history';

-------------------------------------------------------------------------------
-- The metrics view: one row per figure, Prometheus names and labels.
-------------------------------------------------------------------------------
-- (Rates, lag seconds and latencies depend on the clock: checked apart.)
SELECT name, labels, value FROM evproc_metrics
 WHERE (labels->>'subscription' = 'mon_sub' OR labels->>'topic' = 'mon.orders')
   AND name NOT LIKE '%per_second' AND name NOT IN ('evproc_latency_seconds', 'evproc_lag_seconds')
 ORDER BY name, labels::text;
SELECT name, count(*) AS series, bool_and(value > 0) AS positive FROM evproc_metrics
 WHERE labels->>'subscription' = 'mon_sub'
   AND (name LIKE '%per_second' OR name = 'evproc_latency_seconds')
 GROUP BY name ORDER BY name;
-- No workers serve this database.
SELECT count(*) AS workers FROM evproc_workers;

-- Bad calls of the registry functions.
SELECT pg_temp.try($$SELECT evproc.sync_stats_registry(NULL, '{}')$$);
SELECT pg_temp.try($$SELECT evproc.sync_stats_registry('{1,2}', '{1}')$$);
SELECT evproc.set_pending(-1, 10) AS unknown_subscription;

-- Unsubscribed subscriptions leave the registry at the next sync.
SELECT evproc_unsubscribe(name) FROM evproc.subscription WHERE name LIKE 'mon%' ORDER BY name;
SELECT evproc.sync_stats() AS counted;
SELECT count(*) AS registered FROM evproc.subscription_stats() st
  LEFT JOIN evproc.subscription s ON s.id = st.subscription_id WHERE s.id IS NULL;
SELECT pending FROM evproc_topic_stats WHERE topic = 'mon.orders';
