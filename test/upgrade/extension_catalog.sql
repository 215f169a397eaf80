-- Every object of extension evproc in the current database, one line each, with all
-- that an update script could get wrong: definitions, column order and types,
-- defaults, constraints, indexes, triggers, privileges, comments, configuration-table
-- entries. Names only, never OIDs, so that two databases compare line by line:
-- t/015_upgrade.pl compares a database updated from every older version with a fresh
-- install of the current one. Lines are sorted; psql runs it with -At.
WITH ext AS (
    SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'evproc'
),
members AS (
    SELECT d.classid, d.objid
      FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
-- Privileges as sorted "grantee:privilege(grantable)" items: the order of aclitems
-- depends on the order of GRANTs, which two scripts may legitimately differ in.
acl(kind, name, items) AS (
    SELECT 'function', p.oid::regprocedure::text, p.proacl
      FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
    UNION ALL
    SELECT 'relation', c.oid::regclass::text, c.relacl
      FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
    UNION ALL
    SELECT 'schema', n.nspname::text, n.nspacl
      FROM members m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
    UNION ALL
    SELECT 'type', t.oid::regtype::text, t.typacl
      FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
),
-- Tables of the extension and the relations that hang off them (indexes, sequences
-- of identity columns, the default log partition); partitions made by maintenance are
-- not members and not described.
rels AS (
    SELECT c.oid, c.relkind FROM members m JOIN pg_class c
        ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
),
lines(line) AS (
    SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0) FROM members m
    UNION ALL
    SELECT format('acl %s %s: %s', a.kind, a.name,
                  coalesce((SELECT string_agg(format('%s:%s%s',
                                   CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END,
                                   x.privilege_type, CASE WHEN x.is_grantable THEN '*' ELSE '' END), ' '
                                   ORDER BY 1)
                              FROM aclexplode(a.items) x), 'default'))
      FROM acl a
    UNION ALL
    SELECT format('function %s: %s', p.oid::regprocedure, pg_get_functiondef(p.oid))
      FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
     WHERE p.prokind IN ('f', 'p', 'w')
    UNION ALL
    SELECT format('relation %s kind %s options %s persistence %s', c.oid::regclass, c.relkind,
                  c.reloptions, c.relpersistence)
      FROM rels r JOIN pg_class c ON c.oid = r.oid
    UNION ALL
    SELECT format('column %s #%s %s %s notnull %s default %s identity %s generated %s',
                  a.attrelid::regclass, row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
                  a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated)
      FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind IN ('r', 'p', 'v', 'c')
    UNION ALL
    -- Composite types of the extension (evproc.event): their attributes in order.
    SELECT format('type %s #%s %s %s', t.oid::regtype,
                  row_number() OVER (PARTITION BY t.oid ORDER BY a.attnum), a.attname,
                  format_type(a.atttypid, a.atttypmod))
      FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
      JOIN pg_attribute a ON a.attrelid = t.typrelid
     WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('view %s: %s', r.oid::regclass, pg_get_viewdef(r.oid))
      FROM rels r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('constraint %s %s: %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
      FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(tg.oid))
      FROM rels r JOIN pg_trigger tg ON tg.tgrelid = r.oid AND NOT tg.tgisinternal
    UNION ALL
    SELECT format('partition %s of %s: %s', c.oid::regclass, i.inhparent::regclass,
                  pg_get_expr(c.relpartbound, c.oid))
      FROM rels r JOIN pg_class c ON c.oid = r.oid JOIN pg_inherits i ON i.inhrelid = c.oid
    UNION ALL
    SELECT format('partitioned %s by %s', pt.partrelid::regclass, pg_get_partkeydef(pt.partrelid))
      FROM rels r JOIN pg_partitioned_table pt ON pt.partrelid = r.oid
    UNION ALL
    SELECT format('sequence %s %s start %s increment %s min %s max %s cache %s cycle %s',
                  s.seqrelid::regclass, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                  s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
      FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
    UNION ALL
    SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
      FROM pg_description d JOIN members m ON m.classid = d.classoid AND m.objid = d.objoid
    UNION ALL
    SELECT format('config %s where %s', x.tab::regclass, quote_literal(x.cond))
      FROM ext, unnest(ext.extconfig, ext.extcondition) AS x(tab, cond)
)
SELECT line FROM lines ORDER BY line COLLATE "C";
