-- Operations: dead letters (listing, re-drive, purge) and event status, with delivery
-- stepped by hand with evproc.deliver_batch() (the launcher serves another database here).
\i sql/include/try.sql

-- try_hint(sql): like try(), with the error's hint.
CREATE FUNCTION pg_temp.try_hint(statement text) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
  hint text;
BEGIN
  EXECUTE statement;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
  RETURN SQLSTATE || ': ' || SQLERRM || ' (hint: ' || hint || ')';
END $fn$;

CREATE ROLE evproc_ops_app;
CREATE ROLE evproc_ops_other;
GRANT USAGE ON SCHEMA evproc TO evproc_ops_app;
CREATE TABLE ops_seen (seq bigserial, sub text, id bigint, key text, n int, attempt int,
                       replay boolean, topic text);
GRANT SELECT, INSERT ON ops_seen TO evproc_ops_app;
GRANT USAGE ON SEQUENCE ops_seen_seq_seq TO evproc_ops_app;
-- The payloads (n) the handlers fail on, and the SQLSTATE they fail with.
CREATE TABLE ops_broken (n int PRIMARY KEY, code text NOT NULL DEFAULT 'P0001');
GRANT SELECT ON ops_broken TO evproc_ops_app;

-- Fails the batch when it holds a broken payload (bisection then isolates it), else
-- records every event with the subscription's name.
CREATE FUNCTION ops_handle(sub text, events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  b ops_broken;
BEGIN
  SELECT o.* INTO b FROM unnest(events) e JOIN ops_broken o ON o.n = (e.payload->>'n')::int
   ORDER BY e.id LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'cannot handle n=%', b.n USING ERRCODE = b.code;
  END IF;
  INSERT INTO ops_seen (sub, id, key, n, attempt, replay, topic)
  SELECT sub, e.id, e.key, (e.payload->>'n')::int, e.attempt, e.replay, e.topic FROM unnest(events) e;
END $fn$;
CREATE FUNCTION ops_skip(events evproc.event[]) RETURNS void LANGUAGE sql AS $$ SELECT ops_handle('skip', events) $$;
CREATE FUNCTION ops_block(events evproc.event[]) RETURNS void LANGUAGE sql AS $$ SELECT ops_handle('block', events) $$;
CREATE FUNCTION ops_retry(events evproc.event[]) RETURNS void LANGUAGE sql AS $$ SELECT ops_handle('retry', events) $$;
CREATE FUNCTION ops_history(events evproc.event[]) RETURNS void LANGUAGE sql AS $$ SELECT ops_handle('history', events) $$;
CREATE FUNCTION ops_window(events evproc.event[]) RETURNS void LANGUAGE sql AS $$ SELECT ops_handle('window', events) $$;

\i sql/include/drain.sql

-- The id of the event of topic ops.a with payload n.
CREATE FUNCTION pg_temp.ev(n int) RETURNS bigint LANGUAGE sql AS $$
  SELECT l.id FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
   WHERE t.name = 'ops.a' AND (l.payload->>'n')::int = n $$;
-- A subscription's parked events, in line order, as n:head/blocked/attempt.
CREATE FUNCTION pg_temp.line(sub text) RETURNS text LANGUAGE sql AS $$
  SELECT coalesce(string_agg(format('%s:%s%s@%s', coalesce(r.key, '-'), (r.event).payload->>'n',
                                    CASE WHEN r.blocked THEN ' blocked' WHEN r.is_head THEN ' head' ELSE '' END,
                                    r.attempt), ', ' ORDER BY r.key NULLS FIRST, r.seq), '(empty)')
    FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id WHERE s.name = sub $$;
-- A subscription's dead letters, as key:n.
CREATE FUNCTION pg_temp.dead(sub text) RETURNS text LANGUAGE sql AS $$
  SELECT coalesce(string_agg(coalesce(key, '-') || ':' || (payload->>'n'), ', ' ORDER BY event_id), '(none)')
    FROM evproc_dead_letters WHERE subscription = sub $$;
-- What a subscription's handler got, in order, as key:n@attempt.
CREATE FUNCTION pg_temp.seen(which text) RETURNS text LANGUAGE sql AS $$
  SELECT coalesce(string_agg(coalesce(key, '-') || ':' || n || '@' || attempt, ', ' ORDER BY seq), '(nothing)')
    FROM ops_seen WHERE sub = which $$;
-- Runs batches until one delivers or fails something (units with an empty window only
-- move on); returns that one.
CREATE FUNCTION pg_temp.batch() RETURNS TABLE (subscription text, delivered bigint, failed bigint, dead bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  r record;
BEGIN
  FOR i IN 1..100 LOOP
    r := evproc.deliver_batch();
    EXIT WHEN NOT r.worked;
    IF r.delivered + r.failed > 0 THEN
      RETURN QUERY SELECT r.subscription, r.delivered, r.failed, r.dead;
      RETURN;
    END IF;
  END LOOP;
END $fn$;
-- The plan's shape, without the literal values.
CREATE FUNCTION pg_temp.plan_shape(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
  line text;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || statement LOOP
    IF line !~ '(Cond|Filter):' THEN RETURN NEXT line; END IF;
  END LOOP;
END $fn$;
-- Each event's status per subscription, compactly (subscription:status).
CREATE FUNCTION pg_temp.statuses(n int) RETURNS text LANGUAGE sql AS $$
  SELECT string_agg(st.subscription || ':' || st.status, ', ' ORDER BY st.subscription)
    FROM evproc_event_status(pg_temp.ev(n)) st $$;

-------------------------------------------------------------------------------
-- Set-up: one topic, three subscriptions that fail on the same payloads:
-- 'skip' and 'block' dead-letter at the first failure, 'retry' backs off for an hour.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('ops.a', partitions => 2) > 0 AS created;
-- Published and ticked before anyone subscribed: not theirs.
SELECT evproc_enqueue('ops.a', 'a', '{"n": 0}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT evproc_subscribe('ops_skip', 'ops.a', 'ops_skip', max_attempts => 1, failure_budget => 1,
                        run_as => 'evproc_ops_app') > 0 AS subscribed;
SELECT evproc_subscribe('ops_block', 'ops.a', 'ops_block', max_attempts => 1, on_dead_letter => 'block',
                        failure_budget => 1, run_as => 'evproc_ops_app') > 0 AS subscribed;
SELECT evproc_subscribe('ops_retry', 'ops.a', 'ops_retry', max_attempts => 3, backoff_base => '1 hour',
                        backoff_cap => '2 hours', failure_budget => 1, run_as => 'evproc_ops_app') > 0 AS subscribed;
INSERT INTO ops_broken VALUES (1, 'P0001'), (2, 'P0001'), (5, '22012'), (7, 'P0001');
-- One statement per event: enqueued_at differs from one to the next.
SELECT evproc_enqueue('ops.a', 'a', '{"n": 1}') > 0 AS enqueued;
SELECT evproc_enqueue('ops.a', 'a', '{"n": 2}') > 0 AS enqueued;
SELECT evproc_enqueue('ops.a', 'a', '{"n": 3}') > 0 AS enqueued;
SELECT evproc_enqueue('ops.a', 'b', '{"n": 4}') > 0 AS enqueued;
SELECT evproc_enqueue('ops.a', 'c', '{"n": 5}') > 0 AS enqueued;
SELECT evproc_enqueue('ops.a', NULL, '{"n": 7}') > 0 AS enqueued;

-- Before any tick: pending everywhere (and the early event is nobody's).
SELECT pg_temp.statuses(1) AS n1, pg_temp.statuses(0) AS n0;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.statuses(1) AS n1_ticked_not_delivered;
SELECT pg_temp.drain();
SELECT pg_temp.dead('ops_skip') AS skip_dead, pg_temp.dead('ops_block') AS block_dead,
       pg_temp.dead('ops_retry') AS retry_dead;
SELECT pg_temp.line('ops_skip') AS skip_line;
SELECT pg_temp.line('ops_block') AS block_line;
SELECT pg_temp.line('ops_retry') AS retry_line;

-------------------------------------------------------------------------------
-- Event status in every state.
-------------------------------------------------------------------------------
SELECT n, pg_temp.statuses(n) FROM generate_series(0, 5) n UNION ALL SELECT 7, pg_temp.statuses(7);
-- The details of each state.
SELECT st.subscription, st.status, st.delivered_by IS NOT NULL AS has_delivered_by,
       st.attempt, st.next_attempt_at > now() + interval '25 minutes' AS next_in_the_hour,
       st.last_error, st.sqlstate, st.dead_at IS NOT NULL AS has_dead_at
  FROM generate_series(1, 5) n, evproc_event_status(pg_temp.ev(n)) st
 ORDER BY n, st.subscription;
-- delivered_by is the start of the unit's latest batch.
SELECT bool_and(st.delivered_by = p.last_batch_at) AS delivered_by_is_last_batch
  FROM evproc_event_status(pg_temp.ev(4)) st
  JOIN evproc.subscription s ON s.name = st.subscription
  JOIN evproc.progress p ON p.subscription_id = s.id
   AND p.partition = (SELECT partition FROM evproc.log WHERE id = pg_temp.ev(4));
-- A waiting event shows when its head is tried next.
SELECT st.next_attempt_at = (SELECT r.next_attempt_at FROM evproc.retry r
                               JOIN evproc.subscription s ON s.id = r.subscription_id
                              WHERE s.name = 'ops_retry' AND r.event_id = pg_temp.ev(1)) AS waits_for_its_head
  FROM evproc_event_status(pg_temp.ev(2)) st WHERE st.subscription = 'ops_retry';
-- An event of a transaction still open (here, ours) is pending.
BEGIN;
SELECT evproc_enqueue('ops.a', 'b', '{"n": 6}') AS own \gset
SELECT string_agg(subscription || ':' || status, ', ' ORDER BY subscription) AS uncommitted
  FROM evproc_event_status(:own);
ROLLBACK;

-- A subscription that starts inside the history, at event 3's enqueued_at: 0, 1 and 2
-- are not its own, 3 and later are; until its first batch they are pending.
SELECT evproc_subscribe('ops_history', 'ops.a', 'ops_history', start_from => (SELECT enqueued_at FROM evproc.log WHERE id = pg_temp.ev(3)),
                        failure_budget => 1, run_as => 'evproc_ops_app') > 0 AS subscribed;
SELECT n, st.status FROM generate_series(0, 4) n, evproc_event_status(pg_temp.ev(n)) st
 WHERE st.subscription = 'ops_history' ORDER BY n;
SELECT evproc_pause(name) FROM evproc.subscription WHERE name IN ('ops_skip', 'ops_block', 'ops_retry');
DELETE FROM ops_broken WHERE n IN (5, 7);
SELECT pg_temp.drain();
SELECT pg_temp.seen('history') AS history_seen;
SELECT n, st.status FROM unnest(ARRAY[0, 1, 2, 3, 4, 5, 7]) n, evproc_event_status(pg_temp.ev(n)) st
 WHERE st.subscription = 'ops_history' ORDER BY n;
SELECT evproc_unsubscribe('ops_history');
INSERT INTO ops_broken VALUES (5, '22012'), (7, 'P0001');

-- Inside a window being drained: up to the cursor delivered, after it pending.
SELECT evproc_create_topic('ops.w', partitions => 1) > 0 AS created;
SELECT evproc_subscribe('ops_window', 'ops.w', 'ops_window', batch_size => 2,
                        run_as => 'evproc_ops_app') > 0 AS subscribed;
SELECT array_agg(id ORDER BY id) AS w_ids FROM (
  SELECT evproc_enqueue('ops.w', 'k', jsonb_build_object('n', n)) AS id FROM generate_series(101, 103) n) x \gset
SELECT evproc.take_tick() > 0 AS ticked;
SELECT worked, subscription, delivered FROM evproc.deliver_batch();
SELECT p.window_tick IS NOT NULL AS in_a_window, p.cursor_id = (:'w_ids'::bigint[])[2] AS cursor_at_second
  FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id WHERE s.name = 'ops_window';
SELECT i, (SELECT status FROM evproc_event_status((:'w_ids'::bigint[])[i])) FROM generate_series(1, 3) i;
SELECT worked, subscription, delivered FROM evproc.deliver_batch();
SELECT i, (SELECT status FROM evproc_event_status((:'w_ids'::bigint[])[i])) FROM generate_series(1, 3) i;
SELECT evproc_unsubscribe('ops_window');
SELECT evproc_resume(name) FROM evproc.subscription WHERE name IN ('ops_skip', 'ops_block', 'ops_retry');

-- The event is found through the BRIN index on id, not by scanning the log: the plan of
-- the look-up over an analyzed log of 20,000 events, custom and generic, and the scans
-- evproc_event_status really made (this transaction's statistics).
SELECT evproc_create_topic('ops.big', partitions => 4) > 0 AS created;
SELECT cardinality(evproc_enqueue_batch('ops.big', (SELECT jsonb_agg(jsonb_build_object(
         'key', 'k' || g, 'payload', jsonb_build_object('n', g))) FROM generate_series(1, 10000) g))) AS loaded;
SELECT cardinality(evproc_enqueue_batch('ops.big', (SELECT jsonb_agg(jsonb_build_object(
         'key', 'k' || g, 'payload', jsonb_build_object('n', g))) FROM generate_series(1, 10000) g))) AS loaded;
ANALYZE evproc.log;
SELECT max(id) - 5000 AS probe FROM evproc.log \gset
SELECT pg_temp.plan_shape(format('SELECT * FROM evproc.log l WHERE l.id = %s', :probe));
PREPARE ops_lookup(bigint) AS SELECT * FROM evproc.log l WHERE l.id = $1;
SET plan_cache_mode = force_generic_plan;
SELECT pg_temp.plan_shape(format('EXECUTE ops_lookup(%s)', :probe));
RESET plan_cache_mode;
DEALLOCATE ops_lookup;
-- (The log is partitioned: the partition holding the event is read through its BRIN
-- index; the empty ones cost a scan of nothing.)
SELECT l.tableoid AS probe_part FROM evproc.log l WHERE l.id = :probe \gset
BEGIN;
SELECT seq_scan AS seq_before, idx_scan AS idx_before FROM pg_stat_xact_user_tables
 WHERE relid = :probe_part \gset
SELECT count(*) AS rows_for_ops_big FROM evproc_event_status(:probe);
SELECT seq_scan - :seq_before AS seq_scans, idx_scan - :idx_before AS index_scans
  FROM pg_stat_xact_user_tables WHERE relid = :probe_part;
COMMIT;

-------------------------------------------------------------------------------
-- Listing: the view (all subscriptions), per subscription, the summary.
-------------------------------------------------------------------------------
SELECT subscription, key, payload->>'n' AS n, attempts, sqlstate, message
  FROM evproc_dead_letters WHERE subscription LIKE 'ops%' ORDER BY subscription, event_id;
SELECT subscription, key, payload->>'n' AS n, attempts, sqlstate FROM evproc_dead_letters('ops_block');
SELECT count(*) AS none FROM evproc_dead_letters('ops_retry');
SELECT subscription, topic, on_dead_letter, dead_letters, blocked_keys,
       oldest_dead_at <= newest_dead_at AS ordered, by_sqlstate
  FROM evproc_dead_letter_summary WHERE subscription LIKE 'ops%' ORDER BY subscription;
SELECT pg_temp.try($$SELECT * FROM evproc_dead_letters(NULL)$$);
SELECT pg_temp.try($$SELECT * FROM evproc_dead_letters('')$$);
SELECT pg_temp.try($$SELECT * FROM evproc_dead_letters('ops_nope')$$);

-------------------------------------------------------------------------------
-- Bad input. Nothing is touched by a refusal or by filters that match nothing.
-------------------------------------------------------------------------------
CREATE TEMP TABLE before AS
  SELECT (SELECT count(*) FROM evproc.dead_letter) AS dead, (SELECT count(*) FROM evproc.retry) AS parked,
         (SELECT string_agg(retry_due_at::text, ',' ORDER BY subscription_id, partition) FROM evproc.progress) AS due;
SELECT pg_temp.try($$SELECT evproc_redrive(NULL)$$);
SELECT pg_temp.try($$SELECT evproc_redrive('')$$);
SELECT pg_temp.try($$SELECT evproc_redrive('ops_nope')$$);
SELECT pg_temp.try($$SELECT evproc_redrive('ops_skip', event_ids => ARRAY[1, NULL]::bigint[])$$);
SELECT pg_temp.try($$SELECT evproc_redrive('ops_skip', key => '')$$);
SELECT pg_temp.try($$SELECT evproc_redrive('ops_skip', sqlstate => 'oops')$$);
SELECT pg_temp.try($$SELECT evproc_redrive('ops_skip', dead_after => '2026-01-02', dead_before => '2026-01-01')$$);
SELECT pg_temp.try($$SELECT evproc_purge(NULL, older_than => 'infinity')$$);
SELECT pg_temp.try($$SELECT evproc_purge('', older_than => 'infinity')$$);
SELECT pg_temp.try($$SELECT evproc_purge('ops_nope', older_than => 'infinity')$$);
SELECT pg_temp.try_hint($$SELECT evproc_purge('ops_skip')$$);
SELECT pg_temp.try($$SELECT evproc_purge('ops_skip', event_ids => ARRAY[NULL]::bigint[])$$);
SELECT pg_temp.try($$SELECT evproc_event_status(NULL)$$);
SELECT pg_temp.try($$SELECT evproc_event_status(-1)$$);
-- Filters that match nothing: 0. An empty id list matches nothing (it never means "all").
SELECT evproc_redrive('ops_skip', event_ids => '{}') AS empty_ids,
       evproc_redrive('ops_skip', event_ids => ARRAY[-1, pg_temp.ev(4)]) AS not_dead_letters,
       evproc_redrive('ops_skip', event_ids => ARRAY[pg_temp.ev(1)], key => 'b') AS filters_and,
       evproc_redrive('ops_skip', key => 'zz') AS unknown_key,
       evproc_redrive('ops_skip', sqlstate => '57014') AS other_sqlstate,
       evproc_redrive('ops_skip', dead_before => '-infinity') AS too_old,
       evproc_redrive('ops_skip', dead_after => 'infinity') AS too_young,
       evproc_redrive('ops_retry') AS no_dead_letters;
SELECT evproc_purge('ops_skip', event_ids => '{}') AS empty_ids,
       evproc_purge('ops_skip', event_ids => ARRAY[-1, pg_temp.ev(4)]) AS not_dead_letters,
       evproc_purge('ops_skip', older_than => '-infinity') AS too_old,
       evproc_purge('ops_skip', event_ids => ARRAY[pg_temp.ev(1)], older_than => '-infinity') AS filters_and;
SELECT b.dead = (SELECT count(*) FROM evproc.dead_letter) AS dead_untouched,
       b.parked = (SELECT count(*) FROM evproc.retry) AS parked_untouched,
       b.due = (SELECT string_agg(retry_due_at::text, ',' ORDER BY subscription_id, partition) FROM evproc.progress) AS progress_untouched
  FROM before b;
-- Only members of the subscription's owner role may act on it (sql/privileges.sql tries
-- every such path).
SET ROLE evproc_ops_other;
SELECT pg_temp.try($$SELECT evproc_redrive('ops_skip')$$);
SELECT pg_temp.try($$SELECT evproc_purge('ops_skip', older_than => 'infinity')$$);
RESET ROLE;
SELECT b.dead = (SELECT count(*) FROM evproc.dead_letter) AS dead_untouched FROM before b;

-------------------------------------------------------------------------------
-- Re-drive ('skip'): back in line with attempt 0, due now; filters; counts.
-------------------------------------------------------------------------------
-- By SQLSTATE: the one 22012.
SELECT evproc_redrive('ops_skip', sqlstate => '22012') AS redriven;
SELECT pg_temp.dead('ops_skip') AS skip_dead, pg_temp.line('ops_skip') AS skip_line;
-- The parked event is rebuilt from the dead letter, and its unit will be claimed.
SELECT r.key, r.is_head, r.blocked, r.attempt, r.next_attempt_at <= now() AS due,
       r.first_failed_at, r.sqlstate, (r.event).id = r.event_id AS same_id, (r.event).topic,
       (r.event).key AS event_key, (r.event).payload, (r.event).attempt AS event_attempt,
       (r.event).replay, (r.event).enqueued_at = l.enqueued_at AS same_enqueued_at,
       p.retry_due_at <= now() AS unit_due
  FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id
  JOIN evproc.log l ON l.id = r.event_id
  JOIN evproc.progress p ON p.subscription_id = r.subscription_id AND p.partition = r.partition
 WHERE s.name = 'ops_skip';
SELECT st.status, st.attempt, st.next_attempt_at <= now() AS due
  FROM evproc_event_status(pg_temp.ev(5)) st WHERE st.subscription = 'ops_skip';
-- Still failing: it goes back to the dead letters (max_attempts 1 more attempt).
TRUNCATE ops_seen;
SELECT pg_temp.drain();
SELECT pg_temp.dead('ops_skip') AS skip_dead, pg_temp.line('ops_skip') AS skip_line;
-- Fixed: re-driven again by id (with ids that are not its dead letters), delivered once.
DELETE FROM ops_broken;
SELECT evproc_redrive('ops_skip', event_ids => ARRAY[pg_temp.ev(5), pg_temp.ev(4), -7, pg_temp.ev(5)]) AS redriven;
SELECT pg_temp.drain();
SELECT pg_temp.seen('skip') AS skip_seen;
-- Key a: 1 and 2 go back in id order, 1 heads the key; delivered 1 then 2, once each.
SELECT evproc_redrive('ops_skip', key => 'a') AS redriven;
SELECT pg_temp.line('ops_skip') AS skip_line;
SELECT pg_temp.statuses(1) AS n1, pg_temp.statuses(2) AS n2;
TRUNCATE ops_seen;
SELECT pg_temp.drain();
SELECT pg_temp.seen('skip') AS skip_seen;
SELECT pg_temp.statuses(1) AS n1, pg_temp.statuses(2) AS n2;
-- By time: dead_at in [dead_after, dead_before).
SELECT dead_at AS keyless_dead_at FROM evproc_dead_letters('ops_skip') \gset
SELECT evproc_redrive('ops_skip', dead_before => :'keyless_dead_at') AS before_it,
       evproc_redrive('ops_skip', dead_after => :'keyless_dead_at'::timestamptz + interval '1 us') AS after_it;
SELECT evproc_redrive('ops_skip', dead_after => :'keyless_dead_at', dead_before => :'keyless_dead_at'::timestamptz + interval '1 us') AS at_it;
TRUNCATE ops_seen;
SELECT pg_temp.drain();
SELECT pg_temp.seen('skip') AS skip_seen, pg_temp.dead('ops_skip') AS skip_dead, pg_temp.line('ops_skip') AS skip_line;

-- A key that is parked already: the re-driven event joins the end of its line. Key d:
-- 10 dies, 11 and 12 wait; after that batch 11 heads the key, and 10, re-driven, goes
-- behind 12.
INSERT INTO ops_broken VALUES (10, 'P0001'), (11, 'P0001');
SELECT evproc_pause(name) FROM evproc.subscription WHERE name IN ('ops_block', 'ops_retry');
SELECT count(evproc_enqueue('ops.a', 'd', jsonb_build_object('n', n))) FROM generate_series(10, 12) n;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT * FROM pg_temp.batch();
SELECT pg_temp.line('ops_skip') AS skip_line;
SELECT evproc_redrive('ops_skip', key => 'd') AS redriven;
SELECT pg_temp.line('ops_skip') AS skip_line;
SELECT pg_temp.statuses(10) AS n10;
-- 10 is fixed, 11 still fails: 11 dies again, 12 and then 10 are delivered.
DELETE FROM ops_broken WHERE n = 10;
TRUNCATE ops_seen;
SELECT pg_temp.drain();
SELECT pg_temp.seen('skip') AS skip_seen, pg_temp.dead('ops_skip') AS skip_dead;
-- Re-driven alone, with no line left on its key, 11 heads it again.
DELETE FROM ops_broken;
SELECT evproc_redrive('ops_skip') AS redriven, pg_temp.line('ops_skip') AS skip_line;
SELECT pg_temp.drain();
SELECT pg_temp.seen('skip') AS skip_seen, pg_temp.dead('ops_skip') AS skip_dead;
SELECT evproc_resume(name) FROM evproc.subscription WHERE name IN ('ops_block', 'ops_retry');

-------------------------------------------------------------------------------
-- 'block': a re-driven blocked head resumes its key, a purged one lets it go on.
-------------------------------------------------------------------------------
-- Key c: 5 is dead and blocks; 9 arrives and waits behind it.
SELECT evproc_enqueue('ops.a', 'c', '{"n": 9}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT pg_temp.dead('ops_block') AS block_dead;
SELECT pg_temp.line('ops_block') AS block_line;
SELECT pg_temp.statuses(9) AS n9;
SELECT subscription, dead_letters, blocked_keys, by_sqlstate FROM evproc_dead_letter_summary
 WHERE subscription = 'ops_block';
SELECT p.partition, p.retry_due_at FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
 WHERE s.name = 'ops_block' AND p.retry_due_at IS NOT NULL ORDER BY p.partition;

-- Re-drive key a's dead head (1): it resumes in its place, 2 and 3 behind it.
SELECT evproc_redrive('ops_block', event_ids => ARRAY[pg_temp.ev(1)]) AS redriven;
SELECT pg_temp.line('ops_block') AS block_line, pg_temp.dead('ops_block') AS block_dead;
SELECT pg_temp.statuses(1) AS n1, pg_temp.statuses(2) AS n2;
SELECT count(*) AS units_due FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
 WHERE s.name = 'ops_block' AND p.retry_due_at <= now();
TRUNCATE ops_seen;
SELECT pg_temp.drain();
SELECT pg_temp.seen('block') AS block_seen;
SELECT pg_temp.line('ops_block') AS block_line, pg_temp.dead('ops_block') AS block_dead;

-- Purge key c's dead head (5): it leaves the line, 9 heads the key and is delivered, 5
-- never; the keyless dead letter (7) and every other row stay as they were.
SELECT count(*) AS other_rows FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id
 WHERE s.name <> 'ops_block' \gset
SELECT evproc_purge('ops_block', event_ids => ARRAY[pg_temp.ev(5)]) AS purged;
SELECT pg_temp.line('ops_block') AS block_line, pg_temp.dead('ops_block') AS block_dead;
SELECT count(*) = :other_rows AS others_untouched FROM evproc.retry r
  JOIN evproc.subscription s ON s.id = r.subscription_id WHERE s.name <> 'ops_block';
SELECT pg_temp.statuses(9) AS n9;
TRUNCATE ops_seen;
SELECT pg_temp.drain();
SELECT pg_temp.seen('block') AS block_seen;
-- A purged dead letter leaves no trace: its subscription is past it, so it reads
-- 'delivered' (see the README).
SELECT pg_temp.statuses(5) AS n5;
-- Purge by age: 'infinity' takes every dead letter left.
SELECT evproc_purge('ops_block', older_than => now() - interval '1 hour') AS too_old,
       evproc_purge('ops_block', older_than => 'infinity') AS purged_all;
SELECT pg_temp.dead('ops_block') AS block_dead, pg_temp.line('ops_block') AS block_line;
SELECT subscription, dead_letters, blocked_keys, oldest_dead_at, by_sqlstate
  FROM evproc_dead_letter_summary WHERE subscription = 'ops_block';

-- Purge on 'skip' by id: counts, the rest stays.
INSERT INTO ops_broken VALUES (20, 'P0001'), (21, 'P0001'), (22, 'P0001');
SELECT count(evproc_enqueue('ops.a', 'e' || n, jsonb_build_object('n', n))) FROM generate_series(20, 22) n;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT pg_temp.dead('ops_skip') AS skip_dead;
SELECT evproc_purge('ops_skip', event_ids => ARRAY[pg_temp.ev(20), pg_temp.ev(22), pg_temp.ev(4)]) AS purged;
SELECT pg_temp.dead('ops_skip') AS skip_dead, pg_temp.line('ops_skip') AS skip_line;

-------------------------------------------------------------------------------
-- Clean-up.
-------------------------------------------------------------------------------
SELECT evproc_unsubscribe(name) FROM evproc.subscription WHERE name LIKE 'ops%' ORDER BY name;
SELECT evproc_drop_topic(name) FROM evproc.topic WHERE name LIKE 'ops.%' ORDER BY name;
-- The 20,000 events are gone: give their pages back before the window test plans.
VACUUM evproc.log;
DROP FUNCTION ops_skip(evproc.event[]), ops_block(evproc.event[]), ops_retry(evproc.event[]),
              ops_history(evproc.event[]), ops_window(evproc.event[]), ops_handle(text, evproc.event[]);
DROP TABLE ops_seen, ops_broken;
REVOKE USAGE ON SCHEMA evproc FROM evproc_ops_app;
DROP ROLE evproc_ops_app;
DROP ROLE evproc_ops_other;
