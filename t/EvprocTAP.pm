# Shared set-up and waiting for evproc's TAP tests (t/*.pl).
#
# Each test does `use FindBin; use lib $FindBin::RealBin; use EvprocTAP;`.
package EvprocTAP;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use FindBin;

our @EXPORT =
  qw(evproc_node id_recording_subscription wait_until worker_pids sql_value log_count burn_xids_to);

# A started node with evproc preloaded, the extension created in database
# postgres and a non-superuser role `app` that handlers run as.
# Extra postgresql.conf lines may be passed as one string; version => 'x.y.z'
# creates that released version instead of the default one.
sub evproc_node
{
	my ($name, $extra_conf, %opts) = @_;
	my $version = defined $opts{version} ? " VERSION '$opts{version}'" : '';
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'evproc'
evproc.database = 'postgres'
evproc.workers = 2
max_worker_processes = 16
max_connections = 50
log_min_messages = info
} . ($extra_conf // ''));
	$node->start;
	# USAGE on schema evproc: a PL/pgSQL handler that declares a variable of type
	# evproc.event resolves that type name as the owner.
	$node->safe_psql(
		'postgres', qq{
CREATE EXTENSION evproc$version;
CREATE ROLE app;
GRANT USAGE ON SCHEMA evproc TO app;
});
	return $node;
}

# A new topic and a subscription to it, run as app, whose batch handler inserts each
# delivered event's id into a new table (id bigint PRIMARY KEY: a second delivery of an
# event fails its batch). Names: topic, partitions, table, handler, subscription;
# options: more evproc_subscribe arguments, as SQL ("batch_size => 500").
sub id_recording_subscription
{
	my ($node, %a) = @_;
	my $options = defined $a{options} ? ", $a{options}" : '';
	$node->safe_psql(
		'postgres', qq{
SELECT evproc_create_topic('$a{topic}', partitions => $a{partitions});
CREATE TABLE public.$a{table} (id bigint PRIMARY KEY);
GRANT INSERT ON public.$a{table} TO app;
CREATE FUNCTION $a{handler}(events evproc.event[]) RETURNS void LANGUAGE sql AS \$\$
  INSERT INTO public.$a{table} SELECT e.id FROM unnest(events) e \$\$;
SELECT evproc_subscribe('$a{subscription}', '$a{topic}', '$a{handler}', run_as => 'app'$options);
});
	return;
}

sub sql_value
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

# Polls $query (database postgres) until it returns 't'. Gives up after
# $opts{timeout} seconds (default 120) or as soon as $opts{abort_if} (a query)
# returns 't' -- e.g. a subscription that was expected to stay active paused.
# On failure prints the subscriptions and $opts{diag} (a query) and returns 0.
sub wait_until
{
	my ($node, $query, %opts) = @_;
	my $timeout = $opts{timeout} // 120;
	my $deadline = time() + $timeout;
	my $why = 'timed out';
	while (1)
	{
		my ($rc, $out, $err) = $node->psql('postgres', $query);
		return 1 if $rc == 0 && $out eq 't';
		if (defined $opts{abort_if})
		{
			my ($rc2, $out2) = $node->psql('postgres', $opts{abort_if});
			if ($rc2 == 0 && $out2 eq 't')
			{
				$why = "gave up: $opts{abort_if}";
				last;
			}
		}
		if (time() > $deadline)
		{
			$why = "timed out after ${timeout}s (last output '$out', stderr '$err')";
			last;
		}
		usleep(100_000);
	}
	diag "wait_until: $why\n  waiting for: $query";
	my ($rc, $subs) = $node->psql('postgres',
		'SELECT name, state, reason, delivered, parked, dead_letters FROM evproc_subscriptions',
		extra_params => [ '-P', 'format=aligned', '-P', 'tuples_only=off' ]);
	diag "subscriptions:\n$subs" if $rc == 0;
	if (defined $opts{diag})
	{
		my ($rc3, $d) = $node->psql('postgres', $opts{diag});
		diag "$opts{diag}:\n$d";
	}
	return 0;
}

# How often $re matches the node's server log after byte $offset.
sub log_count
{
	my ($node, $re, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	my $count = () = $log =~ /$re/g;
	return $count;
}

# Pids of the running evproc workers, sorted.
sub worker_pids
{
	my ($node) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc worker' ORDER BY pid");
	return grep { $_ ne '' } split /\n/, $out;
}

# Moves the xid counter of $node to $target (an xid8): one committed transaction per
# xid, without waiting for WAL flushes (the procedure of sql/include/burn_xids.sql).
sub burn_xids_to
{
	my ($node, $target) = @_;
	my $procedure = slurp_file("$FindBin::RealBin/../sql/include/burn_xids.sql");
	$node->safe_psql('postgres',
		"SET synchronous_commit = off;\n$procedure\nCALL pg_temp.burn_xids_to('$target');");
	return;
}

1;
