-- 2. The application's write path: an order and its OrderCreated event are written in
-- one transaction, so both commit or neither does. This is a transactional outbox with
-- no relay process: the event log is a table, and evproc's workers read it.

CREATE FUNCTION shop.place_order(customer text, amount numeric, request_id text DEFAULT NULL,
                                 OUT order_id bigint, OUT event_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
  -- A retried request (same request_id) finds the order it created the first time.
  INSERT INTO shop.orders AS o (customer, amount, request_id)
  VALUES (place_order.customer, place_order.amount, place_order.request_id)
  ON CONFLICT ON CONSTRAINT orders_request_id_key DO NOTHING
  RETURNING o.id INTO order_id;
  IF order_id IS NULL THEN
    SELECT o.id INTO order_id FROM shop.orders o WHERE o.request_id = place_order.request_id;
  END IF;
  -- Keyed by customer: one customer's events are handled in commit order. The dedup id
  -- is the order's: publishing the same order again returns the first event's id and
  -- appends nothing, so the retry above is safe to publish unconditionally.
  event_id := evproc_enqueue('orders', 'customer:' || place_order.customer,
                             jsonb_build_object('order_id', order_id,
                                                'customer', place_order.customer,
                                                'amount', place_order.amount),
                             type => 'OrderCreated',
                             dedup_id => 'order-' || order_id);
END $$;
COMMENT ON FUNCTION shop.place_order IS 'writes an order and publishes OrderCreated in the caller''s transaction';

-- The bulk path: a partner's import of many orders of one customer in one statement,
-- published with one evproc_enqueue_batch call (events in the order of the ids).
CREATE FUNCTION shop.import_orders(customer text, amounts numeric[]) RETURNS bigint[]
LANGUAGE sql AS $$
  WITH o AS (
    INSERT INTO shop.orders (customer, amount)
    SELECT import_orders.customer, a FROM unnest(amounts) AS a
    RETURNING id, customer, amount)
  SELECT evproc_enqueue_batch('orders', jsonb_agg(
           jsonb_build_object('key', 'customer:' || o.customer,
                              'type', 'OrderCreated',
                              'dedup_id', 'order-' || o.id,
                              'payload', jsonb_build_object('order_id', o.id,
                                                            'customer', o.customer,
                                                            'amount', o.amount))
           ORDER BY o.id))
    FROM o
$$;
COMMENT ON FUNCTION shop.import_orders IS 'writes a batch of orders and publishes their OrderCreated events in one call';
