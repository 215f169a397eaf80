# Delivery under a transaction held open (docs/design.md "Claiming a unit", ready hints):
# while a REPEATABLE READ snapshot pins the horizon, no version of a progress row can be
# pruned, and the workers claim units by key, newest version first, from hints. Events
# are published in many small transactions over 40 keys while a snapshot is held; a
# worker is killed with SIGKILL in the middle (the server restarts, and the snapshot is
# taken again); then more events. Counted at the handler's table: every event delivered
# exactly once, each key in id order, nothing dead, the snapshot old throughout.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

# The test framework turns restart_after_crash off; a worker crash must restart.
my $node = evproc_node('open_txn', "evproc.maintenance_interval = 1h\nrestart_after_crash = on\n");
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('pinned', partitions => 8);
CREATE TABLE public.pinned_seen (n bigserial PRIMARY KEY, id bigint UNIQUE, key text);
GRANT INSERT ON public.pinned_seen TO app;
GRANT USAGE ON SEQUENCE public.pinned_seen_n_seq TO app;
-- Slow enough that a batch is in flight when the worker is killed.
CREATE FUNCTION pinned_record(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.pinned_seen (id, key) SELECT e.id, e.key FROM unnest(events) e ORDER BY e.id;
  PERFORM pg_sleep(0.02);
END $$;
SELECT evproc_subscribe('pinned_sub', 'pinned', 'pinned_record', run_as => 'app',
                        batch_size => 10);
-- Many small transactions, as applications publish.
CREATE PROCEDURE publish(first integer, last integer) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN first .. last LOOP
    PERFORM evproc_enqueue('pinned', 'k' || (i % 40), jsonb_build_object('i', i));
    COMMIT;
  END LOOP;
END $$;
});

# Holds a snapshot open, as a forgotten or long reporting transaction does.
sub hold_snapshot
{
	my $holder = $node->background_psql('postgres', on_error_stop => 0);
	$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
	$holder->query_safe('SELECT count(*) FROM evproc.progress');
	return $holder;
}

my $pinned_xmin = q{SELECT backend_xmin FROM pg_stat_activity
                     WHERE state = 'idle in transaction' AND backend_xmin IS NOT NULL
                     ORDER BY age(backend_xmin) DESC LIMIT 1};

my $holder = hold_snapshot();
my $xmin_before = sql_value($node, $pinned_xmin);
ok($xmin_before ne '', 'a snapshot is held open');
$node->safe_psql('postgres', 'CALL publish(1, 1500)');
ok(wait_until($node, 'SELECT count(*) >= 500 FROM pinned_seen', timeout => 60),
	'delivery runs under the pinned horizon');
is(sql_value($node, $pinned_xmin), $xmin_before, 'the horizon stayed pinned meanwhile');

# A worker killed mid-batch: the server restarts (every session ends, the holder too).
my ($victim) = worker_pids($node);
my $log_offset = -s $node->logfile;
kill 'KILL', $victim;
$node->wait_for_log(qr/terminated by signal 9: Killed/, $log_offset);
$node->wait_for_log(qr/evproc launcher started/, $log_offset);
pass('a worker was killed and the server restarted');
eval { $holder->quit };

$holder = hold_snapshot();
$xmin_before = sql_value($node, $pinned_xmin);
$node->safe_psql('postgres', 'CALL publish(1501, 3000)');
ok( wait_until(
		$node, 'SELECT count(*) = 3000 FROM pinned_seen',
		timeout => 120,
		diag => q{SELECT (SELECT count(*) FROM pinned_seen) AS seen,
                         (SELECT string_agg(format('%s ready=%s tick=%s', partition, ready, tick_id), ', ')
                            FROM evproc.progress) AS units}),
	'every event is delivered under the pinned horizon, across the crash');
is(sql_value($node, $pinned_xmin), $xmin_before, 'the horizon stayed pinned until the end');

is( sql_value($node, q{SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
                        WHERE t.name = 'pinned'}),
	'3000', 'enqueued = delivered');
is(sql_value($node, 'SELECT count(DISTINCT id) FROM pinned_seen'),
	'3000', 'each event exactly once (a second delivery would fail its batch)');
is( sql_value(
		$node, q{SELECT count(*) FROM (
                   SELECT id < lag(id) OVER (PARTITION BY key ORDER BY n) AS behind FROM pinned_seen) s
                  WHERE behind}),
	'0', 'each key in id order');
is($node->safe_psql('postgres', 'SELECT count(*) FROM evproc_dead_letters'), '0',
	'no dead letters');
$holder->quit;

$node->stop;
done_testing();
