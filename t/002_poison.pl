# Poison events: a per-event handler fails deterministically for every event
# whose n ends in 7 (10%). With max_attempts 3 each such event must end in the
# dead letters after exactly 3 attempts with the handler's error, every other
# event must be handled exactly once, and per key the healthy events must be
# handled in publish order, none before a poison event ahead of it was settled.
#
# A second subscription on the same topic does the same with max_attempts 1,
# paused while publishing so that its batches hold several events per key:
# a poison event dies at its first failure, and the events of its key behind
# it (parked in the same batch) must still be delivered.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('poison');

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('jobs', partitions => 8);
CREATE SEQUENCE dseq;
CREATE TABLE handled (
    event_id   bigint PRIMARY KEY,   -- a second delivery would raise here
    key        text NOT NULL,
    n          int NOT NULL,
    dseq       bigint NOT NULL,
    attempt    int NOT NULL,
    handled_at timestamptz NOT NULL
);
CREATE FUNCTION poison_h(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (e.payload->>'n')::int % 10 = 7 THEN
        RAISE EXCEPTION 'poison event n=%', e.payload->>'n'
            USING DETAIL = 'n ends in 7', HINT = 'do not publish sevens';
    END IF;
    INSERT INTO handled VALUES (e.id, e.key, (e.payload->>'n')::int, nextval('dseq'), e.attempt,
                                clock_timestamp());
END $$;
CREATE TABLE handled1 (LIKE handled INCLUDING ALL);
CREATE FUNCTION poison_h1(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (e.payload->>'n')::int % 10 = 7 THEN
        RAISE EXCEPTION 'poison event n=%', e.payload->>'n';
    END IF;
    INSERT INTO handled1 VALUES (e.id, e.key, (e.payload->>'n')::int, nextval('dseq'), e.attempt,
                                 clock_timestamp());
END $$;
GRANT SELECT, INSERT ON handled, handled1 TO app;
GRANT USAGE ON SEQUENCE dseq TO app;
SELECT evproc_subscribe('poison', 'jobs', 'poison_h', batch_size => 50, max_attempts => 3,
                        backoff_base => '10 ms', backoff_cap => '50 ms', failure_budget => 1,
                        run_as => 'app');
SELECT evproc_subscribe('poison1', 'jobs', 'poison_h1', batch_size => 50, max_attempts => 1,
                        backoff_base => '10 ms', backoff_cap => '50 ms', failure_budget => 1,
                        run_as => 'app');
-- Paused while publishing, so that its batches hold several events of one key.
SELECT evproc_pause('poison1');
});

# 2,000 events, n = 1..2000, key 'k:' || n % 199 (199 is prime to 10, so every
# key gets some poison), published in n order by 20 sequential transactions.
for my $t (0 .. 19)
{
	my ($lo, $hi) = ($t * 100 + 1, $t * 100 + 100);
	$node->safe_psql(
		'postgres', qq{
SELECT cardinality(evproc_enqueue_batch('jobs',
  (SELECT jsonb_agg(jsonb_build_object('key', 'k:' || (n % 199),
                                       'payload', jsonb_build_object('n', n)) ORDER BY n)
     FROM generate_series($lo, $hi) AS n)))});
}
my $enqueued = sql_value($node, 'SELECT count(*) FROM evproc.log');
$node->safe_psql('postgres', "SELECT evproc_resume('poison1')");
is($enqueued, '2000', 'published 2,000 events');
is(sql_value($node, 'SELECT count(DISTINCT key) FROM evproc.log'), '199', 'over 199 keys');

# A parked event that is not a head waits behind its key's head; one whose key
# has no head would wait forever. Never true in any committed state.
my $orphans = q{SELECT count(*) FROM evproc.retry r
                 WHERE NOT r.is_head
                   AND NOT EXISTS (SELECT 1 FROM evproc.retry h
                                    WHERE h.subscription_id = r.subscription_id
                                      AND h.partition = r.partition AND h.key = r.key AND h.is_head)};
my $stalled = "SELECT state <> 'active' FROM evproc_subscriptions WHERE name = 'poison'";
ok( wait_until(
		$node,
		"SELECT (SELECT count(*) FROM handled) + (SELECT count(*) FROM evproc_dead_letters"
		  . " WHERE subscription = 'poison') >= $enqueued"
		  . " AND NOT EXISTS (SELECT 1 FROM evproc.retry r JOIN evproc.subscription s"
		  . " ON s.id = r.subscription_id WHERE s.name = 'poison')",
		abort_if => $stalled,
		diag => 'SELECT (SELECT count(*) FROM handled) AS handled, '
		  . '(SELECT count(*) FROM evproc.dead_letter) AS dead, (SELECT count(*) FROM evproc.retry) AS parked'),
	'every event was handled or dead-lettered')
  or do { done_testing(); exit 1; };

is(sql_value($node, "SELECT state FROM evproc_subscriptions WHERE name = 'poison'"),
	'active', 'the subscription stayed active (failure_budget 1)');

# Healthy events: exactly once.
is(sql_value($node, 'SELECT count(*) FROM handled'), '1800', '1,800 healthy events handled');
is( sql_value(
		$node,
		q{SELECT count(*) FROM evproc.log l
           WHERE (l.payload->>'n')::int % 10 <> 7
             AND NOT EXISTS (SELECT 1 FROM handled h WHERE h.event_id = l.id)}),
	'0',
	'no healthy event missing');
is(sql_value($node, q{SELECT count(*) FROM handled WHERE n % 10 = 7}),
	'0', 'no poison event recorded as handled');

# Poison events: all dead, each after exactly 3 attempts, with the error.
is(sql_value($node, q{SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'poison'}),
	'200', '200 dead letters');
is( sql_value(
		$node,
		q{SELECT count(*) FROM evproc.log l
           WHERE (l.payload->>'n')::int % 10 = 7
             AND NOT EXISTS (SELECT 1 FROM evproc_dead_letters d WHERE d.event_id = l.id)}),
	'0',
	'every poison event is a dead letter');
is( sql_value(
		$node, q{SELECT count(*) FROM evproc_dead_letters
                  WHERE attempts = 3 AND sqlstate = 'P0001'
                    AND message = 'poison event n=' || (payload->>'n')
                    AND detail = 'n ends in 7' AND hint = 'do not publish sevens'
                    AND context LIKE '%poison_h%'
                    AND key = 'k:' || ((payload->>'n')::int % 199)
                    AND first_failed_at <= last_failed_at AND worker_pid > 0}),
	'200',
	'dead letters: 3 attempts, P0001, message, detail, hint, context, key')
  or diag sql_value($node,
	'SELECT event_id, key, attempts, sqlstate, message, detail, hint, context FROM evproc_dead_letters LIMIT 5');
is( sql_value(
		$node, q{SELECT count(*) FROM evproc_dead_letters d JOIN evproc.log l ON l.id = d.event_id
                  WHERE d.partition <> l.partition OR d.payload <> l.payload}),
	'0',
	'dead letters carry the event partition and payload');
is( sql_value(
		$node, "SELECT delivered || '/' || parked || '/' || dead_letters FROM evproc_subscriptions WHERE name = 'poison'"),
	'1800/0/200',
	'evproc_subscriptions: delivered / parked / dead_letters');

# Order: per key, healthy events handled in n order...
is( sql_value(
		$node, q{SELECT count(*) FROM (
                   SELECT n, lag(n) OVER (PARTITION BY key ORDER BY dseq) AS prev FROM handled) x
                  WHERE prev > n}),
	'0',
	'per key, healthy events handled in publish order');
# ...and none before a poison event published ahead of it was dead.
is( sql_value(
		$node, q{SELECT count(*) FROM handled h JOIN evproc_dead_letters d
                     ON d.subscription = 'poison' AND d.key = h.key AND (d.payload->>'n')::int < h.n
                  WHERE h.handled_at <= d.dead_at}),
	'0',
	'no event overtook a failing event of its key');
# Events that waited behind a poison event were handled at attempt 1.
is(sql_value($node, 'SELECT count(*) FROM handled WHERE attempt <> 1'),
	'0', 'healthy events needed one attempt');


# ---------------------------------------------------------------------------
# max_attempts 1
# ---------------------------------------------------------------------------
my $stalled1 = "SELECT state <> 'active' FROM evproc_subscriptions WHERE name = 'poison1'";
my $done1 = wait_until(
	$node,
	"SELECT delivered + dead_letters >= $enqueued AND parked = 0"
	  . " FROM evproc_subscriptions WHERE name = 'poison1'",
	abort_if => $stalled1,
	timeout => 30,
	diag => "SELECT r.key, r.event_id, r.is_head, r.attempt, r.next_attempt_at FROM evproc.retry r"
	  . " JOIN evproc.subscription s ON s.id = r.subscription_id WHERE s.name = 'poison1' ORDER BY r.seq LIMIT 20");
ok($done1, 'max_attempts 1: every event handled or dead-lettered, nothing left parked');
is(sql_value($node, "SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'poison1' AND attempts = 1"
		  . " AND sqlstate = 'P0001' AND (payload->>'n')::int % 10 = 7"),
	'200', 'max_attempts 1: 200 dead letters after one attempt');
is(sql_value($node, 'SELECT count(*) FROM handled1'), '1800',
	'max_attempts 1: the 1,800 healthy events handled');
is( sql_value(
		$node, q{SELECT count(*) FROM (
                   SELECT n, lag(n) OVER (PARTITION BY key ORDER BY dseq) AS prev FROM handled1) x
                  WHERE prev > n}),
	'0',
	'max_attempts 1: per key, healthy events handled in publish order');
is(sql_value($node, $orphans), '0', 'no parked event waits behind a key without a head')
  or diag sql_value($node, 'SELECT s.name, r.key, count(*) FROM evproc.retry r'
	  . ' JOIN evproc.subscription s ON s.id = r.subscription_id WHERE NOT r.is_head GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 20');

$node->stop;
done_testing();
