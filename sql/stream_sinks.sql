-- Stream sinks (docs/streams.md): NATS JetStream and Kafka options checked as evproc_subscribe
-- checks them (22023 naming the option), destinations through the allow-list
-- (test/evproc.conf: 127.0.0.1, hooks.example.com, *.corp.example), credentials masked
-- for roles other than the owner.
\i sql/include/try.sql

CREATE ROLE evproc_stream_app;
GRANT USAGE ON SCHEMA evproc TO evproc_stream_app;

-- Like every sink, only for roles a superuser allowed.
SET ROLE evproc_stream_app;
SELECT pg_temp.try($$SELECT evproc_check_sink('{"type": "nats", "servers": ["nats://127.0.0.1:4222"]}')$$);
RESET ROLE;
SELECT evproc_allow_sinks('evproc_stream_app');
SET ROLE evproc_stream_app;

-- Valid sinks come back as given.
SELECT evproc_check_sink('{"type": "nats", "servers": ["nats://127.0.0.1:4222", "tls://a.corp.example:4222"], "subject": "evproc.{topic}.{key}", "token": "t0ken"}');
SELECT evproc_check_sink('{"type": "nats", "servers": "127.0.0.1:4222"}') ->> 'servers' AS one_server;
SELECT evproc_check_sink('{"type": "kafka", "brokers": "127.0.0.1:9092,b.corp.example:9093", "topic": "orders.v1", "security_protocol": "sasl_ssl", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u", "sasl_password": "pw"}') ->> 'topic' AS kafka_topic;

-- Every bad option is named.
SELECT o AS sink, pg_temp.try(format('SELECT evproc_check_sink(%L)', o)) AS answer
  FROM unnest(ARRAY[
    '{"type": "nats"}',
    '{"type": "nats", "servers": []}',
    '{"type": "nats", "servers": ["http://127.0.0.1:4222"]}',
    '{"type": "nats", "servers": ["nats://user:pw@127.0.0.1:4222"]}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "subject": "a.*"}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "subject": "a..{topic}"}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "subject": "a.{nope}"}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "user": "u"}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "token": "t", "user": "u", "password": "p"}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "nkey": "UABC"}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "timeout_ms": 0}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "max_in_flight": 4097}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "source": "a b"}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "expect_stream": "a.b"}',
    '{"type": "nats", "servers": ["tls://127.0.0.1:4222"], "tls": false}',
    '{"type": "nats", "servers": ["127.0.0.1:4222"], "subjet": "x"}',
    '{"type": "kafka", "topic": "t"}',
    '{"type": "kafka", "brokers": "127.0.0.1:9092"}',
    '{"type": "kafka", "brokers": "127.0.0.1:9092", "topic": "a/b"}',
    '{"type": "kafka", "brokers": "127.0.0.1:9092", "topic": "t", "compression": "brotli"}',
    '{"type": "kafka", "brokers": "127.0.0.1:9092", "topic": "t", "security_protocol": "sasl_plaintext"}',
    '{"type": "kafka", "brokers": "127.0.0.1:9092", "topic": "t", "timeout_ms": 10}',
    '{"type": "kafka", "brokers": "127.0.0.1:9092", "topic": "t", "enable.idempotence": false}'
  ]::jsonb[]) AS o;

-- Destinations: every server or broker must be allowed; loopback only as listed.
SELECT s AS sink, pg_temp.try(format('SELECT evproc_check_sink(%L)', s)) AS answer
  FROM unnest(ARRAY[
    '{"type": "nats", "servers": ["nats://127.0.0.1:4222", "nats://10.0.0.1:4222"]}',
    '{"type": "nats", "servers": ["nats://localhost:4222"]}',
    '{"type": "nats", "servers": ["nats://[::1]:4222"]}',
    '{"type": "kafka", "brokers": "127.0.0.1:9092,kafka.internal:9092", "topic": "t"}',
    '{"type": "kafka", "brokers": "169.254.169.254:9092", "topic": "t"}'
  ]::jsonb[]) AS s;

-- TLS verification stays on for non-superusers.
SELECT pg_temp.try($$SELECT evproc_check_sink('{"type": "nats", "servers": ["tls://127.0.0.1:4222"], "tls_verify": false}')$$);
SELECT pg_temp.try($$SELECT evproc_check_sink('{"type": "kafka", "brokers": "127.0.0.1:9092", "topic": "t", "security_protocol": "ssl", "tls_verify": false}')$$);
RESET ROLE;
SELECT evproc_check_sink('{"type": "nats", "servers": ["tls://127.0.0.1:4222"], "tls_verify": false}') ->> 'tls_verify' AS superuser_may;

-- Credentials as other roles see them.
SELECT evproc.mask_sink('{"type": "nats", "servers": ["127.0.0.1:4222"], "token": "t0ken"}');
SELECT evproc.mask_sink('{"type": "nats", "servers": ["127.0.0.1:4222"], "user": "u", "password": "pw"}');
SELECT evproc.mask_sink('{"type": "nats", "servers": ["127.0.0.1:4222"], "nkey": "UA", "nkey_seed": "SUA"}');
SELECT evproc.mask_sink('{"type": "kafka", "brokers": "127.0.0.1:9092", "topic": "t", "sasl_username": "u", "sasl_password": "pw"}');

SELECT evproc_disallow_sinks('evproc_stream_app');
REVOKE USAGE ON SCHEMA evproc FROM evproc_stream_app;
DROP ROLE evproc_stream_app;
