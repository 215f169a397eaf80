-- evproc 0.2.0 -> 0.3.0 (ALTER EXTENSION evproc UPDATE). Released: never edited once
-- 0.3.0 is released (extension/versions/SHA256SUMS).
-- What a fresh 0.3.0 install makes, t/015_upgrade.pl checks that this script makes too.
\echo Use "ALTER EXTENSION evproc UPDATE TO '0.3.0'" to load this file. \quit

-- Commits on topics that no subscription delivers now (paused, breaker open, none) do
-- not wake the launcher (issue 13): evproc.sync_stats() tells them which topics some
-- subscription delivers, and pausing or resuming has the launcher sync at once.
-- The topics some subscription delivers now, with their partition counts (set by
-- evproc.sync_stats()): a commit on another topic does not wake the launcher, whose
-- next tick, or one a second, takes its partitions (src/commit_wake.cpp).
CREATE FUNCTION evproc.set_deliverable(topic_ids integer[], partitions integer[]) RETURNS void
    AS 'MODULE_PATHNAME', 'evproc_set_deliverable' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION evproc.set_deliverable(integer[], integer[]) FROM PUBLIC;
CREATE OR REPLACE FUNCTION evproc.pause_impl(caller oid, name text, reason text)
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => true);
BEGIN
    UPDATE evproc.subscription SET paused = true, paused_reason = coalesce(reason, 'paused by operator')
     WHERE id = s.id;
    PERFORM evproc.subscriptions_changed();  -- its topic's commits stop waking the launcher
END
$fn$;
CREATE OR REPLACE FUNCTION evproc.resume_impl(caller oid, name text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, name, exclusive => true);
    h record := evproc.resolve_handler(s.handler);
BEGIN
    UPDATE evproc.subscription
       SET paused = false, paused_reason = NULL, breaker_open_until = NULL,
           handler = h.signature, handler_form = h.form
     WHERE id = s.id;
    PERFORM evproc.subscriptions_changed();  -- its topic's commits wake the launcher again
END
$fn$;
CREATE OR REPLACE FUNCTION evproc.sync_stats() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    unready integer[];
    sub integer;
    counted integer := 0;
BEGIN
    SELECT evproc.sync_stats_registry(coalesce(array_agg(s.id ORDER BY s.id), '{}'),
                                      coalesce(array_agg(s.topic_id ORDER BY s.id), '{}'))
      INTO unready FROM evproc.subscription s;
    FOREACH sub IN ARRAY unready LOOP
        IF evproc.set_pending(sub, evproc.count_pending(sub)) THEN
            counted := counted + 1;
        END IF;
    END LOOP;
    PERFORM evproc.set_deliverable(coalesce(array_agg(t.id), '{}'), coalesce(array_agg(t.partitions), '{}'))
       FROM evproc.topic t
      WHERE EXISTS (SELECT 1 FROM evproc.subscription s
                     WHERE s.topic_id = t.id AND NOT s.paused
                       AND (s.breaker_open_until IS NULL OR s.breaker_open_until <= now()));
    RETURN counted;
END
$fn$;
