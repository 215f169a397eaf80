# The circuit breaker judges the subscription, not the worker: its failures over the
# last minute are counted across all workers (the shared per-subscription counters), so
# it trips at the same failure rate, after about breaker_min_attempts attempts, whether
# one worker or eight deliver the subscription's partitions.
#
# Two subscriptions of one topic with 8 partitions, each with failure_budget 0.5 and
# breaker_min_attempts 40, every failure dead-lettered at once (max_attempts 1, keys
# never blocked): 'under' fails one event in four and must never trip; 'over' fails
# every event and must trip with about 40 attempts made, not about 40 per worker. Run
# with evproc.workers = 1 and = 8.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $events = 400;
my $min_attempts = 40;

for my $workers (1, 8)
{
	my $node = evproc_node("breaker_$workers", "evproc.workers = $workers\n");
	$node->safe_psql(
		'postgres', q{
SELECT evproc_create_topic('brk', partitions => 8);
CREATE TABLE handled (sub text, n int);
CREATE FUNCTION brk_under(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (e.payload->>'n')::int % 4 = 0 THEN
        RAISE EXCEPTION 'one in four fails';
    END IF;
    INSERT INTO handled VALUES ('under', (e.payload->>'n')::int);
END $$;
CREATE FUNCTION brk_over(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'every event fails';
END $$;
GRANT INSERT ON handled TO app;
SELECT evproc_subscribe(s, 'brk', 'brk_' || s, batch_size => 5, max_attempts => 1,
                        on_dead_letter => 'skip', failure_budget => 0.5,
                        breaker_min_attempts => 40, breaker_cooldown => '1 hour', run_as => 'app')
  FROM unnest(ARRAY['under', 'over']) s;
SELECT evproc_pause(s) FROM unnest(ARRAY['under', 'over']) s;
});
	# The launcher registers new subscriptions in shared memory every second.
	ok( wait_until(
			$node,
			'SELECT count(*) = 2 FROM evproc.subscription_stats() st'
			  . ' JOIN evproc.subscription s ON s.id = st.subscription_id',
			timeout => 30),
		"workers=$workers: both subscriptions registered in shared memory");
	$node->safe_psql(
		'postgres', qq{
SELECT cardinality(evproc_enqueue_batch('brk',
  (SELECT jsonb_agg(jsonb_build_object('key', 'k' || n, 'payload', jsonb_build_object('n', n)))
     FROM generate_series(1, $events) n)));
SELECT evproc_resume(s) FROM unnest(ARRAY['under', 'over']) s;
});

	my $dead = q{SELECT count(*) FROM evproc_dead_letters WHERE subscription = };
	ok( wait_until(
			$node,
			"SELECT (SELECT count(*) FROM handled) + ($dead 'under') = $events",
			abort_if => "SELECT state <> 'active' FROM evproc_subscriptions WHERE name = 'under'"),
		"workers=$workers: 'under' handled or dead-lettered every event");
	is(sql_value($node, "SELECT state FROM evproc_subscriptions WHERE name = 'under'"),
		'active', "workers=$workers: 'under' (25% failed, budget 50%) never tripped");
	is(sql_value($node, "$dead 'under'"), $events / 4, "workers=$workers: 'under' lost one in four");

	ok( wait_until(
			$node, "SELECT state = 'cooling down' FROM evproc_subscriptions WHERE name = 'over'",
			timeout => 60),
		"workers=$workers: 'over' (every event failed) tripped its breaker");
	like(
		sql_value($node, "SELECT reason FROM evproc_subscriptions WHERE name = 'over'"),
		qr/^circuit breaker: (\d+) of \1 deliveries failed in the last minute \(budget 50%\)/,
		"workers=$workers: the reason counts the subscription's failures");
	# Batches that were running when it tripped still commit; then nothing is claimed.
	sleep 2;
	my $attempts = sql_value($node, "$dead 'over'");
	cmp_ok($attempts, '>=', $min_attempts,
		"workers=$workers: not before breaker_min_attempts ($attempts attempts)");
	# Each worker judges at the end of its batch what the others have committed plus
	# its own batch, so a trip comes at most one batch of 5 past the minimum, plus what
	# the other workers judged before it and had not committed yet (up to 7 x 5), plus
	# the batches they claimed before the trip committed (up to 7 x 5 more): at most 115
	# with 8 workers. A breaker per worker would wait for about 40 attempts on each of
	# them (about 320 with 8 workers) before any one trips.
	cmp_ok($attempts, '<=', $min_attempts + 5 + 2 * 5 * ($workers - 1),
		"workers=$workers: tripped after about breaker_min_attempts attempts in all");
	is(sql_value($node, "$dead 'over'"), $attempts, "workers=$workers: nothing claimed while cooling down");
	$node->stop;
}

done_testing();
