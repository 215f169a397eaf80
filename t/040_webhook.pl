# Webhook sinks against a real receiver (t/receiver/webhook_receiver.py on 127.0.0.1):
# every committed event received with a valid Standard Webhooks signature, exactly once
# after dedup by webhook-id, per key in commit order; refused events (400) in the dead
# letters at once with the answer as context, the rest of their batch delivered
# (bisection); 429 with Retry-After and 500 retried until delivered; 410 pauses the
# subscription; a destination whose address is not allowed is never connected to.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;
use EvprocWebhook;

my $secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
my $recv = start_receiver(secret => $secret);
my $node = evproc_node('webhook', qq{
evproc.sink_allowed_destinations = '127.0.0.1'
});

$node->safe_psql('postgres', q{
SELECT evproc_create_topic('hooks', partitions => 4);
SELECT evproc_allow_sinks('app');
SELECT evproc_grant('hooks', 'app', 'subscribe');
});

# Subscribes as app (allowed to create sinks) with the options given.
sub subscribe_sink
{
	my ($name, $options, $settings) = @_;
	$settings //= '';
	$node->safe_psql('postgres', qq{
SET ROLE app;
SELECT evproc_subscribe('$name', 'hooks', NULL, sink => '$options'$settings);
});
	return;
}

# Publishes $per_key events for each of $keys keys (one transaction per round), payload
# {"seq": n, "run": $run}.
sub publish
{
	my ($run, $keys, $per_key) = @_;
	for my $seq (1 .. $per_key)
	{
		$node->safe_psql('postgres', qq{
SELECT count(evproc_enqueue('hooks', '$run:k' || k, jsonb_build_object('seq', $seq, 'run', '$run'),
                            type => 'Test.v1'))
  FROM generate_series(1, $keys) AS k;
});
	}
	return;
}

# Events of run $run that the receiver answered 2xx for subscription $sub (default
# hook_events): the first receipt of each webhook_id, in arrival order. (Every
# subscription of the topic gets every event: each has its own webhook ids.)
sub delivered
{
	my ($run, $sub) = @_;
	$sub //= 'hook_events';
	my (%seen, @first);
	for my $event (@{ received_events($recv) })
	{
		next unless ref $event->{payload} eq 'HASH' && ($event->{payload}{run} // '') eq $run;
		next unless $event->{subscription} eq $sub;
		push @first, $event unless $seen{ $event->{webhook_id} }++;
	}
	return (\@first, \%seen);
}

sub wait_delivered
{
	my ($run, $count, $sub, $timeout) = @_;
	$timeout //= 120;
	for (1 .. $timeout * 5)
	{
		my ($first) = delivered($run, $sub);
		return 1 if @$first >= $count;
		usleep(200_000);
	}
	my ($first) = delivered($run, $sub);
	diag("run $run: " . scalar(@$first) . " of $count delivered");
	diag($node->safe_psql('postgres', 'SELECT * FROM evproc_sinks'));
	return 0;
}

# Per key, the delivered events came in seq order, and every event came.
sub check_order
{
	my ($run, $keys, $per_key, $first) = @_;
	my %next;
	my $in_order = 1;
	for my $event (@$first)
	{
		my $key = $event->{key};
		my $expected = ($next{$key} // 0) + 1;
		if ($event->{payload}{seq} != $expected)
		{
			$in_order = 0;
			diag("key $key: seq $event->{payload}{seq} arrived where $expected was due");
		}
		$next{$key} = $event->{payload}{seq};
	}
	ok($in_order, "run $run: per key in commit order");
	is(scalar(grep { $next{$_} == $per_key } keys %next), $keys, "run $run: every key complete");
	return;
}

use Time::HiRes qw(usleep);

# 1. Per event, signed, with an extra header: exactly once after dedup, per key in order.
subscribe_sink('hook_events', qq{{"type": "webhook", "url": "$recv->{url}", "secret": "$secret", "headers": {"X-Test": "yes"}, "max_in_flight": 8}});
publish('a', 20, 10);
ok(wait_delivered('a', 200), 'run a: all 200 events delivered');
my ($first_a, $seen_a) = delivered('a');
is(scalar(@$first_a), 200, 'run a: 200 distinct webhook ids');
is(scalar(grep { !$_->{signature_valid} } @{ received_events($recv) }), 0,
	'every delivered request carried a valid signature');
is(scalar(grep { ($_->{user_header} // '') ne 'yes' } grep { $_->{status} } @{ received_requests($recv) }), 0,
	'the extra header came with every request');
check_order('a', 20, 10, $first_a);
like($first_a->[0]{webhook_id}, qr/^evproc_hook_events_\d+$/, 'webhook-id from subscription and event id');
is($first_a->[0]{type}, 'Test.v1', 'the event type is in the body');
ok($node->poll_query_until('postgres',
	q{SELECT lag_events = 0 FROM evproc_subscription_stats WHERE subscription = 'hook_events'}),
	'run a: nothing left behind');


# 2. Batches (JSON arrays) with refusals: events of key b:k1 are answered 400. Their
# batches are bisected: only they end as dead letters (at once, context = the answer),
# every other event is delivered, per key in order.
subscribe_sink('hook_batches', qq{{"type": "webhook", "url": "$recv->{url}", "secret": "$secret", "mode": "batch"}},
	", batch_size => 50");
control_receiver($recv, { refuse_keys => ['b:k1'] });
publish('b', 10, 10);
ok(wait_delivered('b', 90, 'hook_batches'), 'run b: the 90 events of other keys delivered');
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 10 FROM evproc_dead_letters WHERE subscription = 'hook_batches'}),
	'run b: the 10 refused events are dead letters');
# Counted in the shared metrics as delivery's dead letters are: dead = 10, and nothing
# of run b left in the lag (lag = published - delivered - dead).
ok($node->poll_query_until('postgres', q{
SELECT dead = 10 AND dead_letters = 10 AND lag_events = 0
  FROM evproc_subscription_stats WHERE subscription = 'hook_batches'}),
	'run b: the sink\'s dead letters counted in the metrics (dead = 10, lag 0)')
  or diag($node->safe_psql('postgres', q{SELECT * FROM evproc_subscription_stats WHERE subscription = 'hook_batches'}));
my ($first_b) = delivered('b', 'hook_batches');
is(scalar(grep { $_->{key} eq 'b:k1' } @$first_b), 0, 'run b: no refused event counted as delivered');
check_order('b', 9, 10, [ grep { $_->{key} ne 'b:k1' } @$first_b ]);
my $dead = $node->safe_psql('postgres', q{
SELECT sqlstate || '|' || message || '|' || (context::jsonb ->> 'status') || '|' ||
       (context::jsonb -> 'headers' ->> 'x-reason') || '|' || attempts
  FROM evproc.dead_letter d JOIN evproc.subscription s ON s.id = d.subscription_id
 WHERE s.name = 'hook_batches' ORDER BY d.event_id LIMIT 1});
like($dead, qr/^EV100\|webhook answered HTTP 400: refused\|400\|refused-key\|1$/,
	'a refused event: EV100, the status line, the answer as context, one attempt');
ok(scalar(grep { $_->{status} == 200 && @{ $_->{events} } > 1 } @{ received_requests($recv) }) > 0,
	'batches of several events were sent');
control_receiver($recv, { refuse_keys => [] });

# 3. 429 with Retry-After, then 500: retried until delivered, with no dead letter.
control_receiver($recv, { mode => '429', retry_after => 1 });
publish('c', 5, 4);
ok($node->poll_query_until('postgres', q{
SELECT answers_4xx > 0 FROM evproc_sinks WHERE subscription = 'hook_events'}), 'run c: 429 answered');
control_receiver($recv, { mode => '500' });
ok($node->poll_query_until('postgres', q{
SELECT answers_5xx > 0 FROM evproc_sinks WHERE subscription = 'hook_events'}), 'run c: 500 answered');
control_receiver($recv, { mode => 'ok' });
ok(wait_delivered('c', 20), 'run c: everything delivered after 429 and 500');
my ($first_c) = delivered('c');
check_order('c', 5, 4, $first_c);
is($node->safe_psql('postgres', q{
SELECT count(*) FROM evproc_dead_letters
 WHERE subscription IN ('hook_events', 'hook_batches') AND (payload ->> 'run') = 'c'}), '0',
	'run c: no dead letters');
my $retried = scalar(grep { ($_->{status} == 429 || $_->{status} == 500) } @{ received_requests($recv) });
ok($retried > 0, "run c: $retried requests answered 429 or 500 were retried");

# 4. 410 Gone pauses the subscription with the reason; resumed, it delivers.
control_receiver($recv, { mode => '410' });
publish('d', 2, 2);
ok($node->poll_query_until('postgres', q{
SELECT state = 'paused' AND paused_reason LIKE '%410%' FROM evproc_sinks WHERE subscription = 'hook_events'}),
	'run d: 410 paused the subscription');
control_receiver($recv, { mode => 'ok' });
$node->safe_psql('postgres', q{SELECT evproc_resume('hook_events')});
ok(wait_delivered('d', 4), 'run d: delivered after resume');

# 5. A destination whose address is not allowed: "localhost" is listed as a name (and
# 127.0.0.1 no longer is), but a name never admits a loopback address. The sink pauses;
# nothing reaches the receiver.
$node->safe_psql('postgres', q{
ALTER SYSTEM SET evproc.sink_allowed_destinations = 'localhost';
SELECT pg_reload_conf();});
sleep 1;
my $before = scalar(@{ received_requests($recv) });
my $local = $recv->{url} =~ s/127\.0\.0\.1/localhost/r;
subscribe_sink('hook_local', qq{{"type": "webhook", "url": "$local"}});
publish('e', 1, 1);
ok($node->poll_query_until('postgres', q{
SELECT state = 'paused' AND paused_reason LIKE '%not allowed%' FROM evproc_sinks WHERE subscription = 'hook_local'}),
	'run e: a connection to a loopback address through a listed name pauses the sink');
is(scalar(grep { $_->{payload}{run} eq 'e' } grep { ref $_->{payload} eq 'HASH' } map { @{ $_->{events} } } @{ received_requests($recv) }), 0,
	'run e: no request of it reached the receiver');
# Not listed at all: refused when subscribing.
my ($rc, $out, $err) = $node->psql('postgres', q{
SET ROLE app;
SELECT evproc_subscribe('hook_far', 'hooks', NULL, sink => '{"type": "webhook", "url": "http://10.1.2.3/"}')});
like($err, qr/not allowed by evproc.sink_allowed_destinations/, 'a destination not listed is refused (22023)');

# Secrets: other roles (pg_monitor) see them masked; the owner sees them.
$node->safe_psql('postgres', q{CREATE ROLE watcher IN ROLE pg_monitor; GRANT USAGE ON SCHEMA evproc TO watcher;});
is($node->safe_psql('postgres', q{SET ROLE watcher;
SELECT sink ->> 'secret' FROM evproc_sinks WHERE subscription = 'hook_events'}), '********',
	'pg_monitor sees the secret masked');
is($node->safe_psql('postgres', q{SET ROLE app;
SELECT sink ->> 'secret' FROM evproc_sinks WHERE subscription = 'hook_events'}), $secret,
	'the owner sees the secret');
like($node->safe_psql('postgres', q{
SELECT requests || ' ' || answers_2xx || ' ' || (latency_p50_ms > 0) || ' ' || (latency_p99_ms >= latency_p50_ms) || ' ' || (bytes_sent > 0)
  FROM evproc_sinks WHERE subscription = 'hook_events'}), qr/^\d+ \d+ true true true$/, 'request figures in evproc_sinks');

# The exporter's queries, with sink rows to read.
my $check = "$FindBin::RealBin/../scripts/check-exporter-queries.sh";
my $check_out = `bash $check -h @{[ $node->host ]} -p @{[ $node->port ]} -d postgres 2>&1`;
is($? >> 8, 0, 'examples/monitoring/postgres_exporter.yml matches evproc_sinks') or diag $check_out;
like($check_out, qr/evproc_sink: \d+ columns \(3 labels\), [1-9]\d* rows/, 'the sink query returned rows');

# 6. Held events are not charged an attempt. Per event, one request in flight: when a
# request fails (500), the transport sends no more of its batch, and the events it leased
# but did not send are held (delivery_types.hpp Outcome::kHeld). They return at once
# without an attempt counted, so each event's attempts equal the requests the receiver
# got for it. Had held events been failed like the one that failed, nine of the ten
# would be at attempt 1 after a single request, with an hour's backoff. (An hour's
# backoff: a failed event is not tried again during the test; ten keys, ten failures,
# stay under breaker_min_attempts.)
$node->safe_psql('postgres', q{
ALTER SYSTEM SET evproc.sink_allowed_destinations = '127.0.0.1';
SELECT pg_reload_conf();});
sleep 1;
$node->safe_psql('postgres', qq{
SELECT evproc_create_topic('held');
SELECT evproc_grant('held', 'app', 'subscribe');
SET ROLE app;
SELECT evproc_subscribe('hook_held', 'held', NULL,
    sink => '{"type": "webhook", "url": "$recv->{url}", "max_in_flight": 1}',
    batch_size => 10, max_attempts => 3, backoff_base => '1 hour', backoff_cap => '1 hour',
    breaker_min_attempts => 1000);
});
control_receiver($recv, { mode => '500' });
$node->safe_psql('postgres', q{
SELECT count(evproc_enqueue('held', 'h:k' || k, jsonb_build_object('seq', 1, 'run', 'h')))
  FROM generate_series(1, 10) AS k});
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 10 AND bool_and(attempt = 1)
  FROM evproc.retry r JOIN evproc.subscription s ON s.id = r.subscription_id
 WHERE s.name = 'hook_held'}),
	'run h: each of the 10 events failed once, one after the other');
my %sent;
for my $request (@{ received_requests($recv) })
{
	next unless $request->{status} == 500;
	for my $event (@{ $request->{events} })
	{
		next unless ref $event->{payload} eq 'HASH' && ($event->{payload}{run} // '') eq 'h';
		++$sent{ $event->{webhook_id} };
	}
}
is(scalar(keys %sent), 10, 'run h: a request was sent for every event');
is(scalar(grep { $_ != 1 } values %sent), 0, 'run h: one request per attempt counted');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM evproc_dead_letters WHERE subscription = 'hook_held'}), '0',
	'run h: no dead letter');
control_receiver($recv, { mode => 'ok' });

# 7. Several batches of one subscription in flight at once (transport.hpp Room(): up to
# min(max_in_flight, 8) for webhooks), each a lease of other partitions, so never two of
# one key. One event per lease (batch_size 1), answered after 1 s: the sink worker holds
# several leases of the subscription at a time, and per key the order holds.
$node->safe_psql('postgres', qq{
SELECT evproc_create_topic('multi', partitions => 8);
SELECT evproc_grant('multi', 'app', 'subscribe');
SET ROLE app;
SELECT evproc_subscribe('hook_multi', 'multi', NULL,
    sink => '{"type": "webhook", "url": "$recv->{url}", "mode": "batch", "max_in_flight": 8}',
    batch_size => 1);
});
control_receiver($recv, { mode => 'slow', seconds => 1 });
for my $seq (1 .. 3)
{
	$node->safe_psql('postgres', qq{
SELECT count(evproc_enqueue('multi', 'm:k' || k, jsonb_build_object('seq', $seq, 'run', 'm')))
  FROM generate_series(1, 8) AS k});
}
ok($node->poll_query_until('postgres', q{
SELECT count(*) >= 2 FROM evproc.lease l JOIN evproc.subscription s ON s.id = l.subscription_id
 WHERE s.name = 'hook_multi'}),
	'run m: several leases of one subscription in flight at once');
control_receiver($recv, { mode => 'ok' });
ok(wait_delivered('m', 24, 'hook_multi'), 'run m: all 24 events delivered');
my ($first_m) = delivered('m', 'hook_multi');
check_order('m', 8, 3, $first_m);

stop_receiver($recv);
done_testing();
