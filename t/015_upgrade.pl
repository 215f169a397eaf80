# ALTER EXTENSION evproc UPDATE from every released version (the install scripts
# kept in extension/versions/), with state and traffic, run with the current library
# -- what an operator meets: new packages, a restart, then the update.
#
# For each released version: install it, build up state (topics, grants, a paused
# subscription with a backlog, dead letters, retries parked behind a failing head),
# publish under the old SQL objects with the new library, start a large batch and
# run the update while the workers deliver it. A version the library no longer serves
# (older than kOldestServedVersion: an update across two versions) delivers nothing
# before its update: its backlog is published, the launcher's WARNING checked, and the
# update runs with the backlog waiting. Then:
#   * the state is as it was (topics and grants, subscriptions, dead letters, parked
#     retries);
#   * the extension's objects are exactly those of a fresh install of the current
#     version (test/upgrade/extension_catalog.sql, database by database);
#   * what each update on the path changed is in force, and was not before it (%changes
#     below, per version: 0.2.0 closes the raw counters and event status to other roles;
#     the 0.2.0 -> 0.3.0 script is still being written, and adds its entry with its SQL);
#   * delivery carries on: the fix, a re-drive, resuming, more publishing; at the end
#     every subscription has every event exactly once (enqueued = delivered + dead,
#     with dead = 0) and per-key order held.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

my $catalog_sql = "$FindBin::RealBin/../test/upgrade/extension_catalog.sql";
my @released = sort map { m{/evproc--(\d+\.\d+\.\d+)\.sql$} ? $1 : () }
  glob("$FindBin::RealBin/../extension/versions/evproc--*.sql");
ok(scalar(@released) >= 1, 'released versions: ' . join(', ', @released));

# The oldest version whose objects this library serves (src/core/version.hpp). An older
# one is updated without delivering under its objects first: the library says once that
# the update is missing and stops the workers; publishing goes on.
my ($oldest_served) =
  slurp_file("$FindBin::RealBin/../src/core/version.hpp") =~ /kOldestServedVersion = "([\d.]+)"/;
like($oldest_served // '', qr/^\d+\.\d+\.\d+$/, "the library serves versions from $oldest_served on");

# -1, 0, 1 as version $x is older than, the same as, newer than $y (numeric per part).
sub version_cmp
{
	my ($x, $y) = @_;
	my @x = split /\./, $x;
	my @y = split /\./, $y;
	for my $i (0 .. 2)
	{
		my $c = $x[$i] <=> $y[$i];
		return $c if $c;
	}
	return 0;
}

# What an update to a version changes that can be seen from SQL: `before` holds under
# the objects of an older version, `after` once the update is done. Each entry is checked
# for every released version the update path from crosses it (older than it, while the
# current version is at least it). An update script that changes behaviour adds its
# version's entry here.
my %changes = (
	'0.2.0' => {
		# nosy (no grant on any topic) read every subscription's raw counters and learnt
		# that an event of a topic it has nothing to do with exists.
		# Under a version the library does not serve, the launcher registers no
		# subscription in shared memory: no counters to read, only the right to.
		before => sub {
			my ($node, $old, $some_event, $served) = @_;
			my ($rc, $out, $err) = $node->psql('postgres',
				"SET ROLE nosy; SELECT count(*) FROM evproc.subscription_stats()");
			if ($served)
			{
				is("$rc $out", '0 3', "$old: nosy reads the raw counters of all three subscriptions");
			}
			else
			{
				is("$rc $err", '0 ', "$old: nosy may read the raw counters (none registered yet)");
			}
			($rc, $out, $err) = $node->psql('postgres',
				"SET ROLE nosy; SELECT count(*) FROM evproc_event_status($some_event)");
			is("$rc $out", '0 0', "$old: nosy learns that an event exists (no error)");
		},
		after => sub {
			my ($node, $old, $some_event) = @_;
			my ($rc, $out, $err) = $node->psql('postgres',
				"SET ROLE nosy; SELECT count(*) FROM evproc.subscription_stats()");
			like($err, qr/permission denied for function subscription_stats/,
				"$old: nosy no longer reads the raw counters");
			($rc, $out, $err) = $node->psql('postgres',
				"SET ROLE nosy; SELECT count(*) FROM evproc_event_status($some_event)");
			like($err, qr/event \d+ does not exist or is no longer retained/,
				"$old: to nosy an event of another topic is unknown");
		},
	},);

# The entries of %changes crossed by an update from $old to $current, oldest first.
sub changes_crossed
{
	my ($old, $current) = @_;
	return map { $changes{$_} }
	  grep { version_cmp($old, $_) < 0 && version_cmp($_, $current) <= 0 }
	  sort { version_cmp($a, $b) } keys %changes;
}

# Poison events: payload n divisible by 97, until the fix (fixed.ok) is in.
my $setup = q{
CREATE ROLE pub;
CREATE ROLE nosy;
CREATE ROLE watcher IN ROLE pg_monitor;
GRANT USAGE ON SCHEMA evproc TO pub, nosy, watcher;
SELECT evproc_create_topic('orders', partitions => 4,
                           payload_schema => '{"type": "object", "required": ["n"]}');
SELECT evproc_grant('orders', 'pub', 'publish');
CREATE TABLE fixed (ok boolean NOT NULL);
INSERT INTO fixed VALUES (false);
-- No unique key: a second delivery must show, not fail.
CREATE TABLE effects (sub text NOT NULL, event_id bigint NOT NULL, key text NOT NULL,
                      n int NOT NULL, seq bigserial);
GRANT SELECT ON fixed TO app;
GRANT INSERT ON effects TO app;
GRANT USAGE ON SEQUENCE effects_seq_seq TO app;
CREATE FUNCTION apply_one(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (e.payload->>'n')::int % 97 = 0 AND NOT (SELECT ok FROM fixed) THEN
        RAISE EXCEPTION 'poison n=%', e.payload->>'n' USING ERRCODE = 'data_exception';
    END IF;
    PERFORM pg_sleep(0.002);
    INSERT INTO effects (sub, event_id, key, n) VALUES ('apply', e.id, e.key, (e.payload->>'n')::int);
END $$;
CREATE FUNCTION patient_one(e evproc.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (e.payload->>'n')::int % 97 = 0 AND NOT (SELECT ok FROM fixed) THEN
        RAISE EXCEPTION 'poison n=%', e.payload->>'n' USING ERRCODE = 'data_exception';
    END IF;
    INSERT INTO effects (sub, event_id, key, n) VALUES ('patient', e.id, e.key, (e.payload->>'n')::int);
END $$;
CREATE FUNCTION audit_all(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO effects (sub, event_id, key, n)
    SELECT 'audit', e.id, e.key, (e.payload->>'n')::int FROM unnest(events) AS e ORDER BY e.id $$;
-- apply: a poison event dies at once (and its key goes on); patient: it retries until
-- fixed, the events of its key parked behind it; audit: paused, a backlog.
SELECT evproc_subscribe('apply', 'orders', 'apply_one', batch_size => 20, max_attempts => 1,
                        failure_budget => 1, run_as => 'app');
SELECT evproc_subscribe('patient', 'orders', 'patient_one', batch_size => 20, max_attempts => 1000,
                        backoff_base => '200 ms', backoff_cap => '1 second', failure_budget => 1,
                        run_as => 'app');
SELECT evproc_subscribe('audit', 'orders', 'audit_all', batch_size => 100, run_as => 'app');
SELECT evproc_pause('audit', 'held back across the update');
};

# Publishes n in [$lo, $hi] as role pub, in n order, in one transaction.
sub publish
{
	my ($node, $lo, $hi) = @_;
	$node->safe_psql(
		'postgres', qq{
SET ROLE pub;
SELECT cardinality(evproc_enqueue_batch('orders',
  (SELECT jsonb_agg(jsonb_build_object('key', 'k' || (n % 37), 'payload', jsonb_build_object('n', n))
                    ORDER BY n)
     FROM generate_series($lo, $hi) AS n)));
});
}

# What the update must keep, as text: of the dead letters those of events up to
# $last_id (the batch delivered across the update adds some), of the retries those of
# paused subscriptions (a running one parks and settles events all the time).
sub state_of
{
	my ($node, $last_id) = @_;
	return join(
		"\n---\n",
		$node->safe_psql('postgres', 'SELECT * FROM evproc_topics ORDER BY name'),
		$node->safe_psql(
			'postgres', q{
SELECT s.id, s.name, t.name, s.handler, s.handler_form, s.owner, s.batch_size, s.max_attempts,
       s.backoff_base, s.backoff_cap, s.handler_timeout, s.on_dead_letter, s.failure_budget,
       s.breaker_min_attempts, s.breaker_cooldown, s.paused, s.paused_reason, s.created_at,
       s.start_snapshot, s.start_from
  FROM evproc.subscription s JOIN evproc.topic t ON t.id = s.topic_id ORDER BY s.id}),
		$node->safe_psql(
			'postgres', q{
SELECT subscription, event_id, key, payload, attempts, sqlstate, message, dead_at
  FROM evproc_dead_letters WHERE event_id <= } . $last_id . q{ ORDER BY subscription, event_id}),
		$node->safe_psql(
			'postgres', q{
SELECT s.name, r.event_id, r.key, r.is_head, r.blocked
  FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id
 WHERE s.paused ORDER BY s.name, r.event_id}));
}

sub catalog_of
{
	my ($node, $db) = @_;
	return [ split /\n/, $node->safe_psql($db, slurp_file($catalog_sql)) ];
}

for my $old (@released)
{
	my $node = evproc_node("upgrade_from_$old", '', version => $old);
	my $current = sql_value($node,
		"SELECT default_version FROM pg_available_extensions WHERE name = 'evproc'");
	if ($old eq $current)
	{
		# The current version's own script kept for its successor: nothing to update.
		$node->stop;
		next;
	}
	is(sql_value($node, "SELECT extversion FROM pg_extension WHERE extname = 'evproc'"),
		$old, "$old: installed");
	$node->safe_psql('postgres', $setup);

	# Under the old SQL objects, with the new library: publishing works, and so does
	# delivery if the library serves them.
	my $served = version_cmp($old, $oldest_served) >= 0;
	publish($node, 1, 1000);
	if ($served)
	{
		ok( wait_until(
				$node, q{SELECT (SELECT count(*) FROM effects WHERE sub = 'apply') = 990
                  AND (SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'apply') = 10}),
			"$old: delivered, 10 dead letters, under the old version");
		ok( wait_until(
				$node, q{SELECT count(*) = 10 FROM evproc.retry r JOIN evproc.subscription s
                   ON s.id = r.subscription_id WHERE s.name = 'patient' AND r.is_head}),
			"$old: 10 failing heads retried, their keys parked behind them");
	}
	else
	{
		ok( $node->wait_for_log(
				qr/WARNING:  evproc: extension "evproc" in database "postgres" is at version \Q$old\E, older than this library \(\Q$current\E\) serves; nothing is delivered/
			),
			"$old: not served by the $current library, and the launcher says so");
	}
	# What the updates ahead change is not in force yet.
	my $some_event = sql_value($node, 'SELECT min(id) FROM evproc.log');
	my @crossed = changes_crossed($old, $current);
	$_->{before}->($node, $old, $some_event, $served) for @crossed;

	# Hold patient still, so that its parked retries can be compared across the update.
	$node->safe_psql('postgres', q{SELECT evproc_pause('patient', 'held back across the update')});
	if ($served)
	{
		my $last_id = sql_value($node, 'SELECT max(id) FROM evproc.log');
		my $before = state_of($node, $last_id);

		# The update, while the workers deliver a large batch (apply takes 2 ms an event).
		publish($node, 1001, 3000);
		ok(wait_until($node, q{SELECT count(*) > 1000 FROM effects WHERE sub = 'apply'}),
			"$old: delivery of the batch under way");
		$node->safe_psql('postgres', 'ALTER EXTENSION evproc UPDATE');
		my $at_update = sql_value($node, q{SELECT count(*) FROM effects WHERE sub = 'apply'});
		cmp_ok($at_update, '<', 2980, "$old: the update came mid-delivery ($at_update of 2980)");
		is(state_of($node, $last_id), $before,
			"$old: topics, grants, subscriptions, dead letters and parked retries kept");
	}
	else
	{
		# Nothing was delivered: the whole backlog waits for the update. apply is held
		# too, so that the state compared across the update stands still.
		publish($node, 1001, 3000);
		is(sql_value($node, 'SELECT count(*) FROM effects'), '0',
			"$old: 3,000 events published, none delivered before the update");
		$node->safe_psql('postgres', q{SELECT evproc_pause('apply', 'held back across the update')});
		my $last_id = sql_value($node, 'SELECT max(id) FROM evproc.log');
		my $before = state_of($node, $last_id);
		$node->safe_psql('postgres', 'ALTER EXTENSION evproc UPDATE');
		is(state_of($node, $last_id), $before,
			"$old: topics, grants, subscriptions and the backlog kept");
		ok( $node->wait_for_log(
				qr/LOG:  evproc: extension "evproc" in database "postgres" is at version \Q$current\E, which this library serves; delivery starts/
			),
			"$old: updated to a served version, delivery starts");
		# apply now delivers the backlog, its poison events dying at once.
		$node->safe_psql('postgres', q{SELECT evproc_resume('apply')});
		ok( wait_until(
				$node, q{SELECT (SELECT count(*) FROM effects WHERE sub = 'apply') = 2970
                  AND (SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'apply') = 30},
				timeout => 180),
			"$old: after the update, apply delivered the backlog, 30 dead letters");
	}
	is(sql_value($node, "SELECT extversion FROM pg_extension WHERE extname = 'evproc'"),
		$current, "$old: updated to $current");

	# The same objects as a fresh install, line by line.
	$node->safe_psql('postgres', 'CREATE DATABASE fresh');
	$node->safe_psql('fresh', 'CREATE EXTENSION evproc');
	my ($updated, $fresh) = (catalog_of($node, 'postgres'), catalog_of($node, 'fresh'));
	my %in_fresh = map { $_ => 1 } @$fresh;
	my %in_updated = map { $_ => 1 } @$updated;
	my @missing = grep { !$in_updated{$_} } @$fresh;
	my @extra = grep { !$in_fresh{$_} } @$updated;
	ok(@$fresh > 1000, "$old: the catalog description is not empty (" . scalar(@$fresh) . ' lines)');
	ok(!@missing && !@extra && @$fresh == @$updated,
		"$old: the updated extension's objects are those of a fresh $current install")
	  or diag "missing after the update:\n" . join("\n", @missing) . "\nnot in a fresh install:\n"
	  . join("\n", @extra);

	# What the update changed is in force.
	$_->{after}->($node, $old, $some_event) for @crossed;
	is(sql_value($node, 'SET ROLE app; SELECT count(*) FROM evproc_subscription_stats'),
		'3', "$old: the owner sees its subscriptions' figures");
	is(sql_value($node, 'SET ROLE watcher; SELECT count(*) FROM evproc_subscription_stats'),
		'3', "$old: pg_monitor sees every subscription's figures");

	# Delivery carries on: the fix, the re-drive, resuming, more events.
	$node->safe_psql(
		'postgres', q{
UPDATE fixed SET ok = true;
SELECT evproc_redrive('apply');
SELECT evproc_resume('patient');
SELECT evproc_resume('audit');
});
	publish($node, 3001, 3500);
	for my $sub ('apply', 'patient', 'audit')
	{
		ok( wait_until(
				$node, "SELECT count(*) >= 3500 FROM effects WHERE sub = '$sub'",
				timeout => 180),
			"$old: $sub has handled all 3,500 events");
	}
	ok( wait_until(
			$node, q{SELECT coalesce(sum(lag_events), -1) = 0 FROM evproc_subscription_stats}),
		"$old: no lag left");

	my $enqueued = sql_value($node, 'SELECT count(*) FROM evproc.log');
	is($enqueued, '3500', "$old: 3,500 events enqueued");
	is( sql_value(
			$node, q{
SELECT string_agg(format('%s %s/%s', sub, handled, distinct_events), ', ' ORDER BY sub)
  FROM (SELECT sub, count(*) AS handled, count(DISTINCT event_id) AS distinct_events
          FROM effects GROUP BY sub) x}),
		'apply 3500/3500, audit 3500/3500, patient 3500/3500',
		"$old: every event handled exactly once by each subscription");
	is(sql_value($node, 'SELECT count(*) FROM evproc_dead_letters'),
		'0', "$old: no dead letters left (enqueued = delivered + 0 dead)");
	is(sql_value($node, 'SELECT count(*) FROM evproc.retry'), '0', "$old: no retries left");
	# Per key, each subscription handled the events in id order: all of them for patient
	# and audit; for apply all but the re-driven ones (which come after their key moved on).
	is( sql_value(
			$node, q{
SELECT count(*) FROM (
    SELECT sub, event_id < lag(event_id) OVER (PARTITION BY sub, key ORDER BY seq) AS backwards
      FROM effects
     WHERE NOT (sub = 'apply' AND n % 97 = 0)) x
 WHERE backwards}),
		'0', "$old: per-key order held");
	is(scalar(() = slurp_file($node->logfile) =~ /PANIC|server process .* was terminated/g),
		0, "$old: no crash");
	$node->stop;
}

# Objects of a version the running library does not serve: an update not run yet after
# a restart onto a library two versions on, or an update run before the restart that
# loads the new library. Faked by setting extversion (no second library build here).
# The launcher stops the workers with one WARNING that names the missing step;
# publishing goes on; delivery resumes once the version is served again.
{
	my $node = evproc_node('unserved');
	my $current = sql_value($node, 'SELECT evproc.library_version()');
	is(sql_value($node, "SELECT extversion FROM pg_extension WHERE extname = 'evproc'"),
		$current, "library and extension both at $current");
	$node->safe_psql('postgres', $setup);
	$node->safe_psql('postgres', q{SELECT evproc_resume('audit')});
	publish($node, 1, 100);
	ok(wait_until($node, q{SELECT count(*) = 100 FROM effects WHERE sub = 'audit'}),
		'delivery runs at the served version');

	my %case = (
		'0.0.9' => [
			qr/WARNING:  evproc: extension "evproc" in database "postgres" is at version 0\.0\.9, older than this library \(\Q$current\E\) serves; nothing is delivered/,
			qr/HINT:  Run ALTER EXTENSION evproc UPDATE in database "postgres"/ ],
		'9.9.9' => [
			qr/WARNING:  evproc: extension "evproc" in database "postgres" is at version 9\.9\.9, newer than the library this server runs \(\Q$current\E\); nothing is delivered/,
			qr/HINT:  Restart PostgreSQL/ ]);
	my $published = 100;
	for my $version ('0.0.9', '9.9.9')
	{
		my $offset = -s $node->logfile;
		$node->safe_psql('postgres',
			"UPDATE pg_extension SET extversion = '$version' WHERE extname = 'evproc'");
		$node->wait_for_log($case{$version}[0], $offset);
		ok($node->log_contains($case{$version}[1], $offset), "$version: the hint names the missing step");
		ok($node->poll_query_until('postgres',
				"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'evproc worker'"),
			"$version: the workers stopped");
		publish($node, $published + 1, $published + 50);
		$published += 50;
		sleep 2;
		is(sql_value($node, q{SELECT count(*) FROM effects WHERE sub = 'audit'}),
			$published - 50, "$version: publishing goes on, nothing is delivered");
		is(log_count($node, qr/is at version \Q$version\E/, $offset), 1,
			"$version: one WARNING, not one per look");
		$offset = -s $node->logfile;
		$node->safe_psql('postgres',
			"UPDATE pg_extension SET extversion = '$current' WHERE extname = 'evproc'");
		$node->wait_for_log(
			qr/LOG:  evproc: extension "evproc" in database "postgres" is at version \Q$current\E, which this library serves; delivery starts/,
			$offset);
		ok(wait_until($node, "SELECT count(*) = $published FROM effects WHERE sub = 'audit'"),
			"$version: back at $current, delivery resumes");
	}
	is( sql_value(
			$node, q{SELECT count(*) = count(DISTINCT event_id) FROM effects WHERE sub = 'audit'}),
		't', 'each event delivered once');
	$node->stop;
}

done_testing();
