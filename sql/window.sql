-- Snapshot windows (DESIGN §3): ticks, window reads, and their plans.
\i sql/include/try.sql

SELECT evproc_create_topic('win', partitions => 4) AS win_topic \gset
SELECT evproc.take_tick() AS tick_a \gset
SELECT evproc_enqueue('win', 'w', '{"n": 1}') > 0 AS enqueued;
SELECT evproc_enqueue('win', 'w', '{"n": 2}') > 0 AS enqueued;
SELECT evproc.take_tick() AS tick_b \gset
SELECT evproc_enqueue('win', 'w', '{"n": 3}') > 0 AS enqueued;
SELECT evproc.take_tick() AS tick_c \gset
SELECT partition AS w_partition FROM evproc.log WHERE key = 'w' LIMIT 1 \gset

-- Each window holds exactly the events committed between its ticks, in id order.
SELECT string_agg(payload->>'n', ',' ORDER BY id) AS a_to_b
  FROM evproc.window_events(:win_topic, :w_partition, :tick_a, :tick_b);
SELECT string_agg(payload->>'n', ',' ORDER BY id) AS b_to_c
  FROM evproc.window_events(:win_topic, :w_partition, :tick_b, :tick_c);
SELECT string_agg(payload->>'n', ',' ORDER BY id) AS a_to_c
  FROM evproc.window_events(:win_topic, :w_partition, :tick_a, :tick_c);
-- Other partitions of the topic see nothing of key w.
SELECT count(*) AS other_partition
  FROM evproc.window_events(:win_topic, (:w_partition + 1) % 4, :tick_a, :tick_c);

-- (Tick ids depend on the tests before this one: the messages show them as N.)
SELECT regexp_replace(pg_temp.try(format('SELECT * FROM evproc.window_events(%s, 0, %s, %s)', :win_topic, :tick_b, :tick_b)), 'ticks -?\d+ and \d+', 'ticks N and N');
SELECT regexp_replace(pg_temp.try(format('SELECT * FROM evproc.window_events(%s, 0, %s, %s)', :win_topic, :tick_c, :tick_a)), 'ticks -?\d+ and \d+', 'ticks N and N');
SELECT regexp_replace(pg_temp.try(format('SELECT * FROM evproc.window_events(%s, 0, -1, %s)', :win_topic, :tick_a)), 'ticks -?\d+ and \d+', 'ticks N and N');

-- With a realistic log (20,000 events over 4 partitions, analyzed), the window read with
-- its bounds bound as values uses the window index (log_pN_window_idx, on each log
-- partition) in both branches, and reads only the log partition the window spans: cost
-- follows the window, not the table nor the retained history.
SELECT pg_snapshot_xmax(pg_current_snapshot()) AS load_from \gset
SELECT cardinality(evproc_enqueue_batch('win', (SELECT jsonb_agg(jsonb_build_object(
         'key', 'k' || g, 'payload', jsonb_build_object('n', g))) FROM generate_series(1, 10000) g))) AS loaded;
SELECT cardinality(evproc_enqueue_batch('win', (SELECT jsonb_agg(jsonb_build_object(
         'key', 'k' || g, 'payload', jsonb_build_object('n', g))) FROM generate_series(1, 10000) g))) AS loaded;
ANALYZE evproc.log;
-- Exactly the statements the workers prepare (evproc.statement_sql returns them), planned
-- as the workers plan them, with enable_sort and jit off (see ReadWindow in src/delivery_read.cpp).
SET enable_sort = off;
SET jit = off;
SELECT format('PREPARE window_%s(int, int, xid8[], xid8, pg_snapshot, xid8, bigint, bigint, timestamptz, text, int) AS ', part)
       || evproc.statement_sql('window_' || part) FROM unnest(ARRAY['pending', 'range']) part \gexec
-- Both loads in one log partition, and more than one partition to prune (the default
-- partition, the one created ahead).
SELECT count(DISTINCT tableoid) AS load_partitions,
       (SELECT count(*) FROM pg_inherits WHERE inhparent = 'evproc.log'::regclass) > 2 AS more_partitions
  FROM evproc.log WHERE xid >= :'load_from';
CREATE FUNCTION pg_temp.plan(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || statement LOOP
    RETURN NEXT line;
  END LOOP;
END $fn$;
-- The window over both loads: the pending part as if their transactions were open at
-- tick A (one look-up per xid, xid in the index condition), the range part from before
-- them (a walk over its distinct xids). Both read only the unit's rows through the window
-- index of the one partition that holds them, per transaction in id order, and stop at
-- the batch limit (below: how many rows that is).
SELECT ARRAY(SELECT DISTINCT xid FROM evproc.log WHERE xid >= :'load_from' ORDER BY xid) AS load_xids \gset
CREATE FUNCTION pg_temp.window_plans(topic integer, lo xid8, xids xid8[])
  RETURNS TABLE (part text, uses_window_index boolean, xid_in_index_cond boolean,
                 seq_scan boolean, limited boolean, partitions_read bigint, pruned_at_start boolean)
  LANGUAGE sql AS $fn$
  SELECT part, bool_or(plan ~ 'log_p\d+_window_idx'),
         bool_or(plan ~ CASE part WHEN 'pending' THEN 'Index Cond: .*\(xid = x\.xid\)'
                                  ELSE 'Index Cond: .*\(xid >= ' END),
         bool_or(plan ~ 'Seq Scan'), bool_or(plan ~ '^ *(->  )?Limit'),
         count(DISTINCT substring(plan FROM ' on (log_(?:p\d+|default))(?: |$)')),
         bool_or(plan ~ 'Subplans Removed: [1-9]')
    FROM unnest(ARRAY['pending', 'range']) part, pg_temp.plan(format(
    'EXECUTE window_%s(%s, 1, %L, %L, '
    'pg_current_snapshot(), pg_snapshot_xmax(pg_current_snapshot()), 0, 100, ''-infinity'', ''win'', NULL)',
    part, topic, xids, CASE part WHEN 'pending' THEN pg_snapshot_xmax(pg_current_snapshot()) ELSE lo END)) AS plan
   GROUP BY part ORDER BY part
$fn$;
SELECT * FROM pg_temp.window_plans(:win_topic, :'load_from', :'load_xids');
-- Also as the generic plan a worker keeps: the partitions are pruned when it starts.
SET plan_cache_mode = force_generic_plan;
SELECT * FROM pg_temp.window_plans(:win_topic, :'load_from', :'load_xids');
RESET plan_cache_mode;

-- A read costs in proportion to the batch, not to the window (issue 17): inside one
-- transaction the window index is in id order, so each part reads, per transaction,
-- from the cursor up to the batch's bound through the index. From a cursor in the middle
-- of the first load (2,500 rows of the unit per transaction), no plan node handles more
-- than two batches of rows, and the read is exactly the next 100 ids of the window; from
-- a cursor 40 rows before the end of the first transaction, the batch merges both.
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
SELECT min(xid) AS first_xid FROM evproc.log WHERE xid >= :'load_from' \gset
SELECT (SELECT id FROM evproc.log WHERE topic_id = :win_topic AND partition = 1 AND xid = :'first_xid'
         ORDER BY id OFFSET 1250 LIMIT 1) AS mid_cursor,
       (SELECT id FROM evproc.log WHERE topic_id = :win_topic AND partition = 1 AND xid = :'first_xid'
         ORDER BY id DESC OFFSET 40 LIMIT 1) AS late_cursor \gset
CREATE FUNCTION pg_temp.read(part text, topic integer, lo xid8, xids xid8[], cursor_id bigint)
  RETURNS TABLE (id bigint) LANGUAGE plpgsql AS $fn$
BEGIN
  RETURN QUERY EXECUTE 'SELECT r.id FROM (' || evproc.statement_sql('window_' || part) || ') r'
    USING topic, 1, xids, CASE part WHEN 'pending' THEN pg_snapshot_xmax(pg_current_snapshot()) ELSE lo END,
          pg_current_snapshot(), pg_snapshot_xmax(pg_current_snapshot()), cursor_id, 100::bigint,
          '-infinity'::timestamptz, 'win'::text, NULL::integer;
END $fn$;
CREATE FUNCTION pg_temp.expected(topic integer, lo xid8, cursor_id bigint) RETURNS SETOF bigint
  LANGUAGE sql AS $fn$
  SELECT id FROM evproc.log WHERE topic_id = topic AND partition = 1 AND xid >= lo AND id > cursor_id
   ORDER BY id LIMIT 100
$fn$;
SET plan_cache_mode = force_generic_plan;
SELECT part, c.name AS cursor,
       pg_temp.most_rows(format(
         'EXECUTE window_%s(%s, 1, %L, %L, pg_current_snapshot(), '
         'pg_snapshot_xmax(pg_current_snapshot()), %s, 100, ''-infinity'', ''win'', NULL)', part,
         :win_topic, :'load_xids',
         CASE part WHEN 'pending' THEN pg_snapshot_xmax(pg_current_snapshot()) ELSE :'load_from' END,
         c.id)) <= 200 AS at_most_two_batches,
       ARRAY(SELECT pg_temp.read(part, :win_topic, :'load_from', :'load_xids', c.id))
         = ARRAY(SELECT pg_temp.expected(:win_topic, :'load_from', c.id)) AS next_100_ids,
       (SELECT count(DISTINCT l.xid) FROM evproc.log l
         WHERE l.id IN (SELECT pg_temp.read(part, :win_topic, :'load_from', :'load_xids', c.id)))
         AS transactions
  FROM unnest(ARRAY['pending', 'range']) part,
       (VALUES ('middle', :mid_cursor), ('late', :late_cursor)) c(name, id)
 ORDER BY part, c.name DESC;

-- Whether each event's key has a parked head is read with the event (issue 19): beside
-- 5,000 parked keys of a subscription in partition 1 (every other key of the loads
-- there, and keys with no event in the window), each part probes retry_unit_idx once
-- per row it returns, no plan node handles more than two batches of rows, and exactly
-- the events of parked keys are flagged. For a unit with no parked keys ($11 NULL) the
-- probe never runs and nothing is flagged.
-- (A pull subscription: no worker delivers it meanwhile.)
CREATE ROLE evproc_win_app;
GRANT USAGE ON SCHEMA evproc TO evproc_win_app;
SELECT evproc_subscribe('win_parked', 'win', NULL, run_as => 'evproc_win_app') AS win_sub \gset
WITH unit_keys AS (
  SELECT DISTINCT key FROM evproc.log WHERE topic_id = :win_topic AND partition = 1 AND xid >= :'load_from'),
parked AS (
  SELECT key FROM (SELECT key, row_number() OVER (ORDER BY key) AS n FROM unit_keys) k WHERE n % 2 = 0
  UNION ALL
  SELECT 'x' || g FROM generate_series(1, 5000 - (SELECT count(*) / 2 FROM unit_keys)) g)
INSERT INTO evproc.retry (subscription_id, partition, key, event_id, event, is_head, attempt,
                          next_attempt_at)
SELECT :win_sub, 1, p.key, -row_number() OVER (),
       ROW(0, 'win', p.key, NULL, '{}', NULL, now(), 1, false)::evproc.event, true, 1, 'infinity'
  FROM parked p;
ANALYZE evproc.retry;
SELECT count(*) AS parked_keys FROM evproc.retry WHERE subscription_id = :win_sub;
CREATE FUNCTION pg_temp.flags(part text, topic integer, lo xid8, xids xid8[], cursor_id bigint, sub integer)
  RETURNS TABLE (id bigint, key text, key_parked boolean) LANGUAGE plpgsql AS $fn$
BEGIN
  RETURN QUERY EXECUTE 'SELECT r.id, r.key, r.parked FROM (' || evproc.statement_sql('window_' || part)
                       || ') r(event, id, key, enqueued_at, parked)'
    USING topic, 1, xids, CASE part WHEN 'pending' THEN pg_snapshot_xmax(pg_current_snapshot()) ELSE lo END,
          pg_current_snapshot(), pg_snapshot_xmax(pg_current_snapshot()), cursor_id, 100::bigint,
          '-infinity'::timestamptz, 'win'::text, sub;
END $fn$;
CREATE FUNCTION pg_temp.analyzed(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || statement LOOP
    RETURN NEXT line;
  END LOOP;
END $fn$;
SET plan_cache_mode = force_generic_plan;
SELECT part, s.name AS unit,
       (SELECT count(*) FROM pg_temp.plan(x.run) l
         WHERE l ~ 'Index (Only )?Scan using retry_unit_idx') AS retry_probes,
       (SELECT count(*) FROM pg_temp.plan(x.run) l WHERE l ~ 'Seq Scan on retry') AS retry_seq_scans,
       (SELECT count(*) FROM pg_temp.analyzed(x.run) l
         WHERE l ~ 'Index (Only )?Scan using retry_unit_idx.*loops=100\)$') AS probed_per_row,
       (SELECT count(*) FROM pg_temp.analyzed(x.run) l
         WHERE l ~ 'Index (Only )?Scan using retry_unit_idx.*never executed') AS never_probed,
       pg_temp.most_rows(x.run) <= 200 AS at_most_two_batches,
       (SELECT count(*) FILTER (WHERE f.key_parked) FROM pg_temp.flags(part, :win_topic, :'load_from', :'load_xids', :mid_cursor, s.sub) f) AS flagged,
       (SELECT bool_and(f.key_parked IS NOT DISTINCT FROM
                        CASE WHEN s.sub IS NOT NULL
                             THEN EXISTS (SELECT 1 FROM evproc.retry r
                                           WHERE r.subscription_id = s.sub AND r.key = f.key) END)
          FROM pg_temp.flags(part, :win_topic, :'load_from', :'load_xids', :mid_cursor, s.sub) f) AS flags_right
  FROM unnest(ARRAY['pending', 'range']) part,
       (VALUES ('parked', :win_sub), ('none', NULL)) s(name, sub),
       LATERAL (SELECT format(
         'EXECUTE window_%s(%s, 1, %L, %L, pg_current_snapshot(), '
         'pg_snapshot_xmax(pg_current_snapshot()), %s, 100, ''-infinity'', ''win'', %s)', part,
         :win_topic, :'load_xids',
         CASE part WHEN 'pending' THEN pg_snapshot_xmax(pg_current_snapshot()) ELSE :'load_from' END,
         :mid_cursor, coalesce(s.sub::text, 'NULL')) AS run) x
 ORDER BY part, s.name DESC;
RESET plan_cache_mode;
SELECT evproc_unsubscribe('win_parked');
DROP OWNED BY evproc_win_app;
DROP ROLE evproc_win_app;
RESET enable_sort;
RESET jit;
