-- Runs batches until no unit has work; sums what they did.
CREATE FUNCTION pg_temp.drain() RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
  r record;
  batches int := 0;
  delivered bigint := 0;
  failed bigint := 0;
  dead bigint := 0;
BEGIN
  LOOP
    r := evproc.deliver_batch();
    EXIT WHEN NOT r.worked;
    batches := batches + 1;
    delivered := delivered + r.delivered;
    failed := failed + r.failed;
    dead := dead + r.dead;
    IF batches > 500 THEN RAISE EXCEPTION 'delivery does not come to an end'; END IF;
  END LOOP;
  RETURN format('delivered %s, failed %s, dead %s', delivered, failed, dead);
END $fn$;
