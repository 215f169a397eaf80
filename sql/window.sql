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

SELECT pg_temp.try(format('SELECT * FROM evproc.window_events(%s, 0, %s, %s)', :win_topic, :tick_b, :tick_b));
SELECT pg_temp.try(format('SELECT * FROM evproc.window_events(%s, 0, %s, %s)', :win_topic, :tick_c, :tick_a));
SELECT pg_temp.try(format('SELECT * FROM evproc.window_events(%s, 0, -1, %s)', :win_topic, :tick_a));

-- With a realistic log (20,000 events over 4 partitions, analyzed), the window read with
-- its bounds bound as values uses event_window_idx in both branches: cost follows the
-- window, not the table.
SELECT cardinality(evproc_enqueue_batch('win', (SELECT jsonb_agg(jsonb_build_object(
         'key', 'k' || g, 'payload', jsonb_build_object('n', g))) FROM generate_series(1, 10000) g))) AS loaded;
SELECT cardinality(evproc_enqueue_batch('win', (SELECT jsonb_agg(jsonb_build_object(
         'key', 'k' || g, 'payload', jsonb_build_object('n', g))) FROM generate_series(1, 10000) g))) AS loaded;
ANALYZE evproc.log;
SELECT 'PREPARE window_read(int, int, xid8[], xid8, pg_snapshot, xid8) AS ' || evproc.window_sql() \gexec
-- The plan's shape, without the literal bounds (which differ from run to run).
CREATE FUNCTION pg_temp.plan_shape(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || statement LOOP
    IF line !~ '(Cond|Filter|Recheck):' THEN RETURN NEXT line; END IF;
  END LOOP;
END $fn$;
SELECT pg_temp.plan_shape(format(
  'EXECUTE window_read(%s, 1, ARRAY[pg_snapshot_xmin(pg_current_snapshot())], '
  'pg_snapshot_xmax(pg_current_snapshot()), pg_current_snapshot(), '
  '(pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 10)::text::xid8)', :win_topic)) AS plan;
