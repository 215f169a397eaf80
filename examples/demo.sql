-- evproc demo: an order service publishing events in its own transactions.
-- Re-runnable: it starts from a clean slate each time.
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS evproc CASCADE;
DROP TABLE IF EXISTS orders, customer_totals, audit_log;
CREATE EXTENSION evproc;
DO $$ BEGIN CREATE ROLE evproc_demo_app; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
RESET client_min_messages;

\echo '== a topic with 8 key partitions, a 1-hour dedup window and a payload schema'
SELECT evproc_create_topic('orders', partitions => 8, dedup_window => '1 hour',
  payload_schema => '{"type": "object", "required": ["order_id", "amount"],
                      "properties": {"order_id": {"type": "integer"},
                                     "amount": {"type": "number", "minimum": 0}}}') AS topic_id;

CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric NOT NULL);

\echo '== two subscriptions, fed by the background workers; handlers run as evproc_demo_app'
-- A projection: per-customer totals, maintained batch by batch.
CREATE TABLE customer_totals (customer text PRIMARY KEY, orders int NOT NULL, amount numeric NOT NULL);
CREATE FUNCTION project_totals(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
  INSERT INTO customer_totals AS t (customer, orders, amount)
  SELECT e.key, count(*), sum((e.payload->>'amount')::numeric) FROM unnest(events) e GROUP BY e.key
  ON CONFLICT (customer) DO UPDATE SET orders = t.orders + excluded.orders,
                                      amount = t.amount + excluded.amount
$$;
-- An audit trail whose handler rejects amounts of exactly 13 (a "poison" event).
CREATE TABLE audit_log (event_id bigint PRIMARY KEY, customer text, amount numeric, attempt int);
CREATE FUNCTION audit(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF (e.payload->>'amount')::numeric = 13 THEN
    RAISE EXCEPTION 'unlucky amount in order %', e.payload->>'order_id' USING HINT = 'fix the auditor';
  END IF;
  INSERT INTO audit_log VALUES (e.id, e.key, (e.payload->>'amount')::numeric, e.attempt);
END $$;
GRANT SELECT, INSERT, UPDATE ON customer_totals TO evproc_demo_app;
GRANT INSERT ON audit_log TO evproc_demo_app;
GRANT USAGE ON SCHEMA evproc TO evproc_demo_app;
SELECT evproc_subscribe('totals', 'orders', 'project_totals', batch_size => 100,
                        run_as => 'evproc_demo_app') AS totals_id;
SELECT evproc_subscribe('audit', 'orders', 'audit', max_attempts => 3, backoff_base => '100 ms',
                        failure_budget => 1, run_as => 'evproc_demo_app') AS audit_id;

\echo '== the app writes an order and publishes OrderCreated in the same transaction'
BEGIN;
INSERT INTO orders VALUES (1001, 'alice', 42.50);
SELECT evproc_enqueue('orders', 'customer:alice', '{"order_id": 1001, "amount": 42.50}',
                      'OrderCreated.v1', dedup_id => 'order-1001') AS event_id;
COMMIT;

\echo '== a rolled-back transaction publishes nothing'
BEGIN;
INSERT INTO orders VALUES (1002, 'bob', 10);
SELECT evproc_enqueue('orders', 'customer:bob', '{"order_id": 1002, "amount": 10}', 'OrderCreated.v1');
ROLLBACK;

\echo '== a retried request with the same dedup id returns the first event id and adds nothing'
SELECT evproc_enqueue('orders', 'customer:alice', '{"order_id": 1001, "amount": 42.50}',
                      'OrderCreated.v1', dedup_id => 'order-1001') AS same_event_id;

\echo '== a burst of 1,000 events over 50 customers with the batch form'
SELECT cardinality(evproc_enqueue_batch('orders', (
  SELECT jsonb_agg(jsonb_build_object(
           'key', 'customer:' || (g % 50),
           'type', 'OrderCreated.v1',
           'payload', jsonb_build_object('order_id', 2000 + g, 'amount', g % 100)))
    FROM generate_series(1, 1000) g))) AS batch_events;

\echo '== bad input is refused with a precise SQLSTATE and a message naming the field'
DO $$
DECLARE
  attempt text;
BEGIN
  FOREACH attempt IN ARRAY ARRAY[
    $q$SELECT evproc_enqueue('orders', 'k', '{"order_id": "x", "amount": 1}')$q$,
    $q$SELECT evproc_enqueue('orders', 'k', '[1, 2]')$q$,
    $q$SELECT evproc_enqueue('nope', 'k', '{}')$q$,
    $q$SELECT evproc_enqueue_batch('orders', '[{"payload": {"order_id": 1, "amount": 1}}, {"payload": {"order_id": 2, "amount": -5}}]')$q$]
  LOOP
    BEGIN
      EXECUTE attempt;
    EXCEPTION WHEN OTHERS THEN
      RAISE NOTICE '% %', SQLSTATE, SQLERRM;
    END;
  END LOOP;
END $$;

\echo '== waiting for the workers to deliver everything (totals) and to dead-letter the poison (audit)'
DO $$
BEGIN
  FOR i IN 1..300 LOOP
    EXIT WHEN (SELECT sum(orders) FROM customer_totals) = 1001
          AND (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM evproc_dead_letters) = 1001;
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT name, state, delivered, parked, dead_letters FROM evproc_subscriptions ORDER BY name;
\echo '== the projection, per customer'
SELECT customer, orders, amount FROM customer_totals ORDER BY amount DESC LIMIT 5;
\echo '== the poison events, with their full error context'
SELECT subscription, event_id, key, payload->>'amount' AS amount, attempts, sqlstate, message, hint
  FROM evproc_dead_letters ORDER BY event_id LIMIT 5;
\echo '== end-to-end: enqueued = delivered + dead for each subscription'
SELECT s.name, (SELECT count(*) FROM evproc.log) AS enqueued, s.delivered, s.dead_letters,
       (SELECT count(*) FROM evproc.log) = s.delivered + s.dead_letters AS balanced
  FROM evproc_subscriptions s ORDER BY s.name;

\echo '== the event log (audit history), per partition'
SELECT partition, count(*) AS events, min(id) AS first_id, max(id) AS last_id
  FROM evproc.log GROUP BY partition ORDER BY partition;
SELECT id, key, type, payload, dedup_id FROM evproc.log ORDER BY id LIMIT 3;
