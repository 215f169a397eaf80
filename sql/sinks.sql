-- Sinks: who may create them (evproc_allow_sinks), option validation (22023 naming the
-- option), the destination allow-list (test/evproc.conf: 127.0.0.1, hooks.example.com,
-- *.corp.example), secrets masked for other roles.
\i sql/include/try.sql

CREATE ROLE evproc_sink_app;
CREATE ROLE evproc_sink_member IN ROLE evproc_sink_app;
CREATE ROLE evproc_sink_other;
GRANT USAGE ON SCHEMA evproc TO evproc_sink_app, evproc_sink_other;

SHOW evproc.sink_allowed_destinations;

-- Not allowed yet: 42501 with the hint naming the function.
SET ROLE evproc_sink_app;
SELECT pg_temp.try($$SELECT evproc_check_sink('{"type": "webhook", "url": "https://hooks.example.com/in"}')$$);
-- Only superusers allow it.
SELECT pg_temp.try($$SELECT evproc_allow_sinks('evproc_sink_app')$$);
RESET ROLE;
SELECT evproc_allow_sinks('evproc_sink_app') AS allowed, evproc_allow_sinks('evproc_sink_app') AS again;
SELECT pg_temp.try($$SELECT evproc_allow_sinks(NULL)$$);

-- A member of an allowed role may too; other roles may not.
SET ROLE evproc_sink_member;
SELECT evproc_check_sink('{"type": "webhook", "url": "https://hooks.example.com/in"}');
SET ROLE evproc_sink_other;
SELECT pg_temp.try($$SELECT evproc_check_sink('{"type": "webhook", "url": "https://hooks.example.com/in"}')$$);

-- Every bad option is named.
SET ROLE evproc_sink_app;
SELECT o AS sink, pg_temp.try(format('SELECT evproc_check_sink(%L)', o)) AS answer
  FROM unnest(ARRAY[
    '[]',
    '{}',
    '{"type": "pigeon"}',
    '{"type": "webhook"}',
    '{"type": "webhook", "url": "ftp://hooks.example.com/"}',
    '{"type": "webhook", "url": "https://user:pw@hooks.example.com/"}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "mode": "stream"}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "timeout_ms": 0}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "timeout_ms": "10s"}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "connect_timeout_ms": 60001}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "max_in_flight": 0}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "retry_after_cap_ms": -1}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "secret": "short"}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "secret": "whsec_%%%"}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "headers": {"webhook-id": "x"}}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "headers": {"X-A": "a\r\nB: c"}}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "headers": {"X-A": 1}}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "follow_redirects": "yes"}',
    '{"type": "webhook", "url": "https://hooks.example.com/", "colour": "blue"}'
  ]::jsonb[]) AS o;

-- Destinations: listed hosts, wildcard subdomains and addresses only; loopback only as
-- listed (127.0.0.1 is, localhost and ::1 are not), link-local never here.
SELECT u AS url, pg_temp.try(format('SELECT evproc_check_sink(%L)',
                                    jsonb_build_object('type', 'webhook', 'url', u))) AS answer
  FROM unnest(ARRAY['https://hooks.example.com/in', 'https://HOOKS.example.com:8443/in',
                    'https://a.corp.example/x', 'https://corp.example/x',
                    'https://evil.hooks.example.com/', 'http://127.0.0.1:8080/',
                    'http://localhost:8080/', 'http://[::1]:8080/',
                    'http://169.254.169.254/latest/meta-data', 'http://10.0.0.1/']) AS u;

-- TLS verification stays on for non-superusers; a superuser may turn it off.
SELECT pg_temp.try($$SELECT evproc_check_sink('{"type": "webhook", "url": "https://hooks.example.com/", "tls_verify": false}')$$);
RESET ROLE;
SELECT evproc_check_sink('{"type": "webhook", "url": "https://hooks.example.com/", "tls_verify": false}') ->> 'tls_verify' AS superuser_may;

-- The allow-list is the superuser's: a role cannot change it.
SET ROLE evproc_sink_app;
SELECT pg_temp.try($$SET evproc.sink_allowed_destinations = '10.0.0.0/8'$$);
RESET ROLE;

-- Masking, as roles other than the owner see a sink.
SELECT evproc.mask_sink('{"type": "webhook", "url": "https://hooks.example.com/in?token=abc",
                          "secret": "0123456789abcdef", "headers": {"Authorization": "Bearer x"}}');

-- Taken back.
SELECT evproc_disallow_sinks('evproc_sink_app') AS disallowed, evproc_disallow_sinks('evproc_sink_app') AS again;
SET ROLE evproc_sink_member;
SELECT pg_temp.try($$SELECT evproc_check_sink('{"type": "webhook", "url": "https://hooks.example.com/in"}')$$);
RESET ROLE;

-- evproc_alter_sink on what is not a sink subscription.
SELECT pg_temp.try($$SELECT evproc_alter_sink('no_such_subscription', '{"type": "webhook"}')$$);

DROP ROLE evproc_sink_member;
REVOKE USAGE ON SCHEMA evproc FROM evproc_sink_app, evproc_sink_other;
DROP ROLE evproc_sink_app, evproc_sink_other;
