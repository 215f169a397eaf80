# Monitoring and backpressure with real workers: the shared-memory counters follow
# a live flow (published, delivered, latency percentiles, worker status), a paused
# subscription makes its topic fill up to max_pending (53400), publishing resumes by
# itself once the subscription is resumed and catches up, and after an immediate
# restart the launcher counts the backlog again so lag and max_pending hold.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('monitoring');

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('flow', partitions => 4, max_pending => 300);
CREATE TABLE handled (event_id bigint PRIMARY KEY);
GRANT INSERT ON handled TO app;
CREATE FUNCTION handle(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO handled SELECT e.id FROM unnest(events) AS e
$$;
SELECT evproc_subscribe('flow_sub', 'flow', 'handle', batch_size => 50, run_as => 'app');
});
ok( wait_until(
		$node,
		"SELECT lag_events IS NOT NULL FROM evproc_subscription_stats WHERE subscription = 'flow_sub'",
		timeout => 3),
	'the launcher registers a new subscription in the metrics at once');

# A live flow: 10 transactions of 20 events.
for my $b (1 .. 10)
{
	$node->safe_psql('postgres',
		"SELECT count(evproc_enqueue('flow', 'k' || (n % 7), jsonb_build_object('n', n))) FROM generate_series(1, 20) n"
	);
}
ok(wait_until($node, 'SELECT count(*) = 200 FROM handled'), 'every event handled');
ok( wait_until(
		$node,
		"SELECT delivered = 200 AND lag_events = 0 FROM evproc_subscription_stats WHERE subscription = 'flow_sub'"
	),
	'delivered counter and lag follow the flow');
is( sql_value(
		$node,
		"SELECT latency_samples = 200 AND latency_p50_ms > 0 AND latency_p50_ms <= latency_p95_ms
		    AND latency_p95_ms <= latency_p99_ms AND delivered_per_second > 0
		   FROM evproc_subscription_stats WHERE subscription = 'flow_sub'"),
	't',
	'latency percentiles over the last minute, ordered, and a delivery rate');
is( sql_value(
		$node,
		"SELECT published || '/' || CASE WHEN published_per_second > 0 THEN 't' ELSE 'f' END FROM evproc_topic_stats WHERE topic = 'flow'"),
	'200/t',
	'published counter and rate');

# Workers: as many as evproc.workers, with the pids PostgreSQL reports, and batches.
my @pids = worker_pids($node);
is( sql_value($node, 'SELECT string_agg(pid::text, chr(10) ORDER BY pid) FROM evproc_workers'),
	join("\n", @pids),
	'evproc_workers lists the running workers');
is(sql_value($node, 'SELECT sum(batches) > 0 AND sum(events) = 200 FROM evproc_workers'),
	't', 'workers count their batches and events');
is(sql_value($node, "SELECT count(*) FROM evproc_metrics WHERE name = 'evproc_workers'"),
	'1', 'the metrics view counts workers by state');

# A monitoring role (pg_monitor, nothing else) reads the views.
$node->safe_psql('postgres', 'CREATE ROLE watcher LOGIN IN ROLE pg_monitor');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM evproc_subscription_stats WHERE lag_seconds >= 0;
		 SELECT count(*) > 0 FROM evproc_metrics; SELECT count(*) FROM evproc_workers;
		 SELECT published FROM evproc_topic_stats WHERE topic = 'flow'",
		extra_params => [ '-U', 'watcher' ]),
	"1
t
2
200",
	'pg_monitor reads the monitoring views');

# Backpressure: paused, the subscription lets the topic fill up to max_pending.
$node->safe_psql('postgres', "SELECT evproc_pause('flow_sub')");
my ($accepted, $refused, $last_error) = (0, 0, '');
for my $i (1 .. 40)
{
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT count(evproc_enqueue('flow', 'p' || n, '{}')) FROM generate_series(1, 10) n");
	if ($rc == 0) { $accepted += 10; }
	else { $refused++; $last_error = $err; }
}
is($accepted, 300, 'a paused subscription lets exactly max_pending events in');
is($refused, 10, 'then every publish is refused');
like($last_error, qr/topic "flow" is full: 300 events pending, max_pending is 300/,
	'with the depth and the limit in the message');
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT evproc_enqueue('flow', 'x', '{}')", on_error_stop => 0,
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/53400/, 'SQLSTATE 53400');
is(sql_value($node, "SELECT rejected_full >= 11 FROM evproc_topic_stats WHERE topic = 'flow'"),
	't', 'rejections are counted');

# Restart with the backlog: the counters are rebuilt by counting once.
$node->stop('immediate');
$node->start;
ok( wait_until(
		$node,
		"SELECT lag_events = 300 FROM evproc_subscription_stats WHERE subscription = 'flow_sub'"),
	'after a crash restart the backlog is counted again');
($rc, $out, $err) = $node->psql('postgres', "SELECT evproc_enqueue('flow', 'x', '{}')");
like($err, qr/is full: 300 events pending/, 'and max_pending still holds');

# Resumed, the subscription drains the topic and publishing resumes by itself.
$node->safe_psql('postgres', "SELECT evproc_resume('flow_sub')");
ok(wait_until($node, 'SELECT count(*) = 500 FROM handled'), 'the backlog is handled');
ok( wait_until(
		$node,
		"SELECT lag_events = 0 FROM evproc_subscription_stats WHERE subscription = 'flow_sub'"),
	'lag back to zero');
($rc, $out, $err) = $node->psql('postgres', "SELECT evproc_enqueue('flow', 'x', '{}') > 0");
is($out, 't', 'publishing resumed');

# The postgres_exporter query file's queries run and return what it declares.
my $check = "$FindBin::RealBin/../scripts/check-exporter-queries.sh";
my $check_out = `bash $check -h @{[ $node->host ]} -p @{[ $node->port ]} -d postgres 2>&1`;
is($? >> 8, 0, 'examples/monitoring/postgres_exporter.yml matches the views')
  or diag $check_out;

# A re-created extension numbers topics from 1 again: its counters start from zero.
my $old_id = sql_value($node, "SELECT id FROM evproc.topic WHERE name = 'flow'");
$node->safe_psql('postgres', 'DROP EXTENSION evproc CASCADE; CREATE EXTENSION evproc');
$node->safe_psql('postgres',
	"SELECT evproc_create_topic('again', partitions => 1); SELECT evproc_enqueue('again', 'k', '{}')");
is(sql_value($node, "SELECT id FROM evproc.topic WHERE name = 'again'"), $old_id,
	'the new topic has the old one\'s id');
is(sql_value($node, "SELECT published FROM evproc_topic_stats WHERE topic = 'again'"),
	'1', 'and none of its counts');

$node->stop;
done_testing();
