# Kafka sink against librdkafka's mock cluster (Debian packages no Kafka broker: the mock
# cluster built into librdkafka, three brokers in t/stream/kafka_mock.c, stands in for
# one; docs/streams.md says so). Every committed event in the topic, per key in commit
# order, none twice within a producer session through injected retriable broker errors;
# across kill -9 of the sink worker, copies of an already delivered event can appear
# (a new producer session: Kafka's idempotence does not span sessions), counted once by
# the evproc-message-id header. A permanent per-message error is a dead letter; an
# authorization failure pauses the subscription with the reason.
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

my $tool = build_tool('kafka_mock', '-lrdkafka');
my $mock = kafka_mock_start($tool, 'orders.v1', 4);

my $node = evproc_node('kafka', qq{
evproc.sink_allowed_destinations = '127.0.0.1'
restart_after_crash = on
});
$node->safe_psql('postgres', qq{
SELECT evproc_create_topic('orders', partitions => 4);
SELECT evproc_allow_sinks('app');
SELECT evproc_grant('orders', 'app', 'subscribe');
SET ROLE app;
SELECT evproc_subscribe('orders_out', 'orders', NULL,
                        sink => '{"type": "kafka", "brokers": "$mock->{bootstrap}", "topic": "orders.v1", "timeout_ms": 5000}',
                        max_attempts => 1000, backoff_base => '100 ms', backoff_cap => '1 s');
});

sub publish
{
	my ($from, $to) = @_;
	for my $seq ($from .. $to)
	{
		$node->safe_psql('postgres', qq{
SELECT count(evproc_enqueue('orders', 'k' || k, jsonb_build_object('seq', $seq), type => 'OrderCreated'))
  FROM generate_series(1, 10) AS k;
});
	}
	return;
}

sub committed
{
	my %expected;
	my $rows = $node->safe_psql('postgres', q{
SELECT format('evproc:%s.%s:orders_out:%s', (SELECT system_identifier FROM pg_control_system()),
              (SELECT oid FROM pg_database WHERE datname = current_database()), l.id),
       l.key, l.payload ->> 'seq'
  FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
 WHERE t.name = 'orders' AND l.key LIKE 'k%'});
	for my $line (split /\n/, $rows)
	{
		my ($id, $key, $seq) = split /\|/, $line;
		$expected{$id} = [ $key, $seq ];
	}
	return \%expected;
}

# Waits until the topic holds every id of %$expected (at least once).
sub wait_all
{
	my ($expected) = @_;
	my $deadline = time() + 120;
	my $rows = [];
	while (time() < $deadline)
	{
		$rows = kafka_rows($mock, scalar(keys %$expected));
		my %seen = map { $_->{id} => 1 } @$rows;
		return $rows unless grep { !$seen{$_} } keys %$expected;
		usleep(500_000);
	}
	diag($node->safe_psql('postgres', 'SELECT * FROM evproc_sinks'));
	return $rows;
}

# 1. Retriable broker errors on Produce (not leader, not enough replicas, timed out):
# the idempotent producer retries them, nothing twice.
publish(1, 10);
kafka_mock_command($mock, 'errors 6 19 7 19 6', qr/^ok\n/m);
publish(11, 20);
my $rows = wait_all(committed());
check_stream('injected errors', $rows, committed());

# 2. kill -9 of the sink worker mid-stream: every event there, per key in order, counted
# once by message id.
publish(21, 30);
kill 'KILL', sink_worker_pid($node);
# A killed worker makes the postmaster reinitialize (restart_after_crash): wait for it.
$node->poll_query_until('postgres', 'SELECT true') or die 'the server did not come back';
publish(31, 40);
$rows = wait_all(committed());
check_stream('kill -9', $rows, committed(), dedup => 1);
like($rows->[0]{event}, qr/^\d+$/, 'evproc-event-id header');

# 3. A permanent per-message error (message too large): a dead letter at once.
kafka_mock_command($mock, 'errors 10', qr/^ok\n/m);
$node->safe_psql('postgres', q{SELECT evproc_enqueue('orders', 'big', '{"pad": 1}')});
ok(wait_until($node, q{SELECT count(*) = 1 FROM evproc_dead_letters WHERE subscription = 'orders_out'}, timeout => 60),
	'the refused event is a dead letter');
like($node->safe_psql('postgres', q{SELECT message || ' ' || attempts FROM evproc_dead_letters}),
	qr/^Kafka: .* 1$/, 'with the broker\'s error, after one attempt');

# 4. An authorization failure: the subscription pauses with the reason.
kafka_mock_command($mock, 'errors 29 29 29 29 29 29 29 29', qr/^ok\n/m);
$node->safe_psql('postgres', q{SELECT evproc_enqueue('orders', 'k1', '{"seq": 1000}')});
ok(wait_until($node, q{SELECT state = 'paused' FROM evproc_sinks WHERE subscription = 'orders_out'}, timeout => 60),
	'an authorization failure pauses the subscription');
like($node->safe_psql('postgres', q{SELECT paused_reason FROM evproc_sinks WHERE subscription = 'orders_out'}),
	qr/Kafka: .*[Aa]uthoriz/, 'with the reason');

$mock->{in} .= "quit\n";
$mock->{handle}->finish;
$node->stop;
done_testing();
