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

-- Many failing calls do not grow the backend's long-lived memory.
DO $$
DECLARE
  before bigint := evproc.boundary_test('top_memory');
  after bigint;
BEGIN
  FOR i IN 1..2000 LOOP
    BEGIN
      PERFORM evproc.boundary_test(CASE WHEN i % 2 = 0 THEN 'pg_error' ELSE 'cpp_error' END);
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
