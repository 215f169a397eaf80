-- Storage and retention (extension/retention.sql): log partitions created ahead of the
-- xid counter, rows routed to them, a partition dropped only once it is closed, past the
-- retention of its topics and passed by every subscription; the history bound that
-- follows, and the default partition as the overflow. Maintenance is stepped by hand
-- with evproc.maintain_log() (the launcher serves another database here); partition
-- names and xids differ from run to run, so they are compared, not shown.
\i sql/include/try.sql

CREATE ROLE evproc_rt_app;
GRANT USAGE ON SCHEMA evproc TO evproc_rt_app;
CREATE TABLE rt_seen (sub text, id bigint, n int);
GRANT INSERT ON rt_seen TO evproc_rt_app;
CREATE FUNCTION rt_record(events evproc.event[]) RETURNS void LANGUAGE sql
AS $fn$ INSERT INTO rt_seen SELECT 'rt', e.id, (e.payload->>'n')::int FROM unnest(events) e $fn$;
GRANT EXECUTE ON FUNCTION rt_record(evproc.event[]) TO evproc_rt_app;

\i sql/include/burn_xids.sql

-- The partitions around the current xid: how many hold it, how many are ahead of it,
-- whether the one ahead starts where the current one ends, and whether the catalog lists
-- exactly the attached partitions.
CREATE FUNCTION pg_temp.layout()
  RETURNS TABLE (holding_current_xid bigint, ahead bigint, ahead_adjacent boolean, catalog_matches boolean)
  LANGUAGE sql AS $fn$
  WITH c AS (SELECT pg_current_xact_id() AS x)
  SELECT (SELECT count(*) FROM evproc.log_partition p WHERE p.xid_from <= c.x AND c.x < p.xid_to),
         (SELECT count(*) FROM evproc.log_partition p WHERE p.xid_from > c.x),
         EXISTS (SELECT 1 FROM evproc.log_partition a JOIN evproc.log_partition b ON b.xid_from = a.xid_to
                  WHERE a.xid_from <= c.x AND c.x < a.xid_to),
         (SELECT array_agg(name ORDER BY name) FROM evproc.log_partition)
           IS NOT DISTINCT FROM (SELECT array_agg(r.relname::text ORDER BY r.relname) FROM pg_inherits i JOIN pg_class r ON r.oid = i.inhrelid
               WHERE i.inhparent = 'evproc.log'::regclass AND r.relname <> 'log_default')
    FROM c
$fn$;

-- Runs batches until no unit has work.
CREATE FUNCTION pg_temp.drain() RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
  r record;
  delivered bigint := 0;
BEGIN
  FOR i IN 1..100 LOOP
    r := evproc.deliver_batch();
    IF NOT r.worked THEN RETURN delivered; END IF;
    delivered := delivered + r.delivered;
  END LOOP;
  RAISE EXCEPTION 'delivery does not come to an end';
END $fn$;

-- An error's SQLSTATE, message, detail and hint, timestamps masked.
CREATE FUNCTION pg_temp.error_of(statement text) RETURNS TABLE (field text, value text)
  LANGUAGE plpgsql AS $fn$
DECLARE
  st text; msg text; det text; hnt text;
BEGIN
  EXECUTE statement;
  RETURN QUERY SELECT 'result', 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                          hnt = PG_EXCEPTION_HINT;
  RETURN QUERY SELECT f, regexp_replace(v, '\w{3} \w{3} \d\d? \d\d:\d\d:\d\d(\.\d+)? \d{4} \w+', '<ts>', 'g')
                 FROM (VALUES ('sqlstate', st), ('message', msg), ('detail', det), ('hint', hnt)) x(f, v);
END $fn$;

-- 1. Partitions are kept ahead of the xid counter: the one holding the current xid and
--    the next one, adjacent, attached, and listed in evproc.log_partition.
SELECT evproc.maintain_log();
SELECT * FROM pg_temp.layout();
SELECT count(*) AS default_rows FROM evproc.log_default;

-- 2. When the counter reaches the partition ahead, maintenance opens it and creates the
--    next one; rows enqueued now land in it.
SELECT name AS pa, xid_from AS pa_from, xid_to AS pa_to
  FROM evproc.log_partition WHERE xid_from > pg_current_xact_id() \gset
CALL pg_temp.burn_xids_to(:'pa_from');
SELECT evproc.maintain_log();
SELECT * FROM pg_temp.layout();
SELECT opened_at IS NOT NULL AS pa_opened, closed_at IS NULL AS pa_open
  FROM evproc.log_partition WHERE name = :'pa';
-- The partition ahead is at least 100,000 xids wide (the floor).
SELECT (xid_to::text::numeric - xid_from::text::numeric) >= 100000 AS wide_enough
  FROM evproc.log_partition WHERE xid_from > pg_current_xact_id();

SELECT evproc_create_topic('rt', partitions => 1, retention => '1 hour') AS rt_topic \gset
SELECT evproc_subscribe('rt_sub', 'rt', 'rt_record', run_as => 'evproc_rt_app') > 0 AS subscribed;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT count(*) AS enqueued FROM generate_series(1, 3) g, LATERAL evproc_enqueue('rt', 'k' || g, jsonb_build_object('n', g));
SELECT tableoid::regclass::text = 'evproc.' || :'pa' AS in_partition_ahead, count(*)
  FROM evproc.log WHERE topic_id = :rt_topic GROUP BY 1;

-- 3. Past its upper bound (every xid below it finished), the partition closes with the
--    topics that have events in it. It is not dropped before the topic's retention.
CALL pg_temp.burn_xids_to(:'pa_to');
SELECT evproc.maintain_log();
SELECT closed_at IS NOT NULL AS closed, topic_ids = ARRAY[:rt_topic] AS only_rt
  FROM evproc.log_partition WHERE name = :'pa';
SELECT held_by, topics FROM evproc_log_partitions WHERE name = :'pa';
SELECT count(*) AS pa_kept FROM evproc.log_partition WHERE name = :'pa';

-- 4. Past retention, it is still kept while a subscription has not handled its events
--    (rt_sub has not run yet): the log horizon is below its upper bound.
SELECT evproc_alter_topic('rt', retention => '1 millisecond');
SELECT pg_sleep(0.01);
SELECT evproc.maintain_log();
SELECT held_by FROM evproc_log_partitions WHERE name = :'pa';
SELECT evproc.log_horizon() < :'pa_to' AS horizon_below, count(*) AS pa_kept
  FROM evproc.log_partition WHERE name = :'pa';
SELECT count(*) AS rows_kept FROM evproc.log WHERE topic_id = :rt_topic;

-- 5. Once every unit has passed it, it is dropped: the table, its rows and its catalog
--    row go, and the topic's history before the partition's close time is marked gone.
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain() AS delivered;
SELECT string_agg(n::text, ',' ORDER BY id) AS seen FROM rt_seen;
SELECT closed_at AS pa_closed_at FROM evproc.log_partition WHERE name = :'pa' \gset
SELECT evproc.log_horizon() >= :'pa_to' AS horizon_passed;
SELECT evproc.maintain_log();
SELECT count(*) AS pa_rows_left FROM evproc.log_partition WHERE name = :'pa';
SELECT to_regclass('evproc.' || :'pa') IS NULL AS pa_table_dropped;
SELECT count(*) AS rt_rows_left FROM evproc.log WHERE topic_id = :rt_topic;
SELECT history_dropped_before = :'pa_closed_at' AS bound_is_close_time FROM evproc.topic WHERE id = :rt_topic;
-- Other topics' history is untouched.
SELECT count(*) AS other_bounds FROM evproc.topic WHERE id <> :rt_topic AND history_dropped_before IS NOT NULL;
SELECT * FROM pg_temp.layout();

-- 6. Asking for history older than what is retained is an error (22023) naming the bound,
--    not a silent partial delivery; from the bound on, or '-infinity' (whatever is
--    retained), is accepted.
SELECT * FROM pg_temp.error_of(format(
  $$SELECT evproc_subscribe('rt_old', 'rt', 'rt_record', start_from => %L::timestamptz - interval '1 second', run_as => 'evproc_rt_app')$$,
  :'pa_closed_at'));
SELECT * FROM pg_temp.error_of(format('SELECT evproc.check_history_retained(%s, %L::timestamptz - interval ''1 microsecond'')',
                                      :rt_topic, :'pa_closed_at'));
SELECT pg_temp.try(format('SELECT evproc.check_history_retained(%s, %L)', :rt_topic, :'pa_closed_at'));
SELECT pg_temp.try(format('SELECT evproc.check_history_retained(%s, NULL)', :rt_topic));
SELECT pg_temp.try('SELECT evproc.check_history_retained(-1, now())');
SELECT count(*) AS rt_old_created FROM evproc.subscription WHERE name = 'rt_old';
SELECT evproc_subscribe('rt_all', 'rt', 'rt_record', start_from => '-infinity', run_as => 'evproc_rt_app') > 0 AS from_retained;
SELECT evproc_subscribe('rt_bound', 'rt', 'rt_record', start_from => :'pa_closed_at', run_as => 'evproc_rt_app') > 0 AS from_bound;
-- A subscription starting from history holds back every drop until it has run.
SELECT evproc.log_horizon() = '1' AS held_from_start;
SELECT evproc_unsubscribe('rt_all');
SELECT evproc_unsubscribe('rt_bound');

-- 7. Overflow: when no partition holds the current xid (a burst outran maintenance;
--    here the partitions holding it and ahead of it are taken away), events go to the
--    default partition. Maintenance then creates a partition above the current xid by
--    evproc.partition_margin() (xids below may be in use by transactions about to
--    enqueue: partition_attach.spec), so above the default partition's rows too (ATTACH
--    refuses a range it holds rows of). Events go on to the default partition until the
--    xid counter reaches it, then there.
DO $do$
DECLARE
  part text;
BEGIN
  FOR part IN DELETE FROM evproc.log_partition WHERE xid_to > pg_current_xact_id() RETURNING name LOOP
    EXECUTE format('DROP TABLE evproc.%I', part);
  END LOOP;
END $do$;
SELECT * FROM pg_temp.layout();
SELECT count(*) AS enqueued FROM generate_series(11, 12) g, LATERAL evproc_enqueue('rt', 'k' || g, jsonb_build_object('n', g));
SELECT tableoid::regclass AS overflow_to, count(*) FROM evproc.log WHERE topic_id = :rt_topic GROUP BY 1;
SELECT max(xid) AS stray_max, max(enqueued_at) AS stray_newest FROM evproc.log_default \gset
SELECT evproc.maintain_log();
SELECT * FROM pg_temp.layout();
SELECT xid_from > pg_current_xact_id() AS starts_above_current_xid,
       xid_from > :'stray_max'::xid8 AS starts_above_default_rows
  FROM evproc.log_partition WHERE xid_from > pg_current_xact_id();
SELECT evproc_enqueue('rt', 'k13', '{"n": 13}') > 0 AS enqueued;
SELECT min(xid_from) AS next_from FROM evproc.log_partition WHERE xid_from > pg_current_xact_id() \gset
CALL pg_temp.burn_xids_to(:'next_from');
SELECT evproc_enqueue('rt', 'k14', '{"n": 14}') > 0 AS enqueued;
SELECT tableoid::regclass = 'evproc.log_default'::regclass AS in_default, count(*)
  FROM evproc.log WHERE topic_id = :rt_topic GROUP BY 1 ORDER BY 1;
SELECT max(enqueued_at) AS stray_newest FROM evproc.log_default \gset

-- 8. The default partition is emptied under the same rules as any partition: not while
--    rt_sub has not handled its rows, then (retention 1 ms, passed by every unit) at
--    once, with TRUNCATE; the history bound moves past its newest event.
SELECT evproc.maintain_log();
SELECT count(*) AS default_rows_kept FROM evproc.log_default;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain() AS delivered;
SELECT string_agg(n::text, ',' ORDER BY id) AS seen FROM rt_seen;
SELECT evproc.maintain_log();
SELECT count(*) AS default_rows_left FROM evproc.log_default;
SELECT history_dropped_before = :'stray_newest'::timestamptz + interval '1 microsecond' AS bound_past_default_rows
  FROM evproc.topic WHERE id = :rt_topic;
SELECT count(*) AS rt_rows_left FROM evproc.log WHERE topic_id = :rt_topic;

-- 9. From evproc.maintain() as the launcher runs it; a second maintenance meanwhile
--    skips (one at a time), and a lock it cannot get in time leaves the work to the
--    next run (t/007_retention.pl, with a running launcher).
SELECT evproc.maintain();
SELECT * FROM pg_temp.layout();

-- 10. Dedup ids past their window are deleted by maintenance, through the expiry index.
SELECT evproc_create_topic('rt_dedup', partitions => 1, dedup_window => '1 hour') > 0 AS created;
SELECT count(*) FROM generate_series(1, 5) g, LATERAL evproc_enqueue('rt_dedup', NULL, '{}', dedup_id => 'd' || g);
UPDATE evproc.dedup d SET expires_at = now() - interval '1 second'
  FROM evproc.topic t WHERE t.id = d.topic_id AND t.name = 'rt_dedup' AND d.dedup_id IN ('d1', 'd2');
SELECT evproc.expire_dedup() AS expired;
SELECT string_agg(dedup_id, ',' ORDER BY dedup_id) AS kept FROM evproc.dedup d
  JOIN evproc.topic t ON t.id = d.topic_id WHERE t.name = 'rt_dedup';
CREATE FUNCTION pg_temp.plan(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || statement LOOP
    RETURN NEXT line;
  END LOOP;
END $fn$;
SET enable_seqscan = off;
SELECT bool_or(plan ~ 'Index Scan on dedup_expiry_idx|Index Scan using dedup_expiry_idx') AS uses_expiry_index
  FROM pg_temp.plan('SELECT ctid FROM evproc.dedup WHERE expires_at < now() ORDER BY expires_at LIMIT 10000') plan;
RESET enable_seqscan;

-- 11. evproc_event_status finds an event through the log's BRIN indexes on id, whose
--     new ranges maintenance summarizes: the look-up reads a range or two of 128 heap
--     pages, not every page filled since the last VACUUM (here about 2,700 of them),
--     nor the window index's entry of every event (about 330 pages). Counted by the
--     server's own I/O statistics of the log's partitions.
SELECT evproc_create_topic('rt_brin', partitions => 1) > 0 AS created;
SELECT count(*) AS enqueued
  FROM generate_series(1, 60000) g,
       LATERAL evproc_enqueue('rt_brin', 'k' || g % 100, jsonb_build_object('n', g, 'pad', repeat('x', 200)));
SELECT max(l.id) - 30000 AS brin_probe FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
 WHERE t.name = 'rt_brin' \gset
SELECT evproc.maintain();
CREATE FUNCTION pg_temp.log_pages_touched() RETURNS bigint LANGUAGE sql AS $fn$
  SELECT sum(coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0)
             + coalesce(idx_blks_read, 0) + coalesce(idx_blks_hit, 0))::bigint
    FROM pg_statio_all_tables
   WHERE schemaname = 'evproc' AND relname ~ '^log_(p[0-9]+|default)$'
$fn$;
SELECT pg_stat_force_next_flush();
SELECT pg_temp.log_pages_touched() AS pages_before \gset
SELECT count(*) AS subscriptions, pg_stat_force_next_flush() IS NULL AS flushing
  FROM evproc_event_status(:brin_probe);
SELECT pg_temp.log_pages_touched() - :pages_before BETWEEN 1 AND 200 AS reads_a_range_or_two;
SELECT evproc.summarize_log_ids() AS left_to_summarize;

-- 12. Maintenance moves an idle unit to the newest tick only when no event waits in its
--     window (a first look at the window index, then the window read): a paused
--     subscription with an event stays where it is, one without moves on; once resumed,
--     the held event is delivered.
SELECT evproc_create_topic('rt_idle', partitions => 1) > 0 AS created,
       evproc_create_topic('rt_held', partitions => 1) > 0 AS created_too;
SELECT evproc_subscribe('rt_idle_sub', 'rt_idle', 'rt_record', run_as => 'evproc_rt_app') > 0 AS subscribed,
       evproc_subscribe('rt_held_sub', 'rt_held', 'rt_record', run_as => 'evproc_rt_app') > 0 AS subscribed_too;
SELECT evproc_pause('rt_idle_sub'), evproc_pause('rt_held_sub');
SELECT evproc.take_tick() > 0 AS ticked;
SELECT evproc_enqueue('rt_held', 'k', '{"n": 900012}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT s.name, p.tick_id > 0 AS placed FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
 WHERE s.name IN ('rt_idle_sub', 'rt_held_sub') ORDER BY s.name;
SELECT evproc.maintain();
SELECT s.name, p.tick_id = (SELECT max(id) FROM evproc.tick) AS at_newest
  FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
 WHERE s.name IN ('rt_idle_sub', 'rt_held_sub') ORDER BY s.name;
SELECT evproc_resume('rt_held_sub');
SELECT pg_temp.drain() >= 1 AS drained;
SELECT count(*) AS held_event_delivered FROM rt_seen WHERE n = 900012;
SELECT evproc_unsubscribe('rt_idle_sub'), evproc_unsubscribe('rt_held_sub');
SELECT evproc_drop_topic('rt_idle'), evproc_drop_topic('rt_held');

-- Clean up.
SELECT evproc_unsubscribe('rt_sub');
SELECT evproc_drop_topic('rt');
SELECT evproc_drop_topic('rt_dedup');
SELECT evproc_drop_topic('rt_brin');
DROP FUNCTION rt_record(evproc.event[]);
DROP TABLE rt_seen;
REVOKE USAGE ON SCHEMA evproc FROM evproc_rt_app;
DROP ROLE evproc_rt_app;
