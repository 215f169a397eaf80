# Lifecycle: the database and the extension coming and going under the launcher.
#
# (a) evproc.database does not exist at start: one WARNING, no FATAL every 5 seconds
#     (the postmaster restarting the launcher into InitPostgres), and the launcher
#     connects once the database is created.
# (b) DROP EXTENSION evproc while workers are inside batches: the drop waits for the
#     batches in flight (the extension gate), nobody reports a deadlock or a missing
#     relation, the launcher says the extension was dropped and stops its workers, each
#     with one LOG line; CREATE EXTENSION again and delivery resumes.
# (c) evproc.workers on reload down to 0 and up again: a log line each time, the pool
#     follows, nothing is delivered with 0 workers.
# (c2) ALTER DATABASE ... SET TABLESPACE and RENAME TO of evproc.database, which need it
#     without other sessions: the launcher and its workers leave it, each command
#     succeeds; after the move the launcher is back, after the rename it waits for the
#     name in evproc.database (one WARNING) and connects once it is renamed back.
# (d) DROP DATABASE of evproc.database (no FORCE) while the launcher and workers are
#     connected: they leave it, the drop succeeds, and the restarted launcher waits for
#     the database with one WARNING instead of a FATAL every 5 seconds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = PostgreSQL::Test::Cluster->new('lifecycle');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'evproc'
evproc.database = 'evdb'
evproc.workers = 2
max_worker_processes = 16
log_min_messages = info
# Without the extension gate the drop below deadlocks with the workers; detect it soon.
deadlock_timeout = '200ms'
});
$node->start;

sub evdb { return $node->safe_psql('evdb', $_[0]); }

my $missing_warning =
  qr/WARNING:  evproc: database "evdb" \(evproc.database\) does not exist/;
my $connect_fatal = qr/FATAL:  database "evdb" does not exist/;
my $launcher_exit = qr/background worker "evproc launcher" \(PID \d+\) exited/;

# ---------------------------------------------------------------------------
# (a) evproc.database missing at start
# ---------------------------------------------------------------------------
$node->wait_for_log(qr/$missing_warning|$connect_fatal/);
# Longer than the postmaster's restart interval (5 s) and the launcher's own look
# (every 5 s): a crash loop or a WARNING per look would show twice by now.
sleep 6;
is(log_count($node, $missing_warning, 0), 1, 'missing database: one WARNING');
is(log_count($node, $connect_fatal, 0), 0, 'missing database: no FATAL at connection');
is(log_count($node, $launcher_exit, 0), 0, 'missing database: the launcher did not exit');
ok($node->log_contains(qr/HINT:  Create the database .* or set evproc.database/),
	'missing database: the hint names both fixes');

my $offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE evdb');
$node->wait_for_log(qr/evproc launcher started for database "evdb"/, $offset);
ok($node->log_contains(qr/evproc: database "evdb" \(evproc.database\) can be connected to now/,
		$offset),
	'created database: the launcher says it connects');
$node->wait_for_log(
	qr/LOG:  evproc: extension "evproc" is not installed in database "evdb"; delivery starts after CREATE EXTENSION evproc/,
	$offset);
pass('created database without the extension: the launcher says so');

$node->safe_psql('postgres', 'CREATE ROLE app');
evdb(
	q{
CREATE EXTENSION evproc;
GRANT USAGE ON SCHEMA evproc TO app;
SELECT evproc_create_topic('busy', partitions => 8);
CREATE TABLE effects (event_id bigint PRIMARY KEY);
GRANT INSERT ON effects TO app;
CREATE FUNCTION slow(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO effects SELECT e.id FROM unnest(events) AS e;
    PERFORM pg_sleep(0.2);
END $$;
SELECT evproc_subscribe('slow', 'busy', 'slow', batch_size => 5, run_as => 'app');
});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
	'CREATE EXTENSION: two workers');

# ---------------------------------------------------------------------------
# (b) DROP EXTENSION while the workers are inside batches
# ---------------------------------------------------------------------------
evdb(q{SELECT cardinality(evproc_enqueue_batch('busy',
    (SELECT jsonb_agg(jsonb_build_object('key', 'k' || n, 'payload', jsonb_build_object('n', n)))
       FROM generate_series(1, 4000) AS n)))});
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"
		  . " AND wait_event = 'PgSleep'"),
	'both workers are inside a handler');
$offset = -s $node->logfile;
my $started = time();
my ($rc, $out, $err) =
  $node->psql('evdb', 'DROP EXTENSION evproc CASCADE', timeout => 60);
my $took = time() - $started;
is($rc, 0, 'DROP EXTENSION with busy workers succeeds') or diag $err;
cmp_ok($took, '<', 30, "DROP EXTENSION took ${took}s (waits for the batches in flight only)");
my $delivered_at_drop = evdb('SELECT count(*) FROM effects');
cmp_ok($delivered_at_drop, '<', 4000, "the drop came mid-delivery ($delivered_at_drop of 4000)");

$node->wait_for_log(
	qr/LOG:  evproc: extension "evproc" was dropped from database "evdb"; its workers stop until CREATE EXTENSION evproc/,
	$offset);
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
	'the launcher stopped the workers');
is(log_count($node, qr/LOG:  evproc worker \d+ stopped/, $offset), 2, 'one LOG line per stopped worker');
is(log_count($node, qr/deadlock detected/, $offset), 0, 'no deadlock reported');
is(log_count($node, qr/ERROR:|FATAL:/, $offset), 0, 'no ERROR or FATAL at all')
  or diag slurp_file($node->logfile, $offset);

# CREATE EXTENSION again: delivery resumes.
$offset = -s $node->logfile;
evdb(
	q{
CREATE EXTENSION evproc;
GRANT USAGE ON SCHEMA evproc TO app;
SELECT evproc_create_topic('again', partitions => 4);
CREATE TABLE effects_again (event_id bigint PRIMARY KEY);
GRANT INSERT ON effects_again TO app;
CREATE FUNCTION note(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO effects_again SELECT e.id FROM unnest(events) AS e $$;
SELECT evproc_subscribe('note', 'again', 'note', run_as => 'app');
SELECT evproc_enqueue('again', 'k' || n, jsonb_build_object('n', n)) FROM generate_series(1, 50) AS n;
});
ok($node->poll_query_until('evdb', 'SELECT count(*) = 50 FROM effects_again'),
	'CREATE EXTENSION again: delivery resumes');
ok( $node->log_contains(
		qr/LOG:  evproc: extension "evproc" was created in database "evdb"; delivery starts/,
		$offset),
	'the launcher says the extension is back');

# ---------------------------------------------------------------------------
# (c) evproc.workers on reload: down to 0, up to 3
# ---------------------------------------------------------------------------
$offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER SYSTEM SET evproc.workers = 0');
$node->reload;
$node->wait_for_log(qr/LOG:  evproc.workers changed from 2 to 0: all workers stop/, $offset);
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
	'evproc.workers = 0: no workers');
ok( $node->log_contains(
		qr/DETAIL:  No events are delivered until evproc.workers is raised/, $offset),
	'evproc.workers = 0: the log says nothing is delivered');
evdb(q{SELECT evproc_enqueue('again', 'w' || n, '{}') FROM generate_series(1, 10) AS n});
sleep 1;
is(evdb('SELECT count(*) FROM effects_again'), '50', 'nothing delivered with 0 workers');

$offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER SYSTEM SET evproc.workers = 3');
$node->reload;
$node->wait_for_log(qr/LOG:  evproc.workers changed from 0 to 3/, $offset);
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 3 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
	'evproc.workers = 3: three workers');
ok($node->poll_query_until('evdb', 'SELECT count(*) = 60 FROM effects_again'),
	'the events enqueued meanwhile are delivered');

# ---------------------------------------------------------------------------
# (c2) SET TABLESPACE and RENAME TO of evproc.database
# ---------------------------------------------------------------------------
my $workers_back = "SELECT count(*) = 3 FROM pg_stat_activity WHERE backend_type = 'evproc worker'";
my $tablespace = PostgreSQL::Test::Utils::tempdir();
$node->safe_psql('postgres', "CREATE TABLESPACE evproc_ts LOCATION '$tablespace'");
$offset = -s $node->logfile;
($rc, $out, $err) =
  $node->psql('postgres', 'ALTER DATABASE evdb SET TABLESPACE evproc_ts', timeout => 60);
is($rc, 0, 'SET TABLESPACE of evproc.database succeeds') or diag $err;
ok( $node->log_contains(
		qr/LOG:  evproc launcher leaves database "evdb", which is being moved to another tablespace/,
		$offset),
	'the launcher says it leaves the database for the move');
ok($node->poll_query_until('postgres', $workers_back), 'after the move the workers are back');
evdb(q{SELECT evproc_enqueue('again', 'm' || n, '{}') FROM generate_series(1, 10) AS n});
ok($node->poll_query_until('evdb', 'SELECT count(*) = 70 FROM effects_again'),
	'delivery goes on in the moved database');

$offset = -s $node->logfile;
($rc, $out, $err) =
  $node->psql('postgres', 'ALTER DATABASE evdb RENAME TO evdb_renamed', timeout => 60);
is($rc, 0, 'RENAME of evproc.database succeeds') or diag $err;
ok( $node->log_contains(
		qr/LOG:  evproc launcher leaves database "evdb", which is being renamed.*\n.*DETAIL:.*\n.*HINT:  Set evproc.database to the new name and restart PostgreSQL, or rename the database back/,
		$offset),
	'the launcher says it leaves the database for the rename, and what to do');
$node->wait_for_log(qr/$missing_warning|$connect_fatal/, $offset);
is(log_count($node, $missing_warning, $offset), 1, 'renamed: one WARNING for the missing name');
is(log_count($node, $connect_fatal, $offset), 0, 'renamed: no FATAL at connection');
is(scalar(worker_pids($node)), 0, 'renamed: no workers');
($rc, $out, $err) = $node->psql('postgres', 'ALTER DATABASE evdb_renamed RENAME TO evdb');
is($rc, 0, 'renamed back') or diag $err;
$node->wait_for_log(qr/evproc: database "evdb" \(evproc.database\) can be connected to now/,
	$offset);
ok($node->poll_query_until('postgres', $workers_back), 'renamed back: the workers are back');
evdb(q{SELECT evproc_enqueue('again', 'r' || n, '{}') FROM generate_series(1, 10) AS n});
ok($node->poll_query_until('evdb', 'SELECT count(*) = 80 FROM effects_again'),
	'renamed back: delivery goes on');

# ---------------------------------------------------------------------------
# (d) DROP DATABASE of evproc.database while the launcher and workers are connected
# ---------------------------------------------------------------------------
$offset = -s $node->logfile;
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE evdb', timeout => 60);
is($rc, 0, 'DROP DATABASE (no FORCE) succeeds') or diag $err;
ok( $node->log_contains(
		qr/LOG:  evproc launcher leaves database "evdb", which is being dropped/, $offset),
	'the launcher says it leaves the database');
is(log_count($node, qr/LOG:  evproc worker \d+ stopped/, $offset), 3, 'its three workers stopped');
# The restarted launcher's first word on the gone database: our WARNING, not a FATAL
# (that it stays one line was shown in (a)).
$node->wait_for_log(qr/$missing_warning|$connect_fatal/, $offset);
is(log_count($node, $missing_warning, $offset), 1, 'dropped database: one WARNING');
is(log_count($node, $connect_fatal, $offset), 0, 'dropped database: no FATAL at connection');
is(log_count($node, $launcher_exit, $offset), 1, 'dropped database: the launcher exited once (to leave)');
is(scalar(worker_pids($node)), 0, 'no workers without the database');

$node->stop;
done_testing();
