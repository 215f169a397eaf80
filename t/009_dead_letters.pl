# Dead-letter re-drive and purge with running workers: an operator's call is all it
# takes (the workers are woken at its commit and find the re-driven events due).
#
# (Idle workers otherwise sleep up to a minute: the wait below allows 20 seconds.)
#
# A handler fails for every event whose n ends in 7 until it is fixed. Subscription
# 'skip' (max_attempts 1) dead-letters them and goes on; subscription 'block'
# (max_attempts 1, on_dead_letter 'block') dead-letters the first one of each key and
# parks the rest of the key behind it. After the fix: every dead letter of 'skip' is
# re-driven; of 'block', two keys' dead heads are re-driven and the others purged. In
# the end every event is handled exactly once, except the purged ones (never), and a
# blocked key's events are handled in publish order.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('dead_letters');

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('jobs', partitions => 4);
CREATE TABLE broken (on_off boolean NOT NULL);
INSERT INTO broken VALUES (true);
CREATE SEQUENCE hseq;
CREATE TABLE handled (
    sub        text NOT NULL,
    event_id   bigint NOT NULL,
    key        text NOT NULL,
    n          int NOT NULL,
    hseq       bigint NOT NULL,
    attempt    int NOT NULL,
    PRIMARY KEY (sub, event_id)   -- a second delivery would raise here
);
CREATE FUNCTION h(sub text, e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (e.payload->>'n')::int % 10 = 7 AND (SELECT on_off FROM broken) THEN
        RAISE EXCEPTION 'cannot handle n=%', e.payload->>'n';
    END IF;
    INSERT INTO handled VALUES (sub, e.id, e.key, (e.payload->>'n')::int, nextval('hseq'), e.attempt);
END $$;
CREATE FUNCTION h_skip(e evproc.event) RETURNS void LANGUAGE sql AS $$ SELECT h('skip', e) $$;
CREATE FUNCTION h_block(e evproc.event) RETURNS void LANGUAGE sql AS $$ SELECT h('block', e) $$;
GRANT SELECT ON broken TO app;
GRANT SELECT, INSERT ON handled TO app;
GRANT USAGE ON SEQUENCE hseq TO app;
SELECT evproc_subscribe('skip', 'jobs', 'h_skip', max_attempts => 1, failure_budget => 1,
                        run_as => 'app');
SELECT evproc_subscribe('block', 'jobs', 'h_block', max_attempts => 1, on_dead_letter => 'block',
                        failure_budget => 1, run_as => 'app');
});

# 500 events, n = 1..500, key 'k' || n % 50: keys k7, k17, k27, k37 and k47 get every
# poison event (10 each).
$node->safe_psql(
	'postgres', q{
SELECT cardinality(evproc_enqueue_batch('jobs',
  (SELECT jsonb_agg(jsonb_build_object('key', 'k' || (n % 50), 'payload', jsonb_build_object('n', n))
                    ORDER BY n)
     FROM generate_series(1, 500) AS n)))});

ok( wait_until(
		$node,
		q{SELECT (SELECT delivered = 450 AND dead_letters = 50 AND parked = 0
                    FROM evproc_subscriptions WHERE name = 'skip')
             AND (SELECT delivered = 450 AND dead_letters = 5 AND parked = 50
                    FROM evproc_subscriptions WHERE name = 'block')},
		timeout => 60),
	'before the fix: skip has 50 dead letters; block 5 dead heads with 45 events behind them');
is( sql_value(
		$node, q{SELECT string_agg(key || ':' || (payload->>'n'), ',' ORDER BY key)
                   FROM evproc_dead_letters('block')}),
	'k17:17,k27:27,k37:37,k47:47,k7:7',
	'block: the first poison event of each of the 5 keys');
is(sql_value($node, q{SELECT string_agg(DISTINCT status, ',') FROM evproc.log l,
                        evproc_event_status(l.id) st WHERE st.subscription = 'block' AND l.key = 'k7'}),
	'blocked,dead', 'block: key k7 is dead at its head, blocked behind it');

$node->safe_psql('postgres', 'UPDATE broken SET on_off = false');
is(sql_value($node, q{SELECT evproc_redrive('skip')}), '50', 'skip: 50 dead letters re-driven');
is( sql_value(
		$node, q{SELECT evproc_redrive('block', event_ids => ARRAY(
                   SELECT event_id FROM evproc_dead_letters('block') WHERE key IN ('k7', 'k17')))}),
	'2',
	'block: the dead heads of k7 and k17 re-driven');
is(sql_value($node, q{SELECT evproc_purge('block', older_than => 'infinity')}),
	'3', 'block: the dead heads of k27, k37 and k47 purged');

ok( wait_until(
		$node,
		q{SELECT (SELECT count(*) FROM handled WHERE sub = 'skip') = 500
             AND (SELECT count(*) FROM handled WHERE sub = 'block') = 497
             AND NOT EXISTS (SELECT 1 FROM evproc.retry)
             AND NOT EXISTS (SELECT 1 FROM evproc.dead_letter)},
		timeout => 20,
		diag => q{SELECT sub, count(*) FROM handled GROUP BY sub}),
	'the workers delivered what was re-driven and released the purged keys, unprompted');

is( sql_value(
		$node, q{SELECT count(*) FROM evproc.log l
                  WHERE NOT EXISTS (SELECT 1 FROM handled h WHERE h.sub = 'skip' AND h.event_id = l.id)}),
	'0',
	'skip: every event handled once in the end');
is( sql_value(
		$node, q{SELECT string_agg(key || ':' || n, ',' ORDER BY n) FROM evproc.log l
                   CROSS JOIN LATERAL (SELECT (l.payload->>'n')::int AS n) x
                  WHERE NOT EXISTS (SELECT 1 FROM handled h WHERE h.sub = 'block' AND h.event_id = l.id)}),
	'k27:27,k37:37,k47:47',
	'block: every event handled once but the purged ones');
is( sql_value(
		$node, q{SELECT count(*) FROM (
                   SELECT n, lag(n) OVER (PARTITION BY sub, key ORDER BY hseq) AS prev
                     FROM handled) x WHERE prev > n}),
	'0',
	'per key, events handled in publish order (re-driven ones in id order, a resumed head first)');
is(sql_value($node, q{SELECT count(*) FROM handled WHERE attempt <> 1}),
	'0', 're-driven events are handled at attempt 1');
is( sql_value(
		$node, q{SELECT string_agg(DISTINCT status, ',') FROM evproc.log l, evproc_event_status(l.id)}),
	'delivered',
	'every event reads delivered for both subscriptions');

$node->stop;
done_testing();
