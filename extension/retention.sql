
-------------------------------------------------------------------------------
-- Storage and retention (docs/design.md). Appended after delivery.sql by make.
--
-- evproc.log is partitioned by RANGE (xid), one partition per span of xids, each recorded
-- in evproc.log_partition. evproc.maintain() (the maintenance worker, every
-- evproc.maintenance_interval) calls evproc.maintain_log(), which
--  * notes when a partition opens (the xid counter reached it: its xid rate sizes the
--    next ones) and when it closes (every xid below its upper bound has finished: no row
--    can be added any more, and every event in it was enqueued before that moment);
--  * keeps the partition that holds the current xid and the next one created ahead,
--    each about evproc.partition_interval wide at the observed xid rate;
--  * drops a partition once it is closed, older than the retention of every topic with
--    events in it, and below evproc.log_horizon(): every unit of every subscription has
--    passed it. Never a row DELETE, so retention leaves no dead tuples behind.
-- The DEFAULT partition catches rows that no partition covers (a burst that outran
-- maintenance, which then creates partitions above those rows), and is emptied under the
-- same rules. Asking for history older than what was dropped is an error
-- (evproc.check_history_retained), not a silent partial delivery.
--
-- Locks: creating a partition is CREATE TABLE + ATTACH PARTITION, which takes SHARE
-- UPDATE EXCLUSIVE on evproc.log (enqueues and window reads go on) and, briefly, ACCESS
-- EXCLUSIVE on the default partition. Dropping one takes ACCESS EXCLUSIVE on evproc.log
-- until maintenance commits. Both wait at most lock_timeout = 50ms (maintain_log's
-- setting), so an enqueue queues behind them at most that long; on a timeout maintenance
-- leaves the work to its next run.
-------------------------------------------------------------------------------

CREATE TABLE evproc.log_partition (
    name          text PRIMARY KEY,          -- a table in schema evproc
    xid_from      xid8 NOT NULL,
    xid_to        xid8 NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    opened_at     timestamptz,               -- first seen holding the current xid
    closed_at     timestamptz,               -- first seen with every xid below xid_to finished
    topic_ids     integer[],                 -- topics with events in it, noted when closed
    drop_attempts integer NOT NULL DEFAULT 0,  -- lock timeouts while it was due to be dropped
    CHECK (xid_from < xid_to)
);
COMMENT ON TABLE evproc.log_partition IS
    'partitions of evproc.log by xid range; created ahead and dropped by evproc.maintain()';
CREATE SEQUENCE evproc.log_partition_seq AS bigint;

-- Events whose xid no partition covers. Never dropped: emptied with TRUNCATE. Its
-- indexes are named like those of the other partitions. A member of the extension, so
-- its rows are dumped as a configuration table's.
CREATE TABLE evproc.log_default (LIKE evproc.log INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION);
CREATE INDEX log_default_window_idx ON evproc.log_default (topic_id, partition, xid, id);
CREATE INDEX log_default_id_brin ON evproc.log_default USING brin (id);
ALTER TABLE evproc.log ATTACH PARTITION evproc.log_default DEFAULT;
-- CREATE EXTENSION makes no other partition: the maintenance worker's first run does (at
-- once when the launcher finds the extension), and until then events go to the default partition.
-- Partitions made here would clash with those of a dump restored into the new database,
-- by name (log_partition_seq starts again at 1) and by xid range (the dumped database's
-- partition ahead covers the current xids): the restore would fail. They are not
-- members of the extension, so that maintenance can drop them; pg_dump dumps them as
-- tables of their own, attached to evproc.log.

SELECT pg_catalog.pg_extension_config_dump('evproc.log_partition', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.log_partition_seq', '');
SELECT pg_catalog.pg_extension_config_dump('evproc.log_default', '');

-- evproc.partition_interval as an interval (the GUC is defined when the module is loaded;
-- before that, its default).
CREATE FUNCTION evproc.partition_interval() RETURNS interval
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(nullif(current_setting('evproc.partition_interval', true), '')::interval,
                    interval '1 hour')
$fn$;

-- xid8 has no arithmetic; widths are far below 2^63.
CREATE FUNCTION evproc.xid_plus(x xid8, n bigint) RETURNS xid8
    LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT (x::text::numeric + n)::text::xid8 $fn$;

-- The lowest xid anyone may still read from the log: every event with a lower xid has
-- been handled by every unit of every subscription. A unit at tick A has handled
-- everything visible in A, and what A does not see has xid >= xmin(A); tick 0 ('1:1:',
-- a subscription starting from history) holds back everything. The current snapshot's
-- xmin bounds it too: a running transaction may still add events above it.
-- Whatever else reads old history (replay) belongs here.
-- A running replay reads history by event id, whatever the xid: it holds every partition
-- until it is done or cancelled (evproc_replays).
CREATE FUNCTION evproc.log_horizon() RETURNS xid8
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM evproc.replay r WHERE r.state = 'running') THEN '0'::xid8
           ELSE least(pg_snapshot_xmin(pg_current_snapshot()),
                      (SELECT min(coalesce(pg_snapshot_xmin(t.snapshot), '0'::xid8))
                         FROM evproc.progress p LEFT JOIN evproc.tick t ON t.id = p.tick_id)) END
$fn$;

-- The xid rate (xids a second): the highest observed over the last partition the xid
-- counter went through and over the one it is in; 0 before any was observed.
CREATE FUNCTION evproc.xid_rate(cur xid8) RETURNS numeric
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH passed AS (
        SELECT (p.xid_to::text::numeric - p.xid_from::text::numeric)
               / extract(epoch FROM n.opened_at - p.opened_at) AS rate
          FROM evproc.log_partition p
          JOIN evproc.log_partition n ON n.xid_from = p.xid_to
         WHERE n.opened_at > p.opened_at
         ORDER BY p.xid_from DESC LIMIT 1),
    current AS (
        SELECT (cur::text::numeric - p.xid_from::text::numeric)
               / extract(epoch FROM clock_timestamp() - p.opened_at) AS rate
          FROM evproc.log_partition p
         WHERE p.xid_from <= cur AND p.opened_at < clock_timestamp() - interval '1 second'
         ORDER BY p.xid_from DESC LIMIT 1)
    SELECT coalesce(max(rate), 0)
      FROM (SELECT rate FROM passed UNION ALL SELECT rate FROM current) r
$fn$;

-- Width in xids of a new partition: evproc.partition_interval at the xid rate (at least
-- 100,000 xids).
CREATE FUNCTION evproc.next_partition_width(cur xid8) RETURNS bigint
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT greatest(100000, ceil(evproc.xid_rate(cur)
                                 * extract(epoch FROM evproc.partition_interval())))::bigint
$fn$;

-- How far above the current xid a new partition must start: xids below may be in use
-- by transactions that will enqueue, and one that routes its row before the partition
-- is attached, to the default partition, fails there once the attach commits ("new row
-- violates partition constraint"): the row's xid is then in the new partition's range.
-- Ten seconds of xids at the observed rate (at least 1,000) outlast an attach, which
-- scans the default partition.
CREATE FUNCTION evproc.partition_margin(cur xid8) RETURNS bigint
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT greatest(1000, ceil(evproc.xid_rate(cur) * 10))::bigint
$fn$;

-- Creates and attaches the partition [xid_from, xid_to); returns its name. An empty
-- table with a CHECK constraint matching its bounds is attached with ATTACH PARTITION,
-- which takes SHARE UPDATE EXCLUSIVE on evproc.log (CREATE TABLE ... PARTITION OF would
-- take ACCESS EXCLUSIVE and stop every enqueue meanwhile); it also takes ACCESS
-- EXCLUSIVE on the default partition, which it scans for rows of the new range. The
-- constraint is dropped once the partition bound stands in for it.
CREATE FUNCTION evproc.create_log_partition(xid_from xid8, xid_to xid8) RETURNS text
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    part text := 'log_p' || nextval('evproc.log_partition_seq');
BEGIN
    IF xid_from IS NULL OR xid_to IS NULL OR xid_from >= xid_to THEN
        RAISE EXCEPTION 'invalid log partition bounds [%, %)', xid_from, xid_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('CREATE TABLE evproc.%I (LIKE evproc.log INCLUDING DEFAULTS INCLUDING STORAGE'
                   ' INCLUDING COMPRESSION, CONSTRAINT %I CHECK (xid >= %L::xid8 AND xid < %L::xid8))',
                   part, part || '_bounds', xid_from, xid_to);
    -- The log's indexes (evproc.log has none of its own: see extension/evproc.sql).
    EXECUTE format('CREATE INDEX %I ON evproc.%I (topic_id, partition, xid, id)',
                   part || '_window_idx', part);
    EXECUTE format('CREATE INDEX %I ON evproc.%I USING brin (id)', part || '_id_brin', part);
    EXECUTE format('ALTER TABLE evproc.log ATTACH PARTITION evproc.%I FOR VALUES FROM (%L) TO (%L)',
                   part, xid_from, xid_to);
    EXECUTE format('ALTER TABLE evproc.%I DROP CONSTRAINT %I', part, part || '_bounds');
    INSERT INTO evproc.log_partition (name, xid_from, xid_to, opened_at)
    VALUES (part, xid_from, xid_to,
            CASE WHEN xid_from <= pg_current_xact_id() THEN clock_timestamp() END);
    RAISE LOG 'evproc: created log partition evproc.% (xids [%, %))', part, xid_from, xid_to;
    RETURN part;
END
$fn$;

-- Notes partitions the xid counter reached (opened_at) and partitions whose xids have all
-- finished (closed_at, with the topics that have events in them: they cannot change any
-- more). closed_at is read after the snapshot that saw them finished, so every event in
-- the partition was enqueued before it.
CREATE FUNCTION evproc.close_log_partitions() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    p record;
    topics integer[];
    closed integer := 0;
BEGIN
    UPDATE evproc.log_partition SET opened_at = clock_timestamp()
     WHERE opened_at IS NULL AND xid_from <= pg_current_xact_id();
    FOR p IN SELECT name FROM evproc.log_partition
              WHERE closed_at IS NULL AND xid_to <= pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY xid_from LOOP
        -- One probe per topic on the partition's window index.
        EXECUTE format('SELECT ARRAY(SELECT t.id FROM evproc.topic t WHERE EXISTS'
                       ' (SELECT 1 FROM evproc.%I e WHERE e.topic_id = t.id) ORDER BY t.id)', p.name)
           INTO topics;
        UPDATE evproc.log_partition SET closed_at = clock_timestamp(), topic_ids = topics
         WHERE name = p.name;
        closed := closed + 1;
    END LOOP;
    RETURN closed;
END
$fn$;

-- Keeps a partition ahead of the current xid: one starting above it. It starts where
-- the last one ends, or, when that is less than evproc.partition_margin() above the
-- current xid (a fresh install, or a burst that outran maintenance), that far above it:
-- the xids in between may be in use by transactions about to enqueue, which must not
-- find their rows' xids in a partition attached under them. Their rows, and those of any
-- xid no partition holds, go to the default partition. Returns how many it made; a lock
-- it cannot get within lock_timeout, or a row that reached the default partition
-- meanwhile (ATTACH refuses a range the default partition holds rows of), leaves the
-- rest to the next run.
CREATE FUNCTION evproc.ensure_log_partitions() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cur xid8 := pg_current_xact_id();
    last evproc.log_partition;
    margin bigint;
    lo xid8;
    hi xid8;
    created integer := 0;
BEGIN
    FOR attempt IN 1..2 LOOP
        SELECT * INTO last FROM evproc.log_partition ORDER BY xid_to DESC LIMIT 1;
        EXIT WHEN last.name IS NOT NULL AND last.xid_from > cur;  -- one ahead exists
        margin := evproc.partition_margin(cur);
        IF last.xid_from <= cur AND cur < last.xid_to THEN
            -- The usual case, the counter in the last partition: at most half its width,
            -- so that the next one follows it without a gap while the counter is in its
            -- first half (a partition is sized for partition_interval at the rate).
            margin := least(margin, (last.xid_to::text::numeric - last.xid_from::text::numeric) / 2);
        END IF;
        -- greatest() skips the NULL of no partition yet.
        lo := greatest(last.xid_to, evproc.xid_plus(cur, margin));
        hi := evproc.xid_plus(lo, evproc.next_partition_width(cur));
        BEGIN
            PERFORM evproc.create_log_partition(lo, hi);
        EXCEPTION WHEN lock_not_available OR check_violation THEN
            RAISE LOG 'evproc: could not create the log partition [%, %) now: %; retrying at the next maintenance',
                lo, hi, SQLERRM;
            EXIT;
        END;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$fn$;

-- Partitions that may be dropped now: closed, every topic with events in them past its
-- retention since they closed, and below the log horizon.
CREATE FUNCTION evproc.due_log_partitions() RETURNS SETOF evproc.log_partition
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT p.* FROM evproc.log_partition p
     WHERE p.closed_at IS NOT NULL
       AND p.xid_to <= (SELECT evproc.log_horizon())
       AND NOT EXISTS (SELECT 1 FROM evproc.topic t
                        WHERE t.id = ANY (p.topic_ids) AND p.closed_at >= clock_timestamp() - t.retention)
$fn$;

-- Whether the rows of the default partition may all go: every one below the log horizon,
-- and every topic's newest one past its retention since it was enqueued (no close time is
-- known for rows there).
CREATE FUNCTION evproc.log_default_due() RETURNS boolean
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT (SELECT max(xid) FROM evproc.log_default) < (SELECT evproc.log_horizon())
       AND NOT EXISTS (SELECT 1 FROM (SELECT topic_id, max(enqueued_at) AS newest
                                        FROM evproc.log_default GROUP BY topic_id) d
                         JOIN evproc.topic t ON t.id = d.topic_id
                        WHERE d.newest >= clock_timestamp() - t.retention)
$fn$;

-- Drops the due partitions (and empties the default partition when due); returns how
-- many partitions went. History bounds: a topic that had events in a dropped partition
-- has incomplete history before the partition's close time.
-- evproc_subscribe reads a topic's history bound under FOR SHARE on the topic's row, so
-- the rows of the topics involved are locked first (FOR NO KEY UPDATE: it conflicts with
-- that, not with the key-share locks of foreign keys), then evproc.log, and the due
-- partitions are chosen again with everything locked: a subscription that started from
-- history meanwhile is either seen (its units hold the horizon) or waits and then sees
-- the new bound.
CREATE FUNCTION evproc.drop_log_partitions() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    due text[] := ARRAY(SELECT name FROM evproc.due_log_partitions());
    p evproc.log_partition;
    dropped integer := 0;
    attempts integer;
BEGIN
    IF cardinality(due) > 0 THEN
        BEGIN
            PERFORM 1 FROM evproc.topic
              WHERE id IN (SELECT unnest(topic_ids) FROM evproc.log_partition WHERE name = ANY (due))
              ORDER BY id FOR NO KEY UPDATE;
            LOCK TABLE evproc.log IN ACCESS EXCLUSIVE MODE;
            FOR p IN SELECT * FROM evproc.due_log_partitions() ORDER BY xid_from LOOP
                CONTINUE WHEN p.name <> ALL (due);  -- its topics are not locked
                EXECUTE format('DROP TABLE evproc.%I', p.name);
                DELETE FROM evproc.log_partition WHERE name = p.name;
                RAISE LOG 'evproc: dropped log partition evproc.% (xids [%, %), closed at %)',
                    p.name, p.xid_from, p.xid_to, p.closed_at;
                UPDATE evproc.topic
                   SET history_dropped_before = greatest(history_dropped_before, p.closed_at)
                 WHERE id = ANY (p.topic_ids);
                dropped := dropped + 1;
            END LOOP;
        EXCEPTION WHEN lock_not_available THEN
            UPDATE evproc.log_partition SET drop_attempts = drop_attempts + 1 WHERE name = ANY (due);
            SELECT max(drop_attempts) INTO attempts FROM evproc.log_partition WHERE name = ANY (due);
            IF attempts % 30 = 10 THEN
                RAISE WARNING 'evproc: % log partition(s) due for dropping could not lock evproc.log within 50ms % times in a row: transactions that enqueue or deliver hold it longer (see pg_locks)',
                    cardinality(due), attempts
                    USING HINT = 'Look for long transactions that enqueued and for slow handlers: SELECT pid, xact_start, query FROM pg_stat_activity WHERE pid IN (SELECT pid FROM pg_locks WHERE relation = ''evproc.log''::regclass);';
            ELSE
                RAISE LOG 'evproc: could not lock evproc.log to drop % partition(s) (attempt %); retrying at the next maintenance',
                    cardinality(due), attempts;
            END IF;
        END;
    END IF;
    RETURN dropped + evproc.empty_log_default();
END
$fn$;

-- Empties the default partition when all its rows are due, locking (after the topics'
-- rows, as above) only the default partition: enqueues routed elsewhere go on. Under
-- that lock no transaction is still writing to it, so the rows judged are final. Returns
-- 1 when it emptied it.
CREATE FUNCTION evproc.empty_log_default() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM evproc.log_default) OR NOT evproc.log_default_due() THEN
        RETURN 0;
    END IF;
    BEGIN
        PERFORM 1 FROM evproc.topic WHERE id IN (SELECT topic_id FROM evproc.log_default)
          ORDER BY id FOR NO KEY UPDATE;
        LOCK TABLE evproc.log_default IN ACCESS EXCLUSIVE MODE;
        IF NOT evproc.log_default_due() THEN
            RETURN 0;
        END IF;
        -- Every event of the topic enqueued up to its newest one here may be gone.
        UPDATE evproc.topic t
           SET history_dropped_before = greatest(t.history_dropped_before, d.newest + interval '1 microsecond')
          FROM (SELECT topic_id, max(enqueued_at) AS newest FROM evproc.log_default GROUP BY topic_id) d
         WHERE t.id = d.topic_id;
        TRUNCATE evproc.log_default;
        RAISE LOG 'evproc: emptied evproc.log_default';
        RETURN 1;
    EXCEPTION WHEN lock_not_available THEN
        RAISE LOG 'evproc: could not lock evproc.log_default to empty it; retrying at the next maintenance';
        RETURN 0;
    END;
END
$fn$;

-- The log's upkeep, called last by evproc.maintain(): its locks on evproc.log last until
-- maintenance commits. One run at a time: a second one meanwhile skips. Its LOG lines
-- (partitions created, dropped, lock retries) go to the server log one line each.
CREATE FUNCTION evproc.maintain_log() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '50ms'
    SET log_error_verbosity = terse
AS $fn$
BEGIN
    BEGIN
        LOCK TABLE evproc.log_partition IN SHARE ROW EXCLUSIVE MODE;
    EXCEPTION WHEN lock_not_available THEN
        RETURN;
    END;
    PERFORM evproc.close_log_partitions();
    PERFORM evproc.ensure_log_partitions();
    PERFORM evproc.drop_log_partitions();
END
$fn$;

-- evproc_event_status finds an event by id through the BRIN index on id of each log
-- partition (there is no btree on the log's ids, see evproc.log). A page range that is
-- not summarized yet is read whole at every such look-up, and only VACUUM (or
-- autosummarize, by autovacuum, up to a minute later) would summarize it: between two
-- vacuums every event enqueued since the last one is read at every look-up (51 ms at
-- 150,000 events, 135 ms at 600,000, bench/idle_subs). Maintenance summarizes the new
-- ranges of the partitions that can still grow or just stopped: the default one, those
-- not closed (an empty one costs a look at its first page) and those closed within the
-- hour. A partition VACUUM holds (it summarizes them itself) is skipped, never waited
-- for. Returns the number of ranges summarized.
CREATE FUNCTION evproc.summarize_log_ids() RETURNS bigint
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '10ms'
AS $fn$
DECLARE
    part text;
    total bigint := 0;
BEGIN
    FOR part IN SELECT 'log_default'
                UNION ALL
                SELECT p.name FROM evproc.log_partition p
                 WHERE p.closed_at IS NULL OR p.closed_at > now() - interval '1 hour' LOOP
        BEGIN
            total := total + coalesce(brin_summarize_new_values(
                         pg_catalog.to_regclass(format('evproc.%I', part || '_id_brin'))), 0);
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END LOOP;
    RETURN total;
END
$fn$;
REVOKE ALL ON FUNCTION evproc.summarize_log_ids() FROM PUBLIC;

-- Expired dedup ids, off the hot path: batches of at most 10,000 rows found through
-- dedup_expiry_idx (without it each run would read the whole table to find the few rows
-- that expired since the last one), at most 10 batches per run. A row someone holds (a
-- publisher enqueueing with that dedup id again, in a transaction still open) is skipped,
-- never waited for: the next run deletes it if it is still expired.
CREATE INDEX dedup_expiry_idx ON evproc.dedup (expires_at);
CREATE FUNCTION evproc.expire_dedup() RETURNS bigint
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    deleted bigint;
    total bigint := 0;
BEGIN
    FOR batch IN 1..10 LOOP
        DELETE FROM evproc.dedup
         WHERE ctid = ANY (ARRAY(SELECT ctid FROM evproc.dedup WHERE expires_at < now()
                                  ORDER BY expires_at LIMIT 10000 FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS deleted = ROW_COUNT;
        total := total + deleted;
        EXIT WHEN deleted < 10000;
    END LOOP;
    RETURN total;
END
$fn$;

-- Raises 22023 when history of the topic enqueued at or after from_ts is no longer
-- complete (retention dropped some of it). '-infinity' asks for whatever is retained.
CREATE FUNCTION evproc.check_history_retained(topic_id integer, from_ts timestamptz)
    RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t record;
BEGIN
    SELECT tp.name, tp.retention, tp.history_dropped_before INTO t
      FROM evproc.topic tp WHERE tp.id = check_history_retained.topic_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic with id % does not exist', topic_id USING ERRCODE = 'undefined_object';
    END IF;
    IF from_ts IS NULL THEN
        RAISE EXCEPTION 'the start of the history must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF from_ts <> '-infinity' AND from_ts < t.history_dropped_before THEN
        RAISE EXCEPTION 'history of topic "%" before % is no longer retained', t.name, t.history_dropped_before
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Events from %s were asked for; the retention of the topic is %s.', from_ts, t.retention),
                  HINT = format('The earliest retained history starts at %s: start there or later, or from ''-infinity'' for all retained events.',
                                t.history_dropped_before);
    END IF;
END
$fn$;

-- The log's partitions for operators: size, state, and what keeps each one.
CREATE VIEW public.evproc_log_partitions AS
SELECT p.name, p.xid_from, p.xid_to,
       pg_catalog.pg_total_relation_size(pg_catalog.to_regclass(format('evproc.%I', p.name))) AS bytes,
       p.created_at, p.opened_at, p.closed_at,
       ARRAY(SELECT t.name FROM evproc.topic t WHERE t.id = ANY (p.topic_ids) ORDER BY t.name) AS topics,
       p.closed_at + (SELECT max(t.retention) FROM evproc.topic t WHERE t.id = ANY (p.topic_ids)) AS retained_until,
       CASE WHEN p.opened_at IS NULL THEN 'ahead'
            WHEN p.closed_at IS NULL THEN 'open'
            WHEN p.closed_at + (SELECT max(t.retention) FROM evproc.topic t
                                 WHERE t.id = ANY (p.topic_ids)) > now() THEN 'retention'
            WHEN p.xid_to > evproc.log_horizon()
                 THEN CASE WHEN EXISTS (SELECT 1 FROM evproc.replay r WHERE r.state = 'running')
                           THEN 'replay' ELSE 'subscriptions' END
            WHEN p.drop_attempts > 0 THEN 'lock'
            ELSE 'due' END AS held_by,
       p.drop_attempts
  FROM evproc.log_partition p;
