# evproc without shared_preload_libraries (issue 12.9): the library is then loaded by the
# first session that calls it, after the server started, where PostgreSQL refuses to
# define postmaster-only settings (evproc.database) with a FATAL that ends the session.
#
# (a) A server that never preloaded evproc: CREATE EXTENSION works, events are enqueued
#     into the log, and evproc_subscribe warns that nothing is delivered without
#     preloading. No session ends with a FATAL.
# (b) A server whose preload was removed after the extension was installed (its
#     evproc.database line left in postgresql.conf): sessions that enqueue keep working,
#     and no WARNING about the evproc prefix is printed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

# ---------------------------------------------------------------------------
# (a) never preloaded
# ---------------------------------------------------------------------------
my $plain = PostgreSQL::Test::Cluster->new('no_preload');
$plain->init;
$plain->append_conf('postgresql.conf', "log_min_messages = info\n");
$plain->start;

my ($rc, $out, $err) = $plain->psql('postgres', 'CREATE EXTENSION evproc; SELECT 1');
is($rc, 0, 'CREATE EXTENSION evproc works without shared_preload_libraries');
is($out, '1', 'the session goes on after CREATE EXTENSION');
unlike($err, qr/FATAL/, 'no FATAL');

($rc, $out, $err) = $plain->psql(
	'postgres', q{
SELECT evproc_create_topic('t', partitions => 2);
SELECT count(evproc_enqueue('t', 'k' || n, jsonb_build_object('n', n))) FROM generate_series(1, 5) AS n;
SELECT count(*) FROM evproc.log});
is($rc, 0, 'enqueue works without preloading');
like($out, qr/\n5\n5$/, 'the events land in the log');

$plain->safe_psql(
	'postgres', q{
CREATE ROLE app;
GRANT USAGE ON SCHEMA evproc TO app;
CREATE FUNCTION h(events evproc.event[]) RETURNS void LANGUAGE sql AS $$ SELECT $$;
});
($rc, $out, $err) =
  $plain->psql('postgres', q{SELECT evproc_subscribe('s', 't', 'h', run_as => 'app') > 0});
is($rc, 0, 'subscribe works without preloading');
is($out, 't', 'the subscription is made');
like(
	$err,
	qr/WARNING:  evproc is not in shared_preload_libraries: subscription "s" will receive events once it is/,
	'subscribe warns that nothing is delivered without preloading');

# A new session loads the library again: still no FATAL.
($rc, $out, $err) = $plain->psql('postgres', q{SELECT evproc_enqueue('t', 'k', '{}') > 0});
is($rc . $out, '0t', 'a new session enqueues too');
is(log_count($plain, qr/FATAL:/, 0), 0, 'no FATAL in the server log');
$plain->stop;

# ---------------------------------------------------------------------------
# (b) preload removed after install
# ---------------------------------------------------------------------------
my $node = evproc_node('preload_removed');
$node->safe_psql('postgres', q{
SELECT evproc_create_topic('t');
SELECT evproc_enqueue('t', 'k', '{"n": 1}');
});
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "''");
$node->restart;
my $offset = -s $node->logfile;

($rc, $out, $err) = $node->psql('postgres',
	q{SELECT evproc_enqueue('t', 'k', '{"n": 2}') > 0; SELECT count(*) FROM evproc.log});
is($rc, 0, 'after the preload was removed, a session that enqueues is not ended');
is($out, "t\n2", 'its event lands in the log');
unlike($err, qr/FATAL|WARNING/, 'no FATAL, no WARNING about settings');
is(sql_value($node, q{SELECT evproc.preloaded()}), 'f', 'evproc knows it is not preloaded');
is(log_count($node, qr/FATAL:/, $offset), 0, 'no FATAL in the server log');

$node->stop;
done_testing();
