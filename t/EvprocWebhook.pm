# The tests' webhook receiver (t/receiver/webhook_receiver.py, a real HTTP server on
# 127.0.0.1) for t/04x_webhook*.pl: start, control, stop, and what it received.
package EvprocWebhook;
use strict;
use warnings;
use Exporter 'import';
use FindBin;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);

our @EXPORT = qw(start_receiver stop_receiver control_receiver received_requests
  received_events);

my %started;    # pids of the receivers running

# Starts a receiver verifying signatures with $secret; $port: reuse a port (a restart).
sub start_receiver
{
	my (%opts) = @_;
	my $dir = $opts{dir} // PostgreSQL::Test::Utils::tempdir();
	my $recv = $opts{previous} // { dir => $dir, log => "$dir/received.jsonl" };
	my $port_file = "$recv->{dir}/port";
	unlink $port_file;
	my @command = ('python3', "$FindBin::RealBin/receiver/webhook_receiver.py",
		'--port-file', $port_file, '--log', $recv->{log});
	push @command, '--secret', $opts{secret} if defined $opts{secret};
	push @command, '--port', $recv->{port} if defined $recv->{port};
	$recv->{secret} = $opts{secret} if defined $opts{secret};
	$recv->{handle} = IPC::Run::start(\@command, '<', \undef, '>', "$recv->{dir}/out",
		'2>', "$recv->{dir}/err");
	for (1 .. 300)
	{
		last if -s $port_file;
		usleep(50_000);
	}
	die "webhook receiver did not start" unless -s $port_file;
	$recv->{port} = slurp_file($port_file);
	$recv->{pid} = slurp_file("$port_file.pid");
	$started{ $recv->{pid} } = 1;
	$recv->{url} = "http://127.0.0.1:$recv->{port}/hook";
	return $recv;
}

# Stops it at once (SIGKILL: connections in flight just drop).
sub stop_receiver
{
	my ($recv) = @_;
	kill 'KILL', $recv->{pid};
	delete $started{ $recv->{pid} };
	eval { $recv->{handle}->finish; };
	return;
}

# Receivers a test started and did not stop (it died first): never left behind.
END
{
	kill 'KILL', $_ for keys %started;
}

sub control_receiver
{
	my ($recv, $settings) = @_;
	my $response = HTTP::Tiny->new(timeout => 10)->post(
		"http://127.0.0.1:$recv->{port}/control",
		{ content => encode_json($settings), headers => { 'Content-Type' => 'application/json' } });
	die "receiver control failed: $response->{status}" unless $response->{success};
	return;
}

# Every request it logged, in arrival order.
sub received_requests
{
	my ($recv) = @_;
	return [] unless -e $recv->{log};
	my @requests;
	open my $f, '<', $recv->{log} or die $!;
	while (my $line = <$f>)
	{
		chomp $line;
		next if $line eq '';
		my $record = eval { decode_json($line) };
		push @requests, $record if $record;
	}
	close $f;
	return \@requests;
}

# Events of the requests it answered 2xx, in arrival order (each with the request's
# signature_valid and status).
sub received_events
{
	my ($recv) = @_;
	my @events;
	for my $request (@{ received_requests($recv) })
	{
		next unless $request->{status} >= 200 && $request->{status} < 300;
		for my $event (@{ $request->{events} })
		{
			push @events, { %$event, signature_valid => $request->{signature_valid} };
		}
	}
	return \@events;
}

1;
