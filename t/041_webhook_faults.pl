# Webhook sinks across failures, against a real receiver: kill -9 of the sink worker
# mid-stream (the server restarts; the worker's leases are released at its start and
# their events sent again), an immediate server stop mid-stream, and a receiver dead for
# 30 seconds (the circuit breaker opens; everything arrives once it is back). Counted
# after each: every committed event received exactly once after dedup by webhook-id,
# with a valid signature, per key in commit order, nothing dead.
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

my $secret = 'evproc-test-secret-0123456789';
my $recv = start_receiver(secret => $secret);
my $node = evproc_node('webhook_faults', qq{
evproc.sink_allowed_destinations = '127.0.0.1'
restart_after_crash = on
});

$node->safe_psql('postgres', qq{
SELECT evproc_create_topic('stream', partitions => 4);
SELECT evproc_subscribe('hook', 'stream', NULL,
    sink => '{"type": "webhook", "url": "$recv->{url}", "secret": "$secret", "max_in_flight": 16,
              "timeout_ms": 2000, "connect_timeout_ms": 1000}',
    batch_size => 50, max_attempts => 100, backoff_base => '200 milliseconds',
    backoff_cap => '2 seconds', breaker_min_attempts => 20, breaker_cooldown => '5 seconds',
    run_as => 'app');
CREATE TABLE published (run text, key text, seq int, id bigint);
});

my $keys = 40;

# Publishes rounds $from..$to of one event per key each, one transaction per round.
sub publish
{
	my ($run, $from, $to) = @_;
	for my $seq ($from .. $to)
	{
		$node->safe_psql('postgres', qq{
INSERT INTO published
SELECT '$run', '$run:k' || k, $seq,
       evproc_enqueue('stream', '$run:k' || k, jsonb_build_object('run', '$run', 'seq', $seq))
  FROM generate_series(1, $keys) AS k;
});
	}
	return;
}

sub first_receipts
{
	my ($run) = @_;
	my (%count, @first);
	for my $event (@{ received_events($recv) })
	{
		next unless ref $event->{payload} eq 'HASH' && ($event->{payload}{run} // '') eq $run;
		push @first, $event unless $count{ $event->{webhook_id} }++;
	}
	return (\@first, \%count);
}

sub check_run
{
	my ($run, $rounds) = @_;
	my $expected = $keys * $rounds;
	my $arrived = 0;
	for (1 .. 900)
	{
		my ($first) = first_receipts($run);
		$arrived = scalar @$first;
		last if $arrived >= $expected;
		usleep(200_000);
	}
	is($arrived, $expected, "run $run: every committed event received");
	my ($first, $count) = first_receipts($run);
	my %published = map { $_ => 1 } split /\n/,
	  $node->safe_psql('postgres', qq{SELECT id FROM published WHERE run = '$run'});
	is(scalar(grep { !$published{ $_->{id} } } @$first), 0, "run $run: nothing received that was not committed");
	is(scalar(grep { !$_->{signature_valid} } grep { ($_->{payload}{run} // '') eq $run }
			grep { ref $_->{payload} eq 'HASH' } @{ received_events($recv) }), 0,
		"run $run: every request signed validly");
	my (%last, $in_order);
	$in_order = 1;
	for my $event (@$first)
	{
		my $due = ($last{ $event->{key} } // 0) + 1;
		if ($event->{payload}{seq} != $due)
		{
			$in_order = 0;
			diag("run $run key $event->{key}: seq $event->{payload}{seq} where $due was due");
		}
		$last{ $event->{key} } = $event->{payload}{seq};
	}
	ok($in_order, "run $run: per key in commit order");
	my $again = scalar(grep { $_ > 1 } values %$count);
	note("run $run: $again events received more than once (deduplicated by webhook-id)");
	is($node->safe_psql('postgres', q{SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'hook'}),
		'0', "run $run: no dead letters");
	return;
}

sub sink_pid
{
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc sink'});
}

# 1. kill -9 of the sink worker in the middle of the stream (a slow receiver keeps
# requests in flight).
control_receiver($recv, { mode => 'slow', seconds => 0.05 });
publish('kill', 1, 5);
my $pid = sink_pid();
ok($pid =~ /^\d+$/, "sink worker running (pid $pid)");
my $crash_offset = -s $node->logfile;
kill 'KILL', $pid;
# The postmaster restarts the server (crash recovery): publish again once it is back.
# Polled only once it has ended every process: a psql connected just before would lose
# its connection mid-query (EPIPE), which IPC::Run turns into a die.
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $crash_offset);
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'evproc sink'})
  or die 'no sink worker after the crash';
publish('kill', 6, 10);
control_receiver($recv, { mode => 'ok' });
check_run('kill', 10);

# 2. Immediate server stop mid-stream.
control_receiver($recv, { mode => 'slow', seconds => 0.05 });
publish('stop', 1, 5);
$node->stop('immediate');
$node->start;
publish('stop', 6, 10);
control_receiver($recv, { mode => 'ok' });
check_run('stop', 10);

# 3. The receiver dead for 30 seconds: connections refused, the breaker opens; once it
# is back on its port, everything arrives.
stop_receiver($recv);
publish('dead', 1, 10);
my $opened = 0;
for (1 .. 150)
{
	$opened = 1 if $node->safe_psql('postgres',
		q{SELECT breaker = 'open' FROM evproc_sinks WHERE subscription = 'hook'}) eq 't';
	last if $opened;
	usleep(200_000);
}
ok($opened, 'dead receiver: the circuit breaker opened');
sleep 30;
like($node->safe_psql('postgres', q{SELECT transport_errors FROM evproc_sinks WHERE subscription = 'hook'}),
	qr/^[1-9]\d*$/, 'dead receiver: refused connections counted');
$recv = start_receiver(previous => $recv, secret => $secret);
check_run('dead', 10);

stop_receiver($recv);
done_testing();
