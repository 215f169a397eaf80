# What the pull-consumer TAP tests (t/030_pull_consumers.pl, t/031_pull_crash.pl) share:
# the example consumers of examples/consumers run as processes, a private PgBouncer in
# transaction mode, and the checks of a drained pull subscription.
package EvprocConsumers;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;

our @EXPORT = qw(node_modules_ready start_consumer stop_consumer start_pgbouncer
  stop_pgbouncer check_drained);

my $examples = "$FindBin::RealBin/../examples/consumers";

# The node example's dependencies (examples/consumers/node/package-lock.json), installed
# with npm ci when missing. Returns whether node can load pg.
sub node_modules_ready
{
	my $dir = "$examples/node";
	if (!-d "$dir/node_modules/pg")
	{
		my ($out, $err);
		IPC::Run::run([ 'npm', 'ci', '--no-audit', '--no-fund', '--prefix', $dir ],
			'>', \$out, '2>', \$err, IPC::Run::timeout(600));
		diag "npm ci: $out$err" if !-d "$dir/node_modules/pg";
	}
	return -d "$dir/node_modules/pg";
}

# Starts the $lang ('python' or 'node') example consumer of $subscription writing its
# effects to $table. $conn: { host, port, user, dbname }. %env: EVPROC_* settings.
# Returns a handle for stop_consumer.
sub start_consumer
{
	my ($lang, $conn, $subscription, $table, $log, %env) = @_;
	my @command;
	local %ENV = %ENV;
	$ENV{$_} = $env{$_} for keys %env;
	if ($lang eq 'python')
	{
		# Debian's psycopg 3 (python3-psycopg), not whatever a python on PATH has.
		my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
		@command = (
			$python, "$examples/python/consumer.py",
			"host=$conn->{host} port=$conn->{port} user=$conn->{user} dbname=$conn->{dbname}"
			  . ($conn->{application_name} ? " application_name=$conn->{application_name}" : ''),
			$subscription, $table);
	}
	else
	{
		$ENV{PGHOST} = $conn->{host};
		$ENV{PGPORT} = $conn->{port};
		$ENV{PGUSER} = $conn->{user};
		$ENV{PGDATABASE} = $conn->{dbname};
		$ENV{PGAPPNAME} = $conn->{application_name} if $conn->{application_name};
		@command = ('node', "$examples/node/consumer.js", $subscription, $table);
	}
	my $handle = IPC::Run::start(\@command, '>>', $log, '2>>', $log);
	return { handle => $handle, lang => $lang, log => $log };
}

# SIGTERM, then waits for a graceful exit. Returns the wait status ($?: 0 for exit code
# 0; undef: killed after $timeout seconds).
sub stop_consumer
{
	my ($consumer, $timeout) = @_;
	my $handle = $consumer->{handle};
	if (!$handle->pumpable)
	{
		$handle->finish;
		return $handle->full_result(0);
	}
	$handle->signal('TERM');
	my $deadline = time() + ($timeout // 60);
	while ($handle->pumpable && time() < $deadline)
	{
		eval { $handle->pump_nb; };
		select(undef, undef, undef, 0.1);
	}
	if ($handle->pumpable)
	{
		$handle->kill_kill;
		return undef;
	}
	$handle->finish;
	return $handle->full_result(0);
}

# A PgBouncer of our own in transaction mode on a free 127.0.0.1 port, in front of
# $node's database postgres, letting in the roles listed. Returns { port, pid, dir }.
sub start_pgbouncer
{
	my ($node, $dir, @users) = @_;
	mkdir $dir;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $host = $node->host;
	my $node_port = $node->port;
	open my $users_file, '>', "$dir/userlist.txt" or die $!;
	print $users_file qq{"$_" ""\n} for @users;
	close $users_file;
	open my $ini, '>', "$dir/pgbouncer.ini" or die $!;
	print $ini qq{[databases]
postgres = host=$host port=$node_port dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 100
default_pool_size = 8
server_reset_query =
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
};
	close $ini;
	system('pgbouncer', '-d', "$dir/pgbouncer.ini") == 0 or die "pgbouncer did not start";
	# Up when it answers.
	for (1 .. 100)
	{
		last if -s "$dir/pgbouncer.pid";
		select(undef, undef, undef, 0.1);
	}
	my $pid = slurp_file("$dir/pgbouncer.pid");
	chomp $pid;
	return { port => $port, pid => $pid, dir => $dir };
}

sub stop_pgbouncer
{
	my ($bouncer) = @_;
	kill 'TERM', $bouncer->{pid} if $bouncer->{pid};
	return;
}

# After every consumer of $subscription stopped: its events were each handled once
# ($table's event_ids are distinct), the handled and the dead letters make up what was
# published ($published), the $dead_expected events (fail: true) are its dead letters,
# and each key's effects came in id (commit) order.
sub check_drained
{
	my ($node, $subscription, $table, $published, $dead_expected) = @_;
	my $effects = $node->safe_psql('postgres',
		"SELECT count(*) || '/' || count(DISTINCT event_id) FROM $table");
	my ($count, $distinct) = split m{/}, $effects;
	is($count, $distinct, "$subscription: each effect once ($count)");
	my $dead = $node->safe_psql('postgres',
		"SELECT count(*) FROM evproc_dead_letters WHERE subscription = '$subscription'");
	is($dead, $dead_expected, "$subscription: the failing events are its dead letters");
	is($count + $dead, $published, "$subscription: published = handled + dead ($published)");
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM (SELECT event_id < lag(event_id) OVER (PARTITION BY key ORDER BY seq) AS inverted
			                        FROM $table) x WHERE inverted"),
		'0',
		"$subscription: per-key order held");
	is( $node->safe_psql(
			'postgres',
			"SELECT coalesce(sum(delivered), 0) FROM evproc_subscriptions WHERE name = '$subscription'"),
		$count,
		"$subscription: delivered counts what was handled");
	return;
}

1;
