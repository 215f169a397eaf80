# Exactly-once effects for consumers that write to the same database (issue 14,
# docs/consumers.md): the example Python consumer acknowledges each batch in the
# transaction of its effects. Crashes must neither lose an event nor apply one twice:
#
# (a) kill -9 of a consumer in the middle of a batch (its transaction is open, with
#     effects written and the ack not yet committed): the server rolls the effects back,
#     the lease expires, and its events come again (attempt + 1 for the first of each key)
#     to the consumers left or restarted;
# (b) an immediate server stop while consumers drain a backlog, then a start: the
#     consumers lose their connections and are started again.
#
# The effects table has no unique key: a second effect of an event would show. At the
# end: published = handled (no dead letters), each effect once, per-key order.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use EvprocConsumers;

my $node = evproc_node('pull_crash', "restart_after_crash = on\n");
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('work', partitions => 8);
CREATE ROLE consumer LOGIN IN ROLE app;
CREATE TABLE fx (seq bigserial, event_id bigint, key text, payload jsonb, attempt int);
GRANT INSERT ON fx TO consumer;
GRANT USAGE ON SEQUENCE fx_seq_seq TO consumer;
SELECT evproc_subscribe('crashy', 'work', NULL, run_as => 'app', max_attempts => 100,
                        backoff_base => '10 ms', backoff_cap => '50 ms', failure_budget => 1,
                        lease_duration => '2 seconds');
});

my $logdir = $PostgreSQL::Test::Utils::log_path;
# Slow enough per event (2 ms, batches of up to 200) that a batch is often in flight.
my %env = (EVPROC_BATCH => 200, EVPROC_WAIT => 1, EVPROC_HANDLE_MS => 2);
my @names = qw(c1 c2);
my %consumers;
my $starts = 0;
sub start_named
{
	my ($name) = @_;
	$starts++;
	$consumers{$name} = start_consumer(
		'python',
		{
			host => $node->host,
			port => $node->port,
			user => 'consumer',
			dbname => 'postgres',
			application_name => $name
		},
		'crashy', 'fx', "$logdir/consumer_${name}_$starts.log", %env);
	return;
}
start_named($_) for @names;

my $published = 0;
sub publish
{
	my ($count) = @_;
	for (my $i = 0; $i < $count; $i += 500)
	{
		my ($lo, $hi) = ($published + 1, $published + 500);
		$node->safe_psql('postgres', qq{
SELECT cardinality(evproc_enqueue_batch('work',
  (SELECT jsonb_agg(jsonb_build_object('key', 'k' || (n % 53), 'payload', jsonb_build_object('n', n)))
     FROM generate_series($lo, $hi) AS n)))});
		$published = $hi;
	}
	return;
}

# (a) kill -9 of a consumer whose batch is in flight: its session is inside a
# transaction that is not the read (effects written, ack not yet committed).
publish(4000);
my $kills = 0;
for my $round (1 .. 4)
{
	my $name = $names[ $round % 2 ];
	my $in_batch = wait_until(
		$node,
		"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = '$name'
		                   AND xact_start IS NOT NULL AND query NOT LIKE '%evproc_read%')",
		timeout => 60);
	next if !$in_batch;
	$consumers{$name}->{handle}->signal('KILL');
	$consumers{$name}->{handle}->finish;
	$kills++;
	start_named($name);
	usleep(300_000);
}
is($kills, 4, 'four consumers were killed in the middle of a batch');
ok( wait_until(
		$node, "SELECT count(*) > 0 FROM fx WHERE attempt > 1",
		timeout => 60, diag => 'SELECT * FROM evproc_leases'),
	'events of a killed consumer\'s lease came again after its expiry, attempt + 1');

# (b) immediate stop while the consumers drain more.
publish(4000);
ok( wait_until($node,
		"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name IN ('c1', 'c2')
		                   AND xact_start IS NOT NULL AND query NOT LIKE '%evproc_read%')"),
	'a batch is in flight');
$node->stop('immediate');
for my $name (@names)
{
	# They lose their connection and exit with an error, or are killed here.
	stop_consumer($consumers{$name}, 10);
}
$node->start;
start_named($_) for @names;

ok( wait_until(
		$node,
		"SELECT count(DISTINCT event_id) >= $published FROM fx",
		timeout => 240,
		diag => 'SELECT (SELECT count(*) FROM fx), (SELECT count(*) FROM evproc.retry), (SELECT count(*) FROM evproc.lease)'),
	'the backlog drained after the crashes');
for my $name (@names)
{
	is(stop_consumer($consumers{$name}, 60), 0, "consumer $name exits cleanly on SIGTERM");
}
check_drained($node, 'crashy', 'fx', $published, 0);
is($node->safe_psql('postgres', 'SELECT count(*) FROM evproc.lease'), '0', 'no lease is left');

$node->stop;
done_testing();
