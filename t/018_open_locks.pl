# Nothing an application holds open freezes ticking or maintenance (issue 12.2).
#
# For about 30 seconds, sessions hold, each in an open transaction, every kind of lock
# maintenance touches:
#   * a dedup row: a publisher enqueued again with a dedup id that had expired;
#   * a topic row: the topic's owner ran evproc_alter_topic, after an evproc_grant to a
#     role id that does not exist (maintenance wants to remove that grant);
#   * a retry row and its unit's progress row: an evproc_redrive of a dead letter;
#   * the log: a reader of evproc.log, while a log partition is due to be dropped.
# Meanwhile another topic's events are published and delivered with a commit-to-handler
# p99 under 1 s, and maintenance still does its other work: another expired dedup id is
# deleted, the grant of the role id that does not exist is removed from a topic nobody
# holds, and the drop of the partition is tried and put off (not waited for). Once the
# sessions end, the next runs finish what was held.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

# Maintenance runs once at start, then not before the locks are held: the set-up must
# not race it (it would delete the expired dedup ids and the grants first).
my $node = evproc_node('open_locks', "evproc.maintenance_interval = 1h\n");

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('flow', partitions => 2);
SELECT evproc_create_topic('dd', dedup_window => '1 second');
SELECT evproc_create_topic('owned');
SELECT evproc_create_topic('bad');
CREATE TABLE effects (event_id bigint PRIMARY KEY, sent timestamptz, handled timestamptz);
GRANT INSERT ON effects TO app;
CREATE FUNCTION handle(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO effects
    SELECT e.id, (e.payload->>'t')::timestamptz, clock_timestamp() FROM unnest(events) AS e $$;
SELECT evproc_subscribe('flow_sub', 'flow', 'handle', run_as => 'app');
CREATE FUNCTION boom(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'boom'; END $$;
SELECT evproc_subscribe('bad_sub', 'bad', 'boom', max_attempts => 1, run_as => 'app');
-- Grants left behind by a dropped role (grants to a role id that does not exist are
-- refused, 42704): maintenance forgets them.
CREATE ROLE gone;
SELECT evproc_grant('owned', 'gone', 'publish');
SELECT evproc_grant('flow', 'gone', 'publish');
});
my $gone = sql_value($node, "SELECT 'gone'::regrole::oid");
$node->safe_psql('postgres', 'DROP ROLE gone');

# Two dedup ids that expire in a second, and a dead letter to re-drive.
$node->safe_psql(
	'postgres', q{
SELECT evproc_enqueue('dd', 'k', '{}', dedup_id => 'held');
SELECT evproc_enqueue('dd', 'k', '{}', dedup_id => 'free');
SELECT evproc_enqueue('bad', 'k', '{}');
});
ok(wait_until($node, "SELECT count(*) = 1 FROM evproc_dead_letters WHERE subscription = 'bad_sub'"),
	'a dead letter to re-drive');
ok(wait_until($node, "SELECT bool_and(expires_at < now()) FROM evproc.dedup"), 'both dedup ids expired');

# A partition due to be dropped at the next run: [3, 10) is below every xid, and empty.
my $due = $node->safe_psql('postgres', q{SELECT evproc.create_log_partition('3', '10')});
like($due, qr/^log_p\d+$/, 'a log partition due to be dropped');

my $alter = $node->background_psql('postgres');
$alter->query_safe("BEGIN; SELECT evproc_alter_topic('owned', max_pending => 1000)");
ok($node->safe_psql('postgres', "SELECT $gone = ANY (publishers::oid[]) FROM evproc.topic WHERE name = 'owned'") eq 't',
	'the owner holds a topic with a grant to a role id that does not exist');

my $publisher = $node->background_psql('postgres');
$publisher->query_safe("BEGIN; SELECT evproc_enqueue('dd', 'k', '{}', dedup_id => 'held')");

my $redrive = $node->background_psql('postgres');
$redrive->query_safe("BEGIN; SELECT evproc_redrive('bad_sub')");

# A reader of the log keeps the due partition from being dropped.
my $reader = $node->background_psql('postgres');
$reader->query_safe('BEGIN; LOCK TABLE evproc.log IN ACCESS SHARE MODE');

# Maintenance every second from now on.
$node->safe_psql('postgres', "ALTER SYSTEM SET evproc.maintenance_interval = '1s'");
$node->reload;

# ---------------------------------------------------------------------------
# Publish on 'flow' for about 25 s, one commit every 50 ms, the send time in the payload.
# ---------------------------------------------------------------------------
my $offset = -s $node->logfile;
$node->safe_psql(
	'postgres', q{
CREATE PROCEDURE publish(n integer) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM evproc_enqueue('flow', 'k' || (i % 10), jsonb_build_object('t', clock_timestamp()));
        COMMIT;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
});
$node->safe_psql('postgres', 'CALL publish(500)', timeout => 120);
ok(wait_until($node, 'SELECT count(*) = 500 FROM effects'), 'every event of the other topic is delivered');
my $p99 = sql_value($node,
	q{SELECT round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM handled - sent)))::numeric, 3)
	    FROM effects});
note "commit-to-handler latency p99: $p99 s";
cmp_ok($p99, '<', 1, 'p99 latency under 1 s while the locks are held');

# Maintenance did its other work meanwhile.
is(sql_value($node, "SELECT string_agg(dedup_id, ',' ORDER BY dedup_id) FROM evproc.dedup"),
	'held', 'the expired dedup id nobody holds was deleted; the held one is left');
is(sql_value($node, "SELECT name FROM evproc.topic WHERE $gone = ANY (publishers::oid[]) ORDER BY name"),
	'owned', 'the grant to a role id that does not exist is gone from the topic nobody holds');
ok( wait_until($node,
		"SELECT drop_attempts >= 3 FROM evproc.log_partition WHERE name = '$due'", timeout => 30),
	'the drop of the due partition was tried and put off, again and again');
is(log_count($node, qr/log partition maintenance failed|ERROR:  .*maint/, $offset), 0,
	'no maintenance run failed');
is( sql_value($node,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'evproc maintenance' AND wait_event_type = 'Lock'"),
	'0',
	'the maintenance worker is not waiting for a lock');

# ---------------------------------------------------------------------------
# The sessions end: the next runs finish what was held.
# ---------------------------------------------------------------------------
$alter->query_safe('COMMIT');
$publisher->query_safe('COMMIT');
$redrive->query_safe('ROLLBACK');
$reader->query_safe('COMMIT');
$_->quit for ($alter, $publisher, $redrive, $reader);
ok( wait_until($node, "SELECT NOT EXISTS (SELECT 1 FROM evproc.topic WHERE $gone = ANY (publishers::oid[]))",
		timeout => 30),
	'once the owner committed, the grant is gone from that topic too');
ok( wait_until($node, "SELECT NOT EXISTS (SELECT 1 FROM evproc.log_partition WHERE name = '$due')",
		timeout => 30),
	'once the reader is gone, the due partition is dropped');

$node->stop;
done_testing();
