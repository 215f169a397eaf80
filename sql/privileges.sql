-- Privileges (README "Security and privileges"): every forbidden path, tried as a
-- non-superuser, is refused with 42501; the allowed paths work for roles that hold no
-- privilege on evproc's tables. Delivery is stepped by hand (evproc.deliver_batch()).
\i sql/include/try.sql
\i sql/include/drain.sql

CREATE ROLE evproc_alice;          -- creates and owns topic pv.orders
CREATE ROLE evproc_bob;            -- creates pv.payments; granted rights on pv.orders
CREATE ROLE evproc_mallory;        -- holds nothing but what every role has
CREATE ROLE evproc_alice_worker;   -- alice's handlers run as it
CREATE ROLE evproc_publishers;     -- a group granted 'publish'
CREATE ROLE evproc_watcher IN ROLE pg_monitor;
GRANT evproc_alice_worker TO evproc_alice;
-- Handler owners need USAGE on schema evproc (evproc.event). mallory gets it too: the
-- worst case, where she can name every internal function.
GRANT USAGE ON SCHEMA evproc TO evproc_alice, evproc_bob, evproc_mallory, evproc_alice_worker,
                               evproc_watcher;
-- Who may create topics is a DBA's grant.
GRANT EXECUTE ON FUNCTION evproc_create_topic(text, integer, interval, interval, bigint, jsonb)
    TO evproc_alice, evproc_bob;

CREATE TABLE pv_seen (handler text, id bigint, key text, who text);
GRANT INSERT ON pv_seen TO evproc_alice_worker, evproc_bob, evproc_alice;
-- Records what it gets and as whom; fails on payloads with "fail".
CREATE FUNCTION pv_record(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(events) e WHERE e.payload ? 'fail') THEN
    RAISE EXCEPTION 'cannot handle %', (SELECT e.payload FROM unnest(events) e WHERE e.payload ? 'fail' LIMIT 1);
  END IF;
  INSERT INTO pv_seen SELECT 'record', e.id, e.key, current_user::text FROM unnest(events) e;
END $fn$;
CREATE FUNCTION pv_private(events evproc.event[]) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO pv_seen SELECT 'private', e.id, e.key, current_user::text FROM unnest(events) e $$;
REVOKE EXECUTE ON FUNCTION pv_private(evproc.event[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pv_private(evproc.event[]) TO evproc_alice_worker;

-- None of the roles holds any privilege on evproc's tables, now or at the end.
CREATE FUNCTION pg_temp.table_rights() RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FROM pg_class c, unnest(ARRAY['evproc_alice', 'evproc_bob', 'evproc_mallory',
                                                'evproc_alice_worker', 'evproc_watcher']) r,
                       unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p
   WHERE c.relnamespace = 'evproc'::regnamespace AND c.relkind IN ('r', 'p')
     AND has_table_privilege(r, c.oid, p) $$;
SELECT pg_temp.table_rights() AS table_rights;

-------------------------------------------------------------------------------
-- Creating topics takes EXECUTE on evproc_create_topic, which PUBLIC does not have.
-------------------------------------------------------------------------------
SET ROLE evproc_mallory;
SELECT pg_temp.try($$SELECT evproc_create_topic('pv.mallory')$$);
RESET ROLE;
SET ROLE evproc_alice;
SELECT evproc_create_topic('pv.orders', partitions => 2) > 0 AS created;
RESET ROLE;
SET ROLE evproc_bob;
SELECT evproc_create_topic('pv.payments', partitions => 1) > 0 AS created;
RESET ROLE;
-- The creator owns the topic; anyone may read topics' names, settings and grants.
SET ROLE evproc_mallory;
SELECT name, partitions, owner, publishers, subscribers FROM evproc_topics
 WHERE name LIKE 'pv.%' ORDER BY name;
RESET ROLE;

-------------------------------------------------------------------------------
-- Altering, dropping, granting and revoking: members of the topic's owner only.
-------------------------------------------------------------------------------
SET ROLE evproc_mallory;
SELECT pg_temp.try($$SELECT evproc_alter_topic('pv.orders', max_pending => 1)$$);
SELECT pg_temp.try($$SELECT evproc_drop_topic('pv.orders')$$);
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', 'evproc_mallory', 'publish')$$);
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', 'evproc_mallory', 'subscribe')$$);
SELECT pg_temp.try($$SELECT evproc_revoke('pv.orders', 'evproc_alice', 'publish')$$);
RESET ROLE;
SET ROLE evproc_bob;  -- owns another topic: no rights on this one
SELECT pg_temp.try($$SELECT evproc_alter_topic('pv.orders', retention => '1 day')$$);
SELECT pg_temp.try($$SELECT evproc_drop_topic('pv.orders')$$);
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', 'evproc_bob', 'publish')$$);
RESET ROLE;
SELECT name, max_pending, retention, publishers, subscribers FROM evproc_topics WHERE name = 'pv.orders';

SET ROLE evproc_alice;
SELECT evproc_alter_topic('pv.orders', max_pending => 1000);
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', 'evproc_bob', 'read')$$);
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', 'evproc_bob', NULL)$$);
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', 'evproc_nobody', 'publish')$$);
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', NULL, 'publish')$$);
SELECT pg_temp.try($$SELECT evproc_grant('pv.nothing', 'evproc_bob', 'publish')$$);
SELECT pg_temp.try($$SELECT evproc_grant('', 'evproc_bob', 'publish')$$);
-- A regrole argument takes any OID: one that is no role is refused, not granted.
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', '999999', 'publish')$$);
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', 0::oid::regrole, 'publish')$$);
SELECT pg_temp.try($$SELECT evproc_grant('pv.orders', 0::oid::regrole, 'subscribe')$$);
SELECT pg_temp.try($$SELECT evproc_revoke('pv.orders', '999999', 'publish')$$);
SELECT pg_temp.try($$SELECT evproc_revoke('pv.orders', 0::oid::regrole, 'subscribe')$$);
SELECT publishers, subscribers FROM evproc_topics WHERE name = 'pv.orders';
SELECT evproc_grant('pv.orders', 'evproc_bob', 'publish') AS granted,
       evproc_grant('pv.orders', 'evproc_bob', 'publish') AS granted_again,
       evproc_grant('pv.orders', 'evproc_publishers', 'publish') AS group_granted;
SELECT evproc_revoke('pv.orders', 'evproc_mallory', 'publish') AS revoked_nothing;
RESET ROLE;
-- PostgreSQL does not know of evproc's grants: one to a dropped role stays, as its OID,
-- and is revoked by that OID.
CREATE ROLE evproc_gone;
SELECT 'evproc_gone'::regrole::oid AS gone_oid \gset
SET ROLE evproc_alice;
SELECT evproc_grant('pv.orders', 'evproc_gone', 'subscribe') AS granted;
RESET ROLE;
DROP ROLE evproc_gone;
SELECT subscribers::text[] = ARRAY[:'gone_oid'] AS dangling FROM evproc_topics WHERE name = 'pv.orders';
SET ROLE evproc_alice;
SELECT evproc_revoke('pv.orders', :'gone_oid', 'subscribe') AS revoked;
-- Once revoked, that OID is neither a role nor granted.
SELECT replace(pg_temp.try(format('SELECT evproc_revoke(%L, %L, %L)', 'pv.orders', :'gone_oid', 'subscribe')),
               :'gone_oid', '<oid>') AS revoked_again;
RESET ROLE;
SELECT name, max_pending, publishers, subscribers FROM evproc_topics WHERE name = 'pv.orders';
-- Or maintenance removes it (a later role could be given the same OID): the launcher's
-- maintain() runs evproc.forget_dropped_grantees(), which leaves live roles' grants.
CREATE ROLE evproc_gone;
SET ROLE evproc_alice;
SELECT evproc_grant('pv.orders', 'evproc_gone', 'subscribe') AS granted,
       evproc_grant('pv.orders', 'evproc_gone', 'publish') AS granted,
       evproc_grant('pv.orders', 'evproc_publishers', 'subscribe') AS granted;
RESET ROLE;
DROP ROLE evproc_gone;
SELECT evproc.forget_dropped_grantees() AS topics_changed;
SELECT evproc.forget_dropped_grantees() AS topics_changed_again;
SELECT name, publishers, subscribers FROM evproc_topics WHERE name = 'pv.orders';
SET ROLE evproc_alice;
SELECT evproc_revoke('pv.orders', 'evproc_publishers', 'subscribe') AS revoked;
RESET ROLE;

-------------------------------------------------------------------------------
-- Publishing: members of the topic's owner or of a role granted 'publish'. The refusal
-- comes before the events are looked at: a malformed event of a caller who may not
-- publish counts no rejection.
-------------------------------------------------------------------------------
SET ROLE evproc_mallory;
SELECT pg_temp.try($$SELECT evproc_enqueue('pv.orders', 'k', '{"n": 1}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('pv.orders', 'k', '"not an object"')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('pv.orders', '[{"key": "k", "payload": {"n": 1}}]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('pv.payments', 'k', '{"n": 1}')$$);
-- No reading around it either: the log, the dedup ids, the internals.
SELECT pg_temp.try($$SELECT count(*) FROM evproc.log$$);
SELECT pg_temp.try($$SELECT count(*) FROM evproc.dedup$$);
RESET ROLE;
SELECT published, rejected_invalid FROM evproc_topic_stats WHERE topic = 'pv.orders';

SET ROLE evproc_bob;  -- granted 'publish', and no privilege on evproc's tables
SELECT evproc_enqueue('pv.orders', 'b', '{"n": 1}', dedup_id => 'bob-1') > 0 AS published;
SELECT evproc_enqueue('pv.orders', 'b', '{"n": 1}', dedup_id => 'bob-1') =
       (SELECT evproc_enqueue('pv.orders', 'b', '{"n": 1}', dedup_id => 'bob-1')) AS deduplicated;
SELECT cardinality(evproc_enqueue_batch('pv.orders', '[{"key": "b", "payload": {"n": 2}},
                                                        {"key": "b", "payload": {"n": 3}}]')) AS published;
-- Malformed: refused for what it is, and counted.
SELECT pg_temp.try($$SELECT evproc_enqueue('pv.orders', 'k', '"not an object"')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('pv.payments', 'k', '{"n": 1}')$$);  -- not granted there
RESET ROLE;
SELECT published, rejected_invalid FROM evproc_topic_stats WHERE topic = 'pv.orders';

-- Revoked: refused at once, in the same session (the topic cache follows the change).
SET ROLE evproc_alice;
SELECT evproc_revoke('pv.orders', 'evproc_bob', 'publish') AS revoked;
RESET ROLE;
SET ROLE evproc_bob;
SELECT pg_temp.try($$SELECT evproc_enqueue('pv.orders', 'b', '{"n": 4}')$$);
RESET ROLE;
-- Through a group granted 'publish'.
GRANT evproc_publishers TO evproc_bob;
SET ROLE evproc_bob;
SELECT evproc_enqueue('pv.orders', 'b', '{"n": 4}') > 0 AS published_through_group;
RESET ROLE;
REVOKE evproc_publishers FROM evproc_bob;
SET ROLE evproc_bob;
SELECT pg_temp.try($$SELECT evproc_enqueue('pv.orders', 'b', '{"n": 5}')$$);
RESET ROLE;
-- The owner publishes; a superuser too.
SET ROLE evproc_alice;
SELECT evproc_enqueue('pv.orders', 'a', '{"n": 6}') > 0 AS published;
RESET ROLE;
SELECT evproc_enqueue('pv.payments', 'p', '{"n": 7}') > 0 AS published;
SELECT t.name, count(*) AS events FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
 WHERE t.name LIKE 'pv.%' GROUP BY t.name ORDER BY t.name;

-------------------------------------------------------------------------------
-- Subscribing: the subscription's owner (run_as) must be a role the caller is a member
-- of, not a superuser, able to execute the handler, and hold 'subscribe' on the topic.
-------------------------------------------------------------------------------
SET ROLE evproc_mallory;
SELECT pg_temp.try($$SELECT evproc_subscribe('pv_m1', 'pv.orders', 'pv_record', run_as => 'evproc_alice')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('pv_m1', 'pv.orders', 'pv_record', run_as => 'postgres')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('pv_m1', 'pv.orders', 'pv_record')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('pv_m1', 'pv.orders', 'pv_private')$$);
-- Past the wrapper, straight to the trampoline with a handler of its choosing: checked
-- again (EXECUTE, shape), and the subscribe privilege all the same.
SELECT pg_temp.try($$SELECT evproc.subscribe('pv_m1', 'pv.orders', 'pv_private(evproc.event[])', 100, 10,
                                             '1 s', '1 min', '30 s', 'skip', NULL, NULL, 0.5, 20, '30 s')$$);
SELECT pg_temp.try($$SELECT evproc.subscribe('pv_m1', 'pv.orders', 'pg_catalog.now()', 100, 10,
                                             '1 s', '1 min', '30 s', 'skip', NULL, NULL, 0.5, 20, '30 s')$$);
SELECT pg_temp.try($$SELECT evproc.subscribe('pv_m1', 'pv.orders', 'pv_record(evproc.event[])', 100, 10,
                                             '1 s', '1 min', '30 s', 'skip', NULL, NULL, 0.5, 20, '30 s')$$);
-- And the implementation, with a forged caller: not executable.
SELECT pg_temp.try(format($$SELECT evproc.subscribe_impl(%s, 'pv_m1', 'pv.orders', 'pv_record(evproc.event[])',
                                             100, 10, '1 s', '1 min', '30 s', 'skip', NULL, NULL, 0.5, 20, '30 s')$$,
                          'evproc_alice'::regrole::oid));
RESET ROLE;
SET ROLE evproc_bob;
SELECT pg_temp.try($$SELECT evproc_subscribe('pv_bob', 'pv.orders', 'pv_record')$$);
SELECT pg_temp.try($$SELECT evproc_subscribe('pv_bob', 'pv.orders', 'pv_private')$$);
RESET ROLE;
-- Without USAGE on schema evproc, evproc_subscribe says so.
REVOKE USAGE ON SCHEMA evproc FROM evproc_mallory;
SET ROLE evproc_mallory;
SELECT pg_temp.try($$SELECT evproc_subscribe('pv_m1', 'pv.orders', 'pv_record')$$);
RESET ROLE;
GRANT USAGE ON SCHEMA evproc TO evproc_mallory;
SELECT count(*) AS subscriptions FROM evproc.subscription WHERE name LIKE 'pv%';

-- Subscriptions start from the newest tick: the events above are not theirs.
SELECT evproc.take_tick() > 0 AS ticked;
-- Granted 'subscribe', bob subscribes as himself (and publishes again).
SET ROLE evproc_alice;
SELECT evproc_grant('pv.orders', 'evproc_bob', 'subscribe') AS granted,
       evproc_grant('pv.orders', 'evproc_bob', 'publish') AS granted;
RESET ROLE;
SET ROLE evproc_bob;
SELECT evproc_subscribe('pv_bob', 'pv.orders', 'pv_record', max_attempts => 1, failure_budget => 1) > 0 AS subscribed;
RESET ROLE;
-- alice, the topic's owner, subscribes on the topic's behalf for a role she is a member
-- of: that role is granted 'subscribe' with it.
SET ROLE evproc_alice;
SELECT evproc_subscribe('pv_alice', 'pv.orders', 'pv_private', max_attempts => 1, failure_budget => 1,
                        run_as => 'evproc_alice_worker') > 0 AS subscribed;
RESET ROLE;
SELECT name, publishers, subscribers FROM evproc_topics WHERE name = 'pv.orders';
SELECT name, owner FROM evproc.subscription WHERE name LIKE 'pv%' ORDER BY name;

-------------------------------------------------------------------------------
-- Delivery (as the superuser stepping it) runs each handler as its subscription's owner.
-------------------------------------------------------------------------------
SELECT evproc.sync_stats() >= 0 AS registered;
SELECT evproc.take_tick() > 0 AS ticked;
SET ROLE evproc_bob;
SELECT evproc_enqueue('pv.orders', 'b', '{"n": 10}') > 0 AS published;
SELECT evproc_enqueue('pv.orders', 'x', '{"fail": "on purpose", "secret": "bob''s"}') AS failing_event \gset
RESET ROLE;
SET ROLE evproc_alice;
SELECT evproc_enqueue('pv.orders', 'a', '{"n": 11}') > 0 AS published;
RESET ROLE;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain() AS drained;
SELECT handler, key, who FROM pv_seen ORDER BY id, handler;
SELECT s.name, count(*) AS dead_letters FROM evproc.dead_letter d
  JOIN evproc.subscription s ON s.id = d.subscription_id WHERE s.name LIKE 'pv%' GROUP BY s.name ORDER BY s.name;

-------------------------------------------------------------------------------
-- Reading: each role sees its own subscriptions' rows, dead letters and payloads only.
-------------------------------------------------------------------------------
SET ROLE evproc_mallory;
SELECT (SELECT count(*) FROM evproc_subscriptions) AS subscriptions,
       (SELECT count(*) FROM evproc_dead_letters) AS dead_letters,
       (SELECT count(*) FROM evproc_dead_letter_summary) AS summary,
       (SELECT count(*) FROM evproc_replays) AS replays,
       (SELECT count(*) FROM evproc_subscription_stats) AS stats;
SELECT pg_temp.try($$SELECT * FROM evproc_dead_letters('pv_bob')$$);
SELECT pg_temp.try($$SELECT * FROM evproc_dead_letters('pv_alice')$$);
SELECT pg_temp.try($$SELECT * FROM evproc_dead_letters('pv_none')$$);
-- An event of a topic mallory has nothing to do with is as unknown as an unused id.
-- (The id is replaced as a whole word: a short id may also occur inside the SQLSTATE.)
SELECT regexp_replace(pg_temp.try(format('SELECT evproc_event_status(%s)', :failing_event)),
                      format('\m%s\M', :failing_event), '<id>') AS retained_event,
       replace(pg_temp.try('SELECT evproc_event_status(9223372036854775807)'),
               '9223372036854775807', '<id>') AS unused_id;
-- The counters by id behind the views, and the workers' last errors: pg_monitor's only.
SELECT pg_temp.try($$SELECT count(*) FROM evproc.subscription_stats()$$);
SELECT pg_temp.try($$SELECT evproc.lag_seconds(1)$$);
SELECT pg_temp.try($$SELECT count(*) FROM evproc.worker_stats()$$);
SELECT count(*) AS visible_stats FROM evproc.visible_subscription_stats();
SELECT count(*) > 0 AS topic_pending FROM evproc.topic_pending();
SELECT pg_temp.try($$SELECT count(*) FROM evproc.dead_letter$$);
SELECT pg_temp.try($$SELECT count(*) FROM evproc.retry$$);
SELECT pg_temp.try($$SELECT count(*) FROM evproc.window_events(1, 0, 0, 1)$$);
SELECT pg_temp.try($$SELECT count(*) FROM evproc.dead_letters_matching(1, NULL, NULL, NULL, NULL, NULL)$$);
SELECT pg_temp.try($$SELECT evproc.count_pending(1)$$);
-- security_barrier: a function of the caller's in WHERE never sees rows it may not.
CREATE FUNCTION pg_temp.leak(t text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $fn$
BEGIN
  RAISE NOTICE 'leaked: %', t;
  RETURN true;
END $fn$;
SELECT count(*) FROM evproc_dead_letters WHERE pg_temp.leak(payload::text);
SELECT count(*) FROM evproc_subscriptions WHERE pg_temp.leak(name || ' ' || coalesce(reason, ''));
SELECT count(*) FROM evproc_dead_letter_summary WHERE pg_temp.leak(subscription);
SELECT count(*) FROM evproc_replays WHERE pg_temp.leak(subscription);
SELECT count(*) FROM evproc_subscription_stats WHERE pg_temp.leak(subscription);
RESET ROLE;

SET ROLE evproc_bob;
SELECT name, topic, owner, state FROM evproc_subscriptions ORDER BY name;
SELECT subscription, key, payload FROM evproc_dead_letters ORDER BY event_id;
SELECT subscription, key, payload, sqlstate FROM evproc_dead_letters('pv_bob');
SELECT subscription, dead_letters FROM evproc_dead_letter_summary ORDER BY subscription;
SELECT subscription FROM evproc_subscription_stats ORDER BY subscription;
SELECT subscription, status FROM evproc_event_status(:failing_event);
SELECT pg_temp.try($$SELECT * FROM evproc_dead_letters('pv_alice')$$);
RESET ROLE;
-- alice is a member of evproc_alice_worker: she sees and acts on its subscription.
SET ROLE evproc_alice;
SELECT name, owner FROM evproc_subscriptions ORDER BY name;
SELECT subscription, key FROM evproc_dead_letters ORDER BY event_id;
SELECT subscription, status FROM evproc_event_status(:failing_event);
RESET ROLE;
-- pg_monitor reads every subscription's figures, and no payload.
SET ROLE evproc_watcher;
SELECT subscription FROM evproc_subscription_stats WHERE subscription LIKE 'pv%' ORDER BY subscription;
SELECT count(*) AS dead_letters FROM evproc_dead_letters;
SELECT count(*) AS subscriptions FROM evproc_subscriptions;
SELECT count(*) > 0 AS metrics FROM evproc_metrics WHERE labels->>'subscription' = 'pv_bob';
SELECT count(*) > 0 AS raw_stats, bool_and(evproc.lag_seconds(subscription_id) >= 0) AS lag_known
  FROM evproc.subscription_stats();
RESET ROLE;
-- Other roles do not read the workers and metrics (pg_monitor's), nor the log's partitions.
SET ROLE evproc_bob;
SELECT pg_temp.try($$SELECT count(*) FROM evproc_workers$$);
SELECT pg_temp.try($$SELECT count(*) FROM evproc_metrics$$);
SELECT pg_temp.try($$SELECT count(*) FROM evproc_log_partitions$$);
RESET ROLE;

-------------------------------------------------------------------------------
-- Acting on subscriptions: members of the owner only.
-------------------------------------------------------------------------------
SET ROLE evproc_bob;
SELECT evproc_replay('pv_bob') AS bob_replay \gset
RESET ROLE;
SET ROLE evproc_mallory;
SELECT pg_temp.try($$SELECT evproc_pause('pv_bob')$$);
SELECT pg_temp.try($$SELECT evproc_resume('pv_bob')$$);
SELECT pg_temp.try($$SELECT evproc_unsubscribe('pv_bob')$$);
SELECT pg_temp.try($$SELECT evproc_replay('pv_bob')$$);
SELECT pg_temp.try(format('SELECT evproc_cancel_replay(%s)', :bob_replay));
SELECT pg_temp.try($$SELECT evproc_redrive('pv_bob')$$);
SELECT pg_temp.try($$SELECT evproc_purge('pv_bob', older_than => 'infinity')$$);
SELECT pg_temp.try($$SELECT evproc_pause('pv_alice')$$);
-- The internals, called directly: not executable.
SELECT pg_temp.try($$SELECT * FROM evproc.deliver_batch()$$);
SELECT pg_temp.try($$SELECT evproc.take_tick()$$);
SELECT pg_temp.try($$SELECT evproc.maintain()$$);
SELECT pg_temp.try($$SELECT evproc.sync_stats()$$);
SELECT pg_temp.try($$SELECT evproc.wake_at_commit()$$);
SELECT pg_temp.try($$SELECT evproc.dirty_tick(1, 0)$$);
SELECT pg_temp.try($$SELECT evproc.set_deliverable('{1}', '{1}')$$);
SELECT pg_temp.try($$SELECT evproc.expire_dedup()$$);
SELECT pg_temp.try($$SELECT evproc.maintain_log()$$);
SELECT pg_temp.try($$SELECT evproc.reset_retry_due(1, '{0}')$$);
SELECT pg_temp.try($$SELECT evproc.note_requeued(1, 1)$$);
SELECT pg_temp.try($$SELECT evproc.subscription_checked(0, 'pv_bob', false)$$);
-- The implementations, with a forged caller (bob's oid): not executable.
SELECT pg_temp.try(format($$SELECT evproc.pause_impl(%s, 'pv_bob', 'forged')$$, 'evproc_bob'::regrole::oid));
SELECT pg_temp.try(format($$SELECT evproc.unsubscribe_impl(%s, 'pv_bob')$$, 'evproc_bob'::regrole::oid));
SELECT pg_temp.try(format($$SELECT * FROM evproc.dead_letters_impl(%s, 'pv_bob')$$, 'evproc_bob'::regrole::oid));
SELECT pg_temp.try(format($$SELECT * FROM evproc.event_status_impl(%s, %s)$$, 'evproc_bob'::regrole::oid, :failing_event));
SELECT pg_temp.try(format($$SELECT evproc.grant_impl(%s, 'pv.orders', 'evproc_mallory', 'publish')$$, 'evproc_alice'::regrole::oid));
SELECT pg_temp.try(format($$SELECT evproc.drop_topic_impl(%s, 'pv.orders')$$, 'evproc_alice'::regrole::oid));
SELECT pg_temp.try(format($$SELECT evproc.create_topic_impl(%s, 'pv.forged', 1, '1 day', '1 day', NULL, NULL)$$, 'evproc_alice'::regrole::oid));
RESET ROLE;
SELECT name, state FROM evproc_subscriptions WHERE name LIKE 'pv%' ORDER BY name;

-- bob acts on his own subscription with no privilege on evproc's tables.
SET ROLE evproc_bob;
SELECT evproc_cancel_replay(:bob_replay) AS cancelled;
SELECT evproc_pause('pv_bob', 'bob pauses');
SELECT state, reason FROM evproc_subscriptions WHERE name = 'pv_bob';
SELECT evproc_resume('pv_bob');
SELECT evproc_redrive('pv_bob') AS redriven;
SELECT subscription, status, attempt FROM evproc_event_status(:failing_event);
RESET ROLE;
SELECT pg_temp.drain() AS drained;
SET ROLE evproc_bob;
SELECT evproc_purge('pv_bob', older_than => 'infinity') AS purged;
SELECT evproc_replay('pv_bob') > 0 AS replaying;
SELECT subscription, state FROM evproc_replays;
RESET ROLE;
SELECT pg_temp.drain() AS drained;
SELECT count(*) FILTER (WHERE handler = 'record' AND who = 'evproc_bob') AS bob_handled FROM pv_seen;

-------------------------------------------------------------------------------
-- Revoking 'subscribe': a replay is refused and the workers pause the subscription;
-- granted again and resumed, it delivers.
-------------------------------------------------------------------------------
SET ROLE evproc_alice;
SELECT evproc_revoke('pv.orders', 'evproc_bob', 'subscribe') AS revoked;
RESET ROLE;
SET ROLE evproc_bob;
SELECT pg_temp.try($$SELECT evproc_replay('pv_bob')$$);
RESET ROLE;
SELECT evproc_enqueue('pv.orders', 'b', '{"n": 20}') AS after_revoke \gset
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain() AS drained;
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 'pv_bob';
SELECT count(*) AS bob_got_it FROM pv_seen WHERE id = :after_revoke AND who = 'evproc_bob';
SET ROLE evproc_alice;
SELECT evproc_grant('pv.orders', 'evproc_bob', 'subscribe') AS granted;
RESET ROLE;
SET ROLE evproc_bob;
SELECT evproc_resume('pv_bob');
RESET ROLE;
SELECT pg_temp.drain() AS drained;
SELECT count(*) AS bob_got_it FROM pv_seen WHERE id = :after_revoke AND who = 'evproc_bob';

-------------------------------------------------------------------------------
-- 'subscribe' held through a group: the worker's check (delivery::OwnerState, from the
-- catalog caches) follows evproc.may_subscribe's rule. carol, a member of a group that
-- holds 'subscribe', subscribes and is delivered to; out of the group, her subscription
-- pauses, and the event waits.
-------------------------------------------------------------------------------
CREATE ROLE evproc_team;
CREATE ROLE evproc_carol IN ROLE evproc_team;
GRANT USAGE ON SCHEMA evproc TO evproc_carol;
GRANT INSERT ON pv_seen TO evproc_carol;
SET ROLE evproc_alice;
SELECT evproc_grant('pv.orders', 'evproc_team', 'subscribe') AS granted;
RESET ROLE;
SET ROLE evproc_carol;
SELECT evproc_subscribe('pv_carol', 'pv.orders', 'pv_record') > 0 AS subscribed;
RESET ROLE;
SELECT evproc_enqueue('pv.orders', 'c', '{"n": 30}') AS to_carol \gset
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain() AS drained;
SELECT count(*) AS carol_got_it FROM pv_seen WHERE id = :to_carol AND who = 'evproc_carol';
REVOKE evproc_team FROM evproc_carol;
SELECT evproc_enqueue('pv.orders', 'c', '{"n": 31}') AS not_to_carol \gset
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain() AS drained;
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 'pv_carol';
SELECT count(*) AS carol_got_it FROM pv_seen WHERE id = :not_to_carol AND who = 'evproc_carol';
SELECT evproc_unsubscribe('pv_carol');
REVOKE INSERT ON pv_seen FROM evproc_carol;
REVOKE USAGE ON SCHEMA evproc FROM evproc_carol;
DROP ROLE evproc_carol, evproc_team;

-------------------------------------------------------------------------------
-- search_path: the implementations pin theirs. A caller's schema first in its path,
-- shadowing pg_catalog's pg_has_role and text equality, changes nothing for them (it
-- does for the caller's own unqualified calls).
-------------------------------------------------------------------------------
CREATE SCHEMA evproc_evil AUTHORIZATION evproc_mallory;
SET ROLE evproc_mallory;
CREATE FUNCTION evproc_evil.pg_has_role(oid, oid, text) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE NOTICE 'hijacked pg_has_role as %', current_user;
  RETURN true;
END $fn$;
CREATE FUNCTION evproc_evil.pg_has_role(oid, text) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE NOTICE 'hijacked pg_has_role as %', current_user;
  RETURN true;
END $fn$;
CREATE FUNCTION evproc_evil.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE NOTICE 'hijacked = as %', current_user;
  RETURN true;
END $fn$;
CREATE OPERATOR evproc_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evproc_evil.text_eq);
SET search_path = evproc_evil, pg_catalog;
SELECT pg_has_role('evproc_bob'::regrole::oid, 'evproc_bob'::regrole::oid, 'MEMBER') AS shadowed_here;
SELECT pg_temp.try($$SELECT public.evproc_pause('pv_bob')$$);
SELECT pg_temp.try($$SELECT public.evproc_alter_topic('pv.orders', max_pending => 1)$$);
SELECT pg_temp.try($$SELECT public.evproc_grant('pv.orders', 'evproc_mallory', 'publish')$$);
SELECT pg_temp.try($$SELECT public.evproc_enqueue('pv.orders', 'm', '{"n": 1}')$$);
SELECT count(*) FROM public.evproc_dead_letters;
SELECT pg_temp.try($$SELECT count(*) FROM public.evproc_dead_letters('pv_bob')$$);
SELECT pg_temp.try($$SELECT evproc.subscribe('pv_m2', 'pv.orders', 'public.pv_record(evproc.event[])', 100, 10,
                                             '1 s', '1 min', '30 s', 'skip', NULL, NULL, 0.5, 20, '30 s')$$);
-- The subscribe wrapper resolves the handler as its caller would: only the caller's own
-- checks are fooled (before the implementation checks again).
SELECT pg_temp.try($$SELECT public.evproc_subscribe('pv_m2', 'pv.orders', 'public.pv_record')$$);
-- Integer equality too, which delivery's statements use.
CREATE FUNCTION evproc_evil.int4_eq(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE NOTICE 'hijacked integer = as %', current_user;
  RETURN $1 OPERATOR(pg_catalog.=) $2;
END $fn$;
CREATE OPERATOR evproc_evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evproc_evil.int4_eq);
RESET search_path;
RESET ROLE;
-- Delivery runs evproc's statements as a superuser with its own pinned path, whatever the
-- session's (here the superuser's; for the workers, the server's or the database's,
-- which a database owner may set). Handlers still resolve names with the session's.
SET search_path = evproc_evil, public, pg_catalog;
SELECT evproc_enqueue('pv.orders', 'b', '{"n": 30}') AS hijack_probe \gset
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain() AS drained;
RESET search_path;
SELECT handler, who FROM pv_seen WHERE id = :hijack_probe ORDER BY handler;
DROP SCHEMA evproc_evil CASCADE;
SELECT state FROM evproc_subscriptions WHERE name = 'pv_bob';

-------------------------------------------------------------------------------
-- The catalog agrees: in schema evproc PUBLIC executes only what callers reach on their
-- own rights; every implementation is the extension owner's, pinned, not executable by
-- PUBLIC, and every trampoline has one; every SQL or plpgsql function pins its
-- search_path except the two that resolve a handler name as the caller would.
-------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.public_executes(f oid) RETURNS boolean LANGUAGE sql AS $$
  SELECT p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                      WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
    FROM pg_proc p WHERE p.oid = f $$;
SELECT p.oid::regprocedure AS public_may_execute
  FROM pg_proc p WHERE p.pronamespace = 'evproc'::regnamespace AND pg_temp.public_executes(p.oid)
 ORDER BY 1::text;
SELECT count(*) AS implementations,
       count(*) FILTER (WHERE pg_temp.public_executes(p.oid)) AS public_may_execute,
       count(*) FILTER (WHERE p.proowner <> e.extowner) AS not_the_owners,
       count(*) FILTER (WHERE p.prosecdef) AS security_definer,
       count(*) FILTER (WHERE NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)) AS unpinned
  FROM pg_proc p, pg_extension e
 WHERE e.extname = 'evproc' AND p.pronamespace = 'evproc'::regnamespace AND p.proname LIKE '%\_impl';
SELECT p.oid::regprocedure AS trampoline_without_implementation
  FROM pg_proc p
 WHERE p.prosrc = 'evproc_as_owner'
   AND NOT EXISTS (SELECT 1 FROM pg_proc i
                    WHERE i.pronamespace = 'evproc'::regnamespace
                      AND i.proname = regexp_replace(p.proname, '^evproc_', '') || '_impl'
                      AND ARRAY(SELECT unnest(i.proargtypes::oid[]))
                          = ARRAY['oid'::regtype::oid] || ARRAY(SELECT unnest(p.proargtypes::oid[])));
SELECT count(*) AS trampolines FROM pg_proc WHERE prosrc = 'evproc_as_owner';
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'evproc')
   AND p.prolang IN (SELECT oid FROM pg_language WHERE lanname IN ('sql', 'plpgsql'))
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
 ORDER BY 1::text;
SELECT p.oid::regprocedure AS security_definer, p.proconfig
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'evproc') AND p.prosecdef
 ORDER BY 1::text;
-- The views: who may read them, and which filter their rows behind a security barrier.
SELECT c.relname AS view,
       EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = 0) AS public,
       has_table_privilege('pg_monitor', c.oid, 'SELECT') AS pg_monitor,
       coalesce('security_barrier=true' = ANY (c.reloptions), false) AS barrier,
       pg_get_viewdef(c.oid) LIKE '%pg_has_role%' AS filtered
  FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v' AND c.relname LIKE 'evproc\_%'
 ORDER BY 1;
SELECT pg_temp.table_rights() AS table_rights;

-------------------------------------------------------------------------------
-- The trampoline itself, with probe functions: the caller is the current user (SET ROLE,
-- or the owner of a SECURITY DEFINER function it is called from) and the
-- implementation runs as the extension owner; NULLs, defaults and named arguments pass
-- through; sets come back; an error inside leaves the caller's user and security
-- context as they were, also when caught.
-------------------------------------------------------------------------------
CREATE FUNCTION public.evproc_pv_probe(a text DEFAULT 'default a', b integer DEFAULT NULL)
    RETURNS text LANGUAGE c AS '$libdir/evproc', 'evproc_as_owner';
CREATE FUNCTION evproc.pv_probe_impl(caller oid, a text, b integer) RETURNS text
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF a = 'fail' THEN
    RAISE EXCEPTION 'probe failed' USING ERRCODE = 'data_exception';
  END IF;
  RETURN format('caller %s, as owner %s, a %s, b %s', caller::regrole,
                current_user = (SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'evproc'),
                coalesce(a, 'NULL'), coalesce(b::text, 'NULL'));
END $fn$;
REVOKE EXECUTE ON FUNCTION evproc.pv_probe_impl(oid, text, integer) FROM PUBLIC;
CREATE FUNCTION public.evproc_pv_probe_set(n integer) RETURNS TABLE (i integer, who text)
    LANGUAGE c AS '$libdir/evproc', 'evproc_as_owner';
CREATE FUNCTION evproc.pv_probe_set_impl(caller oid, n integer) RETURNS TABLE (i integer, who text)
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RETURN QUERY SELECT g, caller::regrole::text FROM generate_series(1, n) g;
END $fn$;
REVOKE EXECUTE ON FUNCTION evproc.pv_probe_set_impl(oid, integer) FROM PUBLIC;
CREATE FUNCTION public.pv_probe_as_bob() RETURNS text LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$ SELECT public.evproc_pv_probe('from a definer') $$;
ALTER FUNCTION public.pv_probe_as_bob() OWNER TO evproc_bob;

SET ROLE evproc_alice;
SELECT evproc_pv_probe() AS defaults;
SELECT evproc_pv_probe(NULL, NULL) AS nulls;
SELECT evproc_pv_probe(b => 7) AS named;
SELECT evproc_pv_probe(b => 8, a => 'x') AS named;
SELECT * FROM evproc_pv_probe_set(3);
SELECT evproc_pv_probe_set(2) AS in_select_list;
SELECT count(*) FROM evproc_pv_probe_set(0);
SELECT pv_probe_as_bob() AS from_definer;
SELECT pg_temp.try($$SELECT evproc_pv_probe('fail')$$);
SELECT current_user AS after_error;
DO $do$
BEGIN
  BEGIN
    PERFORM evproc_pv_probe('fail');
  EXCEPTION WHEN data_exception THEN
    -- Back to the caller, and no longer inside a local user id change: SET ROLE works.
    RAISE NOTICE 'caught: current_user %', current_user;
    SET ROLE evproc_alice;
    RAISE NOTICE 'SET ROLE works: %', current_user;
  END;
  RAISE NOTICE 'then: %', evproc_pv_probe('after the caught error');
END $do$;
SELECT pg_temp.try($$SELECT evproc.pv_probe_impl(0, 'forged', 1)$$);
RESET ROLE;
-- An API function whose implementation is missing, returns something else, or may be
-- executed by PUBLIC (with a forged caller) is refused.
CREATE FUNCTION public.evproc_pv_orphan(a text) RETURNS text LANGUAGE c AS '$libdir/evproc', 'evproc_as_owner';
SELECT pg_temp.try($$SELECT evproc_pv_orphan('x')$$);
CREATE FUNCTION evproc.pv_orphan_impl(caller oid, a text) RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
REVOKE EXECUTE ON FUNCTION evproc.pv_orphan_impl(oid, text) FROM PUBLIC;
SELECT pg_temp.try($$SELECT evproc_pv_orphan('x')$$);
DROP FUNCTION evproc.pv_orphan_impl(oid, text);
CREATE FUNCTION evproc.pv_orphan_impl(caller oid, a text) RETURNS text LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS $$ SELECT 'reached ' || a $$;
SELECT pg_temp.try($$SELECT evproc_pv_orphan('x')$$);
REVOKE EXECUTE ON FUNCTION evproc.pv_orphan_impl(oid, text) FROM PUBLIC;
SELECT evproc_pv_orphan('x');
DROP FUNCTION public.evproc_pv_orphan(text), evproc.pv_orphan_impl(oid, text),
              public.evproc_pv_probe(text, integer), evproc.pv_probe_impl(oid, text, integer),
              public.evproc_pv_probe_set(integer), evproc.pv_probe_set_impl(oid, integer),
              public.pv_probe_as_bob();

-------------------------------------------------------------------------------
-- Clean-up, by the owners themselves.
-------------------------------------------------------------------------------
SET ROLE evproc_bob;
SELECT evproc_unsubscribe('pv_bob');
SELECT evproc_drop_topic('pv.payments');
RESET ROLE;
SET ROLE evproc_alice;
SELECT evproc_unsubscribe('pv_alice');
SELECT evproc_drop_topic('pv.orders');
RESET ROLE;
DROP TABLE pv_seen;
DROP FUNCTION pg_temp.leak(text);
DROP FUNCTION pv_record(evproc.event[]), pv_private(evproc.event[]);
REVOKE EXECUTE ON FUNCTION evproc_create_topic(text, integer, interval, interval, bigint, jsonb)
    FROM evproc_alice, evproc_bob;
REVOKE USAGE ON SCHEMA evproc FROM evproc_alice, evproc_bob, evproc_mallory, evproc_alice_worker,
                                   evproc_watcher;
DROP ROLE evproc_alice, evproc_bob, evproc_mallory, evproc_alice_worker, evproc_publishers, evproc_watcher;
