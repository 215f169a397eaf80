-- try(sql): runs a statement and shows its SQLSTATE and message, so a test of a refusal
-- asserts both the code an application maps and the field the message names.
CREATE FUNCTION pg_temp.try(statement text) RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  EXECUTE statement;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $fn$;
