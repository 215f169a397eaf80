-- Dedup: a repeated dedup id within the window returns the first event's id.
SELECT evproc_create_topic('pay', dedup_window => '1 hour') > 0 AS created;
SELECT evproc_create_topic('other') > 0 AS created;

SELECT evproc_enqueue('pay', 'k', '{"n": 1}', dedup_id => 'charge-1') AS first_id \gset
SELECT evproc_enqueue('pay', 'k', '{"n": 2}', dedup_id => 'charge-1') = :first_id AS same_id;
SELECT evproc_enqueue('pay', 'other-key', '{"n": 3}', dedup_id => 'charge-1') = :first_id AS same_id_any_key;
SELECT count(*) AS stored, min(payload->>'n') AS kept_payload FROM evproc.log WHERE id = :first_id OR dedup_id = 'charge-1';

-- Dedup ids are per topic.
SELECT evproc_enqueue('other', 'k', '{"n": 1}', dedup_id => 'charge-1') <> :first_id AS other_topic_new;

-- Same transaction, repeated id.
BEGIN;
SELECT evproc_enqueue('pay', 'k', '{}', dedup_id => 'tx-1') AS tx_id \gset
SELECT evproc_enqueue('pay', 'k', '{}', dedup_id => 'tx-1') = :tx_id AS same_in_txn;
COMMIT;

-- A rolled-back enqueue leaves its dedup id free.
BEGIN;
SELECT evproc_enqueue('pay', 'k', '{}', dedup_id => 'rolled-back') > 0 AS ok;
ROLLBACK;
SELECT count(*) AS dedup_rows FROM evproc.dedup WHERE dedup_id = 'rolled-back';
SELECT evproc_enqueue('pay', 'k', '{}', dedup_id => 'rolled-back') AS rb_id \gset
SELECT count(*) AS events FROM evproc.log WHERE dedup_id = 'rolled-back';

-- Once the window has passed, the id is new again (the entry is replaced, not duplicated).
UPDATE evproc.dedup SET expires_at = now() - interval '1 second' WHERE dedup_id = 'charge-1';
SELECT evproc_enqueue('pay', 'k', '{"n": 4}', dedup_id => 'charge-1') AS renewed_id \gset
SELECT :renewed_id <> :first_id AS new_event_after_window;
SELECT count(*) AS entries, bool_and(event_id = :renewed_id) AS points_to_new,
       bool_and(expires_at > now() + interval '59 minutes') AS window_restarted
  FROM evproc.dedup d JOIN evproc.topic t ON t.id = d.topic_id
 WHERE t.name = 'pay' AND d.dedup_id = 'charge-1';
SELECT count(*) AS events_with_id FROM evproc.log e JOIN evproc.topic t ON t.id = e.topic_id
 WHERE t.name = 'pay' AND e.dedup_id = 'charge-1';

-- A zero window disables dedup.
SELECT evproc_create_topic('nodedup', dedup_window => '0 s') > 0 AS created;
SELECT evproc_enqueue('nodedup', 'k', '{}', dedup_id => 'z') AS z1 \gset
SELECT evproc_enqueue('nodedup', 'k', '{}', dedup_id => 'z') <> :z1 AS zero_window_is_new;

-- Batch: repeats inside the batch and against the log map to the first event.
SELECT evproc_enqueue_batch('pay', '[
  {"payload": {"n": 1}, "dedup_id": "b-1"},
  {"payload": {"n": 2}, "dedup_id": "b-1"},
  {"payload": {"n": 3}, "dedup_id": "charge-1"},
  {"payload": {"n": 4}}
]') AS ids \gset
SELECT (:'ids'::bigint[])[1] = (:'ids'::bigint[])[2] AS in_batch_repeat,
       (:'ids'::bigint[])[3] = :renewed_id AS repeat_of_log;
SELECT count(DISTINCT u.id) AS distinct_ids, count(DISTINCT e.id) AS stored
  FROM unnest(:'ids'::bigint[]) u(id) LEFT JOIN evproc.log e USING (id);
