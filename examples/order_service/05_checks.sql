-- 5. The books balance: every check compares what the application committed with what
-- the subscriptions did and what the monitoring views say. Any mismatch fails the run.
-- (Uses :last_order_before_replay, :receipts_replay and :totals_replay from 04_run.sql.)

\echo
\echo '== 17. Balance checks'
CREATE TEMP TABLE checks (n serial, what text, expected numeric, actual numeric);
INSERT INTO checks (what, expected, actual)
WITH o AS (SELECT count(*) AS orders FROM shop.orders),
     ev AS (SELECT e.* FROM evproc.log e JOIN evproc.topic t ON t.id = e.topic_id
             WHERE t.name = 'orders'),
     sub AS (SELECT * FROM evproc_subscription_stats WHERE topic = 'orders'),
     top AS (SELECT * FROM evproc_topic_stats WHERE topic = 'orders'),
     per_customer AS (SELECT customer, count(*) AS orders, sum(amount) AS amount
                        FROM shop.orders GROUP BY customer)
VALUES
  ('events in the log = committed orders',
   (SELECT orders FROM o), (SELECT count(*) FROM ev)),
  ('orders without exactly one event',
   0, (SELECT count(*) FROM shop.orders x
        WHERE (SELECT count(*) FROM ev WHERE (ev.payload->>'order_id')::bigint = x.id) <> 1)),
  ('rows and events of erin''s rolled-back order',
   0, (SELECT count(*) FROM shop.orders WHERE customer = 'erin')
      + (SELECT count(*) FROM ev WHERE key = 'customer:erin')
      + (SELECT count(*) FROM shop.customer_totals WHERE customer = 'erin')
      + (SELECT count(*) FROM shop.receipts WHERE customer = 'erin')),
  ('orders with a negative amount (the refused one)',
   0, (SELECT count(*) FROM shop.orders WHERE amount < 0)),
  ('evproc_topic_stats.published',
   (SELECT orders FROM o), (SELECT published FROM top)),
  ('evproc_topic_stats.dedup_hits (step 4)', 1, (SELECT dedup_hits FROM top)),
  ('evproc_topic_stats.rejected_invalid (step 5)', 1, (SELECT rejected_invalid FROM top)),
  ('evproc_topic_stats.pending', 0, (SELECT pending FROM top)),
  ('orders counted in customer_totals',
   (SELECT orders FROM o), (SELECT sum(orders) FROM shop.customer_totals)),
  ('customers whose totals differ from their orders',
   0, (SELECT count(*) FROM shop.customer_totals t FULL JOIN per_customer p USING (customer)
        WHERE t.orders IS DISTINCT FROM p.orders OR t.amount IS DISTINCT FROM p.amount)),
  ('customer totals changed by the replay of alice',
   0, (SELECT count(*) FROM shop.customer_totals t FULL JOIN pg_temp.totals_before_replay b
          USING (customer)
        WHERE t.customer = 'alice'
          AND (t.orders IS DISTINCT FROM b.orders OR t.amount IS DISTINCT FROM b.amount))),
  ('order_totals: delivered',
   (SELECT orders FROM o), (SELECT delivered FROM sub WHERE subscription = 'order_totals')),
  ('order_totals: failed + dead',
   0, (SELECT failed + dead FROM sub WHERE subscription = 'order_totals')),
  ('order_totals: replayed = alice''s orders',
   (SELECT count(*) FROM shop.orders WHERE customer = 'alice'),
   (SELECT replayed FROM sub WHERE subscription = 'order_totals')),
  ('order_totals: requeued', 0, (SELECT requeued FROM sub WHERE subscription = 'order_totals')),
  ('order_receipts: orders without a receipt',
   0, (SELECT count(*) FROM shop.orders x
        WHERE NOT EXISTS (SELECT FROM shop.receipts r WHERE r.order_id = x.id))),
  ('order_receipts: receipts without an order',
   0, (SELECT count(*) FROM shop.receipts r
        WHERE NOT EXISTS (SELECT FROM shop.orders x WHERE x.id = r.order_id))),
  ('order_receipts: dead (orders over 10,000 before the fix)',
   (SELECT count(*) FROM shop.orders WHERE amount >= 10000 AND id <= :last_order_before_replay),
   (SELECT dead FROM sub WHERE subscription = 'order_receipts')),
  ('order_receipts: delivered = orders - dead letters + requeued',
   (SELECT orders FROM o) - (SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'order_receipts')
     + (SELECT requeued FROM sub WHERE subscription = 'order_receipts'),
   (SELECT delivered FROM sub WHERE subscription = 'order_receipts')),
  ('order_receipts: receipts sent by the replay that are not dead letters',
   0, (SELECT count(*) FROM shop.receipts r
        WHERE r.via_replay
          AND NOT EXISTS (SELECT FROM evproc_dead_letters d
                           WHERE d.subscription = 'order_receipts'
                             AND (d.payload->>'order_id')::bigint = r.order_id))),
  ('order_receipts: dead letters without a receipt now',
   0, (SELECT count(*) FROM evproc_dead_letters d
        WHERE d.subscription = 'order_receipts'
          AND NOT EXISTS (SELECT FROM shop.receipts r
                           WHERE r.order_id = (d.payload->>'order_id')::bigint))),
  ('order_receipts: replayed + requeued = orders placed before the replay',
   (SELECT count(*) FROM shop.orders WHERE id <= :last_order_before_replay),
   (SELECT replayed + requeued FROM sub WHERE subscription = 'order_receipts')),
  ('evproc_replays: replays done',
   2, (SELECT count(*) FROM evproc_replays
        WHERE id IN (:receipts_replay, :totals_replay) AND state = 'done')),
  ('evproc_replays: events the receipts replay handed over = replayed',
   (SELECT replayed FROM sub WHERE subscription = 'order_receipts'),
   (SELECT delivered FROM evproc_replays WHERE id = :receipts_replay)),
  ('evproc_replays: failed events of both replays', 0,
   (SELECT sum(failed) FROM evproc_replays WHERE id IN (:receipts_replay, :totals_replay))),
  ('lag_events of both subscriptions',
   0, (SELECT sum(lag_events) FROM sub));

SELECT n, what, expected, actual, CASE WHEN expected = actual THEN 'ok' ELSE 'WRONG' END AS result
  FROM checks ORDER BY n;

DO $$
DECLARE
  wrong text;
BEGIN
  SELECT string_agg(format('%s: expected %s, got %s', what, expected, coalesce(actual::text, 'NULL')), '; ')
    INTO wrong FROM checks WHERE actual IS DISTINCT FROM expected;
  IF wrong IS NOT NULL THEN
    RAISE EXCEPTION 'the order service does not balance: %', wrong;
  END IF;
END $$;
\echo 'All checks passed: every committed order was published once, counted once and got one'
\echo 'receipt; the rolled-back and refused orders are nowhere; the views agree.'
