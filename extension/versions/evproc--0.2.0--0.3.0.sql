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

-- Issue 12.7: evproc_replay applies enqueue's key limit (512 bytes, 22001).
CREATE OR REPLACE FUNCTION evproc.replay_impl(caller oid, subscription text, from_time timestamptz,
                                   to_time timestamptz, key text)
    RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s evproc.subscription := evproc.subscription_checked(caller, subscription, exclusive => true);
    t evproc.topic := (SELECT tp FROM evproc.topic tp WHERE tp.id = s.topic_id);
    running integer;
    new_id integer;
BEGIN
    IF NOT evproc.may_subscribe(s.owner, t) THEN
        RAISE EXCEPTION 'permission denied to replay topic "%" to subscription "%"', t.name, subscription
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Its owner %s no longer holds the ''subscribe'' privilege on the topic.', s.owner);
    END IF;
    IF key = '' THEN
        RAISE EXCEPTION 'key must not be empty (NULL replays every key)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The key limit enqueue applies (kMaxKeyBytes in src/settings.hpp): no stored key is
    -- longer, and the replay row and every scan it drives stay small.
    IF octet_length(key) > 512 THEN
        RAISE EXCEPTION 'key is too long: % bytes, the limit is 512', octet_length(key)
            USING ERRCODE = 'string_data_right_truncation';
    END IF;
    IF from_time > coalesce(to_time, now()) THEN
        RAISE EXCEPTION 'replay from % is after its end %', from_time, coalesce(to_time, now())
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Share-locks the topic row before checking the history bound, as subscribing does:
    -- retention locks it before dropping a partition, so no drop slips in between.
    PERFORM 1 FROM evproc.topic WHERE id = s.topic_id FOR SHARE;
    IF from_time IS NOT NULL THEN
        PERFORM evproc.check_history_retained(s.topic_id, from_time);
    END IF;
    SELECT r.id INTO running FROM evproc.replay r
     WHERE r.subscription_id = s.id AND r.state = 'running';
    IF FOUND THEN
        RAISE EXCEPTION 'a replay of subscription "%" is already running (id %)', subscription, running
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait for it (evproc_replays) or cancel it with evproc_cancel_replay.';
    END IF;
    INSERT INTO evproc.replay (subscription_id, from_time, to_time, key, last_id, requested_by)
    VALUES (s.id, coalesce(from_time, '-infinity'), coalesce(to_time, now()), key,
            (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM evproc.event_id_seq),
            (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = caller))
    RETURNING id INTO new_id;
    PERFORM evproc.wake_at_commit();
    RETURN new_id;
END
$fn$;
