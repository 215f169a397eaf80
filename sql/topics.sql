-- Topic administration: create, alter, drop, and every refusal with its SQLSTATE.
\set VERBOSITY sqlstate
SELECT evproc_create_topic('tp_orders') > 0 AS created;
SELECT name, partitions, retention, dedup_window, max_pending, payload_schema FROM evproc_topics WHERE name LIKE 'tp\_%';
SELECT evproc_create_topic('tp_payments', partitions => 4, retention => '2 days',
                           dedup_window => '10 minutes', max_pending => 1000,
                           payload_schema => '{"type":"object","required":["amount"]}') > 0 AS created;
SELECT name, partitions, retention, dedup_window, max_pending, payload_schema FROM evproc_topics WHERE name LIKE 'tp\_%' ORDER BY name;

-- Refusals.
SELECT evproc_create_topic('tp_orders');                    -- 42710 duplicate
SELECT evproc_create_topic(NULL);                        -- 22023
SELECT evproc_create_topic('');                          -- 22023
SELECT evproc_create_topic('bad name');                  -- 22023
SELECT evproc_create_topic(repeat('x', 64));             -- 22023
SELECT evproc_create_topic('t', partitions => 0);        -- 22023
SELECT evproc_create_topic('t', partitions => 1025);     -- 22023
SELECT evproc_create_topic('t', partitions => NULL);     -- 22023
SELECT evproc_create_topic('t', retention => '0 s');     -- 22023
SELECT evproc_create_topic('t', dedup_window => '-1 s'); -- 22023
SELECT evproc_create_topic('t', max_pending => 0);       -- 22023
SELECT evproc_create_topic('t', payload_schema => '[1]');                              -- 22023
SELECT evproc_create_topic('t', payload_schema => '{"type":"strange"}');               -- 22023
SELECT evproc_create_topic('t', payload_schema => '{"properties":{"a":{"minimum":"x"}}}'); -- 22023
SELECT evproc_create_topic('t', payload_schema => '{"pattern":"^a"}');                 -- 22023
SELECT count(*) AS no_half_created_topic FROM evproc_topics WHERE name = 't';

-- The messages name what is wrong.
\set VERBOSITY default
SELECT evproc_create_topic('t', payload_schema => '{"properties":{"qty":{"minimum":"x"}}}');
SELECT evproc_create_topic('t', partitions => 0);
\set VERBOSITY sqlstate

-- A JSON null schema means none.
SELECT evproc_create_topic('noschema', payload_schema => 'null') > 0 AS created;
SELECT payload_schema IS NULL AS no_schema FROM evproc_topics WHERE name = 'noschema';

-- Alter: NULL keeps a setting, clear_* removes it.
SELECT evproc_alter_topic('tp_payments', retention => '3 days', max_pending => 50);
SELECT retention, dedup_window, max_pending, partitions FROM evproc_topics WHERE name = 'tp_payments';
SELECT evproc_alter_topic('tp_payments', clear_max_pending => true, clear_schema => true);
SELECT max_pending, payload_schema FROM evproc_topics WHERE name = 'tp_payments';
SELECT evproc_alter_topic('tp_payments', payload_schema => '{"type":"object"}');
SELECT payload_schema FROM evproc_topics WHERE name = 'tp_payments';
SELECT evproc_alter_topic('tp_payments', partitions => 8);
SELECT partitions FROM evproc_topics WHERE name = 'tp_payments';
SELECT evproc_alter_topic('nope', retention => '1 day');                 -- 42704
SELECT evproc_alter_topic(NULL);                                         -- 22023
SELECT evproc_alter_topic('tp_payments', max_pending => -1);                -- 22023
SELECT evproc_alter_topic('tp_payments', max_pending => 5, clear_max_pending => true); -- 22023
SELECT evproc_alter_topic('tp_payments', payload_schema => '{"minLength":-1}');        -- 22023
SELECT max_pending, payload_schema FROM evproc_topics WHERE name = 'tp_payments';

-- Partitions are frozen once a topic has events: keys would move and lose order.
SELECT evproc_enqueue('tp_payments', 'k', '{"amount": 1}') > 0 AS enqueued;
SELECT evproc_alter_topic('tp_payments', partitions => 2);                  -- 0A000
SELECT evproc_alter_topic('tp_payments', partitions => 8);                  -- same value is fine

-- Drop removes the topic, its history and its dedup ids.
SELECT evproc_enqueue('tp_payments', 'k', '{"amount": 2}', dedup_id => 'd1') > 0 AS enqueued;
SELECT evproc_drop_topic('tp_payments');
SELECT count(*) AS topics FROM evproc_topics WHERE name = 'tp_payments';
SELECT count(*) AS events FROM evproc.log e WHERE NOT EXISTS (SELECT 1 FROM evproc.topic t WHERE t.id = e.topic_id);
SELECT count(*) AS dedup FROM evproc.dedup d WHERE NOT EXISTS (SELECT 1 FROM evproc.topic t WHERE t.id = d.topic_id);
SELECT evproc_drop_topic('tp_payments');                                    -- 42704
SELECT evproc_drop_topic(NULL);                                          -- 22023
SELECT evproc_enqueue('tp_payments', 'k', '{"amount": 3}');                 -- 42704 after drop

-- The topic cache follows changes made in this session.
SELECT evproc_create_topic('cached', payload_schema => '{"required":["a"]}') > 0 AS created;
SELECT evproc_enqueue('cached', NULL, '{"b": 1}');                       -- 23514
SELECT evproc_alter_topic('cached', clear_schema => true);
SELECT evproc_enqueue('cached', NULL, '{"b": 1}') > 0 AS accepted_after_clear;
-- ...and is restored by a rollback.
BEGIN;
SELECT evproc_alter_topic('cached', payload_schema => '{"required":["a"]}');
SELECT evproc_enqueue('cached', NULL, '{"b": 1}');                       -- 23514
ROLLBACK;
SELECT evproc_enqueue('cached', NULL, '{"b": 1}') > 0 AS accepted_after_rollback;
BEGIN;
SELECT evproc_drop_topic('cached');
ROLLBACK;
SELECT evproc_enqueue('cached', NULL, '{"b": 2}') > 0 AS topic_survives_rolled_back_drop;
