# A restart with a large backlog, and running out of background worker slots.
#
# (a) A server restarted with a backlog (30,000 events by default; EVPROC_BACKLOG
#     changes it): the launcher starts once, registers the backlog once (lag_events
#     equals the backlog although the counters restarted from zero), and delivery resumes
#     and delivers every event exactly once; the first tick lets every unit look, so no
#     unit waits for a new commit.
# (b) max_worker_processes too small for evproc.workers: one WARNING with a hint (not
#     one per attempt), the workers that got a slot deliver, and the missing ones start
#     once slots free up (a parallel query holds them meanwhile), with a LOG line.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $backlog = $ENV{EVPROC_BACKLOG} // 30000;

# Eight slots: the logical replication launcher, the evproc launcher, its maintenance
# worker, its sink worker (evproc.sink_workers = 1 by default), two workers and two free
# ones (the launcher's database check takes one for a moment at start).
my $node = evproc_node('backlog', qq{
evproc.workers = 0
max_worker_processes = 8
});

id_recording_subscription(
	$node,
	topic => 'big',
	partitions => 16,
	table => 'sink',
	handler => 'drain',
	subscription => 'drain',
	options => 'batch_size => 500');

# ---------------------------------------------------------------------------
# (a) restart with a backlog
# ---------------------------------------------------------------------------
my $chunk = 10000;
for (my $from = 1; $from <= $backlog; $from += $chunk)
{
	my $to = $from + $chunk - 1;
	$to = $backlog if $to > $backlog;
	$node->safe_psql('postgres',
		qq{SELECT cardinality(evproc_enqueue_batch('big',
            (SELECT jsonb_agg(jsonb_build_object('key', 'k' || (n % 5000), 'payload', jsonb_build_object('n', n)))
               FROM generate_series($from, $to) AS n)))});
}
is(sql_value($node, 'SELECT count(*) FROM evproc.log'), $backlog, "backlog of $backlog events");
is(sql_value($node, 'SELECT count(*) FROM sink'), '0', 'nothing delivered with evproc.workers = 0');

# The launcher may log its start before restart() returns: counted from before it.
my $before_restart = -s $node->logfile;
$node->restart;
my $offset = -s $node->logfile;
ok( wait_until(
		$node,
		"SELECT lag_events = $backlog FROM evproc_subscription_stats WHERE subscription = 'drain'",
		timeout => 60),
	'after the restart the backlog is registered once: lag_events = backlog');
# What registering cost the launcher, counted again by hand (psql start included).
my $count_started = time();
is(sql_value($node, 'SELECT evproc.count_pending(id) FROM evproc.subscription'),
	$backlog, 'evproc.count_pending agrees');
note sprintf('counting a backlog of %d events took %.0f ms', $backlog,
	(time() - $count_started) * 1000);

my $started = time();
$node->safe_psql('postgres', 'ALTER SYSTEM SET evproc.workers = 2');
$node->reload;
ok( wait_until(
		$node, "SELECT count(*) = $backlog FROM sink",
		abort_if => "SELECT state <> 'active' FROM evproc_subscriptions",
		timeout => 120),
	'the backlog is delivered after the restart');
note sprintf('drained %d events in %.1f s', $backlog, time() - $started);
is( sql_value(
		$node, "SELECT (SELECT count(*) FROM evproc.retry) || '/' || (SELECT count(*) FROM evproc.dead_letter)"),
	'0/0',
	'exactly once: no handler failed (a second delivery would raise 23505)');
ok(wait_until($node,
		"SELECT lag_events = 0 FROM evproc_subscription_stats WHERE subscription = 'drain'"),
	'lag_events back to 0 (the backlog was counted once, not twice)');
is(log_count($node, qr/evproc launcher started/, $before_restart), 1, 'the launcher started once after the restart');
is(log_count($node, qr/ERROR:|FATAL:|exited with exit code/, $offset),
	0, 'no ERROR, no FATAL, no process exit since the restart');

# ---------------------------------------------------------------------------
# (b) no free background worker slot
# ---------------------------------------------------------------------------
ok(wait_until($node, "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
	'two workers run: the two spare slots are free');
# A parallel query whose two workers take the two free slots for a few seconds: one
# row per page, each row sleeps (a high cpu_tuple_cost makes the planner split the
# scan of so small a table).
$node->safe_psql(
	'postgres', q{
CREATE TABLE pages (n int, pad text) WITH (fillfactor = 10);
INSERT INTO pages SELECT n, repeat('x', 1000) FROM generate_series(1, 16) AS n;
ANALYZE pages;
});
my $parallel = $node->background_psql('postgres');
$parallel->query_safe(
	q{SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0;
      SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
      SET parallel_leader_participation = off; SET cpu_tuple_cost = 1});
$parallel->query_until(qr/holding/,
	qq{\\echo holding\nSELECT count(*) FROM pages WHERE pg_sleep(0.5) IS NOT NULL;\n});
ok( wait_until(
		$node,
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'parallel worker'",
		timeout => 30),
	'a parallel query holds the two free slots');

$offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER SYSTEM SET evproc.workers = 4');
$node->reload;
$node->wait_for_log(qr/WARNING:  evproc could not start worker \d: no free background worker slot/,
	$offset);
ok( $node->log_contains(
		qr/HINT:  Raise max_worker_processes \(it must cover evproc.workers \+ 2/, $offset),
	'the WARNING hints at max_worker_processes');
is(scalar(worker_pids($node)), 2, 'two workers still run');
$node->safe_psql('postgres',
	q{SELECT evproc_enqueue('big', 'slots:' || n, '{}') FROM generate_series(1, 20) AS n});
ok(wait_until($node, 'SELECT count(*) = ' . ($backlog + 20) . ' FROM sink'),
	'the workers that got a slot deliver');

# The query ends after about 4 s (16 rows x 0.5 s over 2 workers): its slots free up.
$parallel->quit;
ok(wait_until($node, "SELECT count(*) = 4 FROM pg_stat_activity WHERE backend_type = 'evproc worker'",
		timeout => 30),
	'the missing workers start once slots are free');
$node->wait_for_log(qr/LOG:  evproc: all 4 workers run now that background worker slots are free/,
	$offset);
is(log_count($node, qr/no free background worker slot/, $offset),
	1, 'one WARNING for the whole shortage, not one per attempt (every 2 s)');
is(log_count($node, qr/FATAL:|exited with exit code [1-9]/, $offset), 0, 'no crash loop');

$node->stop;
done_testing();
