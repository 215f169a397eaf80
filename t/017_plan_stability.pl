# Plans that do not depend on the statistics of the moment: workers keep generic plans,
# and a log partition analyzed while it was empty (a new partition, or ANALYZE right
# after a truncate) made a sequential scan look free. The window read then scanned the
# whole partition at every batch until the next analyze replanned it: seconds of
# latency and delivery falling behind publishing (docs/performance.md). Here the log is
# analyzed empty, then many small transactions are published; the workers must read
# the log through its indexes (no sequential scans of log partitions) and deliver every
# event. The same for evproc.tick, analyzed while it held a few rows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use EvprocTAP;

# No autovacuum: the statistics stay those of the empty log for the whole test.
my $node = evproc_node('plans', "autovacuum = off\nevproc.workers = 2\n");

$node->safe_psql(
	'postgres', q{
SELECT evproc_create_topic('pulse', partitions => 16);
CREATE TABLE seen (event_id bigint PRIMARY KEY);
CREATE FUNCTION seen_h(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO seen SELECT e.id FROM unnest(events) AS e
$$;
GRANT INSERT ON seen TO app;
SELECT evproc_subscribe('pulse_sub', 'pulse', 'seen_h', batch_size => 500, run_as => 'app');
});
# Publish into the first log partition (not the default one), as a running server does.
burn_xids_to($node, sql_value($node,
	"SELECT min(xid_from) FROM evproc.log_partition"));
$node->safe_psql('postgres', 'ANALYZE evproc.log, evproc.tick');
my $seq_scans = q{SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables
                   WHERE schemaname = 'evproc' AND relname LIKE 'log%'};
my $tick_scans = q{SELECT seq_scan FROM pg_stat_user_tables
                    WHERE schemaname = 'evproc' AND relname = 'tick'};
my $before = sql_value($node, $seq_scans);
my $tick_before = sql_value($node, $tick_scans);

# 3,000 single-event transactions from one session, each a window of its own.
$node->safe_psql(
	'postgres', q{
CREATE PROCEDURE publish(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM evproc_enqueue('pulse', 'k' || (i % 500), jsonb_build_object('n', i));
        COMMIT;
        -- Spaced out, so that most commits get a tick and a batch of their own.
        PERFORM pg_sleep(0.002);
    END LOOP;
END $$;
CALL publish(3000);
});
ok(wait_until($node, 'SELECT count(*) = 3000 FROM seen', timeout => 120),
	'every event is delivered');
# Statistics reach the views within a moment of each transaction's end.
sleep 1;
my $after = sql_value($node, $seq_scans);
note "sequential scans of log partitions during delivery: " . ($after - $before);
cmp_ok($after - $before, '<', 100,
	'workers read the log analyzed empty through its indexes, not by sequential scans');
is(sql_value($node, 'SELECT count(*) FROM seen'), '3000', 'each event once');
my $tick_after = sql_value($node, $tick_scans);
my $batches = sql_value($node, 'SELECT sum(batches) FROM evproc.progress');
note "sequential scans of evproc.tick during delivery: " . ($tick_after - $tick_before)
  . ", batches: $batches";
# The tick table, analyzed when it held a few rows, grows by a tick per commit here; the
# window's bounds are read by its key all the same (each batch scanned it whole before).
cmp_ok($tick_after - $tick_before, '<', $batches / 10,
	'workers read evproc.tick analyzed small through its key, not by sequential scans');

$node->stop;
done_testing();
