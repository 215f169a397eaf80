# Consumers outside the database (issue 14, docs/consumers.md): the example consumers
# of examples/consumers -- Python (psycopg 3) and Node (pg) -- drain pull subscriptions
# of one topic beside a SQL handler subscription, on a real server, straight and through
# PgBouncer in transaction mode (each statement may run on another server connection:
# nothing of a lease is session state). Two consumers share each subscription. Some
# events fail on every attempt: they end in the dead letters with the consumer's error,
# and the later events of their key still come, in order. At the end every event was
# handled once or is a dead letter, per key in commit order, and SIGTERM stops every
# consumer cleanly.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use EvprocConsumers;

ok(node_modules_ready(), 'the node example\'s dependencies are installed (npm ci)');

my $node = evproc_node('pull');
my @subscriptions = qw(py_direct node_direct py_bouncer node_bouncer);
my $setup = q{
SELECT evproc_create_topic('orders', partitions => 8);
CREATE ROLE consumer LOGIN IN ROLE app;
CREATE TABLE handled (seq bigserial, event_id bigint, key text);
CREATE FUNCTION record(e evproc.event) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO handled (event_id, key) VALUES (e.id, e.key) $$;
GRANT INSERT ON handled TO app;
GRANT USAGE ON SEQUENCE handled_seq_seq TO app;
SELECT evproc_subscribe('sql_handler', 'orders', 'record', run_as => 'app');
};
for my $sub (@subscriptions)
{
	$setup .= qq{
CREATE TABLE fx_$sub (seq bigserial, event_id bigint, key text, payload jsonb, attempt int);
GRANT INSERT ON fx_$sub TO consumer;
GRANT USAGE ON SEQUENCE fx_${sub}_seq_seq TO consumer;
SELECT evproc_subscribe('$sub', 'orders', NULL, run_as => 'app', max_attempts => 3,
                        backoff_base => '20 ms', backoff_cap => '50 ms', failure_budget => 1,
                        lease_duration => '30 seconds');
};
}
$node->safe_psql('postgres', $setup);
is( $node->safe_psql('postgres',
		"SELECT string_agg(name || ':' || handler_form, ',' ORDER BY name) FROM evproc_subscriptions"),
	'node_bouncer:pull,node_direct:pull,py_bouncer:pull,py_direct:pull,sql_handler:event',
	'four pull subscriptions beside a handler subscription');

my $bouncer = start_pgbouncer($node, "${PostgreSQL::Test::Utils::tmp_check}/pgbouncer_030",
	'consumer');
my $direct = { host => $node->host, port => $node->port, user => 'consumer', dbname => 'postgres' };
my $pooled = { host => '127.0.0.1', port => $bouncer->{port}, user => 'consumer', dbname => 'postgres' };
my $logdir = $PostgreSQL::Test::Utils::log_path;
my %env = (EVPROC_BATCH => 50, EVPROC_WAIT => 2);
my @consumers;
for my $n (1, 2)
{
	push @consumers,
	  start_consumer('python', $direct, 'py_direct', 'fx_py_direct', "$logdir/py_direct_$n.log", %env),
	  start_consumer('node', $direct, 'node_direct', 'fx_node_direct', "$logdir/node_direct_$n.log", %env),
	  start_consumer('python', $pooled, 'py_bouncer', 'fx_py_bouncer', "$logdir/py_bouncer_$n.log", %env),
	  start_consumer('node', $pooled, 'node_bouncer', 'fx_node_bouncer', "$logdir/node_bouncer_$n.log", %env);
}

# The consumers wait in their reads (long poll) while nothing is published.
ok( wait_until($node,
		"SELECT count(*) >= 8 FROM pg_stat_activity WHERE query LIKE '%evproc_read%' AND state = 'active' AND pid <> pg_backend_pid()"),
	'the consumers wait for events in their reads');

# Published over time, in many transactions; payload n = 0 mod 97 fails every attempt.
my $published = 3000;
for (my $lo = 1; $lo <= $published; $lo += 100)
{
	my $hi = $lo + 99;
	$node->safe_psql('postgres', qq{
SELECT cardinality(evproc_enqueue_batch('orders',
  (SELECT jsonb_agg(jsonb_build_object('key', 'k' || (n % 37),
                                       'payload', jsonb_build_object('n', n, 'fail', n % 97 = 0)))
     FROM generate_series($lo, $hi) AS n)))});
	select(undef, undef, undef, 0.02);
}
my $failing = int($published / 97);

for my $sub (@subscriptions)
{
	ok( wait_until(
			$node,
			"SELECT (SELECT count(*) FROM fx_$sub) + (SELECT count(*) FROM evproc_dead_letters WHERE subscription = '$sub') >= $published",
			timeout => 180,
			diag => "SELECT * FROM evproc_leases"),
		"$sub: drained");
}
ok(wait_until($node, "SELECT count(*) >= $published FROM handled"), 'the handler subscription too');

# Graceful shutdown: every consumer finishes its batch and exits 0 on SIGTERM.
for my $consumer (@consumers)
{
	is(stop_consumer($consumer, 60), 0, "$consumer->{lang} consumer exits cleanly on SIGTERM");
}
for my $sub (@subscriptions)
{
	check_drained($node, $sub, "fx_$sub", $published, $failing);
	is( $node->safe_psql('postgres',
			"SELECT string_agg(DISTINCT sqlstate || ' ' || (message LIKE 'asked to fail%')::text || ' ' || attempts, ',')
			   FROM evproc_dead_letters WHERE subscription = '$sub'"),
		'EV002 true 3',
		"$sub: dead letters carry the consumer's error after max_attempts");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM evproc.lease'), '0', 'no lease is left');
my $pooled_statements = slurp_file("$bouncer->{dir}/pgbouncer.log");
ok($pooled_statements =~ /login attempt: db=postgres user=consumer/,
	'the pooled consumers went through PgBouncer');

stop_pgbouncer($bouncer);
$node->stop;
done_testing();
