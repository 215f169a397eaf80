-- evproc 0.2.0 -> 0.3.0 (ALTER EXTENSION evproc UPDATE). Released: never edited once
-- 0.3.0 is released (extension/versions/SHA256SUMS).
-- What a fresh 0.3.0 install makes, t/015_upgrade.pl checks that this script makes too.
\echo Use "ALTER EXTENSION evproc UPDATE TO '0.3.0'" to load this file. \quit

-- Issue 12.6: evproc_grant refuses an OID that is no role (42704), and evproc_revoke one
-- that is neither a role nor granted.
CREATE OR REPLACE FUNCTION evproc.grant_impl(caller oid, topic text, role regrole, privilege text)
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
CREATE OR REPLACE FUNCTION evproc.revoke_impl(caller oid, topic text, role regrole, privilege text)
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
