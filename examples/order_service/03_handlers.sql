-- 3. Two subscriptions to topic orders, each with its own progress, retries and dead
-- letters. The background workers call their handlers; a handler's writes commit in the
-- same transaction as the delivery that called it.

\echo '== setup: subscriptions order_totals (a projection) and order_receipts (flaky)'

-- order_totals: per-customer totals, batch form (one call per batch of up to 100 events).
--
-- Idempotent by order id. Normal delivery hands each event over once, but a replay
-- (evproc_replay) hands history over again, and a handler written "+1 per event" would
-- count those orders twice. So an event counts only if its order id is new to
-- counted_orders; the totals grow by exactly the orders just recorded there.
CREATE FUNCTION shop.project_order_totals(events evproc.event[]) RETURNS void
LANGUAGE sql AS $$
  WITH fresh AS (
    INSERT INTO shop.counted_orders (order_id, customer, amount, event_id)
    SELECT (e.payload->>'order_id')::bigint, e.payload->>'customer',
           (e.payload->>'amount')::numeric, e.id
      FROM unnest(events) AS e
     WHERE e.type = 'OrderCreated'
    ON CONFLICT (order_id) DO NOTHING
    RETURNING customer, amount)
  INSERT INTO shop.customer_totals AS t (customer, orders, amount, updated_at)
  SELECT customer, count(*), sum(amount), now() FROM fresh GROUP BY customer
  ON CONFLICT (customer) DO UPDATE
     SET orders = t.orders + excluded.orders,
         amount = t.amount + excluded.amount,
         updated_at = excluded.updated_at
$$;

-- order_receipts: "emails" a receipt per order, per-event form. It fails in two ways:
--  * transiently: the mail server times out on the first attempt for every order whose
--    id ends in 3; evproc parks the customer's key and retries a moment later, which
--    succeeds (not on a replay: a replay is a fresh run);
--  * permanently: orders of 10,000.00 or more do not fit receipts.amount (the bug in
--    01_schema.sql); after max_attempts they become dead letters.
-- Idempotent by order id too (ON CONFLICT DO NOTHING): a replay sends no receipt twice.
CREATE FUNCTION shop.send_receipt(e evproc.event) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  ordered bigint := (e.payload->>'order_id')::bigint;
BEGIN
  IF e.type IS DISTINCT FROM 'OrderCreated' THEN
    RETURN;
  END IF;
  IF ordered % 10 = 3 AND e.attempt = 1 AND NOT e.replay THEN
    RAISE EXCEPTION 'mail server timed out sending the receipt of order %', ordered
      USING ERRCODE = 'connection_failure';
  END IF;
  INSERT INTO shop.receipts (order_id, customer, amount, attempt, via_replay)
  VALUES (ordered, e.payload->>'customer', (e.payload->>'amount')::numeric, e.attempt, e.replay)
  ON CONFLICT (order_id) DO NOTHING;
END $$;

-- What the handlers' role needs: evproc.event lives in schema evproc, the handlers and
-- tables in shop, and the tables' privileges for what the handlers do (INSERT ... ON
-- CONFLICT DO UPDATE reads the row it updates, RETURNING reads what it returns).
GRANT USAGE ON SCHEMA evproc, shop TO order_app;
GRANT SELECT, INSERT, UPDATE ON shop.customer_totals TO order_app;
GRANT SELECT, INSERT ON shop.counted_orders, shop.receipts TO order_app;

SELECT evproc_subscribe('order_totals', 'orders', 'shop.project_order_totals',
                        batch_size => 100, run_as => 'order_app') AS totals_id \gset
-- max_attempts 3 with a 100 ms backoff (then 200 ms, ...: exponential, half of it
-- jittered), so the demo's dead letters die within a second. on_dead_letter => 'skip':
-- the customer's later orders go on without the dead one. The circuit breaker stays at
-- its default (cool down for 30 s when more than half of the last minute's deliveries
-- fail, over at least 20): that is an outage, and this demo's ~15% failures are not.
SELECT evproc_subscribe('order_receipts', 'orders', 'shop.send_receipt',
                        batch_size => 20, max_attempts => 3,
                        backoff_base => '100 ms', backoff_cap => '1 second',
                        on_dead_letter => 'skip', run_as => 'order_app') AS receipts_id \gset
