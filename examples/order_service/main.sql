-- The order-service example, start to finish. Run it in a database whose server has
-- evproc in shared_preload_libraries and evproc.database naming this database:
--   psql -X -v ON_ERROR_STOP=1 -d evproc_demo -f examples/order_service/main.sql
-- (scripts/demo.sh does exactly that). Re-runnable: 01_schema.sql starts by removing
-- what an earlier run left. Ends with balance checks that make psql fail if anything
-- is off. examples/README.md walks through it.
\set ON_ERROR_STOP 1
\set QUIET on
\pset footer off
\pset null '-'
SET search_path = shop, public;

\ir 01_schema.sql
\ir 02_app.sql
\ir 03_handlers.sql
\ir 04_run.sql
\ir 05_checks.sql
