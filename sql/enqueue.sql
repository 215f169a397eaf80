-- Enqueue: the event log row, the partition hash, the batch form and every refusal.
\i sql/include/try.sql

SELECT evproc_create_topic('orders', partitions => 16) > 0 AS created;
SELECT evproc_create_topic('strict', partitions => 4, payload_schema => '{
  "type": "object",
  "required": ["order_id", "customer"],
  "additionalProperties": false,
  "properties": {
    "order_id": {"type": "integer", "minimum": 1},
    "status":   {"enum": ["new", "paid"]},
    "customer": {"type": "object", "required": ["id"],
                 "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 8}}}
  }}') > 0 AS created;

-- One event: the returned id is the row's id, every column is stored.
SELECT evproc_enqueue('orders', 'customer-42', '{"order_id": 1}', 'OrderCreated.v1',
                      headers => '{"trace": "abc"}') AS first_id \gset
SELECT id = :first_id AS same_id, key, type, payload, headers, dedup_id,
       enqueued_at <= clock_timestamp() AS stamped,
       xid::text::bigint > 0 AS has_xid
  FROM evproc.log WHERE id = :first_id;

-- Inside one transaction, the events carry the transaction's xid8.
BEGIN;
SELECT evproc_enqueue('orders', 'a', '{"n": 1}') AS a_id \gset
SELECT evproc_enqueue('orders', 'b', '{"n": 2}') AS b_id \gset
SELECT count(DISTINCT xid) = 1 AND min(xid) = pg_current_xact_id() AS same_xid
  FROM evproc.log WHERE id IN (:a_id, :b_id);
SELECT :b_id > :a_id AS ids_grow;
COMMIT;

-- Partitions follow the documented FNV-1a 64-bit hash of the key (fixed values: a
-- change of hash breaks ordering of existing data and must be caught here).
SELECT key, partition FROM evproc.log WHERE id IN (:first_id, :a_id, :b_id) ORDER BY id;
SELECT evproc_enqueue('orders', 'customer-42', '{"n": 3}') AS again_id \gset
SELECT partition FROM evproc.log WHERE id = :again_id;
-- Keyless events are spread by id.
SELECT evproc_enqueue('orders', NULL, '{"n": 4}') AS keyless_id \gset
SELECT partition = (:keyless_id % 16) AS keyless_spread, key IS NULL AS no_key
  FROM evproc.log WHERE id = :keyless_id;

-- Unqualified call works with a default search_path; internals stay in schema evproc.
SELECT pg_get_function_identity_arguments('evproc_enqueue'::regproc);
SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE p.proname IN ('evproc_enqueue', 'evproc_enqueue_batch', 'evproc_create_topic') ORDER BY 1;

-- Schema validation accepts a valid payload...
SELECT evproc_enqueue('strict', 'k', '{"order_id": 7, "status": "new", "customer": {"id": "c1"}}') > 0 AS valid;

-- Refusals: SQLSTATE and a message that names the field.
SELECT count(*) AS before FROM evproc.log \gset
SELECT pg_temp.try($$SELECT evproc_enqueue(NULL, 'k', '{}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('', 'k', '{}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('missing', 'k', '{}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue(repeat('m', 100), 'k', '{}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', repeat('k', 513), '{}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', '', '{}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', NULL)$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', '[1, 2]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', '"text"')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', '42')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', 'null')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', '{bad json')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', '{}', repeat('t', 129))$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', '{}', '')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', '{}', dedup_id => repeat('d', 257))$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', '{}', dedup_id => '')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', '{}', headers => '[1]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', jsonb_build_object('blob', repeat('x', 2 * 1024 * 1024)))$$);
SET evproc.max_payload_bytes = '1kB';
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'k', jsonb_build_object('blob', repeat('x', 2000)))$$);
RESET evproc.max_payload_bytes;
SELECT pg_temp.try($$SELECT evproc_enqueue('strict', 'k', '{"customer": {"id": "c1"}}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('strict', 'k', '{"order_id": "7", "customer": {"id": "c1"}}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('strict', 'k', '{"order_id": 0, "customer": {"id": "c1"}}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('strict', 'k', '{"order_id": 7, "status": "gone", "customer": {"id": "c1"}}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('strict', 'k', '{"order_id": 7, "customer": {"id": ""}}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('strict', 'k', '{"order_id": 7, "customer": {"id": "123456789"}}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('strict', 'k', '{"order_id": 7, "customer": {}}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue('strict', 'k', '{"order_id": 7, "customer": {"id": "c"}, "extra": 1}')$$);
SELECT count(*) = :before AS nothing_written FROM evproc.log;

-- An error after earlier enqueues in the same transaction rolls all of them back.
BEGIN;
SELECT evproc_enqueue('orders', 'k', '{"n": 10}') > 0 AS ok;
SELECT evproc_enqueue('orders', 'k', '[]');
ROLLBACK;
SELECT count(*) = :before AS nothing_written FROM evproc.log;

-- Batch form: ids in input order, one row per event, same validation per element.
SELECT evproc_enqueue_batch('orders', '[
  {"key": "x", "payload": {"n": 1}, "type": "T"},
  {"key": "y", "payload": {"n": 2}, "headers": {"h": 1}},
  {"payload": {"n": 3}},
  {"key": "x", "payload": {"n": 4}, "dedup_id": "batch-d1"}
]') AS ids \gset
SELECT array_length(:'ids'::bigint[], 1) AS n,
       (:'ids'::bigint[])[1] < (:'ids'::bigint[])[2] AS ordered;
SELECT e.key, e.type, e.payload, e.headers, e.dedup_id, e.partition
  FROM unnest(:'ids'::bigint[]) WITH ORDINALITY AS u(id, pos)
  JOIN evproc.log e ON e.id = u.id WHERE e.key IS NOT NULL ORDER BY u.pos;
SELECT evproc_enqueue_batch('orders', '[]') AS empty_batch;
SELECT count(*) AS before FROM evproc.log \gset
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', NULL)$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch(NULL, '[]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', '{"payload": {}}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', '[{"payload": {}}, 5]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', '[{"payload": {}}, {"key": "k"}]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', '[{"payload": {}}, {"payload": {}, "key": 5}]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', '[{"payload": {}}, {"payload": [1]}]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', '[{"payload": {}}, {"payload": {}, "dedupe_id": "x"}]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', '[{"payload": {}}, {"payload": {}, "headers": "h"}]')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('strict', '[{"payload": {"order_id": 1, "customer": {"id": "a"}}},
                                        {"payload": {"order_id": -1, "customer": {"id": "a"}}}]')$$);
SET evproc.max_batch_events = 2;
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', '[{"payload": {}}, {"payload": {}}, {"payload": {}}]')$$);
RESET evproc.max_batch_events;
SELECT count(*) = :before AS nothing_written FROM evproc.log;

-- Events go straight into the log partition that holds their transaction's xid, with
-- their index entries (src/log_insert.cpp): found there through the window index.
BEGIN;
SELECT evproc_enqueue('orders', 'direct-1', '{}') AS direct_id \gset
SELECT evproc_enqueue_batch('orders', '[{"key": "direct-2", "payload": {}},
                                        {"key": "direct-3", "payload": {}}]') AS direct_ids \gset
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
SELECT count(*) AS via_window_index,
       bool_and(e.tableoid::regclass::text = format('evproc.%I', p.name)) AS in_xid_partition
  FROM evproc.log e
  JOIN evproc.log_partition p ON e.xid >= p.xid_from AND e.xid < p.xid_to
 WHERE e.topic_id = (SELECT id FROM evproc.topic WHERE name = 'orders')
   AND e.partition IN (SELECT partition FROM evproc.log WHERE key LIKE 'direct-%')
   AND e.xid = pg_current_xact_id()
   AND e.id IN (:direct_id, (:'direct_ids'::bigint[])[1], (:'direct_ids'::bigint[])[2]);
COMMIT;

-- Triggers and constraints on the log keep an INSERT's semantics: a row trigger sees
-- each event, single or batch, and a CHECK constraint refuses a row (naming the
-- partition, as an INSERT routed there does). This section takes ten event ids: later
-- files deliver keyless events, whose partition is their id's residue.
CREATE TABLE enqueue_seen (id bigint, key text);
CREATE FUNCTION enqueue_seen() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO public.enqueue_seen VALUES (NEW.id, NEW.key);
  RETURN NEW;
END $fn$;
CREATE TRIGGER enqueue_seen AFTER INSERT ON evproc.log FOR EACH ROW EXECUTE FUNCTION enqueue_seen();
SELECT evproc_enqueue('orders', 'seen-1', '{}') > 0 AS enqueued;
SELECT cardinality(evproc_enqueue_batch('orders', '[{"key": "seen-2", "payload": {}},
                                                    {"key": "seen-3", "payload": {}},
                                                    {"key": "seen-4", "payload": {}}]')) AS enqueued;
SELECT key FROM enqueue_seen ORDER BY id;
DROP TRIGGER enqueue_seen ON evproc.log;
DROP FUNCTION enqueue_seen();
DROP TABLE enqueue_seen;
ALTER TABLE evproc.log ADD CONSTRAINT enqueue_no_forbidden CHECK (key IS DISTINCT FROM 'forbidden');
SELECT pg_temp.try($$SELECT evproc_enqueue('orders', 'forbidden', '{}')$$);
SELECT pg_temp.try($$SELECT evproc_enqueue_batch('orders', '[{"key": "fine", "payload": {}},
                                                            {"key": "forbidden", "payload": {}}]')$$);
SELECT count(*) AS forbidden_or_fine FROM evproc.log WHERE key IN ('forbidden', 'fine');
ALTER TABLE evproc.log DROP CONSTRAINT enqueue_no_forbidden;

-- The window index serves the snapshot-window scan of DESIGN §3 with literal bounds,
-- on the one log partition that holds those xids (the first, made by sql/install.sql
-- above the xids in use then, at least 100,000 xids wide).
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT id FROM evproc.log
 WHERE topic_id = 1 AND partition = 3 AND xid >= '50000'::xid8 AND xid < '51000'::xid8
 ORDER BY xid, id;
RESET enable_seqscan;

