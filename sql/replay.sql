-- Replay: re-delivery of retained history to one subscription, in id order, flagged
-- replay, counted apart; filters by time and key; progress; cancel; failures of
-- replayed events join the retry line; errors. Delivery is stepped by hand.
\i sql/include/try.sql

CREATE ROLE evproc_rp_app;
CREATE ROLE evproc_rp_other;
GRANT USAGE ON SCHEMA evproc TO evproc_rp_app;
CREATE TABLE rp_seen (seq bigserial, id bigint, key text, n int, replay boolean, attempt int);
CREATE TABLE rp_failing (key text);
GRANT SELECT ON rp_failing TO evproc_rp_app;
GRANT INSERT ON rp_seen TO evproc_rp_app;
GRANT USAGE ON SEQUENCE rp_seen_seq_seq TO evproc_rp_app;

\i sql/include/drain.sql

-- Fails for the keys listed in rp_failing.
CREATE FUNCTION rp_handle(e evproc.event) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  IF EXISTS (SELECT 1 FROM rp_failing f WHERE f.key = e.key) THEN
    RAISE EXCEPTION 'key % is failing', e.key USING ERRCODE = 'data_exception';
  END IF;
  INSERT INTO rp_seen (id, key, n, replay, attempt)
  VALUES (e.id, e.key, (e.payload->>'n')::int, e.replay, e.attempt);
END $fn$;

SELECT evproc_create_topic('rp.orders', partitions => 2) > 0 AS created;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT evproc_subscribe('rp_sub', 'rp.orders', 'rp_handle', batch_size => 2, max_attempts => 2,
                        backoff_base => '1 hour', backoff_cap => '1 hour',
                        run_as => 'evproc_rp_app') > 0 AS subscribed;
SELECT evproc.sync_stats() AS registered;
SELECT count(evproc_enqueue('rp.orders', k, jsonb_build_object('n', n)))
  FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'a'), (5, 'b'), (6, 'a')) v(n, k);
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain() AS live;
TRUNCATE rp_seen;

-------------------------------------------------------------------------------
-- A full replay: every retained event again, in id order, flagged replay.
-------------------------------------------------------------------------------
SELECT evproc_replay('rp_sub') > 0 AS started;
SELECT subscription, state, delivered, percent_scanned < 100 AS scanning FROM evproc_replays;
-- One replay at a time per subscription (the message names the running one).
SELECT regexp_replace(pg_temp.try($$SELECT evproc_replay('rp_sub')$$),
                      format('\(id %s\)$', (SELECT id FROM evproc.replay WHERE state = 'running')),
                      '(id of the running replay)') AS try;
SELECT pg_temp.drain() AS replayed;
SELECT key, string_agg(n::text, ',' ORDER BY seq) AS order_per_key, bool_and(replay) AS flagged,
       max(attempt) AS attempt
  FROM rp_seen GROUP BY key ORDER BY key;
SELECT bool_and(a.id < b.id) AS in_id_order
  FROM rp_seen a JOIN rp_seen b ON b.seq = a.seq + 1;
SELECT subscription, state, delivered, failed, percent_scanned, finished_at IS NOT NULL AS finished
  FROM evproc_replays;
-- Counted apart: live deliveries and the pending count do not move.
SELECT delivered, replayed, lag_events FROM evproc_subscription_stats WHERE subscription = 'rp_sub';
TRUNCATE rp_seen;

-------------------------------------------------------------------------------
-- Filters: one key; a time range.
-------------------------------------------------------------------------------
SELECT evproc_replay('rp_sub', key => 'a') > 0 AS started;
SELECT pg_temp.drain() AS replayed;
SELECT string_agg(key || n, ',' ORDER BY seq) AS seen FROM rp_seen;
TRUNCATE rp_seen;
SELECT evproc_replay('rp_sub',
         from_time => (SELECT enqueued_at FROM evproc.log WHERE payload->>'n' = '3'
                          AND topic_id = (SELECT id FROM evproc.topic WHERE name = 'rp.orders')),
         to_time => (SELECT enqueued_at FROM evproc.log WHERE payload->>'n' = '5'
                          AND topic_id = (SELECT id FROM evproc.topic WHERE name = 'rp.orders'))) > 0 AS started;
SELECT pg_temp.drain() AS replayed;
SELECT string_agg(key || n, ',' ORDER BY seq) AS seen FROM rp_seen;
TRUNCATE rp_seen;

-------------------------------------------------------------------------------
-- Cancel: a cancelled replay delivers nothing more.
-------------------------------------------------------------------------------
SELECT evproc_replay('rp_sub') AS replay_id \gset
SELECT evproc_cancel_replay(:replay_id) AS cancelled;
SELECT evproc_cancel_replay(:replay_id) AS cancelled_again;
SELECT pg_temp.drain() AS replayed;
SELECT count(*) AS seen FROM rp_seen;
SELECT state, delivered FROM evproc_replays WHERE id = :replay_id;

-------------------------------------------------------------------------------
-- A replayed event that fails joins its key's retry line (attempt, backoff, dead
-- letter), still flagged replay, and counts as pending until it is handled.
-------------------------------------------------------------------------------
INSERT INTO rp_failing VALUES ('b');
SELECT evproc_replay('rp_sub') > 0 AS started;
SELECT pg_temp.drain() AS replayed;
SELECT key, (event).replay, is_head, attempt FROM evproc.retry ORDER BY seq;
SELECT lag_events, retries_pending FROM evproc_subscription_stats WHERE subscription = 'rp_sub';
DELETE FROM rp_failing;
UPDATE evproc.retry SET next_attempt_at = now() - interval '1 second' WHERE is_head;
UPDATE evproc.progress SET retry_due_at = now() - interval '1 second'
 WHERE subscription_id = (SELECT id FROM evproc.subscription WHERE name = 'rp_sub')
   AND retry_due_at IS NOT NULL;
SELECT pg_temp.drain() AS retried;
SELECT key, n, replay, attempt FROM rp_seen WHERE key = 'b' ORDER BY seq;
SELECT lag_events, retries_pending FROM evproc_subscription_stats WHERE subscription = 'rp_sub';
TRUNCATE rp_seen;

-------------------------------------------------------------------------------
-- History retention dropped cannot be replayed: an error naming the bound, never a
-- silent partial replay. (The bound is set here as retention sets it when it drops a
-- partition holding the topic's events; sql/retention.sql drops real partitions.)
-------------------------------------------------------------------------------
UPDATE evproc.topic SET history_dropped_before = now() - interval '1 hour' WHERE name = 'rp.orders';
SELECT pg_temp.try($$SELECT evproc_replay('rp_sub', from_time => now() - interval '1 day')$$)
       LIKE '22023: history of topic "rp.orders" before % is no longer retained' AS refused;
SELECT count(*) AS nothing_started FROM evproc_replays WHERE state = 'running';
-- From the bound on, or everything retained, is fine.
SELECT evproc_replay('rp_sub', from_time => now() - interval '1 minute') AS replay_id \gset
SELECT evproc_cancel_replay(:replay_id) AS cancelled;
SELECT evproc_replay('rp_sub', from_time => '-infinity') AS replay_id \gset
SELECT evproc_cancel_replay(:replay_id) AS cancelled;
UPDATE evproc.topic SET history_dropped_before = NULL WHERE name = 'rp.orders';

-------------------------------------------------------------------------------
-- Bad calls.
-------------------------------------------------------------------------------
SELECT pg_temp.try($$SELECT evproc_replay(NULL)$$);
SELECT pg_temp.try($$SELECT evproc_replay('')$$);
SELECT pg_temp.try($$SELECT evproc_replay('rp_nope')$$);
SELECT pg_temp.try($$SELECT evproc_replay('rp_sub', from_time => '2030-01-02', to_time => '2030-01-01')$$);
SELECT pg_temp.try($$SELECT evproc_replay('rp_sub', key => '')$$);
-- The same key limit as enqueue (512 bytes), counted in bytes.
SELECT pg_temp.try($$SELECT evproc_replay('rp_sub', key => repeat('k', 100000))$$);
SELECT pg_temp.try($$SELECT evproc_replay('rp_sub', key => repeat('k', 513))$$);
SELECT pg_temp.try($$SELECT evproc_replay('rp_sub', key => repeat('é', 257))$$);
SELECT pg_temp.try($$SELECT evproc_cancel_replay(NULL)$$);
SELECT pg_temp.try($$SELECT evproc_cancel_replay(-1)$$);
-- Only members of the subscription's owner role may replay it or cancel its replays.
SELECT evproc_replay('rp_sub') AS replay_id \gset
SET ROLE evproc_rp_other;
SELECT pg_temp.try($$SELECT evproc_replay('rp_sub')$$);
SELECT pg_temp.try(format('SELECT evproc_cancel_replay(%s)', :replay_id));
RESET ROLE;
SELECT evproc_cancel_replay(:replay_id) AS cancelled;

-- Unsubscribing removes its replays.
SELECT evproc_unsubscribe('rp_sub');
SELECT count(*) AS replays FROM evproc.replay;
SELECT evproc_drop_topic('rp.orders');
DROP FUNCTION rp_handle(evproc.event);
DROP TABLE rp_seen, rp_failing;
REVOKE USAGE ON SCHEMA evproc FROM evproc_rp_app;
DROP ROLE evproc_rp_app;
DROP ROLE evproc_rp_other;
