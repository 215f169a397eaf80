# NATS JetStream sink against a real nats-server (Debian's, JetStream on, file storage in
# the test's directory, 127.0.0.1): (a) every committed event in the stream exactly once
# by Nats-Msg-Id, per key in commit order, across kill -9 of the sink worker and an
# immediate PostgreSQL stop mid-stream; (c) the server down for 30 s: failures feed the
# breaker, which opens, and everything arrives after the server returns. A message the
# stream refuses (over its max_msg_size) is a dead letter with the server's error at once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use EvprocStream;
use Time::HiRes qw(usleep time);

my $reader = build_tool('nats_reader', '-lnats');
my $nats = nats_start(1);
nats_tool($reader, $nats, 'add-stream', 'EVENTS', 'evproc.>', 1, 4096);
my $url = nats_urls($nats)->[0];

my $node = evproc_node('nats', qq{
evproc.sink_allowed_destinations = '127.0.0.1'
restart_after_crash = on
});
$node->safe_psql('postgres', q{
SELECT evproc_create_topic('orders', partitions => 4);
SELECT evproc_allow_sinks('app');
SELECT evproc_grant('orders', 'app', 'subscribe');
});
my $sink = qq{{"type": "nats", "servers": ["$url"], "subject": "evproc.{topic}.{key}", "timeout_ms": 2000}};
$node->safe_psql('postgres', qq{
SET ROLE app;
SELECT evproc_subscribe('orders_out', 'orders', NULL, sink => '$sink',
                        max_attempts => 1000, backoff_base => '100 ms', backoff_cap => '1 s',
                        failure_budget => 0.05, breaker_min_attempts => 5, breaker_cooldown => '2 s');
});

# Publishes seq $from..$to for keys k1..k$keys, one transaction per seq.
sub publish
{
	my ($from, $to, $keys) = @_;
	for my $seq ($from .. $to)
	{
		$node->safe_psql('postgres', qq{
SELECT count(evproc_enqueue('orders', 'k' || k, jsonb_build_object('seq', $seq), type => 'OrderCreated'))
  FROM generate_series(1, $keys) AS k;
});
	}
	return;
}

# What was committed: message id => [key, seq], ids built in SQL the way the sink does
# (origin = system identifier and database OID).
sub committed
{
	my %expected;
	my $rows = $node->safe_psql('postgres', q{
SELECT format('evproc:%s.%s:orders_out:%s', (SELECT system_identifier FROM pg_control_system()),
              (SELECT oid FROM pg_database WHERE datname = current_database()), l.id),
       l.key, l.payload ->> 'seq'
  FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
 WHERE t.name = 'orders' AND l.payload ? 'seq'});
	for my $line (split /\n/, $rows)
	{
		my ($id, $key, $seq) = split /\|/, $line;
		$expected{$id} = [ $key, $seq ];
	}
	return \%expected;
}

sub wait_count
{
	my ($count, $timeout) = @_;
	my $deadline = time() + ($timeout // 120);
	my $have = 0;
	while (time() < $deadline)
	{
		$have = stream_count($reader, $nats, 'EVENTS');
		return 1 if $have >= $count;
		usleep(200_000);
	}
	diag("stream holds $have of $count");
	diag($node->safe_psql('postgres', 'SELECT * FROM evproc_sinks'));
	return 0;
}

# (a) Crashes on the PostgreSQL side mid-stream.
publish(1, 20, 10);
my $pid = sink_worker_pid($node);
ok($pid, 'a sink worker runs');
kill 'KILL', $pid;
# A killed worker makes the postmaster reinitialize (restart_after_crash): wait for it.
$node->poll_query_until('postgres', 'SELECT true') or die 'the server did not come back';
publish(21, 40, 10);
$node->stop('immediate');
$node->start;
publish(41, 60, 10);
ok(wait_count(600), 'a: the stream holds 600 messages');
check_stream('a', stream_rows($reader, $nats, 'EVENTS'), committed());
my $first = stream_rows($reader, $nats, 'EVENTS')->[0];
like($first->{subject}, qr/^evproc\.orders\.k\d+$/, 'subject from the template');
is($first->{payload}, '{"seq": 1}', 'payload is the event payload');

# (c) The server down for 30 s: publishes fail (timeouts, no connection), feed the
# breaker, which opens; everything arrives after the server is back. (The breaker weighs
# failures against the last minute's attempts, 600 of them successes: failure_budget 0.05
# lets it open within seconds.)
nats_kill($nats->[0]);
my $down_at = time();
publish(61, 70, 10);
ok(wait_until($node, q{SELECT breaker = 'open' OR state = 'cooling down' FROM evproc_sinks WHERE subscription = 'orders_out'},
	timeout => 28), 'c: the breaker opened while the server was down');
my $errors = $node->safe_psql('postgres',
	q{SELECT transport_errors > 0 AND last_error IS NOT NULL FROM evproc_sinks WHERE subscription = 'orders_out'});
is($errors, 't', 'c: transport errors counted, last error shown');
usleep(200_000) while time() - $down_at < 30;
nats_restart($nats->[0]);
publish(71, 80, 10);
ok(wait_count(800), 'c: the stream holds 800 messages after the server returned');
check_stream('c', stream_rows($reader, $nats, 'EVENTS'), committed());
is($node->safe_psql('postgres', q{SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'orders_out'}),
	'0', 'no dead letters');

# A message over the stream's max_msg_size (4096 bytes): refused by the server, a dead
# letter at once with its error; the key's later events still arrive.
$node->safe_psql('postgres', q{
SELECT evproc_enqueue('orders', 'big', jsonb_build_object('pad', repeat('x', 5000)));
SELECT evproc_enqueue('orders', 'big', jsonb_build_object('seq', 1));
});
ok(wait_until($node, q{SELECT count(*) = 1 FROM evproc_dead_letters WHERE subscription = 'orders_out'}, timeout => 60),
	'the oversized event is a dead letter');
like($node->safe_psql('postgres', q{SELECT message || ' ' || attempts FROM evproc_dead_letters WHERE subscription = 'orders_out'}),
	qr/NATS: .*maximum.* 1$/i, 'with the server\'s error, after one attempt');
ok(wait_count(801), 'the key goes on after its dead letter');

$node->stop;
done_testing();
