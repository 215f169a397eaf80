-- evproc demo: an order service publishing events in its own transactions.
-- Re-runnable: it starts from a clean slate each time.
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS evproc CASCADE;
DROP TABLE IF EXISTS orders;
CREATE EXTENSION evproc;
RESET client_min_messages;

\echo '== a topic with 8 key partitions, a 1-hour dedup window and a payload schema'
SELECT evproc_create_topic('orders', partitions => 8, dedup_window => '1 hour',
  payload_schema => '{"type": "object", "required": ["order_id", "amount"],
                      "properties": {"order_id": {"type": "integer"},
                                     "amount": {"type": "number", "minimum": 0}}}') AS topic_id;

CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric NOT NULL);

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

\echo '== the event log (audit history), per partition'
SELECT partition, count(*) AS events, min(id) AS first_id, max(id) AS last_id
  FROM evproc.log GROUP BY partition ORDER BY partition;
SELECT id, key, type, payload, dedup_id FROM evproc.log ORDER BY id LIMIT 3;
