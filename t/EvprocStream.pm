# NATS JetStream servers and librdkafka's mock Kafka cluster for the stream sink tests
# (t/045-047): build the small clients in t/stream/ with Debian's libnats-dev and
# librdkafka-dev, start nats-server (one, or a three-node JetStream cluster) on free
# 127.0.0.1 ports with their stores in the test's temporary directory, kill and restart
# them, and read back what a stream or topic holds.
package EvprocStream;
use strict;
use warnings;
use Exporter 'import';
use FindBin;
use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT = qw(build_tool nats_start nats_kill nats_restart nats_stop_all nats_urls
  nats_tool stream_rows stream_count kafka_mock_start kafka_mock_command kafka_rows
  sink_worker_pid check_stream);

my @servers;    # every nats-server started, for nats_stop_all

# Compiles t/stream/NAME.c into the test's temporary directory; returns the binary.
sub build_tool
{
	my ($name, $lib) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $binary = "$dir/$name";
	my ($out, $err);
	IPC::Run::run([ 'cc', '-O1', '-o', $binary, "$FindBin::RealBin/stream/$name.c", $lib ],
		'>', \$out, '2>', \$err)
	  or die "building $name failed: $err";
	return $binary;
}

sub free_port { return PostgreSQL::Test::Cluster::get_free_port(); }

# Starts nats-server with JetStream: count 1 is a single server, 3 a cluster (routes
# between all, JetStream replicated). Returns an array of server handles.
sub nats_start
{
	my ($count) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my @nodes;
	for my $i (1 .. $count)
	{
		push @nodes, {
			name => "n$i",
			port => free_port(),
			cluster_port => ($count > 1 ? free_port() : undef),
			store => "$dir/store-n$i",
			log => "$dir/n$i.log" };
	}
	for my $node (@nodes)
	{
		my @command = ('nats-server', '-js', '-a', '127.0.0.1', '-p', $node->{port},
			'-sd', $node->{store}, '-n', $node->{name});
		if ($count > 1)
		{
			my $routes = join(',',
				map { "nats://127.0.0.1:$_->{cluster_port}" } grep { $_ != $node } @nodes);
			push @command, '--cluster_name', 'evproc', '--cluster',
			  "nats://127.0.0.1:$node->{cluster_port}", '--routes', $routes;
		}
		$node->{command} = \@command;
		nats_restart($node);
	}
	push @servers, @nodes;
	return \@nodes;
}

# (Re)starts one server with its ports and store; waits until it accepts connections.
sub nats_restart
{
	my ($node) = @_;
	$node->{handle} = IPC::Run::start($node->{command}, '<', \undef, '>>', $node->{log},
		'2>>', $node->{log});
	for (1 .. 200)
	{
		return if IO::Socket::INET->new(PeerAddr => "127.0.0.1:$node->{port}", Timeout => 1);
		usleep(50_000);
	}
	die "nats-server $node->{name} did not start (see $node->{log})";
}

# kill -9 of one server.
sub nats_kill
{
	my ($node) = @_;
	return unless $node->{handle};
	$node->{handle}->signal('KILL');
	$node->{handle}->finish;
	delete $node->{handle};
	return;
}

sub nats_stop_all
{
	nats_kill($_) for @servers;
	return;
}

sub nats_urls
{
	my ($nodes) = @_;
	return [ map { "nats://127.0.0.1:$_->{port}" } @$nodes ];
}

# Runs t/stream/nats_reader.c's binary; returns its standard output (dies on failure).
sub nats_tool
{
	my ($tool, $nodes, @args) = @_;
	my ($out, $err);
	my $urls = join(',', @{ nats_urls($nodes) });
	IPC::Run::run([ $tool, $urls, @args ], '>', \$out, '2>', \$err,
		IPC::Run::timeout(180))
	  or die "nats_reader @args failed: $err";
	return $out;
}

sub stream_count
{
	my ($tool, $nodes, $stream) = @_;
	my $out = nats_tool($tool, $nodes, 'count', $stream);
	chomp $out;
	return $out;
}

# The stream's messages in stream order: {seq, id, key, event, subject, payload}.
sub stream_rows
{
	my ($tool, $nodes, $stream) = @_;
	my @rows;
	for my $line (split /\n/, nats_tool($tool, $nodes, 'dump', $stream))
	{
		my ($seq, $id, $key, $event, $subject, $payload) = split /\t/, $line, 6;
		push @rows, { seq => $seq, id => $id, key => $key, event => $event,
			subject => $subject, payload => $payload };
	}
	return \@rows;
}

# Checks rows (stream_rows or kafka_rows) against what was committed: %$expected maps a
# message id to [key, seq] (seq: the event's place in its key's commit order). Every
# committed event present exactly once (by message id), nothing else, and per key in
# commit order. $dedup: count only the first copy of each id (Kafka across producer
# sessions); otherwise a second copy fails.
sub check_stream
{
	my ($label, $rows, $expected, %opts) = @_;
	my (%seen, %last, $twice, $unknown, $disorder);
	$twice = $unknown = $disorder = 0;
	for my $row (@$rows)
	{
		if ($seen{ $row->{id} }++)
		{
			$twice++;
			next;
		}
		my $want = $expected->{ $row->{id} };
		if (!$want)
		{
			$unknown++;
			diag("$label: unexpected message $row->{id}") if $unknown <= 5;
			next;
		}
		my ($key, $seq) = @$want;
		if (defined $last{$key} && $last{$key} > $seq)
		{
			$disorder++;
			diag("$label: key $key: seq $seq after $last{$key}") if $disorder <= 5;
		}
		$last{$key} = $seq;
	}
	my $missing = grep { !$seen{$_} } keys %$expected;
	is($missing, 0, "$label: every committed event is there");
	if ($opts{dedup})
	{
		note("$label: $twice copies of an already delivered id (new producer session)");
	}
	else
	{
		is($twice, 0, "$label: none twice (by message id)");
	}
	is($unknown, 0, "$label: nothing else");
	is($disorder, 0, "$label: per key in commit order");
	return;
}

# Starts t/stream/kafka_mock.c's binary (a mock cluster of 3 brokers, TOPIC with
# PARTITIONS); returns {handle, in, out, bootstrap}.
sub kafka_mock_start
{
	my ($tool, $topic, $partitions) = @_;
	my $mock = { in => '', out => '' };
	$mock->{handle} = IPC::Run::start([ $tool, $topic, $partitions ],
		'<', \$mock->{in}, '>', \$mock->{out}, '2>', \my $err);
	my $deadline = time() + 30;
	while ($mock->{out} !~ /^bootstrap\t(\S+)\n/m)
	{
		die "kafka mock did not start" if time() > $deadline;
		$mock->{handle}->pump_nb;
		usleep(50_000);
	}
	($mock->{bootstrap}) = $mock->{out} =~ /^bootstrap\t(\S+)\n/m;
	$mock->{out} = '';
	return $mock;
}

# Sends a command line; waits for a line matching $until; returns the output.
sub kafka_mock_command
{
	my ($mock, $command, $until, $seconds) = @_;
	$mock->{out} = '';
	$mock->{in} .= "$command\n";
	my $deadline = time() + ($seconds // 60);
	while ($mock->{out} !~ $until)
	{
		die "kafka mock: no answer to '$command'" if time() > $deadline;
		$mock->{handle}->pump_nb;
		usleep(20_000);
	}
	my $out = $mock->{out};
	$mock->{out} = '';
	return $out;
}

# The mock topic's messages (each partition in offset order): {id, key, event}.
sub kafka_rows
{
	my ($mock, $expect) = @_;
	my $out = kafka_mock_command($mock, "dump $expect", qr/^end\t\d+\n/m, 60);
	my @rows;
	for my $line (split /\n/, $out)
	{
		my ($kind, $key, $event, $id, $partition) = split /\t/, $line;
		next unless $kind eq 'msg';
		push @rows, { id => $id, key => $key, event => $event, partition => $partition };
	}
	return \@rows;
}

# The pid of the node's sink worker ("evproc sink 0"), or '' when none runs.
sub sink_worker_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc sink' LIMIT 1");
}

# local $?: reaping the killed servers must not become the test's exit status.
END { local $?; nats_stop_all(); }

1;
