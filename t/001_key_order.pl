# Per-key order and exactly-once delivery under two workers and 1,200 keys.
#
# Publishers lock the key's row in `keys` before enqueuing, so for one key the
# commit order is the seq order (seq 1, 2, 3, ...). Each publishing transaction
# takes its xid *before* it locks the key (as an application does that writes
# something first), so transactions of one key often commit in another order
# than their xids were assigned. A batch handler records every event with a
# delivery sequence number taken from a sequence at handling time.
#
# Asserts: every event handled exactly once; per key, handling order is seq
# order; two handler calls never handled one key at the same time.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('key_order');

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('orders', partitions => 8);

CREATE TABLE keys (k text PRIMARY KEY, seq int NOT NULL DEFAULT 0);
INSERT INTO keys (k) SELECT 'k:' || i FROM generate_series(1, 1200) AS i;

-- One row per handled event; dseq is taken at handling time.
CREATE SEQUENCE dseq;
CREATE TABLE seen (
    event_id   bigint NOT NULL,
    key        text NOT NULL,
    seq        int,
    dseq       bigint NOT NULL,
    call_start bigint NOT NULL,
    xid        xid8 NOT NULL,
    pid        int NOT NULL,
    attempt    int NOT NULL,
    handled_at timestamptz NOT NULL
);
-- One row per handler call: [start_d, end_d] brackets every dseq it took.
CREATE TABLE calls (start_d bigint PRIMARY KEY, end_d bigint NOT NULL, xid xid8 NOT NULL,
                    pid int NOT NULL, n int NOT NULL);

CREATE FUNCTION record_batch(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    e evproc.event;
    s bigint := nextval('dseq');
BEGIN
    FOREACH e IN ARRAY events LOOP
        INSERT INTO seen VALUES (e.id, e.key, (e.payload->>'seq')::int, nextval('dseq'), s,
                                 pg_current_xact_id(), pg_backend_pid(), e.attempt,
                                 clock_timestamp());
    END LOOP;
    INSERT INTO calls VALUES (s, nextval('dseq'), pg_current_xact_id(), pg_backend_pid(),
                              cardinality(events));
END $$;

GRANT SELECT, INSERT ON seen, calls TO app;
GRANT USAGE ON SEQUENCE dseq TO app;
GRANT EXECUTE ON FUNCTION record_batch(evproc.event[]) TO app;

SELECT evproc_subscribe('ordered', 'orders', 'record_batch', batch_size => 50,
                        run_as => 'app');
});

ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
	'two evproc workers are running');

# Publishers: 8 clients x 2,000 transactions. A quarter of the transactions go
# to 8 hot keys so that transactions of one key queue on its row lock; one in
# five enqueues two events of its key in one transaction (batch enqueue). Each
# transaction takes its xid before it waits for its key's row lock, so xid order
# is not commit order: evproc must follow the ids (taken after the lock).
my $script = $node->basedir . '/publish.sql';
append_to_file(
	$script, q{
\set r random(1, 100)
\if :r <= 25
\set k random(1, 8)
\else
\set k random(9, 1200)
\endif
\set d random(0, 1500)
\set two random(1, 5)
BEGIN;
SELECT pg_current_xact_id();
\sleep :d us
\if :two = 1
WITH u AS (UPDATE keys SET seq = seq + 2 WHERE k = 'k:' || :k RETURNING k, seq) SELECT evproc_enqueue_batch('orders', jsonb_build_array(jsonb_build_object('key', u.k, 'payload', jsonb_build_object('seq', u.seq - 1)), jsonb_build_object('key', u.k, 'payload', jsonb_build_object('seq', u.seq)))) FROM u;
\else
WITH u AS (UPDATE keys SET seq = seq + 1 WHERE k = 'k:' || :k RETURNING k, seq) SELECT evproc_enqueue('orders', u.k, jsonb_build_object('seq', u.seq)) FROM u;
\endif
COMMIT;
});

$node->command_ok(
	[
		'pgbench', '-n', '-c', '8', '-j', '2', '-t', '2000', '-f', $script,
		'postgres'
	],
	'publishers ran');

my $enqueued = $node->safe_psql('postgres', 'SELECT coalesce(sum(seq), 0) FROM keys');
my $logged = $node->safe_psql('postgres', 'SELECT count(*) FROM evproc.log');
is($logged, $enqueued, 'the log holds one event per published seq');
cmp_ok($enqueued, '>=', 18000, "published $enqueued events");
my $nkeys = $node->safe_psql('postgres', 'SELECT count(*) FROM keys WHERE seq > 0');
cmp_ok($nkeys, '>=', 1000, "events span $nkeys keys");

my $stalled = "SELECT state <> 'active' FROM evproc_subscriptions WHERE name = 'ordered'";
ok( wait_until(
		$node, "SELECT count(*) >= $enqueued FROM seen",
		abort_if => $stalled,
		diag => 'SELECT count(*) FROM seen'),
	'every event was handled')
  or do { done_testing(); exit 1; };

# Fences: one more event on each of 64 keys spread over all partitions, handled
# after everything above; a late duplicate of an earlier batch would show up in
# the counts below.
$node->safe_psql('postgres',
	q{SELECT evproc_enqueue('orders', 'fence:' || i, '{"fence": true}') FROM generate_series(1, 64) AS i});
is( $node->safe_psql(
		'postgres',
		q{SELECT count(DISTINCT partition) FROM evproc.log WHERE key LIKE 'fence:%'}),
	'8',
	'fences cover every partition');
my $total = $enqueued + 64;
ok(wait_until($node, "SELECT count(*) >= $total FROM seen", abort_if => $stalled),
	'fences were handled');
ok( wait_until(
		$node, "SELECT delivered = $total FROM evproc_subscriptions WHERE name = 'ordered'",
		timeout => 30),
	'the subscription counts every delivery');

# Exactly once.
is($node->safe_psql('postgres', 'SELECT count(*) FROM seen'),
	$total, 'handled rows = enqueued events');
is($node->safe_psql('postgres', 'SELECT count(DISTINCT event_id) FROM seen'),
	$total, 'no event handled twice');
is( $node->safe_psql(
		'postgres',
		'SELECT count(*) FROM evproc.log l WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.event_id = l.id)'
	),
	'0',
	'no event of the log missing');
is($node->safe_psql('postgres', 'SELECT count(*) FROM seen WHERE attempt <> 1'),
	'0', 'every event handled at its first attempt');
is( $node->safe_psql(
		'postgres', 'SELECT count(*) FROM evproc.retry UNION ALL SELECT count(*) FROM evproc.dead_letter'),
	"0\n0",
	'nothing parked or dead');

# Per-key order: handling order (dseq) gives seq 1, 2, 3, ... for each key.
my $bad_order = $node->safe_psql(
	'postgres', q{
SELECT count(*) FROM (
  SELECT key, seq, row_number() OVER (PARTITION BY key ORDER BY dseq) AS rn
    FROM seen WHERE key LIKE 'k:%') x
 WHERE seq IS DISTINCT FROM rn});
is($bad_order, '0', 'per key, events were handled in commit (seq) order')
  or diag "out-of-order handlings (key, seq, position in handling order, event id, "
  . "enqueuing xid, handling xid, dseq):\n"
  . $node->safe_psql(
	'postgres', q{
SELECT x.key, x.seq, x.rn, x.event_id, l.xid, x.xid, x.dseq FROM (
  SELECT key, seq, event_id, dseq, xid,
         row_number() OVER (PARTITION BY key ORDER BY dseq) AS rn
    FROM seen WHERE key LIKE 'k:%') x JOIN evproc.log l ON l.id = x.event_id
 WHERE x.seq IS DISTINCT FROM x.rn ORDER BY x.key, x.rn LIMIT 30});
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM keys k
 WHERE k.seq <> (SELECT count(*) FROM seen s WHERE s.key = k.k)}),
	'0',
	'per key, as many handlings as published seqs');

# Never two at once: the handler calls that handled one key have disjoint
# [start, end] ranges of the delivery sequence.
my $overlaps = $node->safe_psql(
	'postgres', q{
WITH kc AS (SELECT DISTINCT s.key, c.start_d, c.end_d, c.pid
              FROM seen s JOIN calls c ON c.start_d = s.call_start)
SELECT count(*) FROM kc a JOIN kc b
    ON a.key = b.key AND a.start_d < b.start_d AND b.start_d < a.end_d});
is($overlaps, '0', 'no key was handled by two handler calls at once');
is( $node->safe_psql(
		'postgres',
		'SELECT count(*) FROM seen s WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE c.start_d = s.call_start)'),
	'0',
	'every handled event belongs to a committed handler call');

my $pids = $node->safe_psql('postgres', 'SELECT count(DISTINCT pid) FROM seen');
note "distinct worker pids that handled events: $pids";
my $per_pid = $node->safe_psql('postgres',
	'SELECT pid, count(*), count(DISTINCT xid) FROM seen GROUP BY pid ORDER BY pid');
note "events and transactions per worker pid:\n$per_pid";
cmp_ok($pids, '>=', 1, 'workers handled the events');

# The same case, made deterministic: while the subscription is paused, T_late
# takes its xid first, T_early then enqueues seq 1 of key 'det' and commits,
# then T_late enqueues seq 2 and commits. Both commits land in the one window
# the unit reads after resume. Commit order (and id order) is seq 1, seq 2;
# the handler must see them in that order.
$node->safe_psql('postgres', "SELECT evproc_pause('ordered')");
my $late = $node->background_psql('postgres');
$late->query_safe('BEGIN');
my $late_xid = $late->query_safe('SELECT pg_current_xact_id()');
$node->safe_psql(
	'postgres', q{
BEGIN;
SELECT pg_current_xact_id();
SELECT evproc_enqueue('orders', 'det', '{"seq": 1}');
COMMIT;
});
$late->query_safe(q{SELECT evproc_enqueue('orders', 'det', '{"seq": 2}')});
$late->query_safe('COMMIT');
$late->quit;
note "det: seq 2 enqueued by xid $late_xid, which began before seq 1's transaction";
$node->safe_psql('postgres', "SELECT evproc_resume('ordered')");
ok(wait_until($node, "SELECT count(*) = 2 FROM seen WHERE key = 'det'"),
	'both events of key det handled');
is( $node->safe_psql(
		'postgres', q{SELECT string_agg(seq::text, ',' ORDER BY dseq) FROM seen WHERE key = 'det'}),
	'1,2',
	'key det: seq 1 (committed first, lower id) handled before seq 2 (lower xid)')
  or diag $node->safe_psql(
	'postgres', q{
SELECT s.seq, s.event_id, l.xid AS enqueue_xid, s.dseq
  FROM seen s JOIN evproc.log l ON l.id = s.event_id WHERE s.key = 'det' ORDER BY s.dseq});

$node->stop;
done_testing();
