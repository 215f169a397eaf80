# Handler timeout and handler privileges.
#
# (a) A handler that sleeps 5 s on one event, with handler_timeout 200 ms and
#     max_attempts 1: that event is a dead letter with SQLSTATE 57014, every
#     other event is delivered. (The slow event has a key of its own: events
#     queued behind a key whose head dies at once are 002_poison.pl's matter.)
# (a2) pg_cancel_backend of a worker while its handler runs is the operator's doing,
#     not the handler's failure: the batch rolls back and runs again, and no attempt
#     is charged (with max_attempts 1 a charged event would be a dead letter at once).
# (b) Handlers run as the subscription's owner, never as a superuser: they see
#     current_user = the owner, cannot SET ROLE / SET SESSION AUTHORIZATION
#     back, cannot use superuser-only functions; a handler denied access to a
#     table pauses its subscription; an owner made superuser later pauses it;
#     subscribing for a superuser owner is refused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $node = evproc_node('timeout_security');

# ---------------------------------------------------------------------------
# (a) handler_timeout
# ---------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('slowpoke', partitions => 4);
CREATE TABLE quick (event_id bigint PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION maybe_slow(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (e.payload->>'n')::int = 13 THEN
        PERFORM pg_sleep(5);
    END IF;
    INSERT INTO quick VALUES (e.id, (e.payload->>'n')::int);
END $$;
GRANT SELECT, INSERT ON quick TO app;
SELECT evproc_subscribe('slowpoke', 'slowpoke', 'maybe_slow', batch_size => 50,
                        max_attempts => 1, handler_timeout => '200 ms', failure_budget => 1,
                        run_as => 'app');
SELECT cardinality(evproc_enqueue_batch('slowpoke',
  (SELECT jsonb_agg(jsonb_build_object('key', CASE WHEN n = 13 THEN 'slow' ELSE 'k:' || (n % 10) END,
                                       'payload', jsonb_build_object('n', n)) ORDER BY n)
     FROM generate_series(1, 100) AS n)));
});

ok( wait_until(
		$node,
		"SELECT delivered + dead_letters >= 100 FROM evproc_subscriptions WHERE name = 'slowpoke'",
		abort_if => "SELECT state <> 'active' FROM evproc_subscriptions WHERE name = 'slowpoke'",
		timeout => 30,
		diag => 'SELECT key, event_id, is_head, blocked, attempt, next_attempt_at, seq FROM evproc.retry ORDER BY seq'),
	'timeout: every event delivered or dead');
is( sql_value(
		$node, q{SELECT (payload->>'n') || '|' || attempts || '|' || sqlstate || '|' || message
                   FROM evproc_dead_letters WHERE subscription = 'slowpoke'}),
	'13|1|57014|canceling statement due to statement timeout',
	'timeout: the slow event is the only dead letter, 57014 after 1 attempt');
is(sql_value($node, 'SELECT count(*) FROM quick'), '99', 'timeout: the 99 others were handled');
is(sql_value($node, 'SELECT count(*) FROM quick WHERE n = 13'), '0',
	'timeout: the slow event left no effect');
is( sql_value(
		$node, "SELECT delivered || '/' || parked FROM evproc_subscriptions WHERE name = 'slowpoke'"),
	'99/0',
	'timeout: delivered 99, nothing parked');

# ---------------------------------------------------------------------------
# (a2) an operator's cancel
# ---------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('cancelled', partitions => 1);
CREATE SEQUENCE stall_calls;  -- counts handler runs, committed or not
CREATE TABLE unstalled (event_id bigint NOT NULL, attempt int NOT NULL);
CREATE FUNCTION stall_once(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('stall_calls') = 1 THEN
        PERFORM pg_sleep(60);
    END IF;
    INSERT INTO unstalled VALUES (e.id, e.attempt);
END $$;
GRANT USAGE ON SEQUENCE stall_calls TO app;
GRANT INSERT ON unstalled TO app;
SELECT evproc_subscribe('cancelled', 'cancelled', 'stall_once', max_attempts => 1,
                        handler_timeout => '5 minutes', run_as => 'app');
SELECT evproc_enqueue('cancelled', 'k', '{"n": 1}');
});
my $stalled = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'evproc worker' AND wait_event = 'PgSleep'";
ok(wait_until($node, "SELECT EXISTS ($stalled)", timeout => 30), 'cancel: the handler stalls');
my $log_offset = -s $node->logfile;
is(sql_value($node, "SELECT pg_cancel_backend(pid) FROM ($stalled) w"), 't', 'cancel: the worker is cancelled');
ok(wait_until($node, 'SELECT count(*) = 1 FROM unstalled', timeout => 30),
	'cancel: the event is delivered when the batch runs again');
is( sql_value(
		$node, q{SELECT (SELECT attempt FROM unstalled) || '/' || last_value || '/'
                 || (SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'cancelled') || '/'
                 || (SELECT state FROM evproc_subscriptions WHERE name = 'cancelled')
                   FROM stall_calls}),
	'1/2/0/active',
	'cancel: delivered at its first attempt, the handler ran twice, no dead letter, still active');
ok($node->log_contains(qr/ERROR:  canceling statement due to user request/, $log_offset),
	'cancel: the log says the batch was cancelled');

# ---------------------------------------------------------------------------
# (b) privileges
# ---------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('sec', partitions => 2);
CREATE TABLE sec_log (event_id bigint NOT NULL, what text NOT NULL, result text);
CREATE FUNCTION whoami(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    attempt text;
BEGIN
    INSERT INTO sec_log VALUES (e.id, 'current_user', current_user);
    INSERT INTO sec_log VALUES (e.id, 'rolsuper',
                                (SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user));
    -- Informational: the GUC reports the session user (the worker's), as in
    -- PostgreSQL's own security-restricted operations.
    INSERT INTO sec_log VALUES (e.id, 'is_superuser', current_setting('is_superuser'));
    FOREACH attempt IN ARRAY ARRAY['SET ROLE postgres', 'SET SESSION AUTHORIZATION postgres',
                                   'RESET ROLE', 'SET ROLE NONE',
                                   'SELECT set_config(''role'', ''postgres'', false)',
                                   'SELECT pg_read_file(''postgresql.conf'')',
                                   'ALTER ROLE app SUPERUSER'] LOOP
        BEGIN
            EXECUTE attempt;
            INSERT INTO sec_log VALUES (e.id, attempt, 'succeeded as ' || current_user);
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO sec_log VALUES (e.id, attempt, SQLSTATE || ': ' || SQLERRM);
        END;
    END LOOP;
    INSERT INTO sec_log VALUES (e.id, 'current_user after', current_user);
END $$;
GRANT INSERT ON sec_log TO app;
});

my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT evproc_subscribe('as_super', 'sec', 'whoami', run_as => 'postgres')});
isnt($rc, 0, 'subscribing with a superuser owner fails');
like($err, qr/handlers never run as a superuser/, '... saying handlers never run as a superuser');
($rc, $out, $err) = $node->psql('postgres',
	q{SELECT evproc_subscribe('as_me', 'sec', 'whoami')});
isnt($rc, 0, 'subscribing as the calling superuser (no run_as) fails');
like($err, qr/superuser/, '... for the same reason');

$node->safe_psql(
	'postgres', q{
SELECT evproc_subscribe('sec', 'sec', 'whoami', run_as => 'app', failure_budget => 1);
SELECT evproc_enqueue('sec', 'k:' || n, jsonb_build_object('n', n)) FROM generate_series(1, 5) AS n;
});
ok( wait_until(
		$node, "SELECT delivered = 5 FROM evproc_subscriptions WHERE name = 'sec'",
		abort_if => "SELECT state <> 'active' FROM evproc_subscriptions WHERE name = 'sec'"),
	'security: 5 events handled');
my $log = sql_value($node,
	q{SELECT what, result, count(*) FROM sec_log GROUP BY what, result ORDER BY what, result});
note "what the handler saw and got:\n$log";
is( sql_value(
		$node, q{SELECT string_agg(DISTINCT result, ',') FROM sec_log WHERE what LIKE 'current_user%'}),
	'app',
	'security: current_user is the owner app, before and after the escape attempts');
is(sql_value($node, q{SELECT string_agg(DISTINCT result, ',') FROM sec_log WHERE what = 'rolsuper'}),
	'false', 'security: the current role is not a superuser');
is( sql_value(
		$node, q{SELECT count(*) FROM sec_log
                  WHERE what NOT IN ('current_user', 'current_user after', 'rolsuper', 'is_superuser')}),
	'35',
	'security: 7 escape attempts for each of 5 events');
is( sql_value(
		$node, q{SELECT count(*) FROM sec_log
                  WHERE what NOT IN ('current_user', 'current_user after', 'rolsuper', 'is_superuser')
                    AND result NOT LIKE '42501: %'}),
	'0',
	'security: every escape attempt failed with 42501')
  or diag sql_value($node, q{SELECT DISTINCT what, result FROM sec_log WHERE result NOT LIKE '42501: %'});
is(sql_value($node, q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app'}),
	'f', 'security: app is still not a superuser');

# A handler that reads a table its owner may not read: the subscription pauses
# (the handler is broken, not the events), nothing it wrote survives, nothing
# is charged to the events; after a GRANT and evproc_resume it delivers.
$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('snoop', partitions => 2);
CREATE TABLE secret (s text);
INSERT INTO secret VALUES ('top secret');
CREATE TABLE snoop_log (event_id bigint PRIMARY KEY, s text);
CREATE FUNCTION snoop(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO snoop_log SELECT e.id, (SELECT s FROM secret LIMIT 1) FROM unnest(events) AS e
$$;
GRANT INSERT, SELECT ON snoop_log TO app;
SELECT evproc_subscribe('snoop', 'snoop', 'snoop', run_as => 'app');
SELECT evproc_enqueue('snoop', 'k:' || n, jsonb_build_object('n', n)) FROM generate_series(1, 5) AS n;
});
ok( wait_until(
		$node, "SELECT state = 'paused' FROM evproc_subscriptions WHERE name = 'snoop'",
		timeout => 60),
	'snoop: paused');
my $reason = sql_value($node, "SELECT reason FROM evproc_subscriptions WHERE name = 'snoop'");
like($reason, qr/42501.*permission denied for table secret/, "snoop: reason: $reason");
is(sql_value($node, 'SELECT count(*) FROM snoop_log'), '0', 'snoop: nothing written');
is( sql_value(
		$node, "SELECT delivered || '/' || parked || '/' || dead_letters FROM evproc_subscriptions WHERE name = 'snoop'"),
	'0/0/0',
	'snoop: nothing delivered, parked or dead');
$node->safe_psql('postgres', q{GRANT SELECT ON secret TO app; SELECT evproc_resume('snoop')});
ok( wait_until(
		$node, "SELECT delivered = 5 FROM evproc_subscriptions WHERE name = 'snoop'",
		abort_if => "SELECT state <> 'active' FROM evproc_subscriptions WHERE name = 'snoop'"),
	'snoop: after GRANT and resume, all 5 delivered');
is(sql_value($node, q{SELECT count(*) FROM snoop_log WHERE s = 'top secret'}), '5',
	'snoop: each event handled once');

# An owner that becomes a superuser after subscribing: the subscription pauses
# before its handler runs again.
$node->safe_psql(
	'postgres', q{
CREATE ROLE app2;
GRANT USAGE ON SCHEMA evproc TO app2;
SELECT evproc_create_topic('promo', partitions => 1);
CREATE TABLE promo_log (event_id bigint PRIMARY KEY, who text, su text);
CREATE FUNCTION promo(e evproc.event) RETURNS void LANGUAGE sql AS $$
    INSERT INTO promo_log VALUES (e.id, current_user,
                                  (SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user))
$$;
GRANT INSERT ON promo_log TO app2;
SELECT evproc_subscribe('promo', 'promo', 'promo', run_as => 'app2');
SELECT evproc_enqueue('promo', 'a', '{}');
});
ok( wait_until(
		$node, "SELECT delivered = 1 FROM evproc_subscriptions WHERE name = 'promo'"),
	'promo: first event delivered');
$node->safe_psql(
	'postgres', q{
ALTER ROLE app2 SUPERUSER;
SELECT evproc_enqueue('promo', 'b', '{}');
});
ok( wait_until(
		$node, "SELECT state = 'paused' FROM evproc_subscriptions WHERE name = 'promo'",
		timeout => 60),
	'promo: paused after its owner became a superuser');
like(sql_value($node, "SELECT reason FROM evproc_subscriptions WHERE name = 'promo'"),
	qr/app2 is now a superuser/, 'promo: the reason says so');
is(sql_value($node, q{SELECT string_agg(who || '/' || su, ',') FROM promo_log}),
	'app2/false', 'promo: the handler ran once, as app2 while it was not a superuser');

$node->stop;
done_testing();
