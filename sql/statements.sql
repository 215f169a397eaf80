-- The plans of delivery's hot statements, as the workers keep them: each is prepared
-- from exactly the text evproc.statement_sql() returns (src/delivery_statements.hpp) and
-- explained as a generic plan. (The window's two parts: sql/window.sql.)
\i sql/include/try.sql

-- Every statement a worker prepares has a name; a wrong name is a clear error.
SELECT count(*) AS statements, count(DISTINCT t) AS distinct_texts
  FROM unnest(ARRAY['claim', 'claim_replay', 'replay_events', 'advance_replay',
                    'parked_keys_anywhere', 'retry_due', 'next_due', 'window_bounds',
                    'due_retries', 'parked_keys', 'window_pending', 'window_range',
                    'delete_retries', 'park', 'dead_letter', 'promote_heads', 'advance',
                    'pause', 'trip_breaker', 'event_type']) n,
       LATERAL evproc.statement_sql(n) t;
SELECT pg_temp.try($$SELECT evproc.statement_sql('nope')$$);
-- The rule "may this owner subscribe to the topic" is evproc.may_subscribe, in the claim
-- as in evproc_subscribe and evproc_replay.
SELECT evproc.statement_sql('claim') ~ 'evproc\.may_subscribe\(s\.owner::oid, t\)' AS claim_asks,
       evproc.statement_sql('claim_replay') ~ 'evproc\.may_subscribe\(s\.owner::oid, t\)' AS replay_claim_asks;

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

SELECT count(evproc_unsubscribe('st_' || n)) FROM generate_series(1, 4) n;
SELECT evproc_drop_topic('st.t');
DROP FUNCTION st_handle(evproc.event);
DROP OWNED BY evproc_st_app;
DROP ROLE evproc_st_app;
