-- The plans of delivery's hot statements, as the workers keep them: each is prepared
-- from exactly the text evproc.statement_sql() returns (src/delivery_statements.hpp) and
-- explained as a generic plan. (The window's two parts: sql/window.sql.)
\i sql/include/try.sql

-- Every statement a worker prepares has a name; a wrong name is a clear error.
SELECT count(*) AS statements, count(DISTINCT t) AS distinct_texts
  FROM unnest(ARRAY['claim', 'claim_replay', 'replay_events', 'advance_replay',
                    'retry_due', 'next_due', 'window_bounds',
                    'due_retries', 'window_pending', 'window_range',
                    'delete_retries', 'park', 'dead_letter', 'promote_heads', 'advance',
                    'pause', 'trip_breaker', 'event_type', 'claim_unit', 'advance_ready',
                    'set_ready', 'flag_ready', 'claim_hinted', 'push_units']) n,
       LATERAL evproc.statement_sql(n) t;
SELECT pg_temp.try($$SELECT evproc.statement_sql('nope')$$);
-- The rule "may this owner subscribe to the topic" is evproc.may_subscribe's in
-- evproc_subscribe and evproc_replay; the claims return the roles it asks about (the
-- topic's owner, then its 'subscribe' grantees) and the worker asks the same question of
-- the catalog caches (delivery::OwnerState; sql/privileges.sql revokes and grants).
SELECT bool_and(evproc.statement_sql(n) ~ 'ARRAY\[t\.owner::oid\] \|\| t\.subscribers::oid\[\]')
         AS claims_return_topic_roles
  FROM unnest(ARRAY['claim', 'claim_unit', 'claim_replay', 'claim_hinted']) n;

-- Some units, a retry line and statistics: the plans below are what a worker gets with
-- a few subscriptions.
CREATE ROLE evproc_st_app;
GRANT USAGE ON SCHEMA evproc TO evproc_st_app;
CREATE FUNCTION st_handle(e evproc.event) RETURNS void LANGUAGE sql AS 'SELECT';
SELECT evproc_create_topic('st.t', partitions => 8) > 0 AS created;
SELECT count(evproc_subscribe('st_' || n, 'st.t', 'st_handle', run_as => 'evproc_st_app'))
  FROM generate_series(1, 4) n;
ANALYZE evproc.subscription, evproc.topic, evproc.progress, evproc.retry, evproc.tick,
        evproc.replay;
SELECT format('PREPARE st_%s%s AS ', name, types) || evproc.statement_sql(name)
  FROM (VALUES ('claim', ''),
               ('advance', '(int, int, bigint, bigint, bigint, timestamptz, boolean, bigint)'),
               ('park', '(int, int, text, bigint, evproc.event, boolean, boolean, int, timestamptz, '
                        'timestamptz, text, text, text, text, text)')) s(name, types) \gexec
SET plan_cache_mode = force_generic_plan;
-- The claim: the least recently served unit with work of an active subscription, one
-- row locked with SKIP LOCKED; each table read once and the newest tick looked up once,
-- not per unit. (Its join order follows the sizes of the tables, which the tests before
-- this one change: the plan's shape is checked, not its text.)
CREATE FUNCTION pg_temp.plan(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || statement LOOP
    RETURN NEXT line;
  END LOOP;
END $fn$;
SELECT bool_or(line ~ '^ *Limit') AS one_unit, bool_or(line ~ 'LockRows') AS locked,
       count(*) FILTER (WHERE line ~ ' on progress p$') AS progress_reads,
       count(*) FILTER (WHERE line ~ ' on subscription s$') AS subscription_reads,
       count(*) FILTER (WHERE line ~ ' on topic t$') AS topic_reads,
       bool_or(line ~ 'InitPlan') AS newest_tick_once,
       bool_or(line ~ 'SubPlan') AS per_unit_subplans
  FROM pg_temp.plan('EXECUTE st_claim') line;
-- Advancing a unit: its progress row by its key, and the next due retry of its line by
-- the retry line's index. (The tables here are a few pages: without seq scans the plan
-- shows the access paths a worker gets with many units and a long retry line.)
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) EXECUTE st_advance(1, 0, 2, NULL, NULL, NULL, true, 3);
RESET enable_seqscan;
-- Parking an event: one row into the retry line, by its key on conflict.
EXPLAIN (COSTS OFF) EXECUTE st_park(1, 0, 'k', 1, NULL, true, false, 1, now(), now(), NULL, NULL, NULL, NULL, NULL);
RESET plan_cache_mode;
DEALLOCATE ALL;

-- The retry line costs what a batch touches, not how many keys are parked (issue 19):
-- with 5,000 parked keys in one unit (each a due head and one event waiting behind it),
-- taking a batch of due retries reads each due key's line on its own through
-- retry_unit_idx; no plan node handles more than two batches of rows. (Whether a window
-- event's key is parked is read with it: sql/window.sql.)
SELECT id AS st_sub FROM evproc.subscription WHERE name = 'st_1' \gset
INSERT INTO evproc.retry (subscription_id, partition, key, event_id, event, is_head, attempt,
                          next_attempt_at)
SELECT :st_sub, 0, 'p' || g, g * 2 + h,
       ROW(g * 2 + h, 'st.t', 'p' || g, NULL, '{}', NULL, now(), 1, false)::evproc.event,
       h = 0, 1 - h,
       CASE WHEN h = 0 THEN now() - interval '1 hour' + g * interval '1 ms' ELSE 'infinity' END
  FROM generate_series(1, 5000) g, generate_series(0, 1) h ORDER BY g, h;
ANALYZE evproc.retry;
CREATE FUNCTION pg_temp.most_rows(statement text) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
  line text;
  most bigint := 0;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || statement LOOP
    most := greatest(most, substring(line FROM 'actual rows=(\d+)')::bigint
                           * coalesce(substring(line FROM 'loops=(\d+)')::bigint, 1));
  END LOOP;
  RETURN most;
END $fn$;
SELECT format('PREPARE st_%s%s AS ', name, types) || evproc.statement_sql(name)
  FROM (VALUES ('due_retries', '(int, int, int)')) s(name, types) \gexec
SET plan_cache_mode = force_generic_plan;
SELECT pg_temp.most_rows(format('EXECUTE st_due_retries(%s, 0, 100)', :st_sub)) <= 200 AS due_bounded,
       (SELECT count(*) FROM pg_temp.plan(format('EXECUTE st_due_retries(%s, 0, 100)', :st_sub)) l
         WHERE l ~ 'Index Cond: .*\(key = d\.key\)') AS per_key_reads;
-- What it returns: the lines of the 50 longest due keys, each head before the event
-- waiting behind it.
CREATE FUNCTION pg_temp.due(sub integer)
  RETURNS TABLE (n bigint, key text, attempt integer) LANGUAGE plpgsql AS $fn$
BEGIN
  RETURN QUERY EXECUTE format(
    'SELECT row_number() OVER (), d.key, d.attempt FROM (%s) d(event_id, event, key, attempt, f, e)',
    evproc.statement_sql('due_retries')) USING sub, 0, 100;
END $fn$;
SELECT count(*) AS taken, count(DISTINCT key) AS keys, max(substr(key, 2)::int) AS last_key,
       string_agg(key || ':' || attempt, ',' ORDER BY n) FILTER (WHERE n <= 4) AS first_rows
  FROM pg_temp.due(:st_sub);
RESET plan_cache_mode;
DEALLOCATE ALL;
DELETE FROM evproc.retry WHERE subscription_id = :st_sub;

-- The claim where units are marked ready (issue 18, docs/design.md "Claiming a unit"):
-- beside 4,000 idle units (500 more subscriptions, none ready, no retries), it reads the
-- ready units' and the due retries' partial indexes, never every progress row: no
-- sequential scan of progress, and no plan node handles more than a few rows.
SELECT count(evproc_subscribe('st_idle_' || n, 'st.t', 'st_handle', run_as => 'evproc_st_app'))
  FROM generate_series(1, 500) n;
UPDATE evproc.progress p SET ready = false
  FROM evproc.subscription s WHERE s.id = p.subscription_id AND s.name LIKE 'st\_idle\_%';
UPDATE evproc.progress p SET ready = true
  FROM evproc.subscription s WHERE s.id = p.subscription_id AND s.name = 'st_2' AND p.partition < 2;
-- (Autovacuum removes the index entries of the rows' versions from before.)
VACUUM ANALYZE evproc.progress, evproc.subscription;
SELECT format('PREPARE st_claim_unit AS ') || evproc.statement_sql('claim_unit') \gexec
SET plan_cache_mode = force_generic_plan;
SET enable_seqscan = off;  -- as the workers run it (src/delivery_plans.cpp)
SELECT count(*) FILTER (WHERE line ~ 'progress_ready_idx') AS ready_index,
       count(*) FILTER (WHERE line ~ 'progress_retry_due_idx') AS retry_index,
       count(*) FILTER (WHERE line ~ 'Seq Scan on progress') AS progress_scans,
       count(*) FILTER (WHERE line ~ 'Seq Scan on subscription|Hash') AS every_subscription,
       bool_or(line ~ 'LockRows') AS locked, bool_or(line ~ '^ *Limit') AS one_unit
  FROM pg_temp.plan('EXECUTE st_claim_unit') line;
BEGIN;
SELECT pg_temp.most_rows('EXECUTE st_claim_unit') <= 40 AS claim_bounded;
ROLLBACK;
RESET enable_seqscan;
RESET plan_cache_mode;
DEALLOCATE ALL;
SELECT count(evproc_unsubscribe('st_idle_' || n)) FROM generate_series(1, 500) n;

-- Under a transaction held open (docs/performance.md "Under a transaction held open"):
-- no version of a progress row can be pruned, and a look-up by key that starts from the
-- oldest walks them all. The claim of a hinted unit and the advance find the newest
-- version first (a backward scan, LIMIT 1) and then use its ctid; the claim that reads
-- every ready unit walks the whole history. Here 4,000 versions of one unit's row,
-- written inside this transaction (so none can be pruned), flipping ready as batches and
-- ticks do.
SELECT id AS st_two, topic_id AS st_topic FROM evproc.subscription WHERE name = 'st_2' \gset
SELECT format('PREPARE st_%s%s AS ', name, types) || evproc.statement_sql(name)
  FROM (VALUES ('claim_hinted', '(int, int)'), ('claim_unit', ''),
               ('advance_ready', '(int, int, bigint, bigint, bigint, timestamptz, boolean, '
                                 'bigint, boolean)'),
               ('flag_ready', '(int[], int[], int[])')) s(name, types) \gexec
SET plan_cache_mode = force_generic_plan;
CREATE FUNCTION pg_temp.pages(statement text) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
  line text;
  most bigint := 0;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || statement LOOP
    most := greatest(most, coalesce(substring(line FROM 'shared hit=(\d+)')::bigint, 0)
                           + coalesce(substring(line FROM 'read=(\d+)')::bigint, 0));
  END LOOP;
  RETURN most;
END $fn$;
CREATE FUNCTION pg_temp.rows(statement text) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
  n bigint;
BEGIN
  EXECUTE statement;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $fn$;
BEGIN;
DO $$
BEGIN
  FOR i IN 1..4000 LOOP
    UPDATE evproc.progress p SET ready = (i % 2 = 0), last_batch_at = now(), batches = i
      FROM evproc.subscription s
     WHERE s.id = p.subscription_id AND s.name = 'st_2' AND p.partition = 0;
  END LOOP;
END $$;
SELECT pg_temp.rows(format('EXECUTE st_claim_hinted(%s, 0)', :st_two)) AS hinted_claimed,
       pg_temp.pages(format('EXECUTE st_claim_hinted(%s, 0)', :st_two)) < 15 AS hinted_few_pages,
       pg_temp.pages(format('EXECUTE st_advance_ready(%s, 0, 0, NULL, NULL, NULL, false, 1, NULL)',
                            :st_two)) < 25 AS advance_few_pages;
-- (Both read about ten pages, with 2,000 versions or 6,000; by key from the oldest
-- version they read over a hundred, and the claim of every ready unit reads 40-90.)
-- The advance moved the newest version: batches = 4000 + 1.
SELECT batches, delivered FROM evproc.progress WHERE subscription_id = :st_two AND partition = 0;
-- A unit that is not ready is not claimed by its hint (the newest version says so).
UPDATE evproc.progress SET ready = false WHERE subscription_id = :st_two AND partition = 0;
SELECT pg_temp.rows(format('EXECUTE st_claim_hinted(%s, 0)', :st_two)) AS not_ready_claimed;
-- The launcher's flagging finds it the same way, from the launcher's map of units (not
-- through an index of progress), marks it, and names it for the workers. (About 60
-- pages, most of them the update's search for room and its index entries, with 4,000
-- versions as with 8,000; through progress_slot_idx it read every version.)
SELECT pg_temp.pages(format('EXECUTE st_flag_ready(ARRAY[%s], ARRAY[0], ARRAY[evproc.slot_of(%s, 0)])',
                            :st_two, :st_topic)) < 100 AS flag_few_pages;
SELECT ready FROM evproc.progress WHERE subscription_id = :st_two AND partition = 0;
UPDATE evproc.progress SET ready = false WHERE subscription_id = :st_two AND partition = 0;
CREATE TEMP TABLE flag_out (marked, waiting, ids, partitions) AS
  EXECUTE st_flag_ready(ARRAY[:st_two], ARRAY[0], ARRAY[1]);
SELECT marked, waiting, ids = ARRAY[:st_two] AS hinted_it, partitions FROM flag_out;
ROLLBACK;
RESET plan_cache_mode;
DEALLOCATE ALL;

SELECT count(evproc_unsubscribe('st_' || n)) FROM generate_series(1, 4) n;
SELECT evproc_drop_topic('st.t');
DROP FUNCTION st_handle(evproc.event);
DROP OWNED BY evproc_st_app;
DROP ROLE evproc_st_app;
