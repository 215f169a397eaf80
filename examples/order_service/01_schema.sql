-- 1. The order service's data: its tables (schema shop), the role its event handlers
-- run as, and the topic its events go to.

\echo '== setup: schema shop, role order_app, topic orders'

-- Start from a clean slate. Subscriptions go first (a topic with subscriptions cannot
-- be dropped); dropping the topic removes its history and dedup ids.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS evproc;
DO $$
BEGIN
  PERFORM evproc_unsubscribe(s.name) FROM evproc_subscriptions s WHERE s.topic = 'orders';
  PERFORM evproc_drop_topic(t.name) FROM evproc_topics t WHERE t.name = 'orders';
END $$;
DROP SCHEMA IF EXISTS shop CASCADE;
-- Handlers never run as a superuser: they run as this role, which gets only what they need.
DO $$
BEGIN
  CREATE ROLE order_app NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;  -- roles are per cluster: an earlier run made it
END $$;
RESET client_min_messages;

CREATE SCHEMA shop;

-- The application's own table. request_id is the client's idempotency key: a client
-- that retries a request it got no answer to sends the same one again.
CREATE TABLE shop.orders (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer   text NOT NULL,
  amount     numeric(12,2) NOT NULL,
  request_id text UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A read model kept by subscription order_totals: orders and revenue per customer.
-- counted_orders remembers which orders are already in the totals (see 03_handlers.sql).
CREATE TABLE shop.customer_totals (
  customer   text PRIMARY KEY,
  orders     integer NOT NULL,
  amount     numeric(14,2) NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE TABLE shop.counted_orders (
  order_id bigint PRIMARY KEY,
  customer text NOT NULL,
  amount   numeric(12,2) NOT NULL,
  event_id bigint NOT NULL
);

-- Kept by subscription order_receipts, which "emails" a receipt per order: one row per
-- receipt sent. It has a bug: amount is numeric(6,2), so a receipt of 10,000.00 or
-- more does not fit (SQLSTATE 22003). 04_run.sql finds it, fixes it, and replays.
CREATE TABLE shop.receipts (
  order_id   bigint PRIMARY KEY,
  customer   text NOT NULL,
  amount     numeric(6,2) NOT NULL,
  attempt    integer NOT NULL,   -- the delivery attempt that sent it (evproc.event.attempt)
  via_replay boolean NOT NULL,   -- sent by a replay (evproc.event.replay)
  sent_at    timestamptz NOT NULL DEFAULT now()
);

-- The topic: 8 partitions (one customer's events stay in one, in commit order), dedup
-- ids remembered for a day, at most 10,000 events waiting for the slowest subscription
-- before publishers are refused (53400), and a payload schema checked at every enqueue.
SELECT evproc_create_topic('orders', partitions => 8, dedup_window => '1 day',
  max_pending => 10000,
  payload_schema => '{"type": "object", "required": ["order_id", "customer", "amount"],
                      "additionalProperties": false,
                      "properties": {"order_id": {"type": "integer", "minimum": 1},
                                     "customer": {"type": "string", "minLength": 1},
                                     "amount":   {"type": "number", "minimum": 0.01}}}')
  AS orders_topic_id \gset
