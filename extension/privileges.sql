
-------------------------------------------------------------------------------
-- Privileges (README "Security and privileges"). Appended last by make: it also settles
-- who may execute everything defined before it.
--
-- The model:
--  * evproc's tables belong to the extension owner; nobody else gets privileges on them.
--    API functions that change or read them for a caller are C trampolines
--    (src/api_trampoline.cpp) into evproc.<name>_impl(caller oid, ...), run as the
--    extension owner with a pinned search_path; each checks the caller it was given by
--    the trampoline (the session's current user), never an argument.
--  * Topics: creating one takes EXECUTE on evproc_create_topic (revoked from PUBLIC
--    below: a DBA grants it); its creator owns it. Members of a topic's owner role may
--    alter, drop, grant and revoke on it, publish to it and subscribe to it.
--  * 'publish' and 'subscribe' are granted per topic to roles (and so to their members)
--    with evproc_grant and taken back with evproc_revoke.
--  * Subscriptions belong to their owner role (run_as): its members act on them and see
--    their rows, dead letters and payloads; nobody else does (superusers excepted).
--  * Views show every role only its own subscriptions' rows (security_barrier); topic
--    names, settings and grants are not secret; pg_monitor sees every monitoring row.
-------------------------------------------------------------------------------

-- 'publish' or 'subscribe' on a topic, for a role and its members. Only members of the
-- topic's owner role (and superusers) may grant or revoke. Returns whether anything
-- changed (false: the role held it already / did not hold it).
CREATE FUNCTION public.evproc_grant(topic text, role regrole, privilege text) RETURNS boolean
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';
CREATE FUNCTION public.evproc_revoke(topic text, role regrole, privilege text) RETURNS boolean
    LANGUAGE c AS 'MODULE_PATHNAME', 'evproc_as_owner';

-- The topic row a grant or revoke changes, locked, after the checks every one makes.
CREATE FUNCTION evproc.topic_for_grant(caller oid, topic text, role regrole, privilege text,
                                       action text)
    RETURNS evproc.topic LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic;
BEGIN
    IF privilege IS NULL OR privilege NOT IN ('publish', 'subscribe') THEN
        RAISE EXCEPTION 'privilege must be ''publish'' or ''subscribe'', got %', coalesce(quote_literal(privilege), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'topic name must not be null or empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO t FROM evproc.topic AS tp WHERE tp.name = topic_for_grant.topic FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic "%" does not exist', topic USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM evproc.check_topic_owner(caller, t, action);
    RETURN t;
END
$fn$;

CREATE FUNCTION evproc.grant_impl(caller oid, topic text, role regrole, privilege text)
    RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic := evproc.topic_for_grant(caller, topic, role, privilege, 'grant privileges on');
BEGIN
    -- A regrole argument may be any OID ('999999', 0::oid::regrole): only a role that
    -- exists is granted anything (a later role could be given that OID).
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = role) THEN
        RAISE EXCEPTION 'role with OID % does not exist', role::oid USING ERRCODE = 'undefined_object';
    END IF;
    IF role = ANY (CASE privilege WHEN 'publish' THEN t.publishers ELSE t.subscribers END) THEN
        RETURN false;
    END IF;
    UPDATE evproc.topic
       SET publishers = CASE privilege WHEN 'publish' THEN publishers || role ELSE publishers END,
           subscribers = CASE privilege WHEN 'subscribe' THEN subscribers || role ELSE subscribers END
     WHERE id = t.id;
    RETURN true;
END
$fn$;

-- Revoking 'subscribe' does not drop subscriptions: the workers pause those whose owner
-- no longer holds it, at their next batch.
CREATE FUNCTION evproc.revoke_impl(caller oid, topic text, role regrole, privilege text)
    RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t evproc.topic := evproc.topic_for_grant(caller, topic, role, privilege, 'revoke privileges on');
BEGIN
    IF role <> ALL (CASE privilege WHEN 'publish' THEN t.publishers ELSE t.subscribers END) THEN
        -- A grant to a role dropped since stays as its OID and is revoked by it (above);
        -- an OID that is neither a role nor granted is a mistake, not "nothing to do".
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = role) THEN
            RAISE EXCEPTION 'role with OID % does not exist', role::oid USING ERRCODE = 'undefined_object';
        END IF;
        RETURN false;
    END IF;
    UPDATE evproc.topic
       SET publishers = CASE privilege WHEN 'publish' THEN array_remove(publishers, role) ELSE publishers END,
           subscribers = CASE privilege WHEN 'subscribe' THEN array_remove(subscribers, role) ELSE subscribers END
     WHERE id = t.id;
    RETURN true;
END
$fn$;

-- Nothing in schema evproc is executable by PUBLIC (implementations, internals that
-- change state or read evproc's tables) except what callers reach on their own rights:
-- the subscribe wrapper's handler resolution (reads pg_proc) and its trampoline, and the
-- functions the monitoring views call as the querying user: per-topic counters, and the
-- per-subscription figures filtered to the caller's subscriptions. Roles still need
-- USAGE on schema evproc to call any of them by name.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA evproc FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    evproc.resolve_handler(text),
    evproc.handler_shape(oid),
    evproc.subscribe(text, text, regprocedure, integer, integer, interval, interval, interval,
                     text, timestamptz, regrole, real, integer, interval, interval),
    evproc.library_version(),
    evproc.topic_stats(),
    evproc.topic_pending(),
    evproc.visible_subscription_stats()
    TO PUBLIC;
-- Every subscription's counters by id, and the workers' state with their last error
-- (whose message may quote a payload): for monitoring, which sees every row anyway.
GRANT EXECUTE ON FUNCTION
    evproc.subscription_stats(),
    evproc.worker_stats(),
    evproc.lag_seconds(integer)
    TO pg_monitor;

-- Creating topics is for the roles a DBA chooses:
--   GRANT EXECUTE ON FUNCTION evproc_create_topic(text, integer, interval, interval, bigint, jsonb) TO app_admin;
REVOKE EXECUTE ON FUNCTION public.evproc_create_topic(text, integer, interval, interval, bigint, jsonb)
    FROM PUBLIC;

-- Every role may read the views; each view shows it only what it may see.
GRANT SELECT ON public.evproc_topics, public.evproc_topic_stats, public.evproc_subscriptions,
                public.evproc_subscription_stats, public.evproc_dead_letters,
                public.evproc_dead_letter_summary, public.evproc_replays, public.evproc_leases
    TO PUBLIC;
