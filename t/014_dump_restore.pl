# Backup and restore with pg_dump (README "Backup and restore"): a database with topics,
# subscriptions that delivered some events and have others pending, a parked retry, a
# dead letter, a running replay, dedup ids, events in the default partition and in
# partitions made by maintenance is dumped while the launcher serves it, restored into
# a new database of the same cluster, which then holds exactly what the dump saw; the
# launcher is switched to it and delivery resumes there: every event is handled exactly
# once over both databases, the retry and the dead letter go on, new ids do not collide
# with restored ones, and the metrics count the restored backlog. Then the same dump is
# restored into another cluster whose transaction counter was first moved past the
# dumped one's (the procedure the README gives), and delivery resumes there as well.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use Time::HiRes qw(usleep);

my $node = evproc_node('dump', "evproc.maintenance_interval = 1s\n");
my $dump = $node->basedir . '/evproc.dump';
# Well ahead of a new cluster's transaction counter (the last part restores there).
$node->safe_psql('postgres',
	q{SET synchronous_commit = off; DO $$ BEGIN WHILE pg_current_xact_id() < '5000' LOOP COMMIT; END LOOP; END $$});

# Topic, handlers and subscriptions made with the extension in one transaction: the
# launcher sees none of it before the commit, so the first events go to the default
# partition (no other exists before its first maintenance).
#   dr_a: key 'parked' fails, with a backoff of an hour: parked (head and behind it).
#   dr_b: key 'poison' fails once (max_attempts 1): a dead letter, and the key goes on.
# handled has no unique key, so that a duplicate shows as a row, not as a failure.
$node->safe_psql(
	'postgres', q{
BEGIN;
DROP EXTENSION evproc;
CREATE EXTENSION evproc;
CREATE TABLE handled (sub text NOT NULL, event_id bigint NOT NULL, replay boolean NOT NULL);
CREATE TABLE failing (sub text NOT NULL, key text NOT NULL);
GRANT INSERT ON handled TO app;
GRANT SELECT ON failing TO app;
CREATE FUNCTION handle_a(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM failing f WHERE f.sub = 'a' AND f.key = e.key) THEN
    RAISE EXCEPTION 'key % is failing', e.key USING ERRCODE = 'data_exception';
  END IF;
  INSERT INTO handled VALUES ('a', e.id, e.replay);
END $$;
CREATE FUNCTION handle_b(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM failing f WHERE f.sub = 'b' AND f.key = e.key) THEN
    RAISE EXCEPTION 'key % is failing', e.key USING ERRCODE = 'data_exception';
  END IF;
  INSERT INTO handled VALUES ('b', e.id, e.replay);
END $$;
INSERT INTO failing VALUES ('a', 'parked'), ('b', 'poison');
SELECT evproc_create_topic('dr', partitions => 4);
SELECT evproc_subscribe('dr_a', 'dr', 'handle_a', batch_size => 5, max_attempts => 5,
                        backoff_base => '1 hour', backoff_cap => '1 hour', run_as => 'app');
SELECT evproc_subscribe('dr_b', 'dr', 'handle_b', batch_size => 5, max_attempts => 1,
                        run_as => 'app');
SELECT count(evproc_enqueue('dr', 'k' || g, jsonb_build_object('n', g), dedup_id => 'd' || g))
  FROM generate_series(1, 6) g;
COMMIT;
});
is(sql_value($node, 'SELECT count(*) FROM evproc.log_default'), '6', 'the first events are in the default partition');
ok(wait_until($node, 'SELECT count(*) >= 1 FROM evproc.log_partition', timeout => 30),
	'the launcher made the first partition');
# It starts ahead of the xid counter (evproc.partition_margin()): move the counter into
# it, so that the events of phase 1 go there, and wait for the one after it.
burn_xids_to($node, sql_value($node, 'SELECT min(xid_from) FROM evproc.log_partition'));
ok(wait_until($node, 'SELECT count(*) >= 2 FROM evproc.log_partition', timeout => 30),
	'the launcher made the next partition');

# Phase 1, delivering: events across the partitions, the parked key and the poison one.
$node->safe_psql(
	'postgres', q{
SELECT count(evproc_enqueue('dr', k, jsonb_build_object('n', g), dedup_id => 'd' || g))
  FROM generate_series(7, 40) g,
       LATERAL (SELECT CASE WHEN g IN (10, 20) THEN 'parked' WHEN g = 15 THEN 'poison'
                            ELSE 'k' || g % 8 END AS k) x;
});
ok( wait_until(
		$node, q{SELECT (SELECT count(*) FROM handled WHERE sub = 'a') = 38
		            AND (SELECT count(*) FROM handled WHERE sub = 'b') = 39
		            AND (SELECT count(*) FROM evproc.retry) = 2
		            AND (SELECT count(*) FROM evproc.dead_letter) = 1}),
	'dr_a handled all but the parked key, dr_b all but the poison event');

# Phase 2, pending: the workers are stopped, then more events are committed (one of them
# behind the parked key), and a replay of key k1 is asked for (running, not started).
$node->safe_psql('postgres', 'ALTER SYSTEM SET evproc.workers = 0; SELECT pg_reload_conf()');
ok(wait_until($node, q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'evproc worker'}),
	'the workers stopped');
$node->safe_psql(
	'postgres', q{
SELECT count(evproc_enqueue('dr', CASE WHEN g = 45 THEN 'parked' ELSE 'k' || g % 8 END,
                            jsonb_build_object('n', g), dedup_id => 'd' || g))
  FROM generate_series(41, 70) g;
SELECT evproc_replay('dr_b', key => 'k1');
});

# The launcher (still running) takes the ticks those commits asked for. pg_dump reads the
# sequences outside the snapshot: a tick taken between the snapshot and the dump would
# show in tick_id_seq but not in evproc.tick. Wait until no tick comes for 1.5 s (the
# lazy tick comes within a second).
{
	my $last = sql_value($node, 'SELECT max(id) FROM evproc.tick');
	for (1 .. 40)
	{
		usleep(1_500_000);
		my $now = sql_value($node, 'SELECT max(id) FROM evproc.tick');
		last if $now eq $last;
		$last = $now;
	}
}

# What the dump holds, read in the dump's own snapshot: every table and sequence of
# evproc (rows as text, the log with the partition of each row), the user's tables.
my @tables = qw(topic subscription progress retry dead_letter replay tick dedup log_partition);
my @sequences =
  qw(event_id_seq retry_seq log_partition_seq topic_id_seq subscription_id_seq tick_id_seq replay_id_seq);
my $state_sql = join(
	"\nUNION ALL ",
	(map { "SELECT '$_', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM evproc.$_ x" }
		  @tables),
	"SELECT 'log', count(*), md5(coalesce(string_agg(x.tableoid::regclass::text || x::text, '|' ORDER BY x.id), '')) FROM evproc.log x",
	(map { "SELECT '$_', last_value, md5(is_called::text) FROM evproc.$_" } @sequences),
	"SELECT 'handled', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM handled x",
	"SELECT 'failing', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM failing x")
  . "\nORDER BY 1";
my $snap = $node->background_psql('postgres');
$snap->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
my $snapshot = $snap->query_safe('SELECT pg_export_snapshot()');
chomp $snapshot;
my $dumped_state = $snap->query_safe($state_sql);
$node->command_ok(
	[ 'pg_dump', '-Fc', '--snapshot', $snapshot, '-d', $node->connstr('postgres'), '-f', $dump ],
	'pg_dump of the database the launcher serves');
$snap->query_safe('COMMIT');
$snap->quit;
like($dumped_state, qr/^log\|70\|/m, 'the dump holds the 70 events');
like($dumped_state, qr/^log_partition\|[2-9]\|/m, 'and the partitions made by maintenance');

# Restore into a new database of the same cluster, in one transaction, stopping at the
# first error: it must have none.
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(
	[
		'pg_restore', '--single-transaction', '--exit-on-error',
		'-d', $node->connstr('restored'), $dump
	],
	'pg_restore into a new database: no error');
is($node->safe_psql('restored', $state_sql), $dumped_state,
	'the restored database holds exactly what the dump saw: evproc tables, log partitions and their rows, sequences, user tables');
is( $node->safe_psql(
		'restored', q{SELECT string_agg(c.relname, ',' ORDER BY c.relname)
		                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		               WHERE i.inhparent = 'evproc.log'::regclass AND c.relname <> 'log_default'}),
	$node->safe_psql('restored', q{SELECT string_agg(name, ',' ORDER BY name) FROM evproc.log_partition}),
	'the restored partitions are attached to the log, as evproc.log_partition lists them');
is( $node->safe_psql(
		'restored', q{SELECT count(*) FROM evproc.log_partition p
		                JOIN pg_index i ON i.indrelid = to_regclass('evproc.' || p.name)}),
	$node->safe_psql('restored', 'SELECT 2 * count(*) FROM evproc.log_partition'),
	'each restored partition has its two indexes, and only those');

# The launcher serves the restored database (the original is left as the dump saw it,
# not served). First without workers: the metrics count the restored backlog.
$node->safe_psql('postgres', q{ALTER SYSTEM SET evproc.database = 'restored'});
$node->restart;

sub rvalue { return $node->safe_psql('restored', $_[0]); }

sub rwait
{
	my ($query, $what) = @_;
	my $deadline = time() + 120;
	while (time() < $deadline)
	{
		my ($rc, $out) = $node->psql('restored', $query);
		return 1 if $rc == 0 && $out eq 't';
		select(undef, undef, undef, 0.1);
	}
	diag "timed out waiting for $what:\n"
	  . rvalue('SELECT name, state, delivered, parked, dead_letters FROM evproc_subscriptions')
	  . "\n" . rvalue('SELECT id, state, delivered, failed FROM evproc.replay');
	return 0;
}

my $backlog = q{(SELECT count(*) FROM evproc.log) - (SELECT count(*) FROM handled h WHERE h.sub = s.sub AND NOT h.replay)
                - (SELECT count(*) FROM evproc.dead_letter d JOIN evproc.subscription x ON x.id = d.subscription_id
                    WHERE x.name = s.name)};
ok( rwait(
		qq{SELECT bool_and(st.lag_events = $backlog) AND count(*) = 2
		     FROM (VALUES ('dr_a', 'a'), ('dr_b', 'b')) s(name, sub)
		     JOIN evproc_subscription_stats st ON st.subscription = s.name},
		'lag_events'),
	'lag_events of each subscription is its restored backlog (window and parked events)');
is(rvalue(q{SELECT lag_events FROM evproc_subscription_stats WHERE subscription = 'dr_a'}),
	'32', 'dr_a: 30 events pending in windows, 2 parked');

# Resume: workers again. New events and a new topic in the restored database take new
# ids; a dedup id seen before the dump is still known.
$node->safe_psql('restored', 'ALTER SYSTEM SET evproc.workers = 2; SELECT pg_reload_conf()');
my $max_id = rvalue('SELECT max(id) FROM evproc.log');
my $dedup_again = rvalue(q{SELECT evproc_enqueue('dr', 'k3', '{"n": 3}', dedup_id => 'd3')});
is($dedup_again, rvalue(q{SELECT id FROM evproc.log WHERE dedup_id = 'd3'}),
	'a dedup id from before the dump returns the first event');
is(rvalue(q{SELECT evproc_create_topic('dr_new')}), '2', 'a new topic takes the next id');
cmp_ok(rvalue(q{SELECT evproc_enqueue('dr', 'k1', '{"n": 71}')}), '>', $max_id,
	'a new event takes an id above the restored ones');
rvalue(q{SELECT count(evproc_enqueue('dr', 'k' || g % 8, jsonb_build_object('n', g))) FROM generate_series(72, 80) g});

ok( rwait(
		q{SELECT (SELECT count(*) FROM handled WHERE sub = 'a' AND NOT replay) = 77
		     AND (SELECT count(*) FROM handled WHERE sub = 'b' AND NOT replay) = 79
		     AND (SELECT state FROM evproc.replay) = 'done'},
		'delivery in the restored database'),
	'delivery resumed: every event but the parked and the dead one, and the replay finished');
is(rvalue(q{SELECT count(*) FROM evproc.retry r JOIN evproc.log l ON l.id = r.event_id WHERE l.key = 'parked'}),
	'3', 'the parked key is still parked (head and two behind it)');

# The parked key: its handler is fixed and its hour of backoff cut short (an operator
# would wait for it); the dead letter: fixed and re-driven.
$node->safe_psql(
	'restored', q{
BEGIN;
DELETE FROM failing;
UPDATE evproc.retry SET next_attempt_at = now() WHERE is_head;
UPDATE evproc.progress p SET retry_due_at = now()
  WHERE EXISTS (SELECT 1 FROM evproc.retry r WHERE r.subscription_id = p.subscription_id AND r.partition = p.partition);
SELECT evproc.wake_at_commit();
COMMIT;
});
is(rvalue(q{SELECT evproc_redrive('dr_b')}), '1', 'the restored dead letter is re-driven');
ok( rwait(
		q{SELECT NOT EXISTS (SELECT 1 FROM evproc.retry) AND NOT EXISTS (SELECT 1 FROM evproc.dead_letter)
		     AND (SELECT count(*) FROM handled WHERE NOT replay) = 160},
		'the parked and the re-driven events'),
	'the parked events and the dead letter are handled');

# Exactly once over both databases: every event of the log, once per subscription, live;
# the replay: each event of key k1 that existed when it was asked for, once.
is( rvalue(
		q{SELECT count(*) FROM (VALUES ('a'), ('b')) s(sub) CROSS JOIN evproc.log l
		   WHERE (SELECT count(*) FROM handled h WHERE h.sub = s.sub AND h.event_id = l.id AND NOT h.replay) <> 1}),
	'0', 'each subscription handled every event exactly once, nothing lost or duplicated');
is(rvalue(q{SELECT count(*) FROM handled h WHERE NOT EXISTS (SELECT 1 FROM evproc.log l WHERE l.id = h.event_id)}),
	'0', 'and nothing else');
is( rvalue(
		q{SELECT count(*) = count(DISTINCT event_id)
		     AND array_agg(event_id ORDER BY event_id) = (SELECT array_agg(l.id ORDER BY l.id) FROM evproc.log l, evproc.replay r
		                                                   WHERE l.key = 'k1' AND l.id <= r.last_id)
		    FROM handled WHERE replay}),
	't', 'the restored replay delivered each event it covers once');
is( rvalue(
		q{SELECT count(*) FROM evproc.progress p
		   WHERE NOT EXISTS (SELECT 1 FROM evproc.tick t WHERE t.id = p.tick_id)}),
	'0', 'every unit is at a tick that exists');
ok(!$node->log_contains('log partition maintenance failed'), 'maintenance never failed');

# Another cluster: the dumped xids mean other transactions there, and a new cluster's
# transaction counter is behind them. Restored, not served by the launcher yet, the
# counter is moved past every xid of the restored data (README): then they are all old
# committed transactions there, and its own come after them.
my $other = PostgreSQL::Test::Cluster->new('other');
$other->init;
$other->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'evproc'
evproc.workers = 2
max_worker_processes = 16
});
$other->start;
$other->safe_psql('postgres', 'CREATE ROLE app; CREATE DATABASE restored');
$other->command_ok(
	[
		'pg_restore', '--single-transaction', '--exit-on-error',
		'-d', $other->connstr('restored'), $dump
	],
	'pg_restore into the other cluster');
is($other->safe_psql('restored', $state_sql), $dumped_state, 'it holds what the dump saw');
my $xids_past = q{SELECT pg_current_xact_id() > greatest((SELECT max(pg_snapshot_xmax(snapshot)) FROM evproc.tick),
                                                    (SELECT max(xid) FROM evproc.log))};
is($other->safe_psql('restored', $xids_past), 'f', 'its transaction counter is behind the restored xids');
$other->safe_psql(
	'restored', q{
SET synchronous_commit = off;
DO $$
DECLARE
  target xid8 := greatest((SELECT max(pg_snapshot_xmax(snapshot)) FROM evproc.tick),
                          (SELECT max(xid) FROM evproc.log));
BEGIN
  WHILE pg_current_xact_id() <= target LOOP
    COMMIT;
  END LOOP;
END $$;
});
is($other->safe_psql('restored', $xids_past), 't', 'the counter was moved past them');
$other->safe_psql('postgres', q{ALTER SYSTEM SET evproc.database = 'restored'});
$other->restart;
$other->safe_psql(
	'restored', q{
DELETE FROM failing;
SELECT count(evproc_enqueue('dr', 'k' || g % 8, jsonb_build_object('n', g))) FROM generate_series(71, 80) g;
});
ok( $other->poll_query_until(
		'restored', q{SELECT (SELECT count(*) FROM handled WHERE sub = 'a' AND NOT replay) = 77
		                 AND (SELECT count(*) FROM handled WHERE sub = 'b' AND NOT replay) = 79
		                 AND (SELECT state FROM evproc.replay) = 'done'}),
	'delivery resumed in the other cluster: the pending events, the new ones, the replay');
is( $other->safe_psql(
		'restored',
		q{SELECT count(*) FROM (VALUES ('a'), ('b')) s(sub) CROSS JOIN evproc.log l
		   WHERE (SELECT count(*) FROM handled h WHERE h.sub = s.sub AND h.event_id = l.id AND NOT h.replay) <> 1
		     AND NOT EXISTS (SELECT 1 FROM evproc.retry r WHERE r.event_id = l.id)
		     AND NOT EXISTS (SELECT 1 FROM evproc.dead_letter d WHERE d.event_id = l.id)}),
	'0', 'every event handled exactly once there too (but the parked and the dead one, still there)');

$other->stop;
$node->stop;
done_testing();
