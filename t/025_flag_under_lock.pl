# The launcher's flagging never waits for a lock (docs/design.md "Claiming a unit"): it
# takes its tables' locks only if they are free, and otherwise leaves the slots it had
# to mark for its next try. Here a session holds ACCESS EXCLUSIVE on evproc.progress (an
# operator's ALTER TABLE or VACUUM FULL) for a few seconds while events are published:
# the launcher keeps taking ticks meanwhile (waiting for the lock, it would take none),
# and once the lock is gone every event is delivered, each once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use Time::HiRes qw(usleep);

my $node = evproc_node('flag_lock', "evproc.maintenance_interval = 1h\n");
id_recording_subscription(
	$node,
	topic => 'held',
	partitions => 4,
	table => 'held_seen',
	handler => 'held_record',
	subscription => 'held_sub');
$node->safe_psql('postgres', q{SELECT evproc_enqueue('held', 'warm', '{}')});
ok(wait_until($node, 'SELECT count(*) = 1 FROM held_seen'), 'delivery runs');

my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe('LOCK TABLE evproc.progress IN ACCESS EXCLUSIVE MODE');
my $ticks_before = sql_value($node, 'SELECT max(id) FROM evproc.tick');
# Each commit asks for a tick; the ticks' flagging finds evproc.progress locked.
for my $i (1 .. 20)
{
	$node->safe_psql('postgres',
		"SELECT evproc_enqueue('held', 'k$i', jsonb_build_object('n', $i))");
	usleep(100_000);
}
my $ticks_during = sql_value($node, 'SELECT max(id) FROM evproc.tick');
cmp_ok($ticks_during - $ticks_before, '>=', 5,
	'the launcher keeps ticking while evproc.progress is locked');
is(sql_value($node, 'SELECT count(*) FROM held_seen'), '1',
	'nothing is delivered while the workers cannot write their progress');
$holder->query_safe('COMMIT');
$holder->quit;

# Well under a worker's idle wait (60 s): a lost wake-up (a worker whose look waited for
# the lock, whose latch that wait reset) showed as delivery 60 s late, in 1 of 12 runs.
ok( wait_until(
		$node, 'SELECT count(*) = 21 FROM held_seen',
		timeout => 30,
		diag => q{SELECT (SELECT count(*) FROM held_seen) AS seen,
                         (SELECT string_agg(format('%s:%s ready=%s tick=%s', partition, delivered, ready, tick_id), ', ')
                            FROM evproc.progress) AS units,
                         (SELECT max(id) FROM evproc.tick) AS newest_tick}),
	'every event is delivered once the lock is gone');
is( sql_value($node, q{SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
                        WHERE t.name = 'held'}),
	'21', 'enqueued = delivered');
is($node->safe_psql('postgres', q{SELECT count(*) FROM evproc_dead_letters}), '0',
	'no dead letters');

$node->stop;
done_testing();
