# No lost wake-up (issue 12.8): many publishers commit single events on rarely used
# partitions while the launcher ticks; every event must be delivered, each within five
# seconds of its enqueue (half the time until its partition's next event).
#
# The commit wake protocol (src/commit_wake.cpp) must never leave a commit's partition
# unlisted by every tick that sees it: the unit would not be claimed until the next
# commit on the same partition. Here a partition gets an event only every few seconds
# (keyless events go to partition id % partitions, so consecutive ids rotate through
# all of them: at 100 events a second over 1,024 partitions, every 10 s), so such a
# loss shows as an event delivered about 10 s late, or, for the last round of events,
# never. The bound is not a latency target (bench/latency measures that): it sits
# halfway between a delivery on a loaded 2-core machine (well under a second) and a
# delivery that waited for the partition's next commit.
#
# Knobs: EVPROC_WAKE_SECONDS (publishing time, default 20), EVPROC_WAKE_RATE (events a
# second over all publishers, default 100), EVPROC_WAKE_CLIENTS (publishers, default 8).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use IPC::Run;

sub knob
{
	my ($name, $default) = @_;
	my $value = $ENV{$name} // $default;
	die "$name must be a positive integer, got '$value'\n" unless $value =~ /^[1-9][0-9]*$/;
	return $value;
}

my $seconds = knob('EVPROC_WAKE_SECONDS', 20);
my $rate = knob('EVPROC_WAKE_RATE', 100);
my $clients = knob('EVPROC_WAKE_CLIENTS', 8);
# At $rate events a second, a partition gets its next event after $partitions / $rate
# seconds: twice the five seconds allowed.
my $partitions = 1024;

my $node = evproc_node('wake', "max_connections = 60\n");
$node->safe_psql(
	'postgres', qq{
SELECT evproc_create_topic('quiet', partitions => $partitions);
CREATE TABLE wake_seen (id bigint PRIMARY KEY, enqueued_at timestamptz, seen_at timestamptz);
GRANT SELECT, INSERT ON wake_seen TO app;
CREATE FUNCTION wake_record(events evproc.event[]) RETURNS void LANGUAGE sql AS \$\$
  INSERT INTO public.wake_seen
  SELECT e.id, e.enqueued_at, clock_timestamp() FROM unnest(events) e
  ON CONFLICT (id) DO NOTHING
\$\$;
GRANT EXECUTE ON FUNCTION wake_record(evproc.event[]) TO app;
SELECT evproc_subscribe('wake', 'quiet', 'wake_record(evproc.event[])', run_as => 'app');
});

# One event first, delivered before the publishers start: at start-up the workers come
# only after the maintenance worker's first count of the backlog, and the events that
# wait for them would be late for that reason, not for a lost wake-up.
$node->safe_psql('postgres', q{SELECT evproc_enqueue('quiet', NULL, '{"n": 0}')});
ok(wait_until($node, 'SELECT count(*) = 1 FROM wake_seen', timeout => 60),
	'the workers run');

# Publishers: single-event transactions, paced so that partitions stay quiet.
my $script = $node->basedir . '/publish.sql';
open my $fh, '>', $script or die "cannot write $script: $!";
print $fh "SELECT evproc_enqueue('quiet', NULL, '{\"n\": 1}');\n";
close $fh;
my ($out, $err) = ('', '');
my @pgbench = (
	'pgbench', '-n', '-h', $node->host, '-p', $node->port,
	'-c', $clients, '-j', 2, '-T', $seconds, '-R', $rate,
	'-f', $script, 'postgres');
ok(IPC::Run::run(\@pgbench, '>', \$out, '2>', \$err), 'publishers ran')
  or diag "pgbench: $err";
my $published = sql_value($node, "SELECT count(*) FROM evproc.log");
cmp_ok($published, '>=', $rate * $seconds / 2, 'publishers published');

ok( wait_until(
		$node, "SELECT (SELECT count(*) FROM wake_seen) = $published",
		timeout => 60,
		diag => "SELECT e.id, e.partition, e.enqueued_at FROM evproc.log e "
		  . "WHERE NOT EXISTS (SELECT 1 FROM wake_seen s WHERE s.id = e.id) ORDER BY e.id LIMIT 20"),
	"all $published events delivered");

my $late = sql_value($node,
	"SELECT count(*) FROM wake_seen WHERE seen_at - enqueued_at >= interval '5 seconds'");
is($late, 0, 'no event waited for its partition\'s next commit (delivered within 5 s)')
  or diag sql_value($node,
	"SELECT s.id, l.partition, s.seen_at - s.enqueued_at FROM wake_seen s "
	  . "JOIN evproc.log l ON l.id = s.id ORDER BY s.seen_at - s.enqueued_at DESC LIMIT 20");
diag sql_value($node,
	"SELECT format('latency p50 %s ms, p99 %s ms, max %s ms', "
	  . "round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1), "
	  . "round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1), round(max(ms)::numeric, 1)) "
	  . "FROM (SELECT extract(epoch FROM seen_at - enqueued_at) * 1000 AS ms FROM wake_seen) l");

$node->stop;
done_testing();
