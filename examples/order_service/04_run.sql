-- 4. The story: orders come in, the workers deliver, things fail, we look at the
-- monitoring views, fix the bug, replay, and look again. 05_checks.sql then proves the
-- books balance.

-- A demo tool: polls a yes/no query until it says yes (an application would not wait
-- like this; it would just let the workers work). Fails after the timeout.
CREATE FUNCTION shop.wait_for(what text, ready_query text, timeout interval DEFAULT '60 seconds')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  started timestamptz := clock_timestamp();
  ready boolean;
BEGIN
  LOOP
    EXECUTE ready_query INTO ready;  -- a fresh snapshot each time (READ COMMITTED)
    IF ready THEN
      RETURN format('%s (after %s s)', what,
                    round(extract(epoch FROM clock_timestamp() - started)::numeric, 1));
    END IF;
    IF clock_timestamp() - started > timeout THEN
      RAISE EXCEPTION 'timed out after % waiting until %', timeout, what
        USING HINT = 'Look at evproc_subscription_stats, evproc_workers and the server log.';
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;

\echo
\echo '== 0. The launcher registers new subscriptions in its shared-memory statistics at its'
\echo '   next round (lag_events is NULL until then; an idle launcher can take up to 10 seconds).'
\echo '   Their counters start there, so we wait for it before the first order.'
SELECT shop.wait_for('both subscriptions are measured',
  $q$SELECT count(*) = 2 AND bool_and(lag_events IS NOT NULL)
       FROM evproc_subscription_stats WHERE topic = 'orders'$q$) AS waited;

\echo
\echo '== 1. alice places an order: the order row and its OrderCreated event commit together.'
SELECT * FROM shop.place_order('alice', 42.50, request_id => 'req-alice-1');

\echo '== 2. bob checks out a cart as three orders in one transaction: one commit, three events.'
BEGIN;
SELECT o.* FROM unnest(ARRAY[19.99, 5.00, 120.00]) AS a, shop.place_order('bob', a) AS o;
COMMIT;

\echo '== 3. erin''s payment is declined after her order was written: ROLLBACK takes the order'
\echo '   and its event with it: no subscriber will ever hear of that order.'
BEGIN;
SELECT * FROM shop.place_order('erin', 310.00);
ROLLBACK;

\echo '== 4. alice''s client never got the answer to step 1 and sends the same request again:'
\echo '   the same order and the same event id come back (request_id in shop.orders, the dedup'
\echo '   id in evproc); nothing new is published, and the topic counts one dedup hit.'
SELECT * FROM shop.place_order('alice', 42.50, request_id => 'req-alice-1');

\echo '== 5. A buggy client sends a negative amount: the topic''s payload schema refuses the'
\echo '   event (23514, with the JSON path), and the order row written before it goes with the'
\echo '   failed transaction.'
DO $$
BEGIN
  PERFORM shop.place_order('carol', -5);
EXCEPTION WHEN check_violation THEN
  RAISE NOTICE 'refused: % %', SQLSTATE, SQLERRM;
END $$;

\echo '== 6. A busy hour: 200 orders from 5 customers, each in its own transaction. Every 42nd'
\echo '   order is over 10,000 (the receipts bug); every order id ending in 3 meets a mail'
\echo '   server timeout on its first attempt.'
DO $$
DECLARE
  customers text[] := ARRAY['alice', 'bob', 'carol', 'dave', 'frank'];
BEGIN
  FOR i IN 1..200 LOOP
    PERFORM shop.place_order(customers[1 + i % 5],
                             CASE WHEN i % 42 = 21 THEN 10000 + 25 * i
                                  ELSE 1 + (i * 7919 % 50000) / 100.0 END);
    COMMIT;
  END LOOP;
END $$;
\echo '== 6b. A partner imports 30 orders for grace in one statement: one evproc_enqueue_batch'
\echo '   call publishes all their events (the fast path for bulk writes).'
SELECT cardinality(ids) AS events, ids[1] AS first_event_id, ids[30] AS last_event_id
  FROM shop.import_orders('grace', ARRAY(SELECT 10 + g / 4.0 FROM generate_series(1, 30) g)) AS ids;
\echo '   The orders table now:'
SELECT count(*) AS orders, count(DISTINCT customer) AS customers, sum(amount) AS revenue,
       count(*) FILTER (WHERE amount >= 10000) AS over_10000,
       count(*) FILTER (WHERE id % 10 = 3) AS id_ends_in_3
  FROM shop.orders;

\echo
\echo '== 7. The workers deliver in the background. lag_events (committed, not yet handled or'
\echo '   given up) reaches 0 once every order is in the totals and every receipt is sent or'
\echo '   dead-lettered.'
SELECT shop.wait_for('both subscriptions caught up',
  $q$SELECT bool_and(lag_events = 0 AND retries_pending = 0)
       FROM evproc_subscription_stats WHERE topic = 'orders'$q$) AS waited;

\echo
\echo '== 8. evproc_subscription_stats, one row per subscription (counters since the server'
\echo '   started): delivered = events handled; failed = failed attempts; dead = events given'
\echo '   up after max_attempts (see evproc_dead_letters); replayed = events handed over again'
\echo '   by a replay; retries_pending = parked events waiting for their next attempt;'
\echo '   latency = from enqueue to handled, over the last minute.'
SELECT subscription, state, breaker, lag_events, lag_seconds, delivered, failed, dead, replayed,
       retries_pending, latency_p50_ms, latency_p99_ms
  FROM evproc_subscription_stats WHERE topic = 'orders' ORDER BY subscription;
\echo '   order_receipts: failed = 3 attempts per dead letter + 1 per timeout that its retry'
\echo '   fixed; dead = the orders over 10,000. order_totals: nothing failed.'

\echo
\echo '== 9. evproc_topic_stats: published (committed events; the rolled-back and the refused'
\echo '   ones are not), pending (the slowest subscription''s backlog, what max_pending bounds),'
\echo '   dedup_hits (step 4), rejected_invalid (step 5), rejected_full (refused over max_pending).'
SELECT topic, partitions, published, published_per_second, pending, max_pending, dedup_hits,
       rejected_invalid, rejected_full, subscriptions
  FROM evproc_topic_stats WHERE topic = 'orders';

\echo
\echo '== 10. evproc_workers: the delivery workers, what they do now (idle: caught up) and what'
\echo '   they did (batches, events); last_error is evproc''s own trouble, not handler errors.'
SELECT worker, state, subscription, partition, batches, events, last_error FROM evproc_workers
 ORDER BY worker;

\echo
\echo '== 11. evproc_dead_letters: each event given up on, with the full error of its last'
\echo '   attempt. The customers'' later orders went on (on_dead_letter => skip).'
SELECT subscription, event_id, key, payload->>'order_id' AS order_id, payload->>'amount' AS amount,
       attempts, sqlstate, message, detail
  FROM evproc_dead_letters WHERE subscription = 'order_receipts' ORDER BY event_id;

\echo
\echo '== 12. The projection matches the orders table, customer by customer:'
SELECT t.customer, t.orders, t.amount, o.orders AS orders_in_table, o.amount AS amount_in_table
  FROM shop.customer_totals t
  FULL JOIN (SELECT customer, count(*) AS orders, sum(amount) AS amount
               FROM shop.orders GROUP BY customer) o USING (customer)
 ORDER BY customer;
\echo '   ... and the receipts miss exactly the dead-lettered orders:'
SELECT count(*) AS orders, count(r.order_id) AS receipts,
       count(*) FILTER (WHERE r.order_id IS NULL) AS missing,
       (SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'order_receipts') AS dead_letters,
       count(*) FILTER (WHERE r.attempt > 1) AS sent_on_a_retry
  FROM shop.orders o LEFT JOIN shop.receipts r ON r.order_id = o.id;

-- Checked here, while nothing else has moved the counters yet.
DO $$
DECLARE
  s record;
  expected_dead bigint;
  expected_failed bigint;
BEGIN
  SELECT * INTO s FROM evproc_subscription_stats WHERE subscription = 'order_receipts';
  SELECT count(*) FILTER (WHERE amount >= 10000),
         sum(CASE WHEN amount >= 10000 THEN 3 WHEN id % 10 = 3 THEN 1 ELSE 0 END)
    INTO expected_dead, expected_failed FROM shop.orders;
  IF s.dead <> expected_dead OR s.dead_letters <> expected_dead OR s.failed <> expected_failed THEN
    RAISE EXCEPTION 'order_receipts: dead % (dead letters %), failed %; expected % dead, % failed',
      s.dead, s.dead_letters, s.failed, expected_dead, expected_failed;
  END IF;
END $$;
\echo '   (checked: order_receipts dead = orders over 10,000; failed = 3 per dead letter + 1 per'
\echo '   other order id ending in 3)'

\echo
\echo '== 13. The fix: receipts.amount gets the precision of orders.amount. The dead letters'
\echo '   stay where they are; a replay re-delivers the history to order_receipts, flagged'
\echo '   replay, and its idempotent handler sends only the receipts that are missing.'
ALTER TABLE shop.receipts ALTER COLUMN amount TYPE numeric(12,2);
SELECT max(id) AS last_order_before_replay FROM shop.orders \gset
SELECT evproc_replay('order_receipts') AS receipts_replay \gset
\echo '   replay' :receipts_replay 'started. Live delivery goes on meanwhile: 20 more orders, one over 10,000.'
DO $$
DECLARE
  customers text[] := ARRAY['alice', 'bob', 'carol', 'dave', 'frank'];
BEGIN
  FOR i IN 201..220 LOOP
    PERFORM shop.place_order(customers[1 + i % 5],
                             CASE WHEN i = 210 THEN 10000 + 25 * i
                                  ELSE 1 + (i * 7919 % 50000) / 100.0 END);
    COMMIT;
  END LOOP;
END $$;
SELECT shop.wait_for('the replay is done and both subscriptions caught up',
  $q$SELECT (SELECT bool_and(state = 'done') FROM evproc_replays
              WHERE subscription = 'order_receipts')
        AND (SELECT bool_and(lag_events = 0 AND retries_pending = 0)
               FROM evproc_subscription_stats WHERE topic = 'orders')$q$) AS waited;

\echo
\echo '== 14. evproc_replays: a replay covers the events that existed when it was asked for'
\echo '   (ids up to last_id); delivered counts the events it handed over.'
SELECT id, subscription, key, state, delivered, failed, percent_scanned, last_id
  FROM evproc_replays ORDER BY id;
SELECT subscription, lag_events, delivered, failed, dead, replayed, requeued, retries_pending
  FROM evproc_subscription_stats WHERE topic = 'orders' ORDER BY subscription;
\echo '   replayed: events the replay handed over. requeued: replayed events whose customer had'
\echo '   a live event parked at that moment (a mail timeout of the 20 new orders): to keep the'
\echo '   key in order they joined its retry line, and were delivered from there (delivered).'
\echo '   Every order has its receipt now; the replay sent exactly the missing ones:'
SELECT count(*) AS orders, count(r.order_id) AS receipts,
       count(*) FILTER (WHERE r.via_replay) AS sent_by_the_replay,
       (SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'order_receipts') AS dead_letters
  FROM shop.orders o LEFT JOIN shop.receipts r ON r.order_id = o.id;

\echo
\echo '== 15. Replaying a projection is harmless when it is idempotent: replay alice''s history'
\echo '   to order_totals (key => customer:alice); her totals do not move.'
CREATE TEMP TABLE totals_before_replay AS SELECT * FROM shop.customer_totals;
SELECT evproc_replay('order_totals', key => 'customer:alice') AS totals_replay \gset
SELECT shop.wait_for('the replay of alice''s orders is done',
  $q$SELECT bool_and(state = 'done') FROM evproc_replays WHERE subscription = 'order_totals'$q$)
  AS waited;
SELECT r.subscription, r.key, r.state, r.delivered AS replayed_events,
       b.orders AS orders_before, t.orders AS orders_after,
       b.amount AS amount_before, t.amount AS amount_after
  FROM evproc_replays r
  JOIN totals_before_replay b ON 'customer:' || b.customer = r.key
  JOIN shop.customer_totals t ON t.customer = b.customer
 WHERE r.id = :totals_replay;

\echo
\echo '== 16. evproc_metrics: the same figures as (name, labels, value) rows, Prometheus style'
\echo '   (examples/monitoring/postgres_exporter.yml exports the views to Prometheus):'
SELECT name, labels, value FROM evproc_metrics
 WHERE labels->>'subscription' = 'order_receipts' AND name LIKE '%\_total'
 ORDER BY name;
