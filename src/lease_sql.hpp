// The statements of leases (pull subscriptions, extension/lease.sql), each written whole
// here like delivery's (delivery_statements.hpp); bound with parameters only. The read's
// claims return the columns of delivery's claims (delivery::UnitFromRow reads them).
#pragma once

namespace evproc::sql {

// The pull subscription a consumer names, checked for the caller (42704, 42501, 42809):
// its id and default lease in microseconds.
inline constexpr const char *kConsumerSubscription = R"sql(
SELECT s.id, (extract(epoch FROM s.lease_duration) * 1000000)::int8
  FROM evproc.consumer_subscription($1, $2) s)sql";

// A unit of pull subscription $1 with work that no lease holds, not among the units
// this read claimed already ($2): a worker's claim (kClaimUnit) for one subscription.
inline constexpr const char *kClaimLeaseUnit = R"sql(
SELECT p.subscription_id, p.partition, p.tick_id, p.window_tick, p.cursor_id,
       p.history_from, p.retry_due_at,
       s.name, s.topic_id, t.name, h.fn,
       s.handler_form = 'batch', s.owner::oid,
       ARRAY[t.owner::oid] || t.subscribers::oid[],
       s.batch_size, s.max_attempts,
       (extract(epoch FROM s.backoff_base) * 1000000)::int8,
       (extract(epoch FROM s.backoff_cap) * 1000000)::int8,
       least(extract(epoch FROM s.handler_timeout) * 1000, 2147483647)::int4,
       s.on_dead_letter = 'block', s.failure_budget::float8, s.breaker_min_attempts, s.handler
  FROM evproc.progress p
  JOIN evproc.subscription s ON s.id = p.subscription_id
  JOIN evproc.topic t ON t.id = s.topic_id
  CROSS JOIN LATERAL (SELECT pg_catalog.to_regprocedure(s.handler)::oid AS fn) h
 WHERE NOT s.paused
   AND (s.breaker_open_until IS NULL OR s.breaker_open_until <= now())
   AND s.id = $1 AND p.lease_id IS NULL AND p.partition <> ALL ($2)
   AND (p.window_tick IS NOT NULL
        OR (p.tick_id < evproc.dirty_tick(s.topic_id, p.partition)
            AND p.tick_id < (SELECT max(id) FROM evproc.tick))
        OR p.retry_due_at <= now())
 ORDER BY p.last_batch_at NULLS FIRST
 LIMIT 1
   FOR UPDATE OF p SKIP LOCKED)sql";

// A running replay of pull subscription $1 that no lease holds: a worker's replay claim
// (kClaimReplay) for one subscription.
inline constexpr const char *kClaimLeaseReplay = R"sql(
SELECT rp.subscription_id, -1, 0::int8, NULL::int8, NULL::int8, NULL::timestamptz,
       NULL::timestamptz,
       s.name, s.topic_id, t.name, h.fn,
       s.handler_form = 'batch', s.owner::oid,
       ARRAY[t.owner::oid] || t.subscribers::oid[],
       s.batch_size, s.max_attempts,
       (extract(epoch FROM s.backoff_base) * 1000000)::int8,
       (extract(epoch FROM s.backoff_cap) * 1000000)::int8,
       least(extract(epoch FROM s.handler_timeout) * 1000, 2147483647)::int4,
       s.on_dead_letter = 'block', s.failure_budget::float8, s.breaker_min_attempts, s.handler,
       rp.id, rp.cursor_id, rp.chunk, rp.last_id, rp.from_time, rp.to_time, rp.key
  FROM evproc.replay rp
  JOIN evproc.subscription s ON s.id = rp.subscription_id
  JOIN evproc.topic t ON t.id = s.topic_id
  CROSS JOIN LATERAL (SELECT pg_catalog.to_regprocedure(s.handler)::oid AS fn) h
 WHERE NOT s.paused
   AND (s.breaker_open_until IS NULL OR s.breaker_open_until <= now())
   AND s.id = $1 AND rp.state = 'running' AND rp.lease_id IS NULL
 ORDER BY rp.last_batch_at NULLS FIRST
 LIMIT 1
   FOR UPDATE OF rp SKIP LOCKED)sql";

// The next unit after the first (kClaimLeaseUnit, which also checked the subscription
// and its owner): only the unit's position (the columns 1-7 of the claims), so that a
// read that finds work in many units does not evaluate the subscription's columns for
// each. $3: the subscription's topic.
inline constexpr const char *kClaimNextLeaseUnit = R"sql(
SELECT p.subscription_id, p.partition, p.tick_id, p.window_tick, p.cursor_id,
       p.history_from, p.retry_due_at
  FROM evproc.progress p
 WHERE p.subscription_id = $1 AND p.lease_id IS NULL AND p.partition <> ALL ($2)
   AND (p.window_tick IS NOT NULL
        OR (p.tick_id < evproc.dirty_tick($3, p.partition)
            AND p.tick_id < (SELECT max(id) FROM evproc.tick))
        OR p.retry_due_at <= now())
 ORDER BY p.last_batch_at NULLS FIRST
 LIMIT 1
   FOR UPDATE OF p SKIP LOCKED)sql";

// The lease a read records: its units (where they were, where the read left them; a
// replay's cursor, next span and whether it is done) and the events it took, in order
// (from_replay: read by the replay); it expires $18 microseconds from now.
inline constexpr const char *kInsertLease = R"sql(
INSERT INTO evproc.lease (id, subscription_id, units, events, read_at, expires_at, reader)
SELECT pg_catalog.gen_random_uuid()::text, $1,
       ARRAY(SELECT ROW(u.partition, u.tick_before, u.window_before, u.cursor_before,
                        u.tick_after, u.window_after, u.cursor_after, u.history_from,
                        u.replay_id, u.replay_chunk, u.replay_done)::evproc.lease_unit
               FROM unnest($2::int4[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
                           $8::int8[], $9::timestamptz[], $19::int4[], $20::int8[], $21::bool[])
                    WITH ORDINALITY AS u(partition, tick_before, window_before, cursor_before,
                                         tick_after, window_after, cursor_after, history_from,
                                         replay_id, replay_chunk, replay_done, n)
              ORDER BY u.n),
       ARRAY(SELECT ROW(e.event_id, e.partition, e.key, e.from_retry, e.failed_attempts,
                        e.first_failed_at, e.enqueued_at, e.handed_out, e.from_replay)::evproc.lease_event
               FROM unnest($10::int8[], $11::int4[], $12::text[], $13::bool[], $14::int4[],
                           $15::timestamptz[], $16::timestamptz[], $17::bool[], $22::bool[])
                    WITH ORDINALITY AS e(event_id, partition, key, from_retry, failed_attempts,
                                         first_failed_at, enqueued_at, handed_out, from_replay, n)
              ORDER BY e.n),
       pg_catalog.clock_timestamp(),
       pg_catalog.clock_timestamp() + $18 * interval '1 microsecond',
       format('%s (pid %s)', pg_catalog.current_setting('application_name'), pg_catalog.pg_backend_pid())
RETURNING id, expires_at)sql";

inline constexpr const char *kMarkLeased = R"sql(
UPDATE evproc.progress SET lease_id = $3, leased_until = $4
 WHERE subscription_id = $1 AND partition = ANY ($2))sql";
inline constexpr const char *kMarkReplayLeased = R"sql(
UPDATE evproc.replay SET lease_id = $2, leased_until = $3 WHERE id = $1)sql";

// Expired leases, oldest first, that no one else is ending right now.
inline constexpr const char *kExpiredLeases = R"sql(
SELECT id FROM evproc.lease
 WHERE subscription_id = $1 AND expires_at <= pg_catalog.clock_timestamp()
 ORDER BY expires_at LIMIT 16
   FOR UPDATE SKIP LOCKED)sql";
inline constexpr const char *kAllExpiredLeases = R"sql(
SELECT id FROM evproc.lease
 WHERE expires_at <= pg_catalog.clock_timestamp()
 ORDER BY expires_at LIMIT 100
   FOR UPDATE SKIP LOCKED)sql";

// The lease's subscription: what writing an outcome needs of it.
inline constexpr const char *kLeaseSubscription = R"sql(
SELECT s.id, s.name, s.topic_id, t.name, s.max_attempts,
       (extract(epoch FROM s.backoff_base) * 1000000)::int8,
       (extract(epoch FROM s.backoff_cap) * 1000000)::int8,
       s.on_dead_letter = 'block', s.failure_budget::float8, s.breaker_min_attempts
  FROM evproc.lease l
  JOIN evproc.subscription s ON s.id = l.subscription_id
  JOIN evproc.topic t ON t.id = s.topic_id
 WHERE l.id = $1)sql";

inline constexpr const char *kLeaseUnits = R"sql(
SELECT u.partition, u.tick_before, u.window_before, u.cursor_before,
       u.tick_after, u.window_after, u.cursor_after, u.history_from,
       u.replay_id, u.replay_chunk, u.replay_done
  FROM evproc.lease l CROSS JOIN LATERAL unnest(l.units) u
 WHERE l.id = $1
 ORDER BY u.partition)sql";

// The lease's events in order, each with its nack if any (message, retry_after in
// microseconds).
inline constexpr const char *kLeaseEvents = R"sql(
SELECT e.event_id, e.partition, e.key, e.from_retry, e.failed_attempts, e.first_failed_at,
       e.enqueued_at, e.handed_out, n.message, n.event_id IS NOT NULL,
       (extract(epoch FROM n.retry_after) * 1000000)::int8, e.from_replay
  FROM evproc.lease l
 CROSS JOIN LATERAL unnest(l.events) WITH ORDINALITY
       AS e(event_id, partition, key, from_retry, failed_attempts, first_failed_at,
            enqueued_at, handed_out, from_replay, n)
  LEFT JOIN LATERAL (SELECT x.event_id, x.message, x.retry_after FROM unnest(l.nacks) x
                      WHERE x.event_id = e.event_id LIMIT 1) n ON true
 WHERE l.id = $1
 ORDER BY e.n)sql";

// The events whose outcome is written in full (parked or failed): from the retry line,
// or from the log for events read from windows ($3: the topic's name).
inline constexpr const char *kRetryEvents = R"sql(
SELECT event_id, event FROM evproc.retry WHERE subscription_id = $1 AND event_id = ANY ($2))sql";
inline constexpr const char *kLogEvents = R"sql(
SELECT l.id, ROW(l.id, $3, l.key, l.type, l.payload, l.headers, l.enqueued_at, 1, false)::evproc.event
  FROM evproc.log l WHERE l.topic_id = $1 AND l.id = ANY ($2))sql";

// A nack's retry_after, or an expiry (due at once), instead of the backoff.
inline constexpr const char *kNextAttemptAt = R"sql(
UPDATE evproc.retry r SET next_attempt_at = x.at
  FROM unnest($2::int8[], $3::timestamptz[]) AS x(event_id, at)
 WHERE r.subscription_id = $1 AND r.event_id = x.event_id AND r.is_head AND NOT r.blocked)sql";

inline constexpr const char *kLockReplay = R"sql(
SELECT id FROM evproc.replay WHERE id = $1 FOR UPDATE)sql";

inline constexpr const char *kLockUnits = R"sql(
SELECT partition FROM evproc.progress
 WHERE subscription_id = $1 AND partition = ANY ($2)
 ORDER BY partition FOR UPDATE)sql";

inline constexpr const char *kReleaseUnits = R"sql(
UPDATE evproc.progress SET lease_id = NULL, leased_until = NULL
 WHERE subscription_id = $1 AND lease_id = $2)sql";

inline constexpr const char *kReleaseReplay = R"sql(
UPDATE evproc.replay SET lease_id = NULL, leased_until = NULL WHERE lease_id = $1)sql";

inline constexpr const char *kDeleteLease = R"sql(
DELETE FROM evproc.lease WHERE id = $1)sql";

// What may end a reader's wait before any commit wakes it: the earliest parked retry of
// a free unit or the end of a breaker's cooldown (which a read sees only in a later
// transaction: it compares with now()), and the earliest expiry of a lease.
inline constexpr const char *kReadNextDue = R"sql(
SELECT least((SELECT min(p.retry_due_at) FROM evproc.progress p
               WHERE p.subscription_id = $1 AND p.lease_id IS NULL AND p.retry_due_at < 'infinity'),
             (SELECT s.breaker_open_until FROM evproc.subscription s
               WHERE s.id = $1 AND s.breaker_open_until > now())),
       (SELECT min(l.expires_at) FROM evproc.lease l WHERE l.subscription_id = $1))sql";

inline constexpr const char *kPauseConsumer = R"sql(
UPDATE evproc.subscription SET paused = true, paused_reason = $2 WHERE id = $1)sql";

// The lease an ack ends, checked for the caller (42704, 42501, 42809, EV001) and locked.
inline constexpr const char *kCheckedLease = R"sql(
SELECT (evproc.lease_checked($1, $2, $3, 'acknowledge')).id)sql";

}  // namespace evproc::sql
