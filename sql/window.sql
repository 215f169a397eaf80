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
-- its bounds bound as values uses event_window_idx in both branches: cost follows the
-- window, not the table.
SELECT cardinality(evproc_enqueue_batch('win', (SELECT jsonb_agg(jsonb_build_object(
         'key', 'k' || g, 'payload', jsonb_build_object('n', g))) FROM generate_series(1, 10000) g))) AS loaded;
SELECT cardinality(evproc_enqueue_batch('win', (SELECT jsonb_agg(jsonb_build_object(
         'key', 'k' || g, 'payload', jsonb_build_object('n', g))) FROM generate_series(1, 10000) g))) AS loaded;
ANALYZE evproc.log;
SELECT format('PREPARE window_%s(int, int, xid8[], xid8, pg_snapshot, xid8, bigint, bigint, timestamptz) AS ', part)
       || evproc.window_sql(part) FROM unnest(ARRAY['pending', 'range']) part \gexec
-- The plan's shape, without the literal bounds (which differ from run to run).
CREATE FUNCTION pg_temp.plan_shape(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || statement LOOP
    IF line !~ '(Cond|Filter|Recheck):' THEN RETURN NEXT line; END IF;
  END LOOP;
END $fn$;
-- The whole log of the partition as one window (xid from 0): both parts read only the
-- unit's rows through event_window_idx and sort them by id, stopping at the batch limit
-- Workers keep windows about one tick wide, so the sort is small.
SELECT part, bool_or(plan ~ 'event_window_idx') AS uses_window_index,
       bool_or(plan ~ 'Seq Scan') AS seq_scan, bool_or(plan ~ '^ *Limit') AS limited
  FROM unnest(ARRAY['pending', 'range']) part, pg_temp.plan_shape(format(
  'EXECUTE window_%s(%s, 1, ARRAY[pg_snapshot_xmin(pg_current_snapshot())], ''0'', '
  'pg_current_snapshot(), pg_snapshot_xmax(pg_current_snapshot()), 0, 100, ''-infinity'')',
  part, :win_topic)) AS plan GROUP BY part ORDER BY part;
-- Also as the generic plan a worker keeps.
SET plan_cache_mode = force_generic_plan;
SELECT part, bool_or(plan ~ 'event_window_idx') AS uses_window_index,
       bool_or(plan ~ 'Seq Scan') AS seq_scan, bool_or(plan ~ '^ *Limit') AS limited
  FROM unnest(ARRAY['pending', 'range']) part, pg_temp.plan_shape(format(
  'EXECUTE window_%s(%s, 1, ARRAY[pg_snapshot_xmin(pg_current_snapshot())], ''0'', '
  'pg_current_snapshot(), pg_snapshot_xmax(pg_current_snapshot()), 0, 100, ''-infinity'')',
  part, :win_topic)) AS plan GROUP BY part ORDER BY part;
RESET plan_cache_mode;
