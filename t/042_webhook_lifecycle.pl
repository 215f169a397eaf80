# Webhook sinks with the default settings, across the lifecycle the launcher follows
# (docs/design.md "Processes", docs/sinks.md): the sink worker is one of the launcher's
# dynamic workers, so
# (a) with nothing but shared_preload_libraries, evproc.database and the allow-list set,
#     one sink worker runs and events flow to a real receiver;
# (b) DROP EXTENSION stops it (a LOG line, no FATAL); CREATE EXTENSION starts it again;
# (c) DROP DATABASE is not kept waiting by it (the drop succeeds), and it starts again
#     in the database created anew;
# (d) a server restart (fast) in the middle of a stream to a slow receiver loses
#     nothing, and counts no attempt for the requests in flight at the stop.
# Counted at the receiver each time: every committed event delivered, exactly once by
# webhook-id (the first receipt of each), per key in commit order.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use EvprocWebhook;

my $secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
my $recv = start_receiver(secret => $secret);

# No evproc.sink_workers: the default (1) runs the sinks.
my $node = PostgreSQL::Test::Cluster->new('webhook_lifecycle');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'evproc'
evproc.database = 'evdb'
evproc.sink_allowed_destinations = '127.0.0.1'
log_min_messages = info
});
$node->start;
# The subscriptions' owner: sinks are never run as a superuser.
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');

sub evdb { return $node->safe_psql('evdb', $_[0]); }

my $sink_running =
  q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'evproc sink'};
my $no_sink = q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'evproc sink'};
my $sink_fatal = qr/FATAL:.*evproc sink|evproc sink.*FATAL/;

# The extension, a topic and a per-event webhook subscription in evdb.
sub create_extension
{
	evdb(qq{
CREATE EXTENSION evproc;
SELECT evproc_create_topic('hooks', partitions => 4);
GRANT USAGE ON SCHEMA evproc TO app;
SELECT evproc_allow_sinks('app');
SELECT evproc_grant('hooks', 'app', 'subscribe');
SET ROLE app;
SELECT evproc_subscribe('hook', 'hooks', NULL,
    sink => '{"type": "webhook", "url": "$recv->{url}", "secret": "$secret", "max_in_flight": 8}');
});
	return;
}

# The database, and the above in it.
sub set_up
{
	$node->safe_psql('postgres', 'CREATE DATABASE evdb');
	create_extension();
	return;
}

# $keys keys x $per_key events of run $run, one transaction per round.
sub publish
{
	my ($run, $keys, $per_key) = @_;
	for my $seq (1 .. $per_key)
	{
		evdb(qq{
SELECT count(evproc_enqueue('hooks', '$run:k' || k, jsonb_build_object('seq', $seq, 'run', '$run')))
  FROM generate_series(1, $keys) AS k});
	}
	return;
}

# The first receipt of each webhook-id of run $run, in arrival order, and how many
# receipts in all.
sub delivered
{
	my ($run) = @_;
	my (%seen, @first);
	my $receipts = 0;
	for my $event (@{ received_events($recv) })
	{
		next unless ref $event->{payload} eq 'HASH' && ($event->{payload}{run} // '') eq $run;
		++$receipts;
		push @first, $event unless $seen{ $event->{webhook_id} }++;
	}
	return (\@first, $receipts);
}

# Waits until $count distinct events of run $run arrived, then checks them: exactly
# $count (nothing more), each key's seq 1..$per_key in order.
sub check_run
{
	my ($run, $keys, $per_key, $timeout) = @_;
	my $count = $keys * $per_key;
	$timeout //= 120;
	my $first;
	for (1 .. $timeout * 5)
	{
		($first) = delivered($run);
		last if @$first >= $count;
		usleep(200_000);
	}
	is(scalar(@$first), $count, "run $run: all $count committed events delivered");
	my (%next, $in_order);
	$in_order = 1;
	for my $event (@$first)
	{
		my $expected = ($next{ $event->{key} } // 0) + 1;
		if ($event->{payload}{seq} != $expected)
		{
			$in_order = 0;
			diag("run $run, key $event->{key}: seq $event->{payload}{seq} where $expected was due");
		}
		$next{ $event->{key} } = $event->{payload}{seq};
	}
	ok($in_order, "run $run: per key in commit order");
	is(scalar(grep { $next{$_} == $per_key } keys %next), $keys, "run $run: every key complete");
	is(scalar(grep { !$_->{signature_valid} } @$first), 0, "run $run: every signature valid");
	return;
}

# ---------------------------------------------------------------------------
# (a) the defaults run the sinks
# ---------------------------------------------------------------------------
set_up();
ok($node->poll_query_until('evdb', $sink_running), 'one sink worker runs by default');
is(evdb(q{SELECT datname FROM pg_stat_activity WHERE backend_type = 'evproc sink'}),
	'evdb', 'it is connected to the database the launcher serves');
publish('a', 10, 10);
check_run('a', 10, 10);

# ---------------------------------------------------------------------------
# (b) DROP EXTENSION and CREATE EXTENSION
# ---------------------------------------------------------------------------
my $offset = -s $node->logfile;
evdb('DROP EXTENSION evproc');
ok($node->poll_query_until('evdb', $no_sink), 'DROP EXTENSION: the sink worker stops');
ok($node->log_contains(qr/LOG:  evproc sink 0 stopped/, $offset), 'it says so in one LOG line');
# The launcher looks at the extension every 2 s without it: a sink worker started
# regardless would show by now.
sleep 3;
ok($node->poll_query_until('evdb', $no_sink), 'no sink worker while the extension is missing');
create_extension();
ok($node->poll_query_until('evdb', $sink_running), 'CREATE EXTENSION: the sink worker starts again');
publish('b', 10, 10);
check_run('b', 10, 10);
is(log_count($node, $sink_fatal, $offset), 0, 'DROP and CREATE EXTENSION: no FATAL of a sink worker');

# ---------------------------------------------------------------------------
# (c) DROP DATABASE and CREATE DATABASE
# ---------------------------------------------------------------------------
$offset = -s $node->logfile;
# DROP DATABASE fails (55006, "being accessed by other users") if a process stays
# connected for 5 s: the launcher leaves and stops its workers, the sink worker among them.
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE evdb');
is($ret, 0, 'DROP DATABASE succeeds: the sink worker left the database') or diag($err);
ok($node->poll_query_until('postgres', $no_sink), 'no sink worker without the database');
set_up();
ok($node->poll_query_until('evdb', $sink_running), 'the database created again: the sink worker starts');
publish('c', 10, 10);
check_run('c', 10, 10);
is(log_count($node, $sink_fatal, $offset), 0, 'DROP and CREATE DATABASE: no FATAL of a sink worker');

# ---------------------------------------------------------------------------
# (d) a restart in the middle of a stream
# ---------------------------------------------------------------------------
# A slow receiver (each request answered after 0.3 s) keeps requests in flight when the
# server stops: those events are leased and sent but not acknowledged, and come again
# after the restart (the receiver dedups them by webhook-id).
control_receiver($recv, { mode => 'slow', seconds => 0.3 });
publish('d', 10, 10);
ok($node->poll_query_until('evdb', q{SELECT count(*) > 0 FROM evproc.lease}),
	'requests in flight (a lease is held)');
$node->restart;
$offset = -s $node->logfile;
control_receiver($recv, { mode => 'ok' });
ok($node->poll_query_until('evdb', $sink_running), 'after the restart the sink worker runs');
publish('e', 10, 2);
check_run('d', 10, 10);
check_run('e', 10, 2);
# Stopped with requests in flight, the sink worker returned its leases with their events
# held: sent again after the restart, they carry attempt 1 still (an expired lease would
# have counted an attempt: 2).
my @attempts_d = map { $_->{attempt} } grep {
	ref $_->{payload} eq 'HASH' && ($_->{payload}{run} // '') eq 'd'
} @{ received_events($recv) };
is(scalar(grep { $_ != 1 } @attempts_d), 0,
	'run d: no attempt counted for the requests in flight at the stop');
is(log_count($node, qr/ERROR:|FATAL:/, $offset), 0, 'no ERROR, no FATAL since the restart');

stop_receiver($recv);
$node->stop;
done_testing();
