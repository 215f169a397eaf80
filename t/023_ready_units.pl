# Units marked ready (issue 18, docs/design.md "Claiming a unit"): workers claim only
# the units whose partitions got commits since they last found nothing (progress.ready)
# and units with due retries. Many idle subscriptions (300 topics of 4 partitions, one
# subscription each, a third of them paused) sit beside a busy one; the test checks
# that
#  (a) once delivery is done every unit ends not ready, the paused ones at once;
#  (b) a commit on an idle unit's partition makes it ready and delivers it: the
#      failure this guards against (a stamp missed while a worker or maintenance held
#      the unit) leaves the event undelivered for good, so the waits below are generous
#      timeouts on a loaded 2-core machine, not latency bounds (bench/idle_subs measures
#      those);
#  (c) kill -9 of a worker in the middle of a batch of the busy subscription loses
#      nothing: after the crash restart every event is delivered exactly once (the
#      handler's table has the event id as primary key: a second delivery would fail
#      and park the event), in order per key, and every unit is looked at once (all
#      ready at the launcher's start) and ends not ready again;
#  (d) a paused subscription's units stay not ready while events come in, and resuming
#      delivers them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('ready', "restart_after_crash = on\n");
my $topics = 300;

$node->safe_psql(
	'postgres', qq{
CREATE TABLE seen (seq bigserial, id bigint PRIMARY KEY, sub text NOT NULL, key text,
                   n int NOT NULL, seen_at timestamptz NOT NULL DEFAULT clock_timestamp());
GRANT SELECT, INSERT ON seen TO app;
GRANT USAGE ON SEQUENCE seen_seq_seq TO app;
CREATE FUNCTION record_idle(events evproc.event[]) RETURNS void LANGUAGE sql AS \$\$
  INSERT INTO public.seen (id, sub, key, n)
  SELECT e.id, e.topic, e.key, (e.payload->>'n')::int FROM unnest(events) e
\$\$;
-- Slow enough that the kill below finds a batch in flight.
CREATE FUNCTION record_busy(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
  INSERT INTO public.seen (id, sub, key, n)
  SELECT e.id, e.topic, e.key, (e.payload->>'n')::int FROM unnest(events) e;
  PERFORM pg_sleep(0.05);
END \$\$;
GRANT EXECUTE ON FUNCTION record_idle(evproc.event[]), record_busy(evproc.event[]) TO app;
SELECT evproc_create_topic('busy', partitions => 8);
SELECT evproc_subscribe('busy', 'busy', 'record_busy(evproc.event[])', batch_size => 50,
                        run_as => 'app');
SELECT count(evproc_create_topic('idle.' || n, partitions => 4)) FROM generate_series(1, $topics) n;
SELECT count(evproc_subscribe('idle.' || n, 'idle.' || n, 'record_idle(evproc.event[])',
                              run_as => 'app'))
  FROM generate_series(1, $topics) n;
SELECT count(evproc_pause('idle.' || n)) FROM generate_series(1, $topics) n WHERE n % 3 = 0;
});

is( sql_value(
		$node,
		"SELECT count(*) FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id "
		  . "WHERE s.paused AND p.ready"),
	'0',
	'(a) pausing takes the units out of the ready ones at once');

my $all_idle = "SELECT count(*) = 0 FROM evproc.progress WHERE ready";
ok(wait_until($node, $all_idle, timeout => 120, diag => 'SELECT count(*) FROM evproc.progress WHERE ready'),
	'(a) every unit ends not ready (each looked at once, nothing to deliver)');

# (b) One event on an idle subscription's partition, then on a partition of each of 20
# others.
$node->safe_psql('postgres', q{SELECT evproc_enqueue('idle.7', 'k7', '{"n": 1}')});
ok(wait_until($node, "SELECT count(*) = 1 FROM seen WHERE sub = 'idle.7'", timeout => 30),
	'(b) a commit on an idle unit\'s partition is delivered');
$node->safe_psql('postgres',
	q{SELECT count(evproc_enqueue('idle.' || n, 'k' || n, '{"n": 1}')) FROM generate_series(1, 61) n WHERE n % 3 <> 0});
ok(wait_until($node, "SELECT count(DISTINCT sub) = 41 FROM seen WHERE sub LIKE 'idle.%'", timeout => 30),
	'(b) commits on 40 more idle units are delivered');
ok(wait_until($node, $all_idle, timeout => 30), '(b) and the units are not ready again');

# (c) A backlog on the busy subscription, 200 keys with increasing n per key, and a
# worker killed while it runs a batch.
$node->safe_psql(
	'postgres', q{
SELECT cardinality(evproc_enqueue_batch('busy',
  (SELECT jsonb_agg(jsonb_build_object('key', 'b' || (n % 200), 'payload', jsonb_build_object('n', n)))
     FROM generate_series(1, 3000) AS n)))});
ok( wait_until(
		$node,
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'evproc worker' "
		  . "AND query LIKE 'evproc: subscription busy %'",
		timeout => 60),
	'(c) a batch of the busy subscription is in flight');
my ($victim) = sql_value($node,
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc worker' "
	  . "AND query LIKE 'evproc: subscription busy %' LIMIT 1");
# And an event on an idle unit, committed just before the crash.
$node->safe_psql('postgres', q{SELECT evproc_enqueue('idle.62', 'k8', '{"n": 1}')});
my $log_offset = -s $node->logfile;
kill 'KILL', $victim;
$node->wait_for_log(qr/terminated by signal 9: Killed/, $log_offset);
$node->wait_for_log(qr/evproc launcher started/, $log_offset);
pass('(c) the worker was killed and the server restarted');
ok( wait_until(
		$node, "SELECT count(*) = 3000 FROM seen WHERE sub = 'busy'",
		timeout => 180,
		diag => "SELECT count(*) FROM seen WHERE sub = 'busy'"),
	'(c) after the crash every event of the backlog is delivered');
is( sql_value(
		$node,
		"SELECT (SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id "
		  . "WHERE t.name = 'busy') || '/' || (SELECT count(*) FROM evproc.retry) || '/' "
		  . "|| (SELECT count(*) FROM evproc.dead_letter)"),
	'3000/0/0',
	'(c) exactly once: 3,000 enqueued, none redelivered (no parked or dead event)');
is( sql_value(
		$node,
		"SELECT count(*) FROM (SELECT n, lag(n) OVER (PARTITION BY key ORDER BY seq) AS before "
		  . "FROM seen WHERE sub = 'busy') x WHERE before > n"),
	'0',
	'(c) in order per key');
ok(wait_until($node, "SELECT count(*) = 1 FROM seen WHERE sub = 'idle.62'", timeout => 60),
	'(c) the idle unit\'s event committed before the crash is delivered');
ok(wait_until($node, $all_idle, timeout => 120), '(c) every unit ends not ready again');

# (d) Pause an idle subscription, publish to it, resume.
$node->safe_psql('postgres', q{SELECT evproc_pause('idle.64')});
$node->safe_psql('postgres',
	q{SELECT count(evproc_enqueue('idle.64', 'p' || n, '{"n": 1}')) FROM generate_series(1, 20) n});
# The lazy tick (once a second) stamps the slots of commits no subscription awaits: wait
# past two of them.
sleep 3;
is( sql_value(
		$node,
		"SELECT (SELECT count(*) FROM seen WHERE sub = 'idle.64') || '/' || "
		  . "(SELECT count(*) FROM evproc.progress p JOIN evproc.subscription s "
		  . "ON s.id = p.subscription_id WHERE s.name = 'idle.64' AND p.ready)"),
	'0/0',
	'(d) a paused subscription gets nothing and its units stay not ready');
$node->safe_psql('postgres', q{SELECT evproc_resume('idle.64')});
ok(wait_until($node, "SELECT count(*) = 20 FROM seen WHERE sub = 'idle.64'", timeout => 30),
	'(d) resuming delivers what came in while paused');
ok(wait_until($node, $all_idle, timeout => 30), '(d) and its units end not ready');

$node->stop;
done_testing();
