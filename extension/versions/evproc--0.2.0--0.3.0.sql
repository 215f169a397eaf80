-- evproc 0.2.0 -> 0.3.0 (ALTER EXTENSION evproc UPDATE). Released: never edited once
-- 0.3.0 is released (extension/versions/SHA256SUMS).
-- What a fresh 0.3.0 install makes, t/015_upgrade.pl checks that this script makes too.
\echo Use "ALTER EXTENSION evproc UPDATE TO '0.3.0'" to load this file. \quit

-- Delivery's statements are written whole in the library (src/delivery_statements.hpp);
-- evproc.statement_sql(name) returns them for the tests, and evproc.window_events runs
-- the window's two parts from there. evproc.window_sql(), which held the window's text
-- for the library to wrap, goes.
-- The text of a statement the delivery workers prepare, by name (src/delivery_statements.hpp,
-- where each is written whole: the claims, the window's two parts, the writes). The
-- regression tests EXPLAIN exactly what the workers run.
CREATE FUNCTION evproc.statement_sql(name text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'evproc_statement_sql';

-- The events of one (topic, partition) in the window (from_tick, to_tick], in id order:
-- those the workers' window read (its two parts) finds.
CREATE OR REPLACE FUNCTION evproc.window_events(topic_id integer, partition integer,
                                     from_tick bigint, to_tick bigint)
    RETURNS SETOF evproc.log
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    a pg_snapshot;
    b pg_snapshot;
BEGIN
    SELECT snapshot INTO a FROM evproc.tick WHERE id = from_tick;
    SELECT snapshot INTO b FROM evproc.tick WHERE id = to_tick;
    IF a IS NULL OR b IS NULL OR from_tick >= to_tick THEN
        RAISE EXCEPTION 'no window between ticks % and %', from_tick, to_tick
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT l.* FROM evproc.log l WHERE l.topic_id = $1 AND l.partition = $2 AND l.id IN ('
        'SELECT p.id FROM (%s) p UNION ALL SELECT r.id FROM (%s) r) ORDER BY l.id',
        evproc.statement_sql('window_pending'), evproc.statement_sql('window_range'))
        USING topic_id, partition, ARRAY(SELECT pg_snapshot_xip(a)), pg_snapshot_xmax(a),
              b, pg_snapshot_xmax(b), 0::bigint, NULL::bigint, '-infinity'::timestamptz, ''::text;
END
$fn$;
REVOKE EXECUTE ON FUNCTION evproc.statement_sql(text) FROM PUBLIC;
DROP FUNCTION evproc.window_sql(text);
