-- Pull subscriptions and leases (extension/lease.sql, docs/consumers.md), stepped by
-- hand: ticks are taken with evproc.take_tick() (the launcher serves another database
-- here). Reads, per-key order, ack, nack (backoff, retry_after, dead letters), the later
-- events of a nacked key, expiry (an expiry is a failed attempt), extend, the refusals
-- with their SQLSTATEs, privileges, pause and unsubscribe.
\i sql/include/try.sql

-- Lease ids and times vary from run to run: the refusals show them masked.
CREATE FUNCTION pg_temp.try_lease(statement text) RETURNS text LANGUAGE sql AS $fn$
  SELECT regexp_replace(regexp_replace(pg_temp.try(statement),
                        '[0-9a-f]{8}-[0-9a-f-]{27}', '<lease>', 'g'),
                        'expired at .*$', 'expired at <time>')
$fn$;

CREATE ROLE evproc_cn_app;
CREATE ROLE evproc_cn_other;
GRANT USAGE ON SCHEMA evproc TO evproc_cn_app, evproc_cn_other;

SELECT evproc_create_topic('cn.t', partitions => 2) > 0 AS created;
SELECT evproc_subscribe('cn_pull', 'cn.t', NULL, run_as => 'evproc_cn_app', max_attempts => 2,
                        backoff_base => '1 hour', backoff_cap => '1 hour',
                        lease_duration => '1 minute') > 0 AS subscribed;
SELECT name, handler, handler_form, state FROM evproc_subscriptions WHERE name = 'cn_pull';
SELECT lease_duration FROM evproc.subscription WHERE name = 'cn_pull';
-- Nothing committed yet: an empty answer, not an error.
SELECT count(*) AS nothing FROM evproc_read('cn_pull');

SELECT count(*) AS enqueued
  FROM (SELECT evproc_enqueue('cn.t', k, jsonb_build_object('n', n))
          FROM (VALUES ('a', 1), ('b', 2), ('a', 3), ('c', 4), ('a', 5), ('b', 6)) v(k, n)) x;
SELECT evproc.take_tick() > 0 AS ticked;
-- The workers leave pull subscriptions alone.
SELECT worked FROM evproc.deliver_batch();

-- One read takes every unit with work: one lease, each key's events in commit order.
CREATE TEMP TABLE r1 AS SELECT * FROM evproc_read('cn_pull', 100) WITH ORDINALITY AS r;
SELECT key, string_agg(payload->>'n', ',' ORDER BY ordinality) AS n_in_order,
       min(attempt) AS attempt, bool_or(replay) AS replay
  FROM r1 GROUP BY key ORDER BY key;
SELECT count(DISTINCT lease) AS leases, count(*) AS events FROM r1;
-- The units are leased: another read gets nothing of them.
SELECT count(*) AS while_leased FROM evproc_read('cn_pull', 100);
SELECT subscription, cardinality(partitions) AS units, events, nacked, expired
  FROM evproc_leases WHERE subscription = 'cn_pull';
SELECT count(*) AS marked_units FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id
 WHERE s.name = 'cn_pull' AND p.lease_id = (SELECT lease FROM r1 LIMIT 1);

-- A nack fails one event; the ack delivers the others, and a's later event waits
-- behind the nacked one.
SELECT pg_temp.try_lease(format('SELECT evproc_nack(%L, %L, %s, %L, retry_after => %L)', 'cn_pull',
       (SELECT lease FROM r1 LIMIT 1), (SELECT id FROM r1 WHERE payload->>'n' = '3'),
       'remote said no', '0')) AS nack;
SELECT evproc_ack('cn_pull', (SELECT lease FROM r1 LIMIT 1)) AS delivered;
SELECT s.status, s.attempt, s.last_error, s.sqlstate
  FROM r1, evproc_event_status(r1.id) s WHERE r1.payload->>'n' IN ('3', '5') ORDER BY r1.payload->>'n';
SELECT count(*) FILTER (WHERE s.status = 'delivered') AS delivered_status
  FROM r1, evproc_event_status(r1.id) s;
-- An ended lease is unknown: the consumer must treat its events as redelivered.
SELECT pg_temp.try_lease(format('SELECT evproc_ack(%L, %L)', 'cn_pull', (SELECT lease FROM r1 LIMIT 1))) AS ack_again;
SELECT pg_temp.try_lease(format('SELECT evproc_nack(%L, %L, 1, %L)', 'cn_pull', (SELECT lease FROM r1 LIMIT 1), 'x')) AS nack_after;
SELECT pg_temp.try_lease(format('SELECT evproc_extend(%L, %L, %L)', 'cn_pull', (SELECT lease FROM r1 LIMIT 1), '1 minute')) AS extend_after;

-- The retry comes first, with its attempt; a nack at max_attempts makes a dead letter
-- with the consumer's error, and the key moves on (on_dead_letter skip).
CREATE TEMP TABLE r2 AS SELECT * FROM evproc_read('cn_pull', 100) WITH ORDINALITY AS r;
SELECT key, payload->>'n' AS n, attempt FROM r2 ORDER BY ordinality;
SELECT evproc_nack('cn_pull', (SELECT lease FROM r2 LIMIT 1), (SELECT id FROM r2 WHERE payload->>'n' = '3'),
                   'remote said no again');
SELECT evproc_ack('cn_pull', (SELECT lease FROM r2 LIMIT 1)) AS delivered;
SELECT key, payload->>'n' AS n, attempts, sqlstate, message, detail LIKE 'failed by a consumer%' AS by_consumer
  FROM evproc_dead_letters WHERE subscription = 'cn_pull';
CREATE TEMP TABLE r3 AS SELECT * FROM evproc_read('cn_pull', 100) WITH ORDINALITY AS r;
SELECT key, payload->>'n' AS n, attempt FROM r3 ORDER BY ordinality;
SELECT evproc_ack('cn_pull', (SELECT lease FROM r3 LIMIT 1)) AS delivered;

-- Expiry: a lease that is not acknowledged in time frees its units; its events come
-- again, the first of each key with attempt + 1 (an expiry is a failed attempt), the
-- later ones behind it in order. Acknowledging or extending it fails (EV001).
SELECT count(*) AS enqueued
  FROM (SELECT evproc_enqueue('cn.t', k, jsonb_build_object('n', n))
          FROM (VALUES ('d', 10), ('d', 11), ('e', 12)) v(k, n)) x;
SELECT evproc.take_tick() > 0 AS ticked;
CREATE TEMP TABLE r4 AS SELECT * FROM evproc_read('cn_pull', 100, lease => '10 ms') WITH ORDINALITY AS r;
SELECT key, payload->>'n' AS n, attempt FROM r4 ORDER BY key, ordinality;
SELECT pg_sleep(0.05);
SELECT pg_temp.try_lease(format('SELECT evproc_ack(%L, %L)', 'cn_pull', (SELECT lease FROM r4 LIMIT 1))) AS ack_expired;
SELECT pg_temp.try_lease(format('SELECT evproc_extend(%L, %L, %L)', 'cn_pull', (SELECT lease FROM r4 LIMIT 1), '1 minute')) AS extend_expired;
SELECT expired FROM evproc_leases WHERE subscription = 'cn_pull';
-- One at a time: the consumer may have died of either head, so each comes alone (in
-- whichever order the units are claimed), each with attempt 2; then d's later event.
CREATE TEMP TABLE r5 AS SELECT 1 AS read, * FROM evproc_read('cn_pull', 100) WITH ORDINALITY AS r;
SELECT count(*) AS events, min(attempt) AS attempt, bool_and(payload->>'n' IN ('10', '12')) AS a_head
  FROM r5;
SELECT lease <> (SELECT lease FROM r4 LIMIT 1) AS new_lease FROM r5 LIMIT 1;
SELECT s.status, s.attempt, s.sqlstate, s.last_error
  FROM r4, evproc_event_status(r4.id) s WHERE r4.payload->>'n' = '10';
-- Extend pushes the expiry out.
SELECT evproc_extend('cn_pull', (SELECT lease FROM r5 LIMIT 1), '1 hour') > now() + interval '59 minutes' AS extended;
SELECT evproc_ack('cn_pull', (SELECT lease FROM r5 LIMIT 1)) AS delivered;
INSERT INTO r5 SELECT 2, * FROM evproc_read('cn_pull', 100) WITH ORDINALITY AS r;
SELECT evproc_ack('cn_pull', (SELECT lease FROM r5 WHERE read = 2 LIMIT 1)) AS delivered;
INSERT INTO r5 SELECT 3, * FROM evproc_read('cn_pull', 100) WITH ORDINALITY AS r;
SELECT evproc_ack('cn_pull', (SELECT lease FROM r5 WHERE read = 3 LIMIT 1)) AS delivered;
SELECT read, count(*) AS events FROM r5 GROUP BY read ORDER BY read;
SELECT key, string_agg(payload->>'n', ',' ORDER BY read) AS n_in_order,
       string_agg(attempt::text, ',' ORDER BY read) AS attempts
  FROM r5 GROUP BY key ORDER BY key;
SELECT delivered, parked, dead_letters FROM evproc_subscriptions WHERE name = 'cn_pull';

-- A consumer that dies of one event (its lease expires each time it reads it) beside
-- innocent ones: with max_attempts 2, only that event ends in the dead letters; every
-- other event, read with it the first time, is delivered at its second attempt.
SELECT count(*) AS enqueued
  FROM (SELECT evproc_enqueue('cn.t', 'p' || n, jsonb_build_object('n', n))
          FROM generate_series(30, 37) n) x;
SELECT evproc.take_tick() > 0 AS ticked;
CREATE TEMP TABLE poison_reads (read int, n int, attempt int, died boolean);
CREATE PROCEDURE pg_temp.consume_until_empty() LANGUAGE plpgsql AS $$
DECLARE
    lease_id text;
    reads int := 0;
BEGIN
    LOOP
        reads := reads + 1;
        EXIT WHEN reads > 40;
        CREATE TEMP TABLE batch ON COMMIT DROP AS
            SELECT * FROM evproc_read('cn_pull', 100, lease => '500 ms');
        EXIT WHEN NOT EXISTS (SELECT FROM batch);
        INSERT INTO poison_reads
            SELECT reads, (payload->>'n')::int, attempt,
                   EXISTS (SELECT FROM batch b WHERE b.payload->>'n' = '33') FROM batch;
        IF EXISTS (SELECT FROM batch WHERE payload->>'n' = '33') THEN
            PERFORM pg_sleep(0.6);  -- dies: the lease expires
        ELSE
            PERFORM evproc_ack('cn_pull', (SELECT lease FROM batch LIMIT 1));
        END IF;
        COMMIT;
    END LOOP;
END
$$;
CALL pg_temp.consume_until_empty();
SELECT count(DISTINCT read) AS reads, max(read) < 40 AS finished FROM poison_reads;
SELECT count(*) FILTER (WHERE n = 33) AS poison_handed,
       count(*) FILTER (WHERE read > 1 AND n <> 33 AND died) AS innocent_died_with_it_again
  FROM poison_reads;
SELECT n, attempts, sqlstate, message FROM evproc_dead_letters d, LATERAL (SELECT (d.payload->>'n')::int AS n) x
 WHERE subscription = 'cn_pull' AND key LIKE 'p%';
SELECT count(*) AS delivered_innocent
  FROM (SELECT DISTINCT n FROM poison_reads WHERE NOT died) x;
SELECT evproc_purge('cn_pull', ARRAY(SELECT event_id FROM evproc_dead_letters
                                      WHERE subscription = 'cn_pull' AND key LIKE 'p%')) AS purged;

-- Refusals.
SELECT pg_temp.try_lease($$SELECT * FROM evproc_read('cn_none')$$) AS unknown_subscription;
SELECT pg_temp.try_lease($$SELECT * FROM evproc_read(NULL)$$) AS null_subscription;
SELECT pg_temp.try_lease($$SELECT * FROM evproc_read('cn_pull', 0)$$) AS no_events;
SELECT pg_temp.try_lease($$SELECT * FROM evproc_read('cn_pull', 10001)$$) AS too_many;
SELECT pg_temp.try_lease($$SELECT * FROM evproc_read('cn_pull', lease => '0')$$) AS no_lease;
SELECT pg_temp.try_lease($$SELECT * FROM evproc_read('cn_pull', wait => '2 hours')$$) AS wait_too_long;
SELECT pg_temp.try_lease($$SELECT evproc_ack('cn_pull', 'no-such-lease')$$) AS unknown_lease;
SELECT pg_temp.try_lease($$SELECT evproc_ack('cn_pull', NULL)$$) AS null_lease;
SELECT pg_temp.try_lease($$SELECT evproc_subscribe('cn_bad', 'cn.t', NULL, lease_duration => '0')$$) AS bad_lease_duration;
CREATE FUNCTION cn_handler(e evproc.event) RETURNS void LANGUAGE sql AS $$ SELECT $$;
GRANT EXECUTE ON FUNCTION cn_handler(evproc.event) TO evproc_cn_app;
SELECT evproc_subscribe('cn_push', 'cn.t', 'cn_handler', run_as => 'evproc_cn_app') > 0 AS subscribed;
SELECT pg_temp.try_lease($$SELECT * FROM evproc_read('cn_push')$$) AS has_handler;
SELECT evproc_unsubscribe('cn_push');

-- Privileges: only members of the subscription's owner role read, ack, nack or extend;
-- anyone else gets 42501 and learns nothing about the events.
SELECT evproc_enqueue('cn.t', 'f', '{"n": 20}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
CREATE TEMP TABLE r6 AS SELECT * FROM evproc_read('cn_pull', 100);
GRANT SELECT ON r6 TO evproc_cn_other;
SET ROLE evproc_cn_other;
SELECT pg_temp.try_lease($$SELECT * FROM evproc_read('cn_pull')$$) AS other_read;
SELECT pg_temp.try_lease(format('SELECT evproc_ack(%L, %L)', 'cn_pull', (SELECT lease FROM r6 LIMIT 1))) AS other_ack;
SELECT pg_temp.try_lease(format('SELECT evproc_nack(%L, %L, %s, %L)', 'cn_pull', (SELECT lease FROM r6 LIMIT 1), (SELECT id FROM r6 LIMIT 1), 'x')) AS other_nack;
SELECT pg_temp.try_lease(format('SELECT evproc_extend(%L, %L, %L)', 'cn_pull', (SELECT lease FROM r6 LIMIT 1), '1 hour')) AS other_extend;
SELECT count(*) AS other_sees_leases FROM evproc_leases;
RESET ROLE;
GRANT evproc_cn_app TO evproc_cn_other;
SET ROLE evproc_cn_other;
SELECT evproc_ack('cn_pull', (SELECT lease FROM r6 LIMIT 1)) AS member_acks;
RESET ROLE;
REVOKE evproc_cn_app FROM evproc_cn_other;

-- A paused subscription hands out nothing; resumed, it does.
SELECT evproc_enqueue('cn.t', 'g', '{"n": 30}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT evproc_pause('cn_pull');
SELECT count(*) AS while_paused FROM evproc_read('cn_pull');
SELECT evproc_resume('cn_pull');
SELECT state FROM evproc_subscriptions WHERE name = 'cn_pull';
CREATE TEMP TABLE r7 AS SELECT * FROM evproc_read('cn_pull');
SELECT key, payload->>'n' AS n FROM r7;

-- Re-drive of a dead letter: it is read again.
SELECT evproc_redrive('cn_pull') AS redriven;
SELECT evproc_ack('cn_pull', (SELECT lease FROM r7 LIMIT 1)) AS delivered;
CREATE TEMP TABLE r8 AS SELECT * FROM evproc_read('cn_pull');
SELECT key, payload->>'n' AS n FROM r8;
SELECT evproc_ack('cn_pull', (SELECT lease FROM r8 LIMIT 1)) AS delivered;

-- Replay: the retained history of key d comes again to the consumers, flagged replay,
-- in order, under a lease that holds the replay (the workers leave it alone too).
SELECT evproc_replay('cn_pull', key => 'd') > 0 AS replaying;
SELECT worked FROM evproc.deliver_batch();
CREATE TEMP TABLE r10 AS SELECT * FROM evproc_read('cn_pull') WITH ORDINALITY AS r;
SELECT key, payload->>'n' AS n, attempt, replay FROM r10 ORDER BY ordinality;
SELECT replay IS NOT NULL AS replay_leased, partitions FROM evproc_leases WHERE subscription = 'cn_pull';
SELECT count(*) AS while_leased FROM evproc_read('cn_pull');
SELECT evproc_ack('cn_pull', (SELECT lease FROM r10 LIMIT 1)) AS delivered;
SELECT state, delivered, failed FROM evproc_replays WHERE subscription = 'cn_pull';

-- Unsubscribing with a lease out: the lease goes with it.
SELECT evproc_enqueue('cn.t', 'h', '{"n": 40}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
CREATE TEMP TABLE r9 AS SELECT * FROM evproc_read('cn_pull');
SELECT evproc_unsubscribe('cn_pull');
SELECT count(*) AS leases_left FROM evproc.lease;
SELECT pg_temp.try_lease(format('SELECT evproc_ack(%L, %L)', 'cn_pull', (SELECT lease FROM r9 LIMIT 1))) AS ack_unsubscribed;

SELECT evproc_drop_topic('cn.t');
DROP FUNCTION cn_handler(evproc.event);
DROP ROLE evproc_cn_app, evproc_cn_other;
