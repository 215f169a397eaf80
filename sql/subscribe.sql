-- Subscriptions: creation, handler signature checks, settings, ownership, lifecycle.
-- (The launcher serves another database here: nothing is delivered behind our back.)
\i sql/include/try.sql

CREATE ROLE evproc_sub_app;
CREATE ROLE evproc_sub_other;
SELECT evproc_create_topic('sub.t', partitions => 2) > 0 AS created;

CREATE TABLE sub_seen (id bigint);
CREATE FUNCTION sub_batch(events evproc.event[]) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO sub_seen SELECT e.id FROM unnest(events) e $$;
CREATE FUNCTION sub_each(e evproc.event) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO sub_seen VALUES (e.id) $$;
CREATE FUNCTION sub_wrong(n integer) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION sub_two(a evproc.event, b evproc.event) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION sub_setof(events evproc.event[]) RETURNS SETOF integer LANGUAGE sql AS $$ SELECT 1 $$;
CREATE PROCEDURE sub_proc(events evproc.event[]) LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION sub_private(events evproc.event[]) RETURNS void LANGUAGE sql AS $$ SELECT $$;
REVOKE EXECUTE ON FUNCTION sub_private(evproc.event[]) FROM PUBLIC;

-- Handler checks: 42883 when nothing by that name exists, 42P13 for a wrong shape.
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'no_such_handler', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'no_such_handler(evproc.event[])', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_wrong', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_wrong(integer)', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_two', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_setof', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_proc', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', NULL, run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', '', run_as => 'evproc_sub_app')$$);

-- Names, topic and settings.
SELECT pg_temp.try($$SELECT evproc_subscribe(NULL, 'sub.t', 'sub_batch', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('bad name', 'sub.t', 'sub_batch', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'no.topic', 'sub_batch', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', NULL, 'sub_batch', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', batch_size => 0, run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', batch_size => 10001, run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', max_attempts => 0, run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', backoff_base => '0', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', backoff_base => '1 min', backoff_cap => '1 s', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', handler_timeout => '-1 s', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', on_dead_letter => 'drop', run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', failure_budget => 0, run_as => 'evproc_sub_app')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', breaker_cooldown => NULL, run_as => 'evproc_sub_app')$$);

-- Ownership: never a superuser (the default owner here is the superuser running the
-- test), only a role the caller belongs to, and one that may execute the handler.
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', run_as => 'evproc_sub_app')$$);
GRANT USAGE ON SCHEMA evproc TO evproc_sub_app;
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_private', run_as => 'evproc_sub_app')$$);
GRANT USAGE ON SCHEMA evproc TO evproc_sub_other;
SET ROLE evproc_sub_other;
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', run_as => 'evproc_sub_app')$$);
RESET ROLE;
-- Nothing was left behind by the refusals.
SELECT count(*) AS subscriptions FROM evproc.subscription;

-- Both forms; one progress row per partition; the stored handler is schema-qualified.
SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', run_as => 'evproc_sub_app') > 0 AS subscribed;
SELECT evproc_subscribe('s2', 'sub.t', 'public.sub_each(evproc.event)', batch_size => 7,
                        on_dead_letter => 'block', run_as => 'evproc_sub_app') > 0 AS subscribed;
SELECT pg_temp.try($$SELECT evproc_subscribe('s1', 'sub.t', 'sub_batch', run_as => 'evproc_sub_app')$$);
SELECT name, topic, handler, handler_form, owner, batch_size, max_attempts, backoff_base,
       backoff_cap, handler_timeout, on_dead_letter, state, reason, delivered, parked, dead_letters
  FROM evproc_subscriptions ORDER BY name;
SELECT s.name, count(*) AS units, min(p.partition), max(p.partition)
  FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
 GROUP BY s.name ORDER BY s.name;

-- Pause, resume, unsubscribe.
SELECT evproc_pause('s1', 'maintenance window');
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 's1';
SELECT evproc_resume('s1');
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 's1';
SELECT pg_temp.try($$SELECT evproc_pause('nope')$$);
SELECT pg_temp.try($$SELECT evproc_resume(NULL)$$);
SELECT pg_temp.try($$SELECT evproc_unsubscribe('')$$);
SET ROLE evproc_sub_other;
SELECT pg_temp.try($$SELECT evproc_pause('s1')$$);
RESET ROLE;

-- A topic with subscriptions can be neither dropped nor re-partitioned.
SELECT pg_temp.try($$SELECT evproc_drop_topic('sub.t')$$);
SELECT pg_temp.try($$SELECT evproc_alter_topic('sub.t', partitions => 4)$$);

SELECT evproc_unsubscribe('s1');
SELECT evproc_unsubscribe('s2');
SELECT count(*) AS subscriptions, (SELECT count(*) FROM evproc.progress) AS units FROM evproc.subscription;
SELECT evproc_drop_topic('sub.t');
