-- The C++/PostgreSQL error boundary: errors raised deep inside C++ reach the caller with
-- their SQLSTATE, the destructors of the unwound C++ frames run, and nothing leaks.
\set VERBOSITY default
SELECT evproc.boundary_test('ok') AS ok_result;
SELECT evproc.boundary_test('destroyed') AS destroyed_before \gset
-- A PostgreSQL ERROR (22P02 from int4in) raised under C++ frames that own objects.
SELECT evproc.boundary_test('pg_error');
\set VERBOSITY sqlstate
SELECT evproc.boundary_test('pg_error');
SELECT evproc.boundary_test('cpp_error');
SELECT evproc.boundary_test('bad_alloc');
SELECT evproc.boundary_test('unknown');
\set VERBOSITY default
SELECT evproc.boundary_test('cpp_error');
SELECT evproc.boundary_test('live') AS live_objects_after_errors;
-- 6 frames (5 recursion levels + the failing one) per call; 5 failing calls above.
SELECT evproc.boundary_test('destroyed') - :destroyed_before AS destructors_ran;

-- A C++ exception thrown by the C++ code inside a CallPostgres lambda (after it ran
-- PostgreSQL code under CallPostgres's error handler): an ERROR naming the function, not
-- a crashed backend (and a restarted cluster). PostgreSQL's error handler stack and
-- error context stack are put back: the errors after it carry no stale CONTEXT line
-- from the unwound lambda and jump to live handlers.
SELECT evproc.boundary_test('destroyed') AS destroyed_before \gset
SELECT evproc.boundary_test('throw_in_call');
SELECT evproc.boundary_test('throw_in_call_context');
SELECT evproc.boundary_test('pg_error');
SELECT evproc.boundary_test('cpp_error');
\set VERBOSITY sqlstate
SELECT evproc.boundary_test('throw_in_call');
\set VERBOSITY default
SELECT evproc.boundary_test('ok') AS still_works;
SELECT evproc.boundary_test('live') AS live_objects_after_lambda_throws;
-- 6 frames per call: 5 failing calls and one that succeeded above.
SELECT evproc.boundary_test('destroyed') - :destroyed_before AS destructors_ran;
-- In a subtransaction that catches it, the session goes on.
DO $$
BEGIN
  PERFORM evproc.boundary_test('throw_in_call_context');
EXCEPTION WHEN internal_error THEN
  RAISE NOTICE 'caught: % (%)', SQLERRM, SQLSTATE;
END $$;
SELECT evproc.boundary_test('ok') AS still_works;

-- Many failing calls do not grow the backend's long-lived memory.
DO $$
DECLARE
  before bigint := evproc.boundary_test('top_memory');
  after bigint;
BEGIN
  FOR i IN 1..2000 LOOP
    BEGIN
      PERFORM evproc.boundary_test(CASE i % 3 WHEN 0 THEN 'pg_error' WHEN 1 THEN 'cpp_error'
                                               ELSE 'throw_in_call_context' END);
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END LOOP;
  after := evproc.boundary_test('top_memory');
  IF after - before > 64 * 1024 THEN
    RAISE EXCEPTION 'TopMemoryContext grew by % bytes over 2000 errors', after - before;
  END IF;
  RAISE NOTICE 'no leak over 2000 errors';
END $$;
SELECT evproc.boundary_test('live') AS live_objects_after_loop;
