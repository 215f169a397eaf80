# Retention with a running launcher (extension/retention.sql): the launcher's
# maintenance keeps log partitions ahead of the xid counter and drops a partition once it
# is closed, past its topics' retention and passed by every subscription -- not while a
# transaction holds evproc.log (it gives up within lock_timeout, enqueues go on, the rest
# of maintenance still commits, and it retries), and not under a subscription that starts
# from history concurrently (that one receives the whole retained history).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node(
	'retention', q{
evproc.maintenance_interval = 1s
evproc.partition_interval = 1s
});

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('rt', partitions => 2, retention => '1 second');
SELECT evproc_create_topic('rt_dedup', partitions => 1, retention => '1 second', dedup_window => '1 second');
CREATE TABLE seen (sub text NOT NULL, event_id bigint NOT NULL, PRIMARY KEY (sub, event_id));
GRANT INSERT ON seen TO app;
CREATE FUNCTION seen_a(events evproc.event[]) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO seen SELECT 'a', e.id FROM unnest(events) e $$;
CREATE FUNCTION seen_h(events evproc.event[]) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO seen SELECT 'h', e.id FROM unnest(events) e $$;
SELECT evproc_subscribe('rt_a', 'rt', 'seen_a', run_as => 'app');
});

# The partition that holds the current xid.
sub current_partition
{
	return sql_value($node,
		'SELECT name FROM evproc.log_partition WHERE xid_from <= pg_current_xact_id() AND pg_current_xact_id() < xid_to'
	);
}

sub burn_past
{
	my ($part) = @_;
	my $to = sql_value($node, "SELECT xid_to FROM evproc.log_partition WHERE name = '$part'");
	burn_xids_to($node, $to);
}

# Enqueues one event, so that the launcher takes a tick (and units move past the burnt
# xids).
sub nudge
{
	$node->safe_psql('postgres', q{SELECT evproc_enqueue('rt', 'nudge', '{}')});
}

sub gone
{
	my ($part) = @_;
	return "SELECT NOT EXISTS (SELECT 1 FROM evproc.log_partition WHERE name = '$part') AND to_regclass('evproc.$part') IS NULL";
}

my $ahead =
  'SELECT count(*) = 1 FROM evproc.log_partition WHERE xid_from > pg_current_xact_id()';

# 1. Partitions ahead: the launcher's first maintenance makes one ahead of the xid
#    counter (by evproc.partition_margin(): events of the xids below go to the default
#    partition); when the counter enters the partition ahead, the launcher creates the
#    next one.
ok(wait_until($node, $ahead, timeout => 30), 'a partition is kept ahead of the xid counter');
is(current_partition(), '', 'none holds the current xid at first');
my $from = sql_value($node,
	'SELECT xid_from FROM evproc.log_partition WHERE xid_from > pg_current_xact_id()');
burn_xids_to($node, $from);
my $first = current_partition();
isnt($first, '', 'the xid counter reached the partition ahead');
ok(wait_until($node, $ahead, timeout => 30), 'the launcher created the one after it');
burn_past($first);
my $second = current_partition();
isnt($second, $first, 'the xid counter moved into the next partition');
ok(wait_until($node, $ahead, timeout => 30), 'the launcher created the next partition ahead');

# 2. Retention end to end: events delivered, their partition closed and past retention:
#    the launcher drops it, with its rows, and the topic's older history is refused.
my $p = current_partition();
$node->safe_psql('postgres',
	q{SELECT count(evproc_enqueue('rt', 'k' || g, jsonb_build_object('n', g))) FROM generate_series(1, 100) g});
ok(wait_until($node, "SELECT count(*) = 100 FROM seen WHERE sub = 'a'"), 'rt_a handled 100 events');
my $ids = sql_value($node, "SELECT string_agg(id::text, ',') FROM evproc.log WHERE tableoid = 'evproc.$p'::regclass");
burn_past($p);
nudge();
ok(wait_until($node, gone($p), timeout => 60, diag => 'SELECT * FROM evproc_log_partitions'),
	"the launcher dropped $p");
is(sql_value($node, "SELECT count(*) FROM evproc.log WHERE id IN ($ids)"), '0', 'its events are gone');
ok($node->log_contains("evproc: dropped log partition evproc.$p"), 'the drop is logged');
my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT evproc_subscribe('rt_old', 'rt', 'seen_h', start_from => now() - interval '1 day', run_as => 'app')});
like($err, qr/history of topic "rt" before .* is no longer retained/, 'history before the drop is refused');

# 3. A transaction holding evproc.log (here a read; as well an enqueue or a delivery)
#    keeps the drop from getting its lock: maintenance gives up within lock_timeout and
#    retries, enqueues go on meanwhile, and the rest of maintenance (dedup expiry) still
#    commits. Once the transaction ends, the partition is dropped.
my $q = current_partition();
$node->safe_psql('postgres', q{SELECT evproc_enqueue('rt', 'q', '{}')});
burn_past($q);
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe('SELECT count(*) FROM evproc.log');
nudge();
ok( wait_until(
		$node, "SELECT drop_attempts >= 2 FROM evproc.log_partition WHERE name = '$q'",
		timeout => 60, diag => 'SELECT * FROM evproc_log_partitions'),
	"the drop of $q waits for its lock and is retried");
my $t0 = time();
$node->safe_psql('postgres',
	join("\n", map { "SELECT evproc_enqueue('rt_dedup', NULL, '{}', dedup_id => 'd$_');" } 1 .. 20));
my $elapsed = time() - $t0;
cmp_ok($elapsed, '<', 5, sprintf('20 enqueues while the drop is pending took %.2f s', $elapsed));
ok( wait_until($node, q{SELECT count(*) = 0 FROM evproc.dedup}, timeout => 60),
	'expired dedup ids are deleted meanwhile: the rest of maintenance commits');
is(sql_value($node, "SELECT count(*) FROM evproc.log_partition WHERE name = '$q'"), '1', "$q is kept while the lock is held");
$holder->query_safe('COMMIT');
ok(wait_until($node, gone($q), timeout => 60), "$q is dropped once the transaction ended");
ok(!$node->log_contains('log partition maintenance failed'), 'maintenance never failed');

# 4. A subscription that starts from history while a drop is due: the drop waits for the
#    topic's row (evproc_subscribe holds it FOR SHARE until it commits), then sees the new
#    units at tick 0 and keeps the partition until they have passed it. The new
#    subscription receives every event of the partition.
my $r = current_partition();
$node->safe_psql('postgres',
	q{SELECT count(evproc_enqueue('rt', 'r' || g, '{}')) FROM generate_series(1, 10) g});
my $r_ids = sql_value($node,
	"SELECT string_agg(l.id::text, ',') FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
	  WHERE l.tableoid = 'evproc.$r'::regclass AND t.name = 'rt'");
cmp_ok(scalar(split(/,/, $r_ids)), '>=', 10, "$r holds the 10 events and more of topic rt");
ok( wait_until(
		$node, "SELECT count(*) = 0 FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
		         WHERE t.name = 'rt' AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.sub = 'a' AND s.event_id = l.id)"),
	'rt_a is up to date');
burn_past($r);
my $subscriber = $node->background_psql('postgres');
$subscriber->query_safe('BEGIN');
$subscriber->query_safe(
	q{SELECT evproc_subscribe('rt_h', 'rt', 'seen_h', start_from => '-infinity', run_as => 'app')});
nudge();
ok( wait_until(
		$node, "SELECT drop_attempts >= 1 FROM evproc.log_partition WHERE name = '$r'",
		timeout => 60, diag => 'SELECT * FROM evproc_log_partitions'),
	"the drop of $r waits for the subscribing transaction");
$subscriber->query_safe('COMMIT');
$subscriber->quit;
ok(wait_until($node, gone($r), timeout => 60, diag => 'SELECT * FROM evproc_log_partitions'),
	"$r is dropped once the new subscription passed it");
is( sql_value($node,
		"SELECT count(*) FROM unnest('{$r_ids}'::bigint[]) i WHERE NOT EXISTS (SELECT 1 FROM seen WHERE sub = 'h' AND event_id = i)"),
	'0',
	'the subscription from history received every event of the dropped partition');

$holder->quit;
$node->stop;
done_testing();
