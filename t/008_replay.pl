# Replay with real workers, while live traffic goes on: a replay re-delivers exactly
# the events that existed when it was asked for, each once, in per-key order, flagged
# replay and counted apart; live delivery is not disturbed; a replay cancelled midway
# stops after its current batch.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('replay');

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('hist', partitions => 4);
CREATE TABLE seen (seq bigserial, event_id bigint NOT NULL, key text NOT NULL, n int NOT NULL,
                   replay boolean NOT NULL);
CREATE TABLE slow_replay (on_ boolean NOT NULL);
INSERT INTO slow_replay VALUES (false);
GRANT SELECT ON slow_replay TO app;
GRANT INSERT ON seen TO app;
GRANT USAGE ON SEQUENCE seen_seq_seq TO app;
CREATE FUNCTION record(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF events[1].replay AND (SELECT on_ FROM slow_replay) THEN
        PERFORM pg_sleep(0.05);
    END IF;
    INSERT INTO seen (event_id, key, n, replay)
    SELECT e.id, e.key, (e.payload->>'n')::int, e.replay FROM unnest(events) AS e;
END $$;
SELECT evproc_subscribe('proj', 'hist', 'record', batch_size => 50, run_as => 'app');
});

sub publish
{
	my ($from, $to) = @_;
	$node->safe_psql('postgres',
		"SELECT cardinality(evproc_enqueue_batch('hist', (SELECT jsonb_agg(jsonb_build_object('key', 'k' || (n % 50), 'payload', jsonb_build_object('n', n)) ORDER BY n) FROM generate_series($from, $to) n)))"
	);
}

for my $b (0 .. 9) { publish($b * 100 + 1, $b * 100 + 100); }
ok(wait_until($node, 'SELECT count(*) = 1000 FROM seen WHERE NOT replay'),
	'1,000 events delivered live');

# Replay while 500 more are published.
my $replay = sql_value($node, "SELECT evproc_replay('proj')");
for my $b (10 .. 14) { publish($b * 100 + 1, $b * 100 + 100); }
ok( wait_until(
		$node, "SELECT state = 'done' FROM evproc_replays WHERE id = $replay",
		diag => 'SELECT * FROM evproc_replays'),
	'the replay finishes');
ok(wait_until($node, 'SELECT count(*) = 1500 FROM seen WHERE NOT replay'),
	'live delivery went on: 1,500 events');

is( sql_value(
		$node,
		"SELECT count(*) || '/' || count(DISTINCT event_id) || '/' || max(n) FROM seen WHERE replay"),
	'1000/1000/1000',
	'the replay delivered the 1,000 events that existed when it was asked for, each once');
is( sql_value(
		$node, q{
SELECT count(*) FROM (
  SELECT key, n, lag(n) OVER (PARTITION BY key ORDER BY seq) AS before
    FROM seen WHERE replay) x
 WHERE before >= n}),
	'0',
	'replayed events came in per-key order');
is(sql_value($node, 'SELECT count(DISTINCT event_id) FROM seen WHERE NOT replay'),
	'1500', 'no live event delivered twice');
ok( wait_until(
		$node,
		"SELECT delivered = 1500 AND replayed = 1000 AND lag_events = 0
		   FROM evproc_subscription_stats WHERE subscription = 'proj'"),
	'replayed deliveries are counted apart from live ones');
is(sql_value($node, "SELECT delivered || '/' || percent_scanned FROM evproc_replays WHERE id = $replay"),
	'1000/100', 'the replay row shows its progress');

# Cancel midway: a slow handler for replayed events (50 ms per batch of 50).
$node->safe_psql('postgres', 'UPDATE slow_replay SET on_ = true; TRUNCATE seen');
my $slow = sql_value($node, "SELECT evproc_replay('proj')");
ok( wait_until(
		$node, "SELECT delivered >= 100 FROM evproc_replays WHERE id = $slow"),
	'the second replay is under way');
is(sql_value($node, "SELECT evproc_cancel_replay($slow)"), 't', 'cancelled');
my $at_cancel = sql_value($node, 'SELECT count(*) FROM seen WHERE replay');
sleep(1);
is(sql_value($node, 'SELECT count(*) FROM seen WHERE replay'),
	$at_cancel, 'nothing more is replayed after the cancel returned');
is( sql_value(
		$node, "SELECT state || '/' || (delivered = $at_cancel) || '/' || (delivered < 1500)
		          FROM evproc_replays WHERE id = $slow"),
	'cancelled/true/true',
	'the cancelled replay keeps its count');

$node->stop;
done_testing();
