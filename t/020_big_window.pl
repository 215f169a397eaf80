# Growth without loss (issues 17 and 19), across kill -9 of a worker:
#
# (a) a window of one 200,000-event transaction is read a batch at a time from its
#     cursor; a worker killed in the middle of it resumes at the committed cursor: each
#     event's effect exactly once, and per key in enqueue (id) order;
# (b) thousands of parked keys (blocked heads, events waiting behind them) beside a
#     healthy backlog: the healthy keys drain past them, a kill -9 loses and repeats
#     nothing, and once re-driven each parked key's events are delivered in their order,
#     exactly once.
#
# The handler inserts into effects(event_id PRIMARY KEY): a second delivery of a
# committed event would raise 23505 and show up as a parked or dead event. effects.seq
# is taken as the handler runs, so per key it is the order of delivery.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

# The test framework turns restart_after_crash off; a worker crash must restart.
my $node = evproc_node('big_window', "restart_after_crash = on\n");

$node->safe_psql(
	'postgres', q{
CREATE TABLE effects (seq bigserial, event_id bigint PRIMARY KEY, sub text NOT NULL,
                      key text NOT NULL, pid int NOT NULL);
CREATE TABLE dep (down boolean NOT NULL, pace float8 NOT NULL);
INSERT INTO dep VALUES (true, 0.01);
-- Fails the whole batch while dep is down and it holds a 'bad' key; bisection then
-- isolates the bad events.
CREATE FUNCTION effect(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT down FROM dep) AND EXISTS (SELECT 1 FROM unnest(events) e WHERE e.key LIKE 'bad%') THEN
        RAISE EXCEPTION 'dependency down';
    END IF;
    INSERT INTO effects (event_id, sub, key, pid)
    SELECT e.id, e.topic, e.key, pg_backend_pid() FROM unnest(events) AS e;
    -- Slow enough that the test's poller catches a drain in flight.
    PERFORM pg_sleep((SELECT pace FROM dep));
END $$;
GRANT SELECT, INSERT ON effects TO app;
GRANT USAGE ON SEQUENCE effects_seq_seq TO app;
GRANT SELECT ON dep TO app;
SELECT evproc_create_topic('big', partitions => 4);
SELECT evproc_create_topic('pk', partitions => 4);
SELECT evproc_subscribe('big', 'big', 'effect', batch_size => 200, failure_budget => 1,
                        run_as => 'app');
SELECT evproc_subscribe('pk', 'pk', 'effect', batch_size => 100, max_attempts => 1,
                        on_dead_letter => 'block', failure_budget => 1, run_as => 'app');
});

my $busy = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc worker'"
  . " AND state = 'active' LIMIT 1";

# Kills a worker in a batch once `$ready` holds; waits for crash recovery and the workers.
sub kill_worker_when
{
	my ($ready, $too_late, $what) = @_;
	ok(wait_until($node, "SELECT ($ready) AND EXISTS ($busy)", abort_if => $too_late),
		"$what: under way");
	my $victim = sql_value($node, $busy);
	my $log_offset = -s $node->logfile;
	ok(kill('KILL', $victim), "$what: sent SIGKILL to worker $victim");
	$node->wait_for_log(qr/terminated by signal 9: Killed/, $log_offset);
	$node->wait_for_log(qr/database system is ready to accept connections/, $log_offset);
	ok( wait_until(
			$node,
			"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
		"$what: the launcher started its workers again");
}

# Per key, delivery order (effects.seq) is id order: no event of a key before an earlier one.
sub check_key_order
{
	my ($sub, $what) = @_;
	is( sql_value(
			$node, qq{
SELECT count(*) FROM (SELECT event_id, lag(event_id) OVER (PARTITION BY key ORDER BY seq) AS prev
                        FROM effects WHERE sub = '$sub') x
 WHERE prev > event_id}),
		'0',
		"$what: per key, events were delivered in id order");
}

sub check_exactly_once
{
	my ($topic, $what) = @_;
	my $logged = sql_value($node,
		"SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id WHERE t.name = '$topic'"
	);
	ok( wait_until(
			$node, "SELECT count(*) >= $logged FROM effects WHERE sub = '$topic'",
			diag => "SELECT count(*) FROM effects WHERE sub = '$topic'"),
		"$what: delivery finished");
	is( sql_value(
			$node, qq{
SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
 WHERE t.name = '$topic' AND NOT EXISTS (SELECT 1 FROM effects f WHERE f.event_id = l.id)}),
		'0',
		"$what: every event has its effect");
	is(sql_value($node, "SELECT count(*) FROM effects WHERE sub = '$topic'"),
		$logged, "$what: one effect per event ($logged)");
	is( sql_value(
			$node,
			"SELECT delivered FROM evproc_subscriptions WHERE name = '$topic'"),
		$logged,
		"$what: progress counts each delivery once");
}

# ---------------------------------------------------------------------------
# (a) one transaction of 200,000 events, kill -9 in the middle of its window
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT evproc_pause('big')");
is( sql_value(
		$node, q{
BEGIN;
SELECT sum(cardinality(evproc_enqueue_batch('big',
  (SELECT jsonb_agg(jsonb_build_object('key', 'k' || (n % 1000), 'payload', jsonb_build_object('n', n)))
     FROM generate_series(c * 10000 + 1, c * 10000 + 10000) AS n))))
  FROM generate_series(0, 19) AS c;
COMMIT;}),
	'200000',
	'published 200,000 events in one transaction');
is( sql_value($node, "SELECT count(DISTINCT xid) FROM evproc.log"), '1', 'all in one transaction');
$node->safe_psql('postgres', "SELECT evproc_resume('big')");
kill_worker_when(
	"SELECT count(*) BETWEEN 30000 AND 150000 FROM effects WHERE sub = 'big'",
	"SELECT count(*) > 150000 FROM effects WHERE sub = 'big'",
	'one-transaction window');
cmp_ok(sql_value($node, "SELECT count(*) FROM effects WHERE sub = 'big'"),
	'<', 200000, 'the crash came before the window was drained');
check_exactly_once('big', 'one-transaction window');
check_key_order('big', 'one-transaction window');
is( sql_value(
		$node,
		"SELECT (SELECT count(*) FROM evproc.retry) || '/' || (SELECT count(*) FROM evproc.dead_letter)"
	),
	'0/0',
	'one-transaction window: no handler failure (a redelivery would have raised 23505)');

# ---------------------------------------------------------------------------
# (b) 3,000 parked keys beside a healthy backlog, kill -9, then re-drive
# ---------------------------------------------------------------------------
# One failing event per bad key: each becomes a dead letter and its key's blocked head.
$node->safe_psql('postgres', 'UPDATE dep SET pace = 0.02');
$node->safe_psql(
	'postgres', q{
SELECT cardinality(evproc_enqueue_batch('pk',
  (SELECT jsonb_agg(jsonb_build_object('key', 'bad' || n, 'payload', jsonb_build_object('n', n)))
     FROM generate_series(1, 3000) AS n)))});
ok( wait_until(
		$node,
		"SELECT count(*) = 3000 FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id"
		  . " WHERE s.name = 'pk' AND r.is_head AND r.blocked"),
	'3,000 keys parked (blocked heads)');
# Two more events per bad key wait behind their heads; 20,000 healthy events over 500
# keys, in transactions of 1,000, interleaved with them.
for my $round (1 .. 20)
{
	my $extra = $round <= 2 ? "UNION ALL SELECT 'bad' || n, n FROM generate_series(1, 3000) n" : '';
	$node->safe_psql(
		'postgres', qq{
SELECT cardinality(evproc_enqueue_batch('pk',
  (SELECT jsonb_agg(jsonb_build_object('key', k, 'payload', jsonb_build_object('n', n)))
     FROM (SELECT 'good' || (n % 500) AS k, n FROM generate_series(($round - 1) * 1000 + 1, $round * 1000) n
           $extra) x)))});
}
kill_worker_when(
	"SELECT count(*) BETWEEN 2000 AND 18000 FROM effects WHERE sub = 'pk'",
	"SELECT count(*) > 18000 FROM effects WHERE sub = 'pk'",
	'healthy keys beside parked ones');
ok( wait_until(
		$node, "SELECT count(*) >= 20000 FROM effects WHERE sub = 'pk'",
		diag => "SELECT count(*) FROM effects WHERE sub = 'pk'"),
	'the healthy keys drained past the parked ones');
is( sql_value(
		$node,
		"SELECT count(*) FILTER (WHERE key LIKE 'bad%') || '/' || count(*) FROM effects WHERE sub = 'pk'"
	),
	'0/20000',
	'no event of a parked key was delivered; every healthy one once');
is( sql_value(
		$node, q{
SELECT count(*) FILTER (WHERE is_head) || '/' || count(*) FILTER (WHERE NOT is_head)
  FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id WHERE s.name = 'pk'}),
	'3000/6000',
	'each parked key: its head and the two events waiting behind it');
is( sql_value(
		$node, q{
SELECT count(*) FROM (SELECT r.event_id, lag(r.event_id) OVER (PARTITION BY r.key ORDER BY r.seq) AS prev
                        FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id
                       WHERE s.name = 'pk') x
 WHERE prev > event_id}),
	'0',
	'each parked key waits in id order');

# The dependency is back: re-drive every dead letter; kill a worker while they drain.
$node->safe_psql('postgres', 'UPDATE dep SET down = false, pace = 0.05');
is(sql_value($node, "SELECT evproc_redrive('pk')"), '3000', 're-drove the 3,000 dead heads');
kill_worker_when(
	"SELECT count(*) BETWEEN 20200 AND 28000 FROM effects WHERE sub = 'pk'",
	"SELECT count(*) > 28000 FROM effects WHERE sub = 'pk'",
	're-driven keys');
check_exactly_once('pk', 'parked keys, re-driven');
check_key_order('pk', 'parked keys, re-driven');
is( sql_value(
		$node,
		"SELECT (SELECT count(*) FROM evproc.retry) || '/' || (SELECT count(*) FROM evproc.dead_letter)"
	),
	'0/0',
	'parked keys, re-driven: nothing left parked or dead');

$node->stop;
done_testing();
