# Faults under load: publishers publish from several connections while workers
# are killed at random (kill -9), cancelled (pg_cancel_backend), terminated
# (pg_terminate_backend), the server is stopped immediately and started again,
# and a handler is made to time out. At the end, for every subscription:
#
#   enqueued (committed events of its topic) = delivered (events with an effect)
#                                              + dead (its dead letters),
#   no effect applied twice, per-key order held,
#
# and the event log holds exactly the committed events: nothing of a transaction
# rolled back on purpose or cut by a crash, nothing appended twice by a
# publisher that retried a transaction after reconnecting (dedup ids).
#
# Set-up (all names fx*):
#   topic fx.orders (8 partitions): subscriptions fx.healthy (batch handler) and
#     fx.poison (per-event handler that raises for events marked poison;
#     max_attempts 3, on_dead_letter skip: they must end as its dead letters);
#   topic fx.slow (4 partitions): subscription fx.sleepy, whose handler sleeps
#     past its handler_timeout (150 ms) on the first attempt of events marked
#     slow, and on every event while a "stall" fault is on: timeouts are
#     failures that are retried.
# Handlers append (subscription, event id, attempt) to fx_applied, whose seq
# gives the order of application: a second application is a second row, not a
# raised error that would be retried.
#
# Publishers: EVPROC_FAULTS_PUBLISHERS psql sessions, each CALLing fx_publish,
# a procedure that publishes transactions of random size (with a few keyless
# events) until the deadline and rolls some back on purpose. What a
# transaction contains and whether it rolls back are functions of (seed,
# publisher, transaction number), so the test knows which ones rolled back.
# Each event's key row (fx_key) is locked and its counter n incremented in the
# same transaction, so per key n is the commit order, without gaps. The events
# a transaction published are recorded in fx_published in that transaction:
# that table is the truth of what was enqueued. A publisher whose connection
# died reconnects and first re-runs its last committed transaction (a client
# that did not see its COMMIT acknowledged retries it): its dedup ids must
# make it append nothing.
#
# Knobs (environment; bench/faults runs the long form through them):
#   EVPROC_FAULTS_SECONDS     seconds of publishing under faults (default 40)
#   EVPROC_FAULTS_SEED        seed of the fault schedule and of the transactions
#                             (default: chosen at random and printed)
#   EVPROC_FAULTS_PUBLISHERS  publishing connections (default 4)
#   EVPROC_FAULTS_WORKERS     evproc.workers (default 2)
#   EVPROC_FAULTS_PAUSE_MS    mean pause of a publisher between transactions (40)
#   EVPROC_FAULTS_INTERVAL_MS mean time between two faults (1500)
#   EVPROC_FAULTS_MAX_PENDING max_pending of both topics (10000): publishers that
#                             find a topic full (53400) roll back, wait and retry, so
#                             a long run cannot outgrow what the workers deliver
#   EVPROC_FAULTS_DRAIN_TIMEOUT seconds allowed to drain at the end (180)
#   EVPROC_FAULTS_SUMMARY     a file to write the summary into as well
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time usleep);

sub knob
{
	my ($name, $default) = @_;
	my $value = $ENV{$name} // $default;
	die "$name must be a positive integer, got '$value'\n" unless $value =~ /^[1-9][0-9]*$/;
	return $value;
}

my $seconds = knob('EVPROC_FAULTS_SECONDS', 40);
my $seed = knob('EVPROC_FAULTS_SEED', 1 + int(rand(1_000_000_000)));
my $publishers = knob('EVPROC_FAULTS_PUBLISHERS', 4);
my $workers = knob('EVPROC_FAULTS_WORKERS', 2);
my $pause_ms = knob('EVPROC_FAULTS_PAUSE_MS', 40);
my $interval_ms = knob('EVPROC_FAULTS_INTERVAL_MS', 1500);
my $max_pending = knob('EVPROC_FAULTS_MAX_PENDING', 10000);
my $drain_timeout = knob('EVPROC_FAULTS_DRAIN_TIMEOUT', 180);
my $summary_file = $ENV{EVPROC_FAULTS_SUMMARY};
diag "faults under load: seed $seed (EVPROC_FAULTS_SEED=$seed repeats the schedule), "
  . "${seconds}s, $publishers publishers, $workers workers";

# The test framework turns restart_after_crash off; a worker's kill -9 must restart.
my $node = evproc_node(
	'faults', qq{
restart_after_crash = on
evproc.workers = $workers
max_connections = @{[ 30 + $publishers ]}
});
srand($seed);

$node->safe_psql(
	'postgres', qq{
SELECT evproc_create_topic('fx.orders', partitions => 8, max_pending => $max_pending);
SELECT evproc_create_topic('fx.slow', partitions => 4, max_pending => $max_pending);
});
$node->safe_psql(
	'postgres', q{

-- What the publishers committed, event by event: the truth of "enqueued".
CREATE TABLE fx_published (
    pub      int NOT NULL,
    txn      int NOT NULL,
    i        int NOT NULL,
    topic    text NOT NULL,
    key      text,
    n        int NOT NULL,          -- per (topic, key): 1, 2, ... in commit order
    event_id bigint NOT NULL UNIQUE,
    poison   boolean NOT NULL,
    slow     boolean NOT NULL,
    PRIMARY KEY (pub, txn, i)
);
-- One row per (topic, key); publishers lock it and count its events.
CREATE TABLE fx_key (topic text, key text, n int NOT NULL DEFAULT 0, PRIMARY KEY (topic, key));
INSERT INTO fx_key (topic, key)
SELECT 'fx.orders', 'k' || g FROM generate_series(0, 119) g
UNION ALL SELECT 'fx.slow', 'k' || g FROM generate_series(0, 39) g;

-- Every application of an event by a handler, in the order they were applied.
CREATE TABLE fx_applied (
    seq      bigserial PRIMARY KEY,
    sub      text NOT NULL,
    event_id bigint NOT NULL,
    attempt  int NOT NULL,
    pid      int NOT NULL
);
CREATE INDEX ON fx_applied (sub, event_id);
-- Faults the handlers look at: a "stall" makes fx.sleepy's handler time out.
CREATE TABLE fx_control (stall_until timestamptz NOT NULL);
INSERT INTO fx_control VALUES ('-infinity');
CREATE TABLE fx_run (seed bigint NOT NULL, until timestamptz NOT NULL, pause_ms int NOT NULL);
-- Publisher transactions refused by backpressure (not transactional, so it counts them;
-- a crash may make it skip ahead a little).
CREATE SEQUENCE fx_full;

-- Deterministic randomness: a number in [0, 1) from (seed, publisher, txn, salt).
CREATE FUNCTION fx_rand(seed bigint, pub int, txn int, salt text) RETURNS float8
    LANGUAGE sql IMMUTABLE AS $$
SELECT ('x' || substr(md5(seed || ':' || pub || ':' || txn || ':' || salt), 1, 8))::bit(32)::bigint
       / 4294967296.0
$$;
CREATE FUNCTION fx_rolls_back(seed bigint, pub int, txn int) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$ SELECT fx_rand(seed, pub, txn, 'rollback') < 0.1 $$;
-- The events of transaction (pub, txn): 1-8 events (3% of transactions: 40), 70% to
-- fx.orders; 3% keyless; 2% of fx.orders events poison, 0.3% of fx.slow events slow.
CREATE FUNCTION fx_txn_events(seed bigint, pub int, txn int)
    RETURNS TABLE (i int, topic text, key text, poison boolean, slow boolean)
    LANGUAGE sql IMMUTABLE AS $$
SELECT g, t.topic,
       CASE WHEN fx_rand(seed, pub, txn, 'nokey' || g) < 0.03 THEN NULL
            ELSE 'k' || floor(fx_rand(seed, pub, txn, 'key' || g)
                              * CASE t.topic WHEN 'fx.orders' THEN 120 ELSE 40 END)::int END,
       t.topic = 'fx.orders' AND fx_rand(seed, pub, txn, 'poison' || g) < 0.02,
       t.topic = 'fx.slow' AND fx_rand(seed, pub, txn, 'slow' || g) < 0.003
  FROM generate_series(1, CASE WHEN fx_rand(seed, pub, txn, 'big') < 0.03 THEN 40
                               ELSE 1 + floor(fx_rand(seed, pub, txn, 'size') * 8)::int END) g
 CROSS JOIN LATERAL (SELECT CASE WHEN fx_rand(seed, pub, txn, 'topic' || g) < 0.7
                                 THEN 'fx.orders' ELSE 'fx.slow' END AS topic) t
$$;

-- A publisher: transactions from its last committed one (re-run: after a reconnect the
-- client does not know whether it committed) until fx_run.until. A transaction that
-- finds a topic full (53400) is rolled back and tried again after a pause.
CREATE PROCEDURE fx_publish(pub int) LANGUAGE plpgsql AS $$
DECLARE
    r fx_run;
    txn int;
    ev record;
    nn int;
    id bigint;
    refused boolean;
BEGIN
    SELECT * INTO r FROM fx_run;
    txn := coalesce((SELECT max(p.txn) FROM fx_published p WHERE p.pub = fx_publish.pub), 1);
    COMMIT;
    WHILE clock_timestamp() < r.until LOOP
      refused := false;
      BEGIN
        -- Keys in one order: publishers never deadlock on them.
        PERFORM 1 FROM fx_key k JOIN fx_txn_events(r.seed, pub, txn) e
                    ON k.topic = e.topic AND k.key = e.key
         ORDER BY k.topic, k.key FOR UPDATE OF k;
        FOR ev IN SELECT * FROM fx_txn_events(r.seed, pub, txn) ORDER BY i LOOP
            nn := 0;
            IF ev.key IS NOT NULL THEN
                SELECT k.n + 1 INTO nn FROM fx_key k WHERE k.topic = ev.topic AND k.key = ev.key;
            END IF;
            id := evproc_enqueue(ev.topic, ev.key,
                                 jsonb_build_object('pub', pub, 'txn', txn, 'i', ev.i, 'n', nn,
                                                    'poison', ev.poison, 'slow', ev.slow),
                                 'fx.v1', format('p%s-t%s-e%s', pub, txn, ev.i));
            -- A dedup hit (a re-run of a committed transaction) returns the first id.
            IF NOT EXISTS (SELECT 1 FROM fx_published p WHERE p.event_id = id) THEN
                IF ev.key IS NOT NULL THEN
                    UPDATE fx_key k SET n = nn WHERE k.topic = ev.topic AND k.key = ev.key;
                END IF;
                INSERT INTO fx_published VALUES (pub, txn, ev.i, ev.topic, ev.key, nn, id,
                                                 ev.poison, ev.slow);
            END IF;
        END LOOP;
      EXCEPTION WHEN configuration_limit_exceeded THEN
        refused := true;
      END;
        IF refused THEN
            ROLLBACK;
            PERFORM nextval('fx_full');
            COMMIT;
            PERFORM pg_sleep(0.2);
            CONTINUE;
        ELSIF fx_rolls_back(r.seed, pub, txn) THEN
            ROLLBACK;
        ELSE
            COMMIT;
        END IF;
        txn := txn + 1;
        PERFORM pg_sleep(random() * r.pause_ms * 2 / 1000.0);
    END LOOP;
END $$;

CREATE FUNCTION fx_record(sub text, e evproc.event) RETURNS void LANGUAGE sql AS $$
    INSERT INTO fx_applied (sub, event_id, attempt, pid) VALUES (sub, e.id, e.attempt, pg_backend_pid())
$$;
-- Healthy: applies every event; a batch takes a few ms, so faults land inside handlers.
CREATE FUNCTION fx_healthy(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    e evproc.event;
BEGIN
    FOREACH e IN ARRAY events LOOP
        PERFORM fx_record('fx.healthy', e);
    END LOOP;
    PERFORM pg_sleep(0.003);
END $$;
CREATE FUNCTION fx_poison(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (e.payload->>'poison')::boolean THEN
        RAISE EXCEPTION 'fx: event % is poison', e.id;
    END IF;
    PERFORM fx_record('fx.poison', e);
END $$;
CREATE FUNCTION fx_sleepy(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    e evproc.event;
BEGIN
    FOREACH e IN ARRAY events LOOP
        IF ((e.payload->>'slow')::boolean AND e.attempt = 1)
           OR (SELECT stall_until FROM fx_control) > clock_timestamp() THEN
            PERFORM pg_sleep(1);   -- past handler_timeout: 57014, retried
        END IF;
        PERFORM fx_record('fx.sleepy', e);
    END LOOP;
END $$;
GRANT INSERT ON fx_applied TO app;
GRANT USAGE ON SEQUENCE fx_applied_seq_seq TO app;
GRANT SELECT ON fx_control TO app;

SELECT evproc_subscribe('fx.healthy', 'fx.orders', 'fx_healthy', batch_size => 50,
                        backoff_base => '20 ms', backoff_cap => '200 ms', failure_budget => 1,
                        run_as => 'app');
SELECT evproc_subscribe('fx.poison', 'fx.orders', 'fx_poison', batch_size => 20,
                        max_attempts => 3, backoff_base => '20 ms', backoff_cap => '100 ms',
                        on_dead_letter => 'skip', failure_budget => 1, run_as => 'app');
SELECT evproc_subscribe('fx.sleepy', 'fx.slow', 'fx_sleepy', batch_size => 10,
                        handler_timeout => '150 ms', max_attempts => 10,
                        backoff_base => '50 ms', backoff_cap => '1 s', failure_budget => 0.5,
                        breaker_min_attempts => 20, breaker_cooldown => '1 s', run_as => 'app');
});

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $psql = $node->installed_command('psql');
my $connstr = $node->connstr('postgres');

# ---------------------------------------------------------------------------
# Publishers: one psql process each, CALLing fx_publish until the deadline;
# respawned when its connection dies before the deadline.
# ---------------------------------------------------------------------------
my @pubs = map { { id => $_, pid => undef, starts => 0, respawn_at => 0 } } 1 .. $publishers;
my %lost;          # why publisher connections ended early, by kind
my @unexpected;    # publisher errors that are not a lost connection

sub spawn_publisher
{
	my ($p) = @_;
	$p->{starts}++;
	$p->{log} = "$tmp/pub$p->{id}.$p->{starts}.log";
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>', $p->{log}) or POSIX::_exit(126);
		open(STDERR, '>&', \*STDOUT) or POSIX::_exit(126);
		exec($psql, '-X', '-q', '-w', '-v', 'ON_ERROR_STOP=1', '-d', $connstr,
			'-c', "CALL fx_publish($p->{id})")
		  or POSIX::_exit(127);
	}
	$p->{pid} = $pid;
	$p->{started_at} = time();
}

# What ended a publisher's session early: a lost connection of some kind (expected under
# these faults), or anything else (a failure of the test).
sub classify_exit
{
	my ($p, $status) = @_;
	my $out = PostgreSQL::Test::Utils::slurp_file($p->{log});
	return 'finished' if $status == 0;
	return 'crash of another server process' if $out =~ /because of crash of another server process/;
	return 'immediate shutdown' if $out =~ /due to immediate shutdown|due to administrator command/;
	return 'server starting or stopping'
	  if $out =~ /the database system is (starting up|shutting down|in recovery mode|not yet accepting connections)/;
	return 'connection lost'
	  if $out =~ /server closed the connection unexpectedly|connection to server was lost|no connection to the server/;
	return 'could not connect'
	  if $out =~ /Connection refused|could not connect|No such file or directory|connection to server .* failed/;
	push @unexpected, "publisher $p->{id} (exit $status): $out";
	return 'unexpected error';
}

sub reap_publishers
{
	my ($now) = @_;
	for my $p (@pubs)
	{
		next unless defined $p->{pid};
		next unless waitpid($p->{pid}, WNOHANG) == $p->{pid};
		my $status = $? >> 8;
		$p->{pid} = undef;
		my $why = classify_exit($p, $status);
		# Its procedure saw the deadline (by the server's clock).
		$p->{done} = 1 if $why eq 'finished';
		$lost{$why}++ unless $why eq 'finished';
		# A session that failed at once (server still down) waits a little.
		$p->{respawn_at} = $now + ($now - $p->{started_at} < 1 ? 0.3 : 0.05);
	}
}

sub running_publishers { return scalar grep { defined $_->{pid} } @pubs; }

# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------
my %faults;        # done, by kind
my %missed;        # chosen but without a target (no worker up at that moment)
my @fault_log;     # what was done, in order
my $t0;

sub note_fault
{
	my ($kind, $what) = @_;
	$faults{$kind}++;
	push @fault_log, sprintf('%6.1fs %s', time() - $t0, $what);
}

sub query
{
	my ($sql) = @_;
	my ($rc, $out) = $node->psql('postgres', $sql);
	return $rc == 0 ? $out : undef;
}

# Waits until the server accepts connections again (after a crash and its recovery).
sub wait_ready
{
	my $deadline = time() + 120;
	while (time() < $deadline)
	{
		return 1 if defined query('SELECT 1');
		usleep(100_000);
	}
	die "the server did not come back within 120 s";
}

# A worker to hit: one that is delivering if any (its batch is in flight), else any.
sub pick_worker
{
	my $rows = query(
		q{SELECT w.pid, w.state FROM evproc_workers w
		    JOIN pg_stat_activity a ON a.pid = w.pid AND a.backend_type = 'evproc worker'
		   ORDER BY w.pid});
	return undef unless defined $rows && $rows ne '';
	my @all = map { [ split /\|/ ] } split /\n/, $rows;
	my @busy = grep { $_->[1] ne 'idle' } @all;
	my @from = @busy ? @busy : @all;
	return $from[ int(rand(@from)) ];
}

# The first faults are one of each kind, in a random order (so that even a short run
# does them all); then kinds are drawn with these weights. A kind that found no
# target (no worker up at that moment) is tried again next.
my @kinds = (('cancel') x 3, ('terminate') x 2, ('kill9') x 2, 'restart', ('stall') x 2);
my @kind_names = qw(kill9 cancel terminate restart stall);
my @first = map { $_->[1] } sort { $a->[0] <=> $b->[0] } map { [ rand(), $_ ] } @kind_names;

sub do_fault
{
	my $kind = @first ? shift(@first) : $kinds[ int(rand(@kinds)) ];
	unshift(@first, $kind) unless fault($kind);
}

# Does one fault of this kind; false when it found no target.
sub fault
{
	my ($kind) = @_;
	if ($kind eq 'restart')
	{
		$node->stop('immediate');
		$node->start;
		note_fault($kind, 'immediate stop, start');
		return 1;
	}
	if ($kind eq 'stall')
	{
		my $ms = 300 + int(rand(1200));
		return missed($kind)
		  unless defined query(
			"UPDATE fx_control SET stall_until = clock_timestamp() + interval '$ms ms'");
		note_fault($kind, "fx.sleepy's handler stalls for $ms ms (timeout 150 ms)");
		return 1;
	}
	my $victim = pick_worker();
	return missed($kind) unless defined $victim;
	my ($pid, $state) = @$victim;
	if ($kind eq 'kill9')
	{
		my $offset = -s $node->logfile;
		return missed($kind) unless kill('KILL', $pid);
		# The postmaster names the process it lost, then restarts every backend.
		my $deadline = time() + 10;
		my $seen;
		while (!$seen && time() < $deadline)
		{
			$seen = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset)
			  =~ /\(PID $pid\) was terminated by signal 9/;
			usleep(50_000) unless $seen;
		}
		return missed($kind) unless $seen;
		note_fault($kind, "kill -9 worker $pid ($state)");
		$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
		wait_ready();
		return 1;
	}
	my $fn = $kind eq 'cancel' ? 'pg_cancel_backend' : 'pg_terminate_backend';
	my $ok = query("SELECT $fn($pid)");
	return missed($kind) unless defined $ok && $ok eq 't';
	note_fault($kind, "$fn(worker $pid, $state)");
	return 1;
}

sub missed
{
	my ($kind) = @_;
	$missed{$kind}++;
	return 0;
}

# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------
$node->safe_psql('postgres',
	"INSERT INTO fx_run VALUES ($seed, clock_timestamp() + interval '$seconds s', $pause_ms)");
$t0 = time();
my $t_end = $t0 + $seconds;
spawn_publisher($_) for @pubs;
my $next_fault = $t0 + 1 + rand(2 * $interval_ms / 1000);
while (1)
{
	my $now = time();
	reap_publishers($now);
	if ($now < $t_end)
	{
		for my $p (grep { !defined $_->{pid} && !$_->{done} && $_->{respawn_at} <= $now } @pubs)
		{
			spawn_publisher($p);
		}
	}
	last if $now >= $t_end && running_publishers() == 0;
	if ($now > $t_end + 120)
	{
		kill('KILL', $_->{pid}) for grep { defined $_->{pid} } @pubs;
		fail('publishers did not stop within 120 s after the deadline');
		last;
	}
	if ($now < $t_end && $now >= $next_fault)
	{
		do_fault();
		$next_fault = time() + rand(2 * $interval_ms / 1000);
	}
	usleep(50_000);
}
my $published_s = time() - $t0;
$node->safe_psql('postgres', "UPDATE fx_control SET stall_until = '-infinity'");
is(scalar(@unexpected), 0, 'publishers failed only by losing their connection')
  or diag join("\n", @unexpected[ 0 .. ($#unexpected < 4 ? $#unexpected : 4) ]);

# ---------------------------------------------------------------------------
# Drain: every committed event of each subscription's topic has an effect or is
# a dead letter, nothing is parked, no unit has work left.
# ---------------------------------------------------------------------------
my $per_sub = q{
SELECT s.name, t.name AS topic, s.id,
       (SELECT count(*) FROM fx_published p WHERE p.topic = t.name) AS enqueued,
       (SELECT count(DISTINCT a.event_id) FROM fx_applied a WHERE a.sub = s.name) AS delivered,
       (SELECT count(*) FROM evproc.dead_letter d WHERE d.subscription_id = s.id) AS dead,
       (SELECT count(*) FROM fx_published p
         WHERE p.topic = t.name
           AND NOT EXISTS (SELECT 1 FROM fx_applied a WHERE a.sub = s.name AND a.event_id = p.event_id)
           AND NOT EXISTS (SELECT 1 FROM evproc.dead_letter d
                            WHERE d.subscription_id = s.id AND d.event_id = p.event_id)) AS missing,
       (SELECT count(*) FROM evproc.retry r WHERE r.subscription_id = s.id) AS parked,
       evproc.count_pending(s.id) AS pending
  FROM evproc.subscription s JOIN evproc.topic t ON t.id = s.topic_id
 WHERE s.name LIKE 'fx.%'};
my $drained_sql = "SELECT bool_and(missing = 0 AND parked = 0 AND pending = 0) FROM ($per_sub) x";
# In one snapshot, an event that has neither an effect nor a dead letter while its
# subscription has nothing parked or pending was passed over: lost.
my $lost_sql = "SELECT bool_or(missing > 0 AND parked = 0 AND pending = 0) FROM ($per_sub) x";
my $t_drain = time();
my $drained = 0;
my $why = "not drained after ${drain_timeout}s";
my $last_full_check = 0;
# The full check reads every table the run filled: run it when the shared-memory
# figures say the work is done, or every 15 s in case they are wrong.
while (time() < $t_drain + $drain_timeout)
{
	my $quiet = query(
		q{SELECT bool_and(lag_events = 0 AND retries_pending = 0) FROM evproc_subscription_stats
           WHERE subscription LIKE 'fx.%'});
	if (($quiet // '') eq 't' || time() - $last_full_check > 15)
	{
		$last_full_check = time();
		note sprintf('%.1fs into the drain: %s', time() - $t_drain,
			query("SELECT string_agg(name || ' missing ' || missing || ' parked ' || parked
			                         || ' pending ' || pending, '; ') FROM ($per_sub) x") // '?');
		if ((query($drained_sql) // '') eq 't')
		{
			$drained = 1;
			last;
		}
		if ((query($lost_sql) // '') eq 't')
		{
			$why = 'events were passed over (nothing parked or pending, yet no effect)';
			last;
		}
	}
	if ((query("SELECT bool_or(state = 'paused') FROM evproc_subscriptions WHERE name LIKE 'fx.%'") // '')
		eq 't')
	{
		$why = 'a subscription paused';
		last;
	}
	usleep(500_000);
}
ok($drained, 'drained: every committed event delivered or dead, nothing parked or pending')
  or diag "$why\n",
  sql_value($node, "SELECT name, enqueued, delivered, dead, missing, parked, pending FROM ($per_sub) x"),
  "\n",
  sql_value($node, 'SELECT name, state, reason FROM evproc_subscriptions'), "\n",
  sql_value(
	$node, q{SELECT s.name, p.event_id, p.key, p.n, p.pub, p.txn, p.slow, p.poison
               FROM evproc.subscription s JOIN evproc.topic t ON t.id = s.topic_id
               JOIN fx_published p ON p.topic = t.name
              WHERE s.name LIKE 'fx.%'
                AND NOT EXISTS (SELECT 1 FROM fx_applied a WHERE a.sub = s.name AND a.event_id = p.event_id)
                AND NOT EXISTS (SELECT 1 FROM evproc.dead_letter d
                                 WHERE d.subscription_id = s.id AND d.event_id = p.event_id)
              ORDER BY p.event_id LIMIT 10});
my $drain_s = time() - $t_drain;

# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------
my %subs;
for my $row (split /\n/,
	sql_value($node, "SELECT name, topic, enqueued, delivered, dead, missing FROM ($per_sub) x ORDER BY name"))
{
	my ($name, $topic, $enq, $del, $dead, $missing) = split /\|/, $row;
	$subs{$name} = { topic => $topic, enqueued => $enq, delivered => $del, dead => $dead };
	is($enq, $del + $dead, "$name: enqueued $enq = delivered $del + dead $dead");
	is($missing, 0, "$name: no committed event without an effect or a dead letter");
}
is(scalar(keys %subs), 3, 'three subscriptions checked');

is( sql_value(
		$node, q{SELECT count(*) FROM (SELECT 1 FROM fx_applied GROUP BY sub, event_id
                                      HAVING count(*) > 1) x}),
	'0',
	'no effect applied twice')
  or diag sql_value($node,
	q{SELECT sub, event_id, count(*), string_agg(attempt || '@' || pid, ' ' ORDER BY seq)
        FROM fx_applied GROUP BY sub, event_id HAVING count(*) > 1 LIMIT 10});

is( sql_value(
		$node, q{SELECT count(*) FROM fx_applied a
                  WHERE NOT EXISTS (SELECT 1 FROM fx_published p WHERE p.event_id = a.event_id)}),
	'0',
	'no effect of an event that did not commit');

is( sql_value(
		$node, q{SELECT count(*) FROM fx_applied a JOIN evproc.subscription s ON s.name = a.sub
                   JOIN evproc.dead_letter d ON d.subscription_id = s.id AND d.event_id = a.event_id}),
	'0',
	'no dead letter has an effect');

# Per key: in the order the handler applied them, n increases (dead ones skipped).
my $order = q{
SELECT sub, key, n, prev, seq FROM (
  SELECT a.sub, p.key, p.n, a.seq,
         lag(p.n) OVER (PARTITION BY a.sub, p.key ORDER BY a.seq) AS prev
    FROM fx_applied a JOIN fx_published p ON p.event_id = a.event_id
   WHERE p.key IS NOT NULL) x
 WHERE prev >= n};
is(sql_value($node, "SELECT count(*) FROM ($order) o"), '0', 'per-key order held')
  or diag sql_value($node, "$order ORDER BY seq LIMIT 10");

# Within a key n counts the key's committed events: 1..N without gaps.
is( sql_value(
		$node, q{SELECT count(*) FROM fx_key k
                  WHERE k.n <> (SELECT count(*) FROM fx_published p
                                 WHERE p.topic = k.topic AND p.key = k.key)
                     OR k.n <> coalesce((SELECT max(p.n) FROM fx_published p
                                          WHERE p.topic = k.topic AND p.key = k.key), 0)}),
	'0',
	'publishers: per key, n numbers the committed events without gaps');

# The log holds exactly the committed events: nothing of a rolled-back or cut
# transaction, nothing appended twice by a re-run after a reconnect.
is( sql_value(
		$node, q{SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
                  WHERE t.name LIKE 'fx.%'
                    AND NOT EXISTS (SELECT 1 FROM fx_published p WHERE p.event_id = l.id)}),
	'0',
	'the event log holds no event of an uncommitted transaction and no duplicate');
is( sql_value(
		$node, q{SELECT count(*) FROM fx_published p
                  WHERE fx_rolls_back((SELECT seed FROM fx_run), p.pub, p.txn)}),
	'0',
	'no transaction meant to roll back committed');

# Dead letters: fx.poison's are its poison events (raised P0001); other dead letters
# can only come from handler timeouts (57014) charged max_attempts times (a cancel of a
# worker charges no attempt: its batch runs again). A dead letter keeps the error of its
# last attempt: a poison event whose last attempt timed out (a stall) says 57014.
is( sql_value(
		$node, q{SELECT count(*) FROM fx_published p
                  WHERE p.poison
                    AND NOT EXISTS (SELECT 1 FROM evproc_dead_letters('fx.poison') d
                                     WHERE d.event_id = p.event_id
                                       AND d.sqlstate IN ('P0001', '57014'))}),
	'0',
	'fx.poison: every poison event is a dead letter');
is( sql_value(
		$node, q{SELECT count(*) FROM evproc_dead_letters d
                   LEFT JOIN fx_published p ON p.event_id = d.event_id
                  WHERE d.subscription LIKE 'fx.%'
                    AND NOT (d.sqlstate = '57014'
                             OR (d.subscription = 'fx.poison' AND p.poison AND d.sqlstate = 'P0001'))}),
	'0',
	'no other dead letter than poison events and exhausted timeouts')
  or diag sql_value($node,
	q{SELECT subscription, event_id, sqlstate, message FROM evproc_dead_letters
       WHERE subscription LIKE 'fx.%' LIMIT 10});
my $slow_retried = sql_value(
	$node, q{SELECT count(*) FROM fx_applied a JOIN fx_published p ON p.event_id = a.event_id
              WHERE a.sub = 'fx.sleepy' AND p.slow AND a.attempt > 1});
my $slow_events = sql_value($node, 'SELECT count(*) FROM fx_published WHERE slow');
my $slow_dead = sql_value(
	$node, q{SELECT count(*) FROM evproc_dead_letters('fx.sleepy') d
              JOIN fx_published p ON p.event_id = d.event_id WHERE p.slow});
is($slow_retried + $slow_dead, $slow_events,
	"fx.sleepy: each slow event timed out on its first attempt and was retried ($slow_events)");

# The shared-memory figures after the crashes agree: no lag left.
ok( wait_until(
		$node,
		q{SELECT bool_and(lag_events = 0 AND retries_pending = 0) FROM evproc_subscription_stats
           WHERE subscription LIKE 'fx.%'},
		timeout => 15,
		diag => q{SELECT subscription, lag_events, retries_pending, delivered, dead
                    FROM evproc_subscription_stats WHERE subscription LIKE 'fx.%'}),
	'evproc_subscription_stats: lag_events = 0 and retries_pending = 0');

# The server never crashed by itself: every process killed by a signal was ours.
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
my @own_crashes = $log =~ /(.*terminated by signal (?!9:).*)/g;
push @own_crashes, $log =~ /(.*PANIC:.*)/g;
is(scalar(@own_crashes), 0, 'no process crashed except by our kill -9, no PANIC')
  or diag join("\n", @own_crashes[ 0 .. ($#own_crashes < 9 ? $#own_crashes : 9) ]);
is(scalar(() = $log =~ /terminated by signal 9: Killed/g),
	$faults{kill9} // 0, 'one crash recovery per kill -9');

SKIP:
{
	skip 'a run under 30 s may end before every kind of fault was done', 1 if $seconds < 30;
	is(join(',', grep { !$faults{$_} } @kind_names), '', 'every kind of fault was done')
	  or diag explain \%faults, \%missed;
}

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------
my ($txns, $events, $rolled_back) = split /\|/, sql_value(
	$node, q{
SELECT (SELECT count(DISTINCT (pub, txn)) FROM fx_published), (SELECT count(*) FROM fx_published),
       (SELECT count(*) FROM (SELECT pub, max(txn) AS last FROM fx_published GROUP BY pub) m,
                             generate_series(1, m.last) g
         WHERE fx_rolls_back((SELECT seed FROM fx_run), m.pub, g))});
my $starts = 0;
$starts += $_->{starts} for @pubs;
my $retried = sql_value($node,
	q{SELECT string_agg(sub || ' ' || n, ', ' ORDER BY sub) FROM (SELECT sub, count(*) AS n FROM fx_applied WHERE attempt > 1 GROUP BY sub) x}
);
my @summary;
push @summary,
  sprintf('faults under load: seed %d, %d publishers, %d workers, %.0f s of publishing, drained in %.1f s',
	$seed, $publishers, $workers, $published_s, $drain_s);
push @summary,
  sprintf('faults: %d kill -9 of a worker, %d pg_cancel_backend, %d pg_terminate_backend, '
	  . '%d immediate restarts, %d handler stalls (timeouts); %d in all',
	map({ $faults{$_} // 0 } qw(kill9 cancel terminate restart stall)),
	(sum0(values %faults)));
$summary[-1] .= sprintf(' (%d more found no worker to hit)', sum0(values %missed)) if %missed;
push @summary,
  sprintf('publishers: %d sessions (%d reconnects: %s)', $starts, $starts - $publishers,
	join(', ', map { "$_ $lost{$_}" } sort keys %lost) || 'none');
my $full = sql_value($node, 'SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM fx_full');
push @summary,
  sprintf('published: %d transactions committed with %d events, %d rolled back on purpose, '
	  . 'about %d refused by backpressure and retried; %d slow events (timed out once)',
	$txns, $events, $rolled_back, $full, $slow_events);
push @summary, 'deliveries that followed a failed attempt: ' . ($retried || 'none');
push @summary, 'dead letters by SQLSTATE of their last attempt: ' . (sql_value(
	$node, q{SELECT string_agg(subscription || ' ' || sqlstate || ' ' || n, ', ' ORDER BY subscription, sqlstate)
               FROM (SELECT subscription, sqlstate, count(*) AS n FROM evproc_dead_letters
                      WHERE subscription LIKE 'fx.%' GROUP BY 1, 2) x}) || 'none');
push @summary, sprintf('%-12s %-10s %9s %9s %5s', 'subscription', 'topic', 'enqueued', 'delivered', 'dead');
push @summary,
  sprintf('%-12s %-10s %9d %9d %5d', $_, @{ $subs{$_} }{qw(topic enqueued delivered dead)})
  for sort keys %subs;
# scripts/test.sh shows "# summary: " lines in CI's output.
diag join("\n", map { "summary: $_" } @summary);
note join("\n", 'faults in order:', @fault_log);
if (defined $summary_file)
{
	open(my $fh, '>', $summary_file) or die "$summary_file: $!";
	print $fh join("\n", @summary), "\n";
	close $fh;
}

sub sum0
{
	my $s = 0;
	$s += $_ for @_;
	return $s;
}

$node->stop;
done_testing();
