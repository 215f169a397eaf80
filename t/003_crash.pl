# Crash safety: the handler's writes commit with the delivery progress, so a
# crash mid-batch rolls both back and the batch is redone -- each event's
# effect exactly once.
#
# (a) kill -9 of a worker while it runs a batch (the postmaster then restarts
#     every backend: crash recovery);
# (b) immediate shutdown while a backlog drains, then start.
#
# The handler inserts into effects(event_id PRIMARY KEY): a redelivery of a
# committed event would raise 23505 and show up as a parked or dead event.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

# The test framework turns restart_after_crash off; a worker crash must restart.
my $node = evproc_node('crash', "restart_after_crash = on\n");

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('work', partitions => 8);
CREATE TABLE effects (event_id bigint PRIMARY KEY, key text NOT NULL, pid int NOT NULL,
                      attempt int NOT NULL);
CREATE FUNCTION slow_effects(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO effects SELECT e.id, e.key, pg_backend_pid(), e.attempt FROM unnest(events) AS e;
    -- Slow enough that a loaded machine's poller still catches a backlog in flight.
    PERFORM pg_sleep(0.2);
END $$;
GRANT SELECT, INSERT ON effects TO app;
SELECT evproc_subscribe('effects', 'work', 'slow_effects', batch_size => 50, max_attempts => 3,
                        backoff_base => '10 ms', backoff_cap => '50 ms', failure_budget => 1,
                        run_as => 'app');
});

sub publish
{
	my ($from, $count) = @_;
	my $per_txn = 500;
	for (my $lo = $from; $lo < $from + $count; $lo += $per_txn)
	{
		my $hi = $lo + $per_txn - 1;
		$node->safe_psql(
			'postgres', qq{
SELECT cardinality(evproc_enqueue_batch('work',
  (SELECT jsonb_agg(jsonb_build_object('key', 'k:' || (n % 300), 'payload', jsonb_build_object('n', n)))
     FROM generate_series($lo, $hi) AS n)))});
	}
}

my $stalled = "SELECT state <> 'active' FROM evproc_subscriptions WHERE name = 'effects'";

# Every committed event has its effect exactly once; nothing failed.
sub check_exactly_once
{
	my ($phase) = @_;
	my $logged = sql_value($node, 'SELECT count(*) FROM evproc.log');
	ok( wait_until(
			$node, "SELECT count(*) >= $logged FROM effects",
			abort_if => $stalled,
			diag => 'SELECT count(*) FROM effects'),
		"$phase: delivery finished");
	is(sql_value($node, 'SELECT count(*) FROM effects'), $logged,
		"$phase: one effect per committed event ($logged)");
	is( sql_value(
			$node,
			'SELECT count(*) FROM evproc.log l WHERE NOT EXISTS (SELECT 1 FROM effects f WHERE f.event_id = l.id)'
		),
		'0',
		"$phase: no event without its effect");
	is( sql_value(
			$node,
			'SELECT (SELECT count(*) FROM evproc.retry) || \'/\' || (SELECT count(*) FROM evproc.dead_letter)'
		),
		'0/0',
		"$phase: no handler failure (a redelivered event would have raised 23505)")
	  or diag sql_value($node,
		'SELECT event_id, sqlstate, message FROM evproc_dead_letters LIMIT 5');
	is( sql_value(
			$node,
			"SELECT delivered FROM evproc_subscriptions WHERE name = 'effects'"),
		$logged,
		"$phase: progress counts each delivery once (committed with the effects)");
}

# ---------------------------------------------------------------------------
# (a) kill -9 a worker in the middle of a batch
# ---------------------------------------------------------------------------
publish(1, 5000);
is(sql_value($node, 'SELECT count(*) FROM evproc.log'), '5000', 'published 5,000 events');

# A worker inside the handler: its batch is in flight.
my $busy = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc worker'"
  . " AND state = 'active' AND wait_event = 'PgSleep' LIMIT 1";
ok( wait_until(
		$node,
		"SELECT (SELECT count(*) FROM effects) > 0 AND EXISTS ($busy)",
		abort_if => 'SELECT count(*) >= 5000 FROM effects'),
	'delivery is under way and a worker is inside the handler');
my $victim = sql_value($node, $busy);
my $before = sql_value($node, 'SELECT count(*) FROM effects');
note "killing worker $victim with SIGKILL ($before effects committed)";
my $log_offset = -s $node->logfile;
ok(kill('KILL', $victim), "sent SIGKILL to worker $victim");

$node->wait_for_log(qr/terminated by signal 9: Killed/, $log_offset);
$node->wait_for_log(qr/database system is ready to accept connections/, $log_offset);
pass('the postmaster went through crash recovery');
cmp_ok($before, '<', 5000, 'the crash came before the backlog was drained');
ok( wait_until(
		$node,
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
	'the launcher started its workers again');
check_exactly_once('after kill -9');

# ---------------------------------------------------------------------------
# (b) immediate shutdown while a backlog drains
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT evproc_pause('effects')");
publish(5001, 5000);
my $done = sql_value($node, 'SELECT count(*) FROM effects');
is($done, '5000', 'paused: nothing of the new backlog delivered');
$node->safe_psql('postgres', "SELECT evproc_resume('effects')");
ok( wait_until(
		$node,
		"SELECT (SELECT count(*) FROM effects) > $done AND EXISTS ($busy)",
		abort_if => 'SELECT count(*) >= 10000 FROM effects'),
	'draining again, a batch in flight');
$before = sql_value($node, 'SELECT count(*) FROM effects');
$node->stop('immediate');
cmp_ok($before, '<', 10000, 'the stop came before the backlog was drained');
$node->start;
check_exactly_once('after immediate stop');

my $pids = sql_value($node, 'SELECT count(DISTINCT pid) FROM effects');
note "worker processes that committed effects: $pids";
cmp_ok($pids, '>=', 3, 'effects came from workers of more than one server lifetime');

$node->stop;
done_testing();
