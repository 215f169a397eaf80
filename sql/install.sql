-- What CREATE EXTENSION makes; runs first (Makefile), in the database pg_regress created
-- the extension in.

-- The version installed, and the update paths from the released ones (README
-- "Upgrading"; t/015_upgrade.pl runs each against a fresh install).
SELECT extversion, extversion = evproc.library_version() AS library_matches
  FROM pg_extension WHERE extname = 'evproc';
SELECT source, target, path FROM pg_extension_update_paths('evproc')
 WHERE path IS NOT NULL ORDER BY source, target;

-- What it leaves for pg_dump (README "Backup and restore").
--
-- Every table and sequence that holds state is a configuration table: pg_dump dumps its
-- rows (tick 0, made by the install script, excepted) or its value. The identity
-- sequences of topic, subscription, tick and replay too: without them a restored
-- database would hand out ids the restored rows already have (the launcher's first tick
-- would fail on tick_pkey).
SELECT c.relname, c.relkind, x.condition
  FROM pg_extension e,
       unnest(e.extconfig, e.extcondition) AS x(oid, condition)
       JOIN pg_class c ON c.oid = x.oid
 WHERE e.extname = 'evproc'
 ORDER BY c.relkind DESC, c.relname;
-- Every table and sequence of schema evproc that belongs to the extension is in that
-- list (a new one that holds state must be added to it).
SELECT c.relname AS not_dumped
  FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                   AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
 WHERE c.relnamespace = 'evproc'::regnamespace AND c.relkind IN ('r', 'S')
   AND c.oid <> ALL ((SELECT extconfig FROM pg_extension WHERE extname = 'evproc')::oid[])
 ORDER BY 1;
-- Among them the identity sequences (of topic, subscription, tick, replay): pg_dump
-- sets the value of an extension's identity sequence only when it is listed.
SELECT count(*) AS identity_sequences_dumped
  FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                   AND d.deptype = 'i' AND d.refclassid = 'pg_class'::regclass
 WHERE c.relnamespace = 'evproc'::regnamespace AND c.relkind = 'S'
   AND c.oid = ANY ((SELECT extconfig FROM pg_extension WHERE extname = 'evproc')::oid[]);

-- The log has only its default partition at install: a dump restored into this database
-- brings its own partitions, which must not clash with any made here (by name or by
-- xid range). And evproc.log has no index of its own: each partition has its own, so
-- that pg_restore, attaching a dumped partition, does not build a second set on it.
SELECT c.relname AS partition, pg_get_expr(c.relpartbound, c.oid) AS bound
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'evproc.log'::regclass;
SELECT count(*) AS log_partitions FROM evproc.log_partition;
SELECT count(*) AS parent_indexes FROM pg_index WHERE indrelid = 'evproc.log'::regclass;
SELECT indexrelid::regclass AS default_index FROM pg_index
 WHERE indrelid = 'evproc.log_default'::regclass ORDER BY 1;

-- The first maintenance makes the first partition, as the launcher's does as soon as it
-- finds the extension: ahead of the current xid by evproc.partition_margin() (the xids
-- below may be in use by transactions about to enqueue; their events go to the default
-- partition), with its indexes, and not a member of the extension (maintenance drops
-- it; pg_dump dumps it as a table of its own).
SELECT evproc.maintain_log();
SELECT count(*) AS log_partitions,
       min(xid_from) > pg_current_xact_id() AS ahead_of_current,
       min(xid_from::text::numeric) - pg_current_xact_id()::text::numeric
         BETWEEN 1 AND evproc.partition_margin(pg_current_xact_id()) AS within_margin
  FROM evproc.log_partition;
-- Once the xid counter reaches it (the tests that follow start from there), the next
-- maintenance makes the one after it, adjacent.
\i sql/include/burn_xids.sql
SELECT min(xid_from) AS first_partition FROM evproc.log_partition \gset
CALL pg_temp.burn_xids_to(:'first_partition');
SELECT evproc.maintain_log();
SELECT count(*) AS log_partitions,
       bool_and(xid_from <= pg_current_xact_id()) FILTER (WHERE opened_at IS NOT NULL) AS current_opened,
       count(*) FILTER (WHERE xid_from > pg_current_xact_id()) AS ahead
  FROM evproc.log_partition;
SELECT count(*) AS members
  FROM evproc.log_partition p
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = to_regclass(format('evproc.%I', p.name))
                  AND d.refclassid = 'pg_extension'::regclass;
SELECT count(*) AS partition_indexes,
       bool_and(i.indexrelid::regclass::text ~ '^evproc\.log_p\d+_(window_idx|id_brin)$') AS named_after_partition
  FROM evproc.log_partition p JOIN pg_index i ON i.indrelid = to_regclass(format('evproc.%I', p.name));
