# SIGTERM and SIGHUP.
#
# (a) pg_terminate_backend() of a worker while its handler sleeps inside a
#     batch: the launcher starts a new worker, the batch in flight rolls back
#     and is redelivered, and every event has its effect exactly once.
# (b) evproc.workers is a SIGHUP setting: the launcher grows the pool to 3 and
#     shrinks it to 1 on reload, and delivery goes on with one worker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('sigterm');

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('slow', partitions => 2);
CREATE TABLE effects (event_id bigint PRIMARY KEY, pid int NOT NULL, attempt int NOT NULL);
CREATE FUNCTION sleepy(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO effects SELECT e.id, pg_backend_pid(), e.attempt FROM unnest(events) AS e;
    PERFORM pg_sleep(2);
END $$;
GRANT SELECT, INSERT ON effects TO app;
SELECT evproc_subscribe('sleepy', 'slow', 'sleepy', batch_size => 100,
                        handler_timeout => '30 s', run_as => 'app');
});

ok(wait_until($node,
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
	'two workers running');
my @workers = worker_pids($node);
note "workers: @workers";

$node->safe_psql('postgres',
	q{SELECT cardinality(evproc_enqueue_batch('slow',
        (SELECT jsonb_agg(jsonb_build_object('key', 'k:' || n, 'payload', jsonb_build_object('n', n)))
           FROM generate_series(1, 400) AS n)))});
my $enqueued = sql_value($node, 'SELECT count(*) FROM evproc.log');
is($enqueued, '400', 'published 400 events');

# ---------------------------------------------------------------------------
# (a) SIGTERM mid-batch
# ---------------------------------------------------------------------------
my $sleeping = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc worker'"
  . " AND state = 'active' AND wait_event = 'PgSleep' ORDER BY pid LIMIT 1";
ok(wait_until($node, "SELECT EXISTS ($sleeping)", timeout => 60),
	'a worker is inside the handler (pg_sleep)');
my $victim = sql_value($node, $sleeping);
my $before = sql_value($node, 'SELECT count(*) FROM effects');
my $victim_rows = sql_value($node, "SELECT count(*) FROM effects WHERE pid = $victim");
note "terminating worker $victim; $before effects committed so far";
my $log_offset = -s $node->logfile;
is(sql_value($node, "SELECT pg_terminate_backend($victim)"), 't', 'pg_terminate_backend');

ok( wait_until(
		$node,
		"SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $victim)",
		timeout => 30),
	'the terminated worker exited');
$node->wait_for_log(qr/evproc worker \d+ exited; restarting it/, $log_offset);
ok( wait_until(
		$node,
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"
		  . " AND pid <> $victim",
		timeout => 60),
	'the launcher started a replacement worker');
my @after = worker_pids($node);
my %old = map { $_ => 1 } @workers;
my @new = grep { !$old{$_} } @after;
note "workers now: @after (new: @new)";
is(scalar(@new), 1, 'exactly one new worker pid');
ok($node->log_contains(qr/FATAL:  terminating background worker "evproc worker" due to administrator command/,
		$log_offset),
	'the worker died of the SIGTERM');

ok( wait_until(
		$node, "SELECT count(*) >= $enqueued FROM effects",
		abort_if => "SELECT state <> 'active' FROM evproc_subscriptions",
		timeout => 90),
	'delivery finished');
cmp_ok($before, '<', $enqueued, 'the termination came before the end of delivery');
is(sql_value($node, 'SELECT count(*) FROM effects'), $enqueued, 'one effect per event');
is(sql_value($node, "SELECT count(*) FROM effects WHERE pid = $victim"),
	$victim_rows, 'the terminated worker\'s batch in flight left no effect');
is( sql_value(
		$node, "SELECT (SELECT count(*) FROM evproc.retry) || '/' || (SELECT count(*) FROM evproc.dead_letter)"),
	'0/0',
	'no handler failure (a second delivery of a committed event would raise 23505)');
is(sql_value($node, 'SELECT count(*) FROM effects WHERE attempt <> 1'),
	'0', 'the rolled-back batch did not count as a failed attempt');
is(sql_value($node, "SELECT delivered FROM evproc_subscriptions"), $enqueued,
	'progress counts each event once');

# ---------------------------------------------------------------------------
# (b) evproc.workers on reload
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', 'ALTER SYSTEM SET evproc.workers = 3');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( wait_until(
		$node,
		"SELECT count(*) = 3 FROM pg_stat_activity WHERE backend_type = 'evproc worker'",
		timeout => 60),
	'evproc.workers = 3 after reload: three workers');
$node->safe_psql('postgres', 'ALTER SYSTEM SET evproc.workers = 1');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( wait_until(
		$node,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'evproc worker'",
		timeout => 60),
	'evproc.workers = 1 after reload: one worker');

$node->safe_psql('postgres',
	q{SELECT evproc_enqueue('slow', 'after:' || n, jsonb_build_object('n', n)) FROM generate_series(1, 10) AS n});
ok( wait_until(
		$node, 'SELECT count(*) = 410 FROM effects',
		abort_if => "SELECT state <> 'active' FROM evproc_subscriptions"),
	'one worker delivers new events');
is(sql_value($node, 'SELECT count(DISTINCT pid) FROM effects WHERE event_id IN '
	  . "(SELECT id FROM evproc.log WHERE key LIKE 'after:%')"),
	'1', 'by the one remaining worker');
is(sql_value($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
	'1', 'still one worker');

$node->stop;
done_testing();
