-- What a handler cannot do to the worker, to other tenants or to evproc's own tables
-- (issue 12): its error fields are stored bounded, it runs with its owner's search_path,
-- it leaves no session state behind, and it is the very function its owner chose.
-- Delivery is stepped by hand (evproc.deliver_batch() runs the worker's code in this
-- session, so what a handler leaves in "the worker" is left in this session).
\i sql/include/try.sql
\i sql/include/drain.sql

CREATE ROLE evproc_hi_app;
GRANT USAGE ON SCHEMA evproc TO evproc_hi_app;
CREATE TABLE hi_seen (seq bigserial, what text, value text);
GRANT SELECT, INSERT ON hi_seen TO evproc_hi_app;
GRANT USAGE ON SEQUENCE hi_seen_seq_seq TO evproc_hi_app;

-------------------------------------------------------------------------------
-- 1. A handler's error message, detail, hint and context are stored at most 4 kB each,
--    cut on a character boundary and marked as cut, in the retry line as in the dead
--    letters.
-------------------------------------------------------------------------------
SELECT evproc_create_topic('hi.big', partitions => 1) > 0 AS created;
CREATE FUNCTION hi_big_error(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  -- 'a' then two-byte characters: 4096 bytes would end inside one.
  RAISE EXCEPTION '%', repeat('m', 100000)
    USING DETAIL = 'a' || repeat('é', 3000), HINT = repeat('h', 4096);
END $fn$;
SELECT evproc_subscribe('hi_big', 'hi.big', 'hi_big_error', max_attempts => 2, backoff_base => '1 ms',
                        backoff_cap => '1 ms', failure_budget => 1, run_as => 'evproc_hi_app') > 0 AS subscribed;
SELECT evproc_enqueue('hi.big', 'k', '{}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT attempt, octet_length(message) AS message_bytes,
       message = repeat('m', 4096) || '... [cut: 100000 bytes in all]' AS message_cut,
       detail = 'a' || repeat('é', 2047) || '... [cut: 6001 bytes in all]' AS detail_cut_on_a_character,
       hint = repeat('h', 4096) AS hint_of_4096_bytes_whole
  FROM evproc.retry;
SELECT pg_sleep(0.01);
SELECT pg_temp.drain();
SELECT attempts, octet_length(message) AS message_bytes,
       message = repeat('m', 4096) || '... [cut: 100000 bytes in all]' AS message_cut,
       detail = 'a' || repeat('é', 2047) || '... [cut: 6001 bytes in all]' AS detail_cut_on_a_character,
       hint = repeat('h', 4096) AS hint_of_4096_bytes_whole, octet_length(context) <= 4096 + 40 AS context_bounded
  FROM evproc_dead_letters WHERE subscription = 'hi_big';
SELECT evproc_unsubscribe('hi_big');

-------------------------------------------------------------------------------
-- Cleanup.
-------------------------------------------------------------------------------
SELECT evproc_unsubscribe(name) FROM evproc.subscription WHERE name LIKE 'hi\_%' ORDER BY name;
SELECT evproc_drop_topic(name) FROM evproc.topic WHERE name LIKE 'hi.%' ORDER BY name;
DROP TABLE hi_seen;
DROP FUNCTION hi_big_error(evproc.event[]);
REVOKE USAGE ON SCHEMA evproc FROM evproc_hi_app;
DROP ROLE evproc_hi_app;
