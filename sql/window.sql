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
-- Exactly the statements the workers prepare (evproc.statement_sql returns them).
SELECT format('PREPARE window_%s(int, int, xid8[], xid8, pg_snapshot, xid8, bigint, bigint, timestamptz, text) AS ', part)
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
-- them. Both read only the unit's rows through the window index of the one partition that
-- holds them and sort them by id, stopping at the batch limit. Workers keep windows about
-- one tick wide, so the sort is small.
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
    'pg_current_snapshot(), pg_snapshot_xmax(pg_current_snapshot()), 0, 100, ''-infinity'', ''win'')',
    part, topic, xids, CASE part WHEN 'pending' THEN pg_snapshot_xmax(pg_current_snapshot()) ELSE lo END)) AS plan
   GROUP BY part ORDER BY part
$fn$;
SELECT * FROM pg_temp.window_plans(:win_topic, :'load_from', :'load_xids');
-- Also as the generic plan a worker keeps: the partitions are pruned when it starts.
SET plan_cache_mode = force_generic_plan;
SELECT * FROM pg_temp.window_plans(:win_topic, :'load_from', :'load_xids');
RESET plan_cache_mode;
