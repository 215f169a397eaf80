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
-- 2. A handler runs with the search_path a session of its owner would get in this
--    database: ALTER ROLE ... IN DATABASE, then ALTER ROLE, then ALTER DATABASE, then
--    ALTER ROLE ALL, then the server's; never the worker's session's. A database owner's
--    ALTER DATABASE ... SET search_path does not reach a tenant who set its own.
-------------------------------------------------------------------------------
CREATE SCHEMA hi_evil;
CREATE SCHEMA hi_own;
GRANT USAGE ON SCHEMA hi_evil, hi_own TO evproc_hi_app;
CREATE FUNCTION hi_evil.hi_tag() RETURNS text LANGUAGE sql AS $$ SELECT 'evil' $$;
CREATE FUNCTION hi_own.hi_tag() RETURNS text LANGUAGE sql AS $$ SELECT 'own' $$;
-- Records the search_path it runs with and which hi_tag() an unqualified call finds.
CREATE FUNCTION hi_path(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO public.hi_seen (what, value)
  VALUES ('path', current_setting('search_path')),
         ('tag', coalesce((SELECT p.proname || '@' || n.nspname FROM pg_catalog.pg_proc p
                             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                            WHERE p.oid = pg_catalog.to_regprocedure('hi_tag()')), 'none'));
END $fn$;
SELECT evproc_create_topic('hi.path', partitions => 1) > 0 AS created;
SELECT evproc_subscribe('hi_path', 'hi.path', 'hi_path', run_as => 'evproc_hi_app') > 0 AS subscribed;
-- (Each case enqueues first, in a transaction of its own: \gset shows nothing.)
CREATE FUNCTION pg_temp.path_seen() RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  TRUNCATE hi_seen;
  PERFORM evproc.take_tick();
  PERFORM pg_temp.drain();
  RETURN (SELECT string_agg(value, ' / ' ORDER BY seq) FROM hi_seen);
END $fn$;
-- This session's own path is not the handler's business.
SET search_path = hi_evil, public;
SELECT evproc_enqueue('hi.path', 'k', '{}') AS event_id \gset
SELECT pg_temp.path_seen() AS server_default;
RESET search_path;
SELECT format('ALTER DATABASE %I SET search_path = hi_evil, public', current_database()) \gexec
SELECT evproc_enqueue('hi.path', 'k', '{}') AS event_id \gset
SELECT pg_temp.path_seen() AS database_setting;
ALTER ROLE ALL SET search_path = public;
SELECT evproc_enqueue('hi.path', 'k', '{}') AS event_id \gset
SELECT pg_temp.path_seen() AS database_over_every_role;
ALTER ROLE evproc_hi_app SET search_path = hi_own, public;
SELECT evproc_enqueue('hi.path', 'k', '{}') AS event_id \gset
SELECT pg_temp.path_seen() AS role_over_database;
SELECT format('ALTER ROLE evproc_hi_app IN DATABASE %I SET search_path = public, hi_own',
              current_database()) \gexec
SELECT evproc_enqueue('hi.path', 'k', '{}') AS event_id \gset
SELECT pg_temp.path_seen() AS role_in_database_first;
SELECT format('ALTER ROLE evproc_hi_app IN DATABASE %I RESET search_path', current_database()) \gexec
ALTER ROLE evproc_hi_app RESET search_path;
SELECT format('ALTER DATABASE %I RESET search_path', current_database()) \gexec
SELECT evproc_enqueue('hi.path', 'k', '{}') AS event_id \gset
SELECT pg_temp.path_seen() AS every_role;
ALTER ROLE ALL RESET search_path;
SELECT evproc_unsubscribe('hi_path');

-------------------------------------------------------------------------------
-- 3. No session state survives a handler call, whether it returned or failed: its
--    session-level advisory locks are released, its settings restored, its LISTENs
--    undone and the sequence caches (currval, lastval) reset; it cannot PREPARE (a
--    security-restricted operation).
--    (deliver_batch() runs the handler in this session: what it left, this session has.)
-------------------------------------------------------------------------------
CREATE SEQUENCE hi_seq;
GRANT USAGE ON SEQUENCE hi_seq TO evproc_hi_app;
CREATE FUNCTION hi_leave_state(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_advisory_lock(4242);
  PERFORM pg_advisory_lock_shared(4243);
  PERFORM set_config('work_mem', '77kB', false);
  SET lock_timeout = '7s';
  PERFORM nextval('public.hi_seq');
  INSERT INTO public.hi_seen (what, value)
  SELECT 'left', (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())
                 || ' locks, work_mem ' || current_setting('work_mem')
                 || ', lock_timeout ' || current_setting('lock_timeout')
                 || ', currval ' || currval('public.hi_seq');
  BEGIN
    EXECUTE 'LISTEN hi_channel';
    INSERT INTO public.hi_seen (what, value) VALUES ('listen', 'listening');
  EXCEPTION WHEN OTHERS THEN
    INSERT INTO public.hi_seen (what, value) VALUES ('listen', SQLSTATE || ': ' || SQLERRM);
  END;
  BEGIN
    EXECUTE 'PREPARE hi_left AS SELECT 1';
    INSERT INTO public.hi_seen (what, value) VALUES ('prepare', 'prepared');
  EXCEPTION WHEN OTHERS THEN
    INSERT INTO public.hi_seen (what, value) VALUES ('prepare', SQLSTATE || ': ' || SQLERRM);
  END;
  IF (SELECT bool_or(e.payload ? 'fail') FROM unnest(events) e) THEN
    RAISE EXCEPTION 'failing after leaving state';
  END IF;
END $fn$;
SELECT evproc_create_topic('hi.state', partitions => 1) > 0 AS created;
SELECT evproc_subscribe('hi_state', 'hi.state', 'hi_leave_state', max_attempts => 1, failure_budget => 1,
                        run_as => 'evproc_hi_app') > 0 AS subscribed;
CREATE FUNCTION pg_temp.state_left() RETURNS TABLE (advisory_locks bigint, work_mem text, lock_timeout text,
                                                    prepared bigint, listening bigint, currval text)
    LANGUAGE sql AS $$
  SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
         current_setting('work_mem'), current_setting('lock_timeout'),
         (SELECT count(*) FROM pg_prepared_statements),
         (SELECT count(*) FROM pg_listening_channels()),
         pg_temp.try('SELECT currval(''hi_seq'')')
$$;
TRUNCATE hi_seen;
SELECT evproc_enqueue('hi.state', 'k', '{}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT * FROM pg_temp.state_left();
-- The same, from a call that failed (its subtransaction rolled back: advisory locks are
-- not transactional).
SELECT evproc_enqueue('hi.state', 'k', '{"fail": true}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT * FROM pg_temp.state_left();
-- The handler did leave it, while it ran.
SELECT what, value FROM hi_seen ORDER BY seq;
SELECT evproc_unsubscribe('hi_state');
DROP FUNCTION hi_leave_state(evproc.event[]);
DROP SEQUENCE hi_seq;

-- A session without temporary objects (as a worker's, which never makes one): a
-- handler cannot make the first one (a security-restricted operation); the subscription
-- pauses as for any handler that cannot work.
\c
\i sql/include/try.sql
\i sql/include/drain.sql
CREATE FUNCTION hi_temp(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  CREATE TEMP TABLE hi_left_behind (id bigint);
END $fn$;
SELECT evproc_create_topic('hi.temp', partitions => 1) > 0 AS created;
SELECT evproc_subscribe('hi_temp', 'hi.temp', 'hi_temp', run_as => 'evproc_hi_app') > 0 AS subscribed;
SELECT evproc_enqueue('hi.temp', 'k', '{}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT worked, delivered, paused FROM evproc.deliver_batch();
SELECT state, reason FROM evproc_subscriptions WHERE name = 'hi_temp';
SELECT count(*) AS temp_tables FROM pg_class WHERE relname = 'hi_left_behind';
SELECT evproc_unsubscribe('hi_temp');
DROP FUNCTION hi_temp(evproc.event[]);

-------------------------------------------------------------------------------
-- 4. A handler is the function its owner chose: the owner of the handler's schema (on
--    PostgreSQL 15 the database owner owns public) drops it and creates another under
--    its name, to read the subscription owner's private table: nothing runs, the
--    subscription pauses and says why; resuming binds the name again (the owner's
--    choice). A subscription bound in another extension (as after a restore) binds the
--    name at its first batch.
-------------------------------------------------------------------------------
CREATE ROLE evproc_hi_dbowner;
GRANT USAGE ON SCHEMA evproc TO evproc_hi_dbowner;
SELECT pg_get_userbyid(datdba) AS original_db_owner FROM pg_database
 WHERE datname = current_database() \gset
SELECT format('ALTER DATABASE %I OWNER TO evproc_hi_dbowner', current_database()) \gexec
CREATE TABLE hi_private (secret text);
INSERT INTO hi_private VALUES ('the tenant''s secret');
GRANT SELECT ON hi_private TO evproc_hi_app;
CREATE FUNCTION hi_chosen(events evproc.event[]) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.hi_seen (what, value) SELECT 'chosen', e.id::text FROM unnest(events) e $$;
SELECT evproc_create_topic('hi.chosen', partitions => 1) > 0 AS created;
SELECT evproc_subscribe('hi_chosen', 'hi.chosen', 'hi_chosen', run_as => 'evproc_hi_app') > 0 AS subscribed;
SELECT handler_oid = 'hi_chosen(evproc.event[])'::regprocedure AS bound,
       handler_bound_in = (SELECT oid FROM pg_extension WHERE extname = 'evproc') AS in_this_extension
  FROM evproc.subscription WHERE name = 'hi_chosen';
TRUNCATE hi_seen;
SELECT evproc_enqueue('hi.chosen', 'k', '{}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SET ROLE evproc_hi_dbowner;
SELECT pg_temp.try('SELECT * FROM public.hi_private') AS db_owner_reads_secret;
DROP FUNCTION public.hi_chosen(evproc.event[]);
CREATE TABLE public.hi_loot (secret text);
GRANT INSERT ON public.hi_loot TO PUBLIC;
CREATE FUNCTION public.hi_chosen(events evproc.event[]) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.hi_loot SELECT secret FROM public.hi_private $$;
RESET ROLE;
SELECT evproc_enqueue('hi.chosen', 'k', '{}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT count(*) AS loot FROM hi_loot;
SELECT name, state, reason FROM evproc_subscriptions WHERE name = 'hi_chosen';
SELECT count(*) AS handled FROM hi_seen;
-- The owner resumes: the subscription is bound to the function the name resolves to now.
SELECT evproc_resume('hi_chosen');
SELECT handler_oid = 'hi_chosen(evproc.event[])'::regprocedure AS bound_again
  FROM evproc.subscription WHERE name = 'hi_chosen';
SELECT pg_temp.drain();
SELECT count(*) AS loot_once_the_owner_chose_it FROM hi_loot;
-- Bound in another extension, with an oid that means nothing here (as after pg_dump and
-- restore): the first batch binds the name as it resolves, and delivers.
UPDATE evproc.subscription SET handler_oid = 1, handler_bound_in = 1 WHERE name = 'hi_chosen';
SELECT evproc_enqueue('hi.chosen', 'k', '{}') > 0 AS enqueued;
SELECT evproc.take_tick() > 0 AS ticked;
SELECT pg_temp.drain();
SELECT handler_oid = 'hi_chosen(evproc.event[])'::regprocedure AS bound,
       handler_bound_in = (SELECT oid FROM pg_extension WHERE extname = 'evproc') AS in_this_extension
  FROM evproc.subscription WHERE name = 'hi_chosen';
SELECT evproc_unsubscribe('hi_chosen');
SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :'original_db_owner') \gexec
DROP FUNCTION hi_chosen(evproc.event[]);
DROP TABLE hi_loot, hi_private;
REVOKE USAGE ON SCHEMA evproc FROM evproc_hi_dbowner;
DROP ROLE evproc_hi_dbowner;

-------------------------------------------------------------------------------
-- Cleanup.
-------------------------------------------------------------------------------
SELECT evproc_unsubscribe(name) FROM evproc.subscription WHERE name LIKE 'hi\_%' ORDER BY name;
SELECT evproc_drop_topic(name) FROM evproc.topic WHERE name LIKE 'hi.%' ORDER BY name;
DROP TABLE hi_seen;
DROP FUNCTION hi_big_error(evproc.event[]), hi_path(evproc.event[]);
DROP SCHEMA hi_evil, hi_own CASCADE;
REVOKE USAGE ON SCHEMA evproc FROM evproc_hi_app;
DROP ROLE evproc_hi_app;
