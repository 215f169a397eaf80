-- Delivery, stepped by hand with evproc.deliver_batch() (the launcher serves another
-- database here): batches, forms, fan-out, poison isolation, parked keys, retries, dead
-- letters, broken handlers, timeouts, the owner's privileges and the circuit breaker.
\i sql/include/try.sql

CREATE ROLE evproc_dl_app;
GRANT USAGE ON SCHEMA evproc TO evproc_dl_app;
CREATE TABLE dl_seen (seq bigserial, sub text, id bigint, key text, n int, attempt int,
                      replay boolean, topic text, who text);
GRANT SELECT, INSERT ON dl_seen TO evproc_dl_app;
GRANT USAGE ON SEQUENCE dl_seen_seq_seq TO evproc_dl_app;

\i sql/include/drain.sql

CREATE FUNCTION dl_record(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO dl_seen (sub, id, key, n, attempt, replay, topic, who)
  SELECT 'batch', e.id, e.key, (e.payload->>'n')::int, e.attempt, e.replay, e.topic, current_user
    FROM unnest(events) e;
END $fn$;
CREATE FUNCTION dl_record_one(e evproc.event) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO dl_seen (sub, id, key, n, attempt, replay, topic, who)
  VALUES ('event', e.id, e.key, (e.payload->>'n')::int, e.attempt, e.replay, e.topic, current_user);
END $fn$;
CREATE FUNCTION dl_record_history(e evproc.event) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO dl_seen (sub, id, key, n, attempt, replay, topic, who)
  VALUES ('history', e.id, e.key, (e.payload->>'n')::int, e.attempt, e.replay, e.topic, current_user);
END $fn$;

-------------------------------------------------------------------------------
-- Batches, both handler forms, fan-out, where a subscription starts.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('dl.a', partitions => 2) > 0 AS created;
SELECT evproc_enqueue('dl.a', 'a', '{"n": 0}') > 0 AS enqueued_before_subscribing;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT evproc_subscribe('dl_batch', 'dl.a', 'dl_record', batch_size => 3, run_as => 'evproc_dl_app') > 0 AS subscribed;
SELECT evproc_subscribe('dl_event', 'dl.a', 'dl_record_one', run_as => 'evproc_dl_app') > 0 AS subscribed;
SELECT evproc_subscribe('dl_history', 'dl.a', 'dl_record_history', start_from => '-infinity',
                        run_as => 'evproc_dl_app') > 0 AS subscribed;
-- Only the subscription that starts from history has something to do yet.
SELECT pg_temp.drain() AS history_only;
SELECT sub, key, n FROM dl_seen;
TRUNCATE dl_seen;
BEGIN;
SELECT count(evproc_enqueue('dl.a', (ARRAY['a', 'b', 'c'])[n % 3 + 1], jsonb_build_object('n', n)))
  FROM generate_series(1, 10) n;
COMMIT;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
-- Each subscription saw every event once, in per-key order.
SELECT sub, key, string_agg(n::text, ',' ORDER BY seq) AS handled
  FROM dl_seen GROUP BY sub, key ORDER BY sub, key;
SELECT count(DISTINCT who) AS roles, min(who) AS who, min(attempt) AS attempt, max(attempt),
       bool_or(replay) AS replay, min(topic) AS topic
  FROM dl_seen;
-- batch_size 3: the batch subscription needed several batches per partition.
SELECT s.name, sum(p.delivered) AS delivered, sum(p.batches) >= 4 AS several_batches
  FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
 WHERE s.name = 'dl_batch' GROUP BY s.name;
SELECT pg_temp.drain() AS nothing_left;

-------------------------------------------------------------------------------
-- Poison isolation: the healthy events of a failing batch are delivered in the same
-- pass; a failed event parks its key; later events of that key wait in order; retries
-- with backoff; dead letters after max_attempts; other keys flow.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('dl.p', partitions => 1) > 0 AS created;
CREATE FUNCTION dl_picky(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(events) e
              WHERE e.attempt <= coalesce((e.payload->>'fail_times')::int, 0)) THEN
    RAISE EXCEPTION 'poison in batch' USING DETAIL = 'a detail', HINT = 'a hint';
  END IF;
  INSERT INTO dl_seen (sub, id, key, n, attempt, replay, topic, who)
  SELECT 'picky', e.id, e.key, (e.payload->>'n')::int, e.attempt, e.replay, e.topic, current_user
    FROM unnest(events) e;
END $fn$;
SELECT evproc_subscribe('dl_picky', 'dl.p', 'dl_picky', max_attempts => 2, backoff_base => '1 ms',
                        backoff_cap => '2 ms', failure_budget => 1, run_as => 'evproc_dl_app') > 0 AS subscribed;
TRUNCATE dl_seen;
SELECT count(*) AS enqueued FROM (
  SELECT evproc_enqueue('dl.p', key, payload) FROM (VALUES
    (1, 'a', '{"n": 1}'::jsonb), (2, 'a', '{"n": 2}'), (3, 'a', '{"n": 3, "fail_times": 99}'),
    (4, 'a', '{"n": 4}'), (5, 'b', '{"n": 5}'), (6, 'b', '{"n": 6, "fail_times": 1}'),
    (7, 'b', '{"n": 7}'), (8, 'c', '{"n": 8}')) v(o, key, payload) ORDER BY o) x;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain() AS first_pass;
SELECT key, string_agg(n::text, ',' ORDER BY seq) AS handled FROM dl_seen GROUP BY key ORDER BY key;
SELECT key, (event).payload->>'n' AS n, is_head, blocked, attempt, sqlstate, message,
       next_attempt_at > last_failed_at AS backs_off
  FROM evproc.retry ORDER BY seq;
SELECT pg_sleep(0.05);
SELECT pg_temp.drain() AS second_pass;
SELECT key, string_agg(n || '@' || attempt, ',' ORDER BY seq) AS handled FROM dl_seen GROUP BY key ORDER BY key;
SELECT count(*) AS parked FROM evproc.retry;
SELECT subscription, key, payload->>'n' AS n, attempts, sqlstate, message, detail, hint,
       context LIKE '%dl_picky%' AS has_context, first_failed_at < last_failed_at AS failed_twice,
       partition, worker_pid = pg_backend_pid() AS worker_pid
  FROM evproc_dead_letters;
-- enqueued = delivered + dead
SELECT (SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id WHERE t.name = 'dl.p') AS enqueued,
       (SELECT count(*) FROM dl_seen) AS delivered,
       (SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'dl_picky') AS dead;

-------------------------------------------------------------------------------
-- on_dead_letter = 'block': the key stays parked behind its dead letter; keyless
-- events never park anything.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('dl.b', partitions => 1) > 0 AS created;
SELECT evproc_subscribe('dl_block', 'dl.b', 'dl_picky', max_attempts => 1, on_dead_letter => 'block',
                        failure_budget => 1, run_as => 'evproc_dl_app') > 0 AS subscribed;
TRUNCATE dl_seen;
SELECT count(*) AS enqueued FROM (
  SELECT evproc_enqueue('dl.b', key, payload) FROM (VALUES
    (1, 'a', '{"n": 1, "fail_times": 99}'::jsonb), (2, 'a', '{"n": 2}'), (3, 'b', '{"n": 3}'),
    (4, NULL, '{"n": 4, "fail_times": 99}'), (5, NULL, '{"n": 5}')) v(o, key, payload) ORDER BY o) x;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT evproc_enqueue('dl.b', 'a', '{"n": 6}') > 0 AS enqueued_behind_block;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_sleep(0.01);
SELECT pg_temp.drain();
SELECT coalesce(key, '(none)') AS key, string_agg(n::text, ',' ORDER BY seq) AS handled
  FROM dl_seen GROUP BY key ORDER BY key;
SELECT key, (event).payload->>'n' AS n, is_head, blocked FROM evproc.retry r
  JOIN evproc.subscription s ON s.id = r.subscription_id WHERE s.name = 'dl_block' ORDER BY seq;
SELECT name, parked, dead_letters FROM evproc_subscriptions WHERE name = 'dl_block';

-- max_attempts 1 with 'skip': the events that waited behind a dead event of the same
-- batch go on (the oldest becomes the head).
SELECT evproc_create_topic('dl.k', partitions => 1) > 0 AS created;
SELECT evproc_subscribe('dl_skip1', 'dl.k', 'dl_picky', max_attempts => 1, failure_budget => 1,
                        run_as => 'evproc_dl_app') > 0 AS subscribed;
TRUNCATE dl_seen;
SELECT count(*) AS enqueued FROM (
  SELECT evproc_enqueue('dl.k', 'a', payload) FROM (VALUES
    (1, '{"n": 1, "fail_times": 99}'::jsonb), (2, '{"n": 2}'), (3, '{"n": 3}')) v(o, payload) ORDER BY o) x;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT string_agg(n::text, ',' ORDER BY seq) AS handled FROM dl_seen;
SELECT count(*) AS parked FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id
 WHERE s.name = 'dl_skip1';

-------------------------------------------------------------------------------
-- A broken or dropped handler, or an owner who lost the right to run it, pauses the
-- subscription with a reason; nothing is charged to the events.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('dl.h', partitions => 1) > 0 AS created;
CREATE FUNCTION dl_needs_table(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO dl_later (id) SELECT e.id FROM unnest(events) e;
END $fn$;
SELECT evproc_subscribe('dl_broken', 'dl.h', 'dl_needs_table', run_as => 'evproc_dl_app') > 0 AS subscribed;
SELECT count(evproc_enqueue('dl.h', 'k' || n, jsonb_build_object('n', n))) FROM generate_series(1, 3) n;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 'dl_broken';
SELECT count(*) AS parked, (SELECT sum(delivered) FROM evproc.progress p JOIN evproc.subscription s
                              ON s.id = p.subscription_id WHERE s.name = 'dl_broken') AS delivered
  FROM evproc.retry;
CREATE TABLE dl_later (id bigint);
GRANT INSERT ON dl_later TO evproc_dl_app;
SELECT evproc_resume('dl_broken');
SELECT pg_temp.drain();
SELECT count(*) AS delivered_after_fix FROM dl_later;

-- Dropped handler.
DROP FUNCTION dl_needs_table(evproc.event[]);
SELECT count(evproc_enqueue('dl.h', 'k' || n, jsonb_build_object('n', n))) FROM generate_series(4, 5) n;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 'dl_broken';
SELECT pg_temp.try($$SELECT evproc_resume('dl_broken')$$);
CREATE FUNCTION dl_needs_table(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO dl_later (id) SELECT e.id FROM unnest(events) e;
END $fn$;
SELECT evproc_resume('dl_broken');
SELECT pg_temp.drain();
SELECT count(*) AS delivered_after_recreate FROM dl_later;

-- The owner may no longer execute the handler; then the owner becomes a superuser.
REVOKE EXECUTE ON FUNCTION dl_needs_table(evproc.event[]) FROM PUBLIC;
SELECT evproc_enqueue('dl.h', 'k6', '{"n": 6}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 'dl_broken';
GRANT EXECUTE ON FUNCTION dl_needs_table(evproc.event[]) TO evproc_dl_app;
ALTER ROLE evproc_dl_app SUPERUSER;
SELECT evproc_resume('dl_broken');
SELECT pg_temp.drain();
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 'dl_broken';
ALTER ROLE evproc_dl_app NOSUPERUSER;
SELECT evproc_resume('dl_broken');
SELECT pg_temp.drain();
SELECT count(*) AS delivered_in_the_end FROM dl_later;

-------------------------------------------------------------------------------
-- Handlers run as the owner in a security-restricted operation: no way back to the
-- worker's superuser. The attempt reads as a broken handler.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('dl.s', partitions => 1) > 0 AS created;
CREATE FUNCTION dl_escalate(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  SET ROLE postgres;
  INSERT INTO dl_seen (sub, who) VALUES ('escalate', current_user);
END $fn$;
SELECT evproc_subscribe('dl_escalate', 'dl.s', 'dl_escalate', run_as => 'evproc_dl_app') > 0 AS subscribed;
SELECT evproc_enqueue('dl.s', 'k', '{"n": 1}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
TRUNCATE dl_seen;
SELECT pg_temp.drain();
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 'dl_escalate';
SELECT count(*) AS escalated FROM dl_seen;

-------------------------------------------------------------------------------
-- The handler timeout cancels a slow call; the event fails alone.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('dl.t', partitions => 1) > 0 AS created;
CREATE FUNCTION dl_slow(e evproc.event) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  IF (e.payload->>'n')::int = 2 THEN PERFORM pg_sleep(5); END IF;
  INSERT INTO dl_seen (sub, id, n) VALUES ('slow', e.id, (e.payload->>'n')::int);
END $fn$;
SELECT evproc_subscribe('dl_slow', 'dl.t', 'dl_slow', handler_timeout => '100 ms', max_attempts => 1,
                        failure_budget => 1, run_as => 'evproc_dl_app') > 0 AS subscribed;
SELECT count(evproc_enqueue('dl.t', 'k' || n, jsonb_build_object('n', n))) FROM generate_series(1, 3) n;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT string_agg(n::text, ',' ORDER BY n) AS handled FROM dl_seen WHERE sub = 'slow';
SELECT payload->>'n' AS n, sqlstate, message FROM evproc_dead_letters WHERE subscription = 'dl_slow';

-------------------------------------------------------------------------------
-- Circuit breaker: past its failure budget a subscription cools down and says why.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('dl.c', partitions => 1) > 0 AS created;
SELECT evproc_subscribe('dl_breaker', 'dl.c', 'dl_picky', failure_budget => 0.5,
                        breaker_min_attempts => 3, breaker_cooldown => '1 hour',
                        run_as => 'evproc_dl_app') > 0 AS subscribed;
SELECT count(evproc_enqueue('dl.c', 'k' || n, jsonb_build_object('n', n, 'fail_times', 99)))
  FROM generate_series(1, 4) n;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT name, state, reason, breaker_open_until > now() + interval '50 minutes' AS cooling
  FROM evproc_subscriptions WHERE name = 'dl_breaker';
-- While cooling down, its units are not claimed, even with retries due.
UPDATE evproc.progress SET retry_due_at = now() - interval '1 s'
 WHERE subscription_id = (SELECT id FROM evproc.subscription WHERE name = 'dl_breaker');
SELECT pg_temp.drain() AS nothing_claimed;
SELECT evproc_resume('dl_breaker');
SELECT name, state FROM evproc_subscriptions WHERE name = 'dl_breaker';

-- Unsubscribing removes a subscription's parked events and dead letters with it.
SELECT evproc_unsubscribe(name) FROM evproc.subscription ORDER BY name;
SELECT (SELECT count(*) FROM evproc.retry) AS parked, (SELECT count(*) FROM evproc.dead_letter) AS dead,
       (SELECT count(*) FROM evproc.progress) AS units;
