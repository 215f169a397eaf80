-- burn_xids_to(target): moves the xid counter to target, one committed transaction per
-- xid (log partitions are ranges of xids).
CREATE PROCEDURE pg_temp.burn_xids_to(target xid8) LANGUAGE plpgsql AS $fn$
BEGIN
  WHILE pg_current_xact_id() < target LOOP
    COMMIT;
  END LOOP;
END $fn$;
