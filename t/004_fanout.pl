# Fan-out and isolation: two subscriptions on one topic, one whose handler
# raises for every event, one healthy. The healthy one must receive every
# event exactly once, however badly the other one fails; the broken one must
# commit nothing, park its events and be paused by its circuit breaker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('fanout');

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('news', partitions => 8);
CREATE TABLE good (event_id bigint PRIMARY KEY, key text NOT NULL, n int NOT NULL,
                   handled_at timestamptz NOT NULL);
CREATE TABLE bad (event_id bigint NOT NULL);
CREATE FUNCTION good_h(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO good SELECT e.id, e.key, (e.payload->>'n')::int, clock_timestamp()
      FROM unnest(events) AS e
$$;
-- Writes, then raises: nothing it wrote may survive.
CREATE FUNCTION bad_h(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bad SELECT e.id FROM unnest(events) AS e;
    RAISE EXCEPTION 'downstream is down (% events)', cardinality(events);
END $$;
GRANT SELECT, INSERT ON good, bad TO app;
-- Breaker defaults: failure_budget 0.5, breaker_min_attempts 20, cool-down 30 s.
SELECT evproc_subscribe('broken', 'news', 'bad_h', batch_size => 100, max_attempts => 3,
                        backoff_base => '10 ms', backoff_cap => '50 ms', run_as => 'app');
SELECT evproc_subscribe('healthy', 'news', 'good_h', batch_size => 100, run_as => 'app');
});

$node->safe_psql(
	'postgres', qq{
SELECT cardinality(evproc_enqueue_batch('news',
  (SELECT jsonb_agg(jsonb_build_object('key', 'k:' || (n % 100), 'payload', jsonb_build_object('n', n)) ORDER BY n)
     FROM generate_series(b * 500 + 1, b * 500 + 500) AS n)))
  FROM generate_series(0, 3) AS b});
my $enqueued = sql_value($node, 'SELECT count(*) FROM evproc.log');
is($enqueued, '2000', 'published 2,000 events');

my $healthy_stalled = "SELECT state <> 'active' FROM evproc_subscriptions WHERE name = 'healthy'";
ok( wait_until(
		$node, "SELECT count(*) >= $enqueued FROM good",
		abort_if => $healthy_stalled,
		diag => 'SELECT count(*) FROM good'),
	'the healthy subscription handled every event');
# Snapshot of the broken one at the moment the healthy one was done.
my $broken_then = sql_value($node,
	"SELECT state || '|' || delivered FROM evproc_subscriptions WHERE name = 'broken'");
note "broken subscription when the healthy one finished: $broken_then";

is(sql_value($node, 'SELECT count(*) FROM good'), '2000', 'healthy: 2,000 rows');
is( sql_value(
		$node,
		'SELECT count(*) FROM evproc.log l WHERE NOT EXISTS (SELECT 1 FROM good g WHERE g.event_id = l.id)'),
	'0',
	'healthy: no event missing');
is( sql_value(
		$node,
		q{SELECT count(*) FROM (SELECT n, lag(n) OVER (PARTITION BY key ORDER BY handled_at, n) AS prev
                                FROM good) x WHERE prev > n}),
	'0',
	'healthy: per key in publish order');
ok( wait_until(
		$node,
		"SELECT delivered = 2000 AND parked = 0 AND dead_letters = 0 AND state = 'active'"
		  . " FROM evproc_subscriptions WHERE name = 'healthy'",
		timeout => 30),
	'healthy: delivered 2000, nothing parked or dead, still active');

# The broken one: its breaker opens; what it wrote was rolled back.
ok( wait_until(
		$node,
		"SELECT state = 'cooling down' FROM evproc_subscriptions WHERE name = 'broken'",
		timeout => 60),
	'broken: the circuit breaker paused it (cooling down)');
my $broken = sql_value($node,
	"SELECT reason, delivered, parked, dead_letters FROM evproc_subscriptions WHERE name = 'broken'");
note "broken subscription: $broken";
my ($reason, $delivered, $parked, $dead) = split /\|/, $broken;
like($reason, qr/^circuit breaker: \d+ of \d+ deliveries failed/, 'broken: reason names the breaker');
is($delivered, '0', 'broken: nothing counted as delivered');
cmp_ok($parked + $dead, '>', 0, 'broken: failed events are parked or dead');
is(sql_value($node, 'SELECT count(*) FROM bad'), '0', 'broken: none of its writes survived');
is( sql_value(
		$node, q{SELECT count(*) FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id
                  WHERE s.name = 'broken' AND r.is_head AND r.sqlstate = 'P0001'
                    AND r.message LIKE 'downstream is down%'}) > 0 ? 1 : 0,
	1,
	'broken: parked heads carry the handler error');
is( sql_value(
		$node, q{SELECT count(*) FROM evproc_dead_letters
                  WHERE subscription = 'broken' AND (attempts <> 3 OR sqlstate <> 'P0001')}),
	'0',
	'broken: any dead letter has 3 attempts and P0001');

# The healthy one is still served while the broken one cools down.
$node->safe_psql('postgres',
	q{SELECT evproc_enqueue('news', 'late:' || i, '{"n": 0}') FROM generate_series(1, 16) AS i});
ok( wait_until(
		$node, "SELECT count(*) = 16 FROM good WHERE key LIKE 'late:%'",
		abort_if => $healthy_stalled),
	'healthy: new events delivered while the broken subscription cools down');
is(sql_value($node, "SELECT state FROM evproc_subscriptions WHERE name = 'broken'"),
	'cooling down', 'broken: still cooling down meanwhile');

$node->stop;
done_testing();
