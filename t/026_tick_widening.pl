# Ticks widen with the rate of committed events (evproc.tick_widen_above,
# src/core/tick_pace.hpp): above that rate the launcher spaces its ticks out (up to
# 50 ms), whether workers wait or not, so that batches carry more events under load.
# The same publishing (single-event transactions at a fixed rate) runs twice: with the
# widening off (0), ticks follow the commits; with the threshold far below the rate,
# ticks come at most about every 50 ms. A third run publishes mostly to a topic whose
# only subscription is paused: those events must not widen the ticks. Counted, not
# timed: the ticks each phase took (evproc.tick's ids), and in every phase each event
# delivered exactly once, each key's events in the order of their ids.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use IPC::Run;

my $seconds = 4;
my $rate = 400;    # events a second, all publishers together

my $node = evproc_node('widen', "evproc.maintenance_interval = 1h\n");
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('busy', partitions => 4);
CREATE TABLE busy_seen (seq bigserial PRIMARY KEY, id bigint NOT NULL, key text NOT NULL);
GRANT INSERT ON busy_seen TO app;
GRANT USAGE ON SEQUENCE busy_seen_seq_seq TO app;
CREATE FUNCTION busy_record(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
  INSERT INTO public.busy_seen (id, key) SELECT e.id, e.key FROM unnest(events) e ORDER BY e.id $$;
SELECT evproc_subscribe('busy_sub', 'busy', 'busy_record', run_as => 'app');
SELECT evproc_enqueue('busy', 'warm', '{}');
SELECT evproc_create_topic('unread', partitions => 4);
SELECT evproc_subscribe('unread_sub', 'unread', 'busy_record', run_as => 'app');
SELECT evproc_pause('unread_sub');
});
ok(wait_until($node, 'SELECT count(*) = 1 FROM busy_seen'), 'delivery runs');

sub script
{
	my ($name, $topic) = @_;
	my $path = $node->basedir . "/$name.sql";
	open my $fh, '>', $path or die "cannot write $path: $!";
	print $fh "SELECT evproc_enqueue('$topic', 'k' || (random() * 40)::int, '{}');\n";
	close $fh;
	return $path;
}
my $busy = script('busy', 'busy');
my $unread = script('unread', 'unread');
my $busy_events = q{SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
                     WHERE t.name = 'busy'};

# Publishes for $seconds at $rate with evproc.tick_widen_above = $threshold, to 'busy'
# or as @scripts say (pgbench's script@weight); returns the ticks taken meanwhile and
# the events published to 'busy'.
sub publish_with
{
	my ($threshold, @scripts) = @_;
	@scripts = ($busy) unless @scripts;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET evproc.tick_widen_above = $threshold; SELECT pg_reload_conf()");
	sleep 1;    # the launcher reloads at its next wake (at least once a second)
	my $events_before = sql_value($node, $busy_events);
	my $ticks_before = sql_value($node, 'SELECT max(id) FROM evproc.tick');
	my ($out, $err) = ('', '');
	my @pgbench = (
		'pgbench', '-n', '-h', $node->host, '-p', $node->port,
		'-c', 2, '-j', 2, '-T', $seconds, '-R', $rate,
		(map { ('-f', $_) } @scripts), 'postgres');
	IPC::Run::run(\@pgbench, '>', \$out, '2>', \$err)
	  or BAIL_OUT("pgbench failed: $err");
	my $ticks = sql_value($node, 'SELECT max(id) FROM evproc.tick') - $ticks_before;
	my $events = sql_value($node, $busy_events) - $events_before;
	return ($ticks, $events);
}

sub all_delivered_in_order
{
	my ($what) = @_;
	my $total = sql_value($node, $busy_events);
	ok(wait_until($node, "SELECT count(*) = $total FROM busy_seen", timeout => 60),
		"$what: all $total events delivered");
	is(sql_value($node, 'SELECT count(*) - count(DISTINCT id) FROM busy_seen'),
		'0', "$what: each once");
	is( sql_value(
			$node, q{SELECT count(*) FROM (
			  SELECT id < lag(id) OVER (PARTITION BY key ORDER BY seq) AS inverted
			    FROM busy_seen) s WHERE inverted}),
		'0',
		"$what: each key's events in order");
}

my ($ticks_off, $events_off) = publish_with(0);
cmp_ok($events_off, '>=', $rate * $seconds / 2, 'widening off: publishers published');
all_delivered_in_order('widening off');

my ($ticks_on, $events_on) = publish_with(50);
cmp_ok($events_on, '>=', $rate * $seconds / 2, 'widening on: publishers published');
all_delivered_in_order('widening on');

note "ticks: $ticks_off for $events_off events with the widening off, "
  . "$ticks_on for $events_on events with it on";
# Off: about a tick per commit (fewer on a slow machine, never fewer than a third of
# them here). On: at the 50 ms ceiling once the rate's average (0.2 s) has passed
# 2 x 50 events a second, about 20 ticks a second.
cmp_ok($ticks_off, '>=', $events_off / 3, 'widening off: ticks follow the commits');
cmp_ok($ticks_on * 3, '<', $ticks_off, 'widening on: fewer ticks for the same rate');
cmp_ok($ticks_on, '<=', $seconds * 20 * 2, 'widening on: about one tick per 50 ms');

# Events no subscription awaits now (a paused one) do not pace the ticks: 'busy' gets a
# fifth of the same rate, under the threshold, and 'unread' the rest, far above it. Were
# they counted, ticks would come every 50 ms, fewer than 'busy''s commits.
my ($ticks_mixed, $events_mixed) = publish_with(150, "$busy\@1", "$unread\@4");
note "ticks: $ticks_mixed for $events_mixed events awaited, beside four times as many not";
cmp_ok($events_mixed, '>=', $rate * $seconds / 10, 'paused topic beside: publishers published');
cmp_ok($ticks_mixed, '>=', $events_mixed / 3,
	'events no subscription awaits do not widen the ticks');
all_delivered_in_order('paused topic beside');
is(sql_value($node, q{SELECT delivered FROM evproc_subscriptions WHERE name = 'unread_sub'}),
	'0', 'the paused subscription delivered nothing');

$node->stop;
done_testing();
