# Old history in small windows (issue 17.3, docs/design.md "Where such windows come
# from"): maintenance keeps one tick a second of the ticks below every unit's position,
# instead of deleting them all, so that a subscription starting from history
# (start_from, at tick 0) reads it in windows of about a second of transactions. The
# test takes ticks several times a second between transactions of history, runs
# maintenance by hand, and checks
#  (a) one tick per second is kept (the newest of each second), each naming every slot,
#      and a second run changes nothing; before this, no tick below the newest was kept
#      and the first window held the whole history;
#  (b) a subscription with start_from gets every event of the history exactly once
#      (the handler's table has the event id as primary key), in order per key, in
#      more than one window;
#  (c) ticks older than every topic's retention go.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('history_ticks', "evproc.maintenance_interval = 1h\n");

$node->safe_psql(
	'postgres', q{
CREATE TABLE seen (seq bigserial, id bigint PRIMARY KEY, key text NOT NULL, n int NOT NULL,
                   batch_tick bigint);
GRANT SELECT, INSERT ON seen TO app;
GRANT USAGE ON SEQUENCE seen_seq_seq TO app;
CREATE FUNCTION record(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
  INSERT INTO public.seen (id, key, n)
  SELECT e.id, e.key, (e.payload->>'n')::int FROM unnest(events) e
$$;
GRANT EXECUTE ON FUNCTION record(evproc.event[]) TO app;
SELECT evproc_create_topic('hist', partitions => 1);
});
my $from = sql_value($node, "SELECT now() - interval '1 second'");
my $first_tick = sql_value($node, 'SELECT max(id) FROM evproc.tick');

# About 3 seconds of history: 30 transactions of 20 events over 5 keys, each followed by
# a tick (as the launcher takes them when subscriptions wait), 0.1 s apart.
my $transactions = 30;
for my $t (1 .. $transactions)
{
	$node->safe_psql(
		'postgres', qq{
SELECT count(evproc_enqueue('hist', 'k' || (i % 5), jsonb_build_object('n', $t * 100 + i)))
  FROM generate_series(1, 20) i;
});
	$node->safe_psql('postgres', 'SELECT evproc.take_tick(ARRAY[0])');
	usleep(100_000);
}
my $events = $transactions * 20;
my $taken = sql_value($node, "SELECT count(*) FROM evproc.tick WHERE id > $first_tick");
cmp_ok($taken, '>=', $transactions, 'the ticks were taken');
my $seconds = sql_value($node,
	"SELECT count(DISTINCT date_trunc('second', taken_at)) FROM evproc.tick WHERE id > $first_tick");
cmp_ok($seconds, '>=', 2, 'over at least two seconds');

# (a) The launcher may take a tick of its own at any time (one a second at most here):
# the checks look only at the ticks below the newest one when maintenance ran ($cut).
my $cut = sql_value($node, 'SELECT max(id) FROM evproc.tick');
$node->safe_psql('postgres', 'SELECT evproc.maintain()');
my $kept_query = qq{SELECT count(*), count(DISTINCT date_trunc('second', taken_at)),
                           count(*) FILTER (WHERE dirty IS NOT NULL)
                      FROM evproc.tick WHERE id > 0 AND id < $cut};
my ($kept, $kept_seconds, $naming_some) = split /\|/, sql_value($node, $kept_query);
cmp_ok($kept, '>=', 2, 'ticks of the history are kept, not all deleted');
is($kept, $kept_seconds, 'one tick per second is kept');
cmp_ok($kept, '<', $taken, 'the others were deleted');
is($naming_some, 0, 'a kept tick names every slot');
is( sql_value(
		$node, qq{SELECT bool_and(t.id = (SELECT max(o.id) FROM evproc.tick o
                                    WHERE date_trunc('second', o.taken_at) = date_trunc('second', t.taken_at)
                                      AND o.id < $cut))
              FROM evproc.tick t WHERE t.id > 0 AND t.id < $cut}),
	't', 'the kept tick of a second is its newest');
# A second run keeps them: all but the newest kept one, which a later tick of the same
# second may replace.
my $last_kept = sql_value($node, "SELECT max(id) FROM evproc.tick WHERE id > 0 AND id < $cut");
my $older_kept = "SELECT string_agg(id::text, ',' ORDER BY id) FROM evproc.tick WHERE id > 0 AND id < $last_kept AND dirty IS NULL";
my $before_second_run = sql_value($node, $older_kept);
$node->safe_psql('postgres', 'SELECT evproc.maintain()');
is(sql_value($node, $older_kept), $before_second_run, 'a second run keeps the same ticks');
is(sql_value($node, "SELECT count(*) FROM evproc.tick WHERE id > 0 AND id < $last_kept AND dirty IS NOT NULL"),
	0, 'and leaves no other below them');

# (b)
$node->safe_psql('postgres',
	qq{SELECT evproc_subscribe('hist', 'hist', 'record(evproc.event[])', run_as => 'app',
                                start_from => '$from', batch_size => 1000)});
ok(wait_until($node, "SELECT count(*) = $events FROM seen", timeout => 120),
	'every event of the history was delivered')
  or diag(sql_value($node, 'SELECT count(*) FROM seen'));
is(sql_value($node, 'SELECT count(*) FROM seen'), $events, 'each exactly once');
is( sql_value(
		$node, q{SELECT count(*) FROM (SELECT n < lag(n) OVER (PARTITION BY key ORDER BY seq) AS back
                                  FROM seen) s WHERE back}),
	0, 'in order per key');
is( sql_value(
		$node, q{SELECT count(*) FROM evproc.log l
                  WHERE l.topic_id = (SELECT id FROM evproc.topic WHERE name = 'hist')
                    AND pg_visible_in_snapshot(l.xid, (SELECT snapshot FROM evproc.tick
                                                        WHERE id = (SELECT min(id) FROM evproc.tick WHERE id > 0)))}) < $events
	  ? 1 : 0,
	1, 'the first window held part of the history, not all of it');

# (c) Ticks older than every topic's retention (7 days here) go: the oldest kept tick
# is made 8 days old.
my $aged = sql_value($node,
	q{UPDATE evproc.tick SET taken_at = taken_at - interval '8 days'
       WHERE id = (SELECT min(id) FROM evproc.tick WHERE id > 0) RETURNING id});
ok($aged > 0, 'a kept tick was aged');
$node->safe_psql('postgres', 'SELECT evproc.maintain()');
is(sql_value($node, "SELECT count(*) FROM evproc.tick WHERE id = $aged"), 0,
	'the tick older than the retention was deleted');
cmp_ok(sql_value($node, "SELECT count(*) FROM evproc.tick WHERE id > 0 AND id < (SELECT max(id) FROM evproc.tick)"),
	'>=', 1, 'the younger kept ticks stay');

$node->stop;
done_testing();
