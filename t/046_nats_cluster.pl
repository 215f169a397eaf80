# Past one server (docs/scaling.md): two PostgreSQL servers, each with its own evproc,
# publish through NATS sinks into one three-node JetStream cluster (127.0.0.1) with an R3
# stream; the stream's leader is killed (kill -9) mid-stream and restarted. Nothing lost,
# nothing twice (by Nats-Msg-Id: the two servers' ids never collide, their origins
# differ), per key in commit order for each server.
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
my $nats = nats_start(3);
nats_tool($reader, $nats, 'add-stream', 'EVENTS', 'evproc.>', 3);
my $servers = join(', ', map { qq{"$_"} } @{ nats_urls($nats) });

my @pg;
for my $name ('pg_a', 'pg_b')
{
	my $node = evproc_node($name, qq{
evproc.sink_allowed_destinations = '127.0.0.1'
});
	$node->safe_psql('postgres', qq{
SELECT evproc_create_topic('orders', partitions => 4);
SELECT evproc_allow_sinks('app');
SELECT evproc_grant('orders', 'app', 'subscribe');
SET ROLE app;
SELECT evproc_subscribe('orders_out', 'orders', NULL,
                        sink => '{"type": "nats", "servers": [$servers], "subject": "evproc.{topic}.{key}", "timeout_ms": 2000}',
                        max_attempts => 1000, backoff_base => '100 ms', backoff_cap => '1 s');
});
	push @pg, $node;
}

# Publishes seq $from..$to for keys k1..k10 on both servers, one transaction per seq each.
sub publish
{
	my ($from, $to) = @_;
	for my $seq ($from .. $to)
	{
		for my $node (@pg)
		{
			$node->safe_psql('postgres', qq{
SELECT count(evproc_enqueue('orders', 'k' || k, jsonb_build_object('seq', $seq)))
  FROM generate_series(1, 10) AS k;
});
		}
	}
	return;
}

# What both servers committed: message id => [server:key, seq].
sub committed
{
	my %expected;
	for my $node (@pg)
	{
		my $name = $node->name;
		my $rows = $node->safe_psql('postgres', q{
SELECT format('evproc:%s.%s:orders_out:%s', (SELECT system_identifier FROM pg_control_system()),
              (SELECT oid FROM pg_database WHERE datname = current_database()), l.id),
       l.key, l.payload ->> 'seq'
  FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id WHERE t.name = 'orders'});
		for my $line (split /\n/, $rows)
		{
			my ($id, $key, $seq) = split /\|/, $line;
			$expected{$id} = [ "$name:$key", $seq ];
		}
	}
	return \%expected;
}

publish(1, 15);
my $leader = nats_tool($reader, $nats, 'leader', 'EVENTS');
chomp $leader;
my ($victim) = grep { $_->{name} eq $leader } @$nats;
ok($victim, "the stream's leader is $leader");
nats_kill($victim);
publish(16, 30);
nats_restart($victim);
publish(31, 45);

my $expected = committed();
is(scalar(keys %$expected), 900, '900 events committed on the two servers');
my $deadline = time() + 120;
my $count = 0;
while (time() < $deadline)
{
	$count = stream_count($reader, [ grep { $_ != $victim } @$nats ], 'EVENTS');
	last if $count >= 900;
	usleep(250_000);
}
is($count, 900, 'the R3 stream holds 900 messages');
check_stream('cluster', stream_rows($reader, $nats, 'EVENTS'), $expected);

$_->stop for @pg;
done_testing();
