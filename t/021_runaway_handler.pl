# A handler cannot outlive its timeout or a cancel (issue 12.1).
#
# (a) A handler that catches query_canceled and returns after its handler_timeout
#     fails all the same: 57014, charged (max_attempts 1: a dead letter), its effects
#     rolled back.
# (b) One that catches the cancel of pg_cancel_backend and returns: the batch rolls back
#     and runs again (the operator's doing, not charged), as for one that does not catch.
# (c) One that never returns (it loops over pg_sleep, catching every cancel): past its
#     handler_timeout plus the grace period its worker ends itself, the launcher starts
#     it again, and the next batch fails the event with 57014: with max_attempts 1 a
#     dead letter, within timeout + grace (+ the restart). Meanwhile another
#     subscription's events keep flowing, and after it the key's next event is delivered.
# (d) evproc.max_handler_timeout caps a subscription's handler_timeout (here a day).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('runaway', "evproc.workers = 3\nevproc.handler_grace = '2s'\n");

$node->safe_psql(
	'postgres', q{
CREATE TABLE effects (sub text NOT NULL, event_id bigint NOT NULL, attempt int NOT NULL);
GRANT INSERT ON effects TO app;
CREATE SEQUENCE runs;  -- counts handler runs, committed or not
GRANT USAGE ON SEQUENCE runs TO app;
-- Catches every cancel; n = how many half-second sleeps (NULL: for ever).
CREATE FUNCTION stubborn(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i int := 0;
    sleeps int := (e.payload->>'sleeps')::int;
BEGIN
    PERFORM nextval('runs');
    WHILE sleeps IS NULL OR i < sleeps LOOP
        BEGIN
            PERFORM pg_sleep(0.5);
        EXCEPTION WHEN query_canceled THEN
            NULL;
        END;
        i := i + 1;
    END LOOP;
    INSERT INTO effects VALUES (e.topic, e.id, e.attempt);
END $$;
CREATE FUNCTION plain(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO effects VALUES (e.topic, e.id, e.attempt);
END $$;
});

# ---------------------------------------------------------------------------
# (a) returns after its timeout, having caught the cancel
# ---------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('late', partitions => 1);
SELECT evproc_subscribe('late', 'late', 'stubborn', max_attempts => 1, handler_timeout => '500 ms',
                        failure_budget => 1, run_as => 'app');
SELECT evproc_enqueue('late', 'k', '{"sleeps": 3}');
});
ok( wait_until(
		$node, "SELECT dead_letters = 1 FROM evproc_subscriptions WHERE name = 'late'",
		timeout => 30),
	'caught timeout: the event is a dead letter');
is( sql_value(
		$node, q{SELECT attempts || '|' || sqlstate || '|' || message || '|' || detail
                   FROM evproc_dead_letters WHERE subscription = 'late'}),
	'1|57014|canceling statement due to statement timeout|The handler returned after its handler_timeout of 500 ms.',
	'caught timeout: 57014 after 1 attempt, saying the handler returned after its timeout');
is(sql_value($node, "SELECT count(*) FROM effects WHERE sub = 'late'"), '0',
	'caught timeout: its effects were rolled back');

# ---------------------------------------------------------------------------
# (b) an operator's cancel, caught
# ---------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('cancelled', partitions => 1);
SELECT evproc_subscribe('cancelled', 'cancelled', 'stubborn', max_attempts => 1,
                        handler_timeout => '5 minutes', failure_budget => 1, run_as => 'app');
SELECT setval('runs', 1, false);
SELECT evproc_enqueue('cancelled', 'k', '{"sleeps": 6}');
});
my $sleeping = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc worker' "
  . "AND query LIKE 'evproc: subscription cancelled %' AND wait_event = 'PgSleep'";
ok(wait_until($node, "SELECT EXISTS ($sleeping)", timeout => 30), 'caught cancel: the handler runs');
is(sql_value($node, "SELECT bool_and(pg_cancel_backend(pid)) FROM ($sleeping) w"),
	't', 'caught cancel: its worker is cancelled');
ok( wait_until(
		$node, "SELECT count(*) = 1 FROM effects WHERE sub = 'cancelled'", timeout => 30),
	'caught cancel: the event is delivered when the batch runs again');
is( sql_value(
		$node, q{SELECT (SELECT attempt FROM effects WHERE sub = 'cancelled') || '/' || last_value || '/'
                 || (SELECT dead_letters || '/' || state FROM evproc_subscriptions WHERE name = 'cancelled')
                   FROM runs}),
	'1/2/0/active',
	'caught cancel: the first run rolled back, delivered at the first attempt by the second, no dead letter');

# ---------------------------------------------------------------------------
# (c) never returns
# ---------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('runaway', partitions => 1);
SELECT evproc_subscribe('runaway', 'runaway', 'stubborn', max_attempts => 1,
                        handler_timeout => '1 second', failure_budget => 1, run_as => 'app');
SELECT evproc_create_topic('flowing', partitions => 2);
SELECT evproc_subscribe('flowing', 'flowing', 'plain', run_as => 'app');
});
my $log_offset = -s $node->logfile;
my $started = time();
$node->safe_psql('postgres', q{SELECT evproc_enqueue('runaway', 'k', '{}')});
my $stuck = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc worker' "
  . "AND query LIKE 'evproc: subscription runaway %' AND wait_event = 'PgSleep'";
ok(wait_until($node, "SELECT EXISTS ($stuck)", timeout => 30), 'runaway: the handler runs');
my $stuck_pid = sql_value($node, $stuck);
# While it runs, another subscription's events are delivered one by one.
my $flowed = 0;
for my $n (1 .. 8)
{
	$node->safe_psql('postgres', "SELECT evproc_enqueue('flowing', 'k$n', '{}')");
	$flowed++
	  if wait_until($node,
		"SELECT count(*) = $n FROM effects WHERE sub = 'flowing'", timeout => 5);
	last if sql_value($node, "SELECT dead_letters FROM evproc_subscriptions WHERE name = 'runaway'") ne '0';
}
ok($flowed >= 1 && $flowed == sql_value($node, "SELECT count(*) FROM effects WHERE sub = 'flowing'"),
	"runaway: another subscription's events flowed meanwhile ($flowed)");
ok( wait_until(
		$node, "SELECT dead_letters = 1 FROM evproc_subscriptions WHERE name = 'runaway'",
		timeout => 60),
	'runaway: the event is a dead letter');
my $elapsed = time() - $started;
# handler_timeout 1 s + grace 2 s, then the launcher restarts the worker and a batch runs.
ok($elapsed < 1 + 2 + 10, sprintf('runaway: dead within timeout + grace (%.1f s)', $elapsed));
is( sql_value(
		$node, q{SELECT attempts || '|' || sqlstate || '|' || message FROM evproc_dead_letters
                  WHERE subscription = 'runaway'}),
	'1|57014|canceling statement due to statement timeout: the handler ran past its handler_timeout of 1000 ms plus evproc.handler_grace, and its worker was ended',
	'runaway: 57014 after 1 attempt');
is(sql_value($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $stuck_pid"), '0',
	'runaway: its worker is gone');
ok($node->log_contains(qr/ran past its handler_timeout plus 2000 ms; its worker ended itself, and its events are charged an attempt/, $log_offset),
	'runaway: the log says why the worker ended');
# The key goes on, and so does the subscription.
$node->safe_psql('postgres',
	q{SELECT evproc_enqueue('runaway', 'k', '{"sleeps": 0}')});
ok(wait_until($node, "SELECT count(*) = 1 FROM effects WHERE sub = 'runaway'", timeout => 30),
	'runaway: the next event of the key is delivered');
is(sql_value($node, "SELECT state FROM evproc_subscriptions WHERE name = 'runaway'"), 'active',
	'runaway: the subscription is still active');

# ---------------------------------------------------------------------------
# (d) the server's cap
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', q{ALTER SYSTEM SET evproc.max_handler_timeout = '700ms'});
$node->reload;
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('capped', partitions => 1);
CREATE FUNCTION sleepy(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(4);
    INSERT INTO effects VALUES (e.topic, e.id, e.attempt);
END $$;
SELECT evproc_subscribe('capped', 'capped', 'sleepy', max_attempts => 1, handler_timeout => '1 day',
                        failure_budget => 1, run_as => 'app');
SELECT evproc_enqueue('capped', 'k', '{}');
});
ok( wait_until(
		$node, "SELECT dead_letters = 1 FROM evproc_subscriptions WHERE name = 'capped'",
		abort_if => "SELECT count(*) > 0 FROM effects WHERE sub = 'capped'", timeout => 30),
	'cap: a handler_timeout of a day is cut to evproc.max_handler_timeout');
is( sql_value(
		$node, q{SELECT sqlstate || '|' || message FROM evproc_dead_letters WHERE subscription = 'capped'}),
	'57014|canceling statement due to statement timeout', 'cap: 57014');

$node->stop;
done_testing();
