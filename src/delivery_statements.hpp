// The statements delivery runs, each written whole here and nowhere else. Each is
// prepared once per worker (and again when the extension is re-created) and bound with
// parameters only. evproc.statement_sql(name) returns them by name (see kStatements), so
// that the regression tests EXPLAIN exactly what the workers run (sql/window.sql,
// sql/statements.sql). They must work at every extension version the library serves.
#pragma once

namespace evproc::sql {

// The two claims return the same columns first: the unit's position (1-7; 6 is the
// oldest enqueued_at the subscription wants, from its start_from, applied to every
// window: a transaction that enqueued before start_from may commit at any later tick),
// then what a
// batch needs to know of the subscription that owns it (8-23): its handler, its owner,
// the roles whose members may subscribe to the topic (14: the topic's owner, then its
// 'subscribe' grantees; whether the owner may run the handler is decided from these in
// C, delivery::OwnerState, which asks the catalog caches: a view join and a SQL
// function per claim cost a worker more than the batch of one event they guarded,
// issue 13), and its settings. Only units of active
// subscriptions with a handler whose breaker is closed are claimed: pull subscriptions
// (no handler) are read by consumers (lease_read.cpp, whose claims return the same
// columns).

// A unit with work: a window in progress, new ticks where its partition got events,
// or a due retry. Locked with SKIP LOCKED: two workers never hold one unit, and the
// least recently served unit goes first.
inline constexpr const char *kClaimUnit = R"sql(
SELECT p.subscription_id, p.partition, p.tick_id, p.window_tick, p.cursor_id,
       coalesce(s.start_from, p.history_from), p.retry_due_at,
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
 WHERE NOT s.paused AND s.handler IS NOT NULL
   AND (s.breaker_open_until IS NULL OR s.breaker_open_until <= now())
   AND (p.window_tick IS NOT NULL
        OR (p.tick_id < evproc.dirty_tick(s.topic_id, p.partition)
            AND p.tick_id < (SELECT max(id) FROM evproc.tick))
        OR p.retry_due_at <= now())
 ORDER BY p.last_batch_at NULLS FIRST
 LIMIT 1
   FOR UPDATE OF p SKIP LOCKED)sql";

// The claim where the launcher marks units ready (from 0.3.0 on; docs/design.md
// "Claiming a unit"): the same columns and checks, but only ready units (commits came
// since the unit's batch found nothing left) and units whose retries are due are read,
// through their partial indexes, so a claim costs what the units with work cost, not
// every unit. The few found are sorted: least recently served first. Each one's
// subscription is looked up by its key (the OFFSET 0 keeps the planner from hashing every
// subscription), and the claim runs with sequential scans discouraged (delivery_plans.cpp),
// so the plan stays the same whatever the statistics say when it is made (after a
// restart every unit is ready, for a moment).
inline constexpr const char *kClaimReadyUnit = R"sql(
SELECT p.subscription_id, p.partition, p.tick_id, p.window_tick, p.cursor_id,
       coalesce(s.start_from, p.history_from), p.retry_due_at,
       s.name, s.topic_id, t.name, h.fn,
       s.handler_form = 'batch', s.owner::oid,
       ARRAY[t.owner::oid] || t.subscribers::oid[],
       s.batch_size, s.max_attempts,
       (extract(epoch FROM s.backoff_base) * 1000000)::int8,
       (extract(epoch FROM s.backoff_cap) * 1000000)::int8,
       least(extract(epoch FROM s.handler_timeout) * 1000, 2147483647)::int4,
       s.on_dead_letter = 'block', s.failure_budget::float8, s.breaker_min_attempts, s.handler
  FROM evproc.progress p
 CROSS JOIN LATERAL (SELECT * FROM evproc.subscription a
                      WHERE a.id = p.subscription_id AND NOT a.paused AND a.handler IS NOT NULL
                        AND (a.breaker_open_until IS NULL OR a.breaker_open_until <= now())
                     OFFSET 0) s
  JOIN evproc.topic t ON t.id = s.topic_id
  CROSS JOIN LATERAL (SELECT pg_catalog.to_regprocedure(s.handler)::oid AS fn) h
 WHERE p.ready OR p.retry_due_at <= now()
 ORDER BY p.last_batch_at NULLS FIRST
 LIMIT 1
   FOR UPDATE OF p SKIP LOCKED)sql";

// The claim of one unit named by a ready hint (core/ready_hints.hpp): the same columns
// and checks as kClaimReadyUnit, for the unit ($1, $2) only. Its row is found newest
// version first (a backward scan of progress_unit_idx, LIMIT 1): under a transaction held
// open every version a unit's row ever had stays, and a lookup by its key that starts
// from the oldest walks them all; the newest, the one a current snapshot sees, comes
// first backwards (versions that cannot be pruned go to ever later places in the
// table). The row is then fetched and locked by its ctid: SKIP LOCKED on a unit someone
// holds returns nothing at once, where the index scan would go on through every older
// version. A row updated since the look is followed to its newest version by the lock,
// and the conditions are checked again there.
inline constexpr const char *kClaimHintedUnit = R"sql(
SELECT p.subscription_id, p.partition, p.tick_id, p.window_tick, p.cursor_id,
       coalesce(s.start_from, p.history_from), p.retry_due_at,
       s.name, s.topic_id, t.name, h.fn,
       s.handler_form = 'batch', s.owner::oid,
       ARRAY[t.owner::oid] || t.subscribers::oid[],
       s.batch_size, s.max_attempts,
       (extract(epoch FROM s.backoff_base) * 1000000)::int8,
       (extract(epoch FROM s.backoff_cap) * 1000000)::int8,
       least(extract(epoch FROM s.handler_timeout) * 1000, 2147483647)::int4,
       s.on_dead_letter = 'block', s.failure_budget::float8, s.breaker_min_attempts, s.handler
  FROM evproc.progress p
 CROSS JOIN LATERAL (SELECT * FROM evproc.subscription a
                      WHERE a.id = p.subscription_id AND NOT a.paused AND a.handler IS NOT NULL
                        AND (a.breaker_open_until IS NULL OR a.breaker_open_until <= now())
                     OFFSET 0) s
  JOIN evproc.topic t ON t.id = s.topic_id
  CROSS JOIN LATERAL (SELECT pg_catalog.to_regprocedure(s.handler)::oid AS fn) h
 WHERE p.ctid = (SELECT q.ctid FROM evproc.progress q
                  WHERE q.subscription_id = $1 AND q.partition >= $2 AND q.partition <= $2
                  ORDER BY q.partition DESC LIMIT 1)
   AND p.subscription_id = $1 AND p.partition = $2
   AND (p.ready OR p.retry_due_at <= now())
   FOR UPDATE OF p SKIP LOCKED)sql";

// A running replay, claimed like a unit; partition -1 stands for all of them. Its own
// columns follow the subscription's (24-30).
inline constexpr const char *kClaimReplay = R"sql(
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
 WHERE NOT s.paused AND s.handler IS NOT NULL
   AND (s.breaker_open_until IS NULL OR s.breaker_open_until <= now())
   AND rp.state = 'running'
 ORDER BY rp.last_batch_at NULLS FIRST
 LIMIT 1
   FOR UPDATE OF rp SKIP LOCKED)sql";

// The next events of a replay: ids in ($1, $1 + $2] up to $3 (BRIN on id), of topic $4,
// enqueued in [$5, $6), of key $7 (NULL: all), not parked for the subscription ($8)
// (a parked event is being retried anyway), at most $9, in id order; with each, whether
// its key has a parked head (its event waits behind it), probed per row returned (after
// the LIMIT: the outer query). q.sub is the subscription if its retry line holds
// anything (one probe, once per read), else NULL: then neither look-up runs, and a
// replay pays no retry probe for each event it looks at (issue 17).
inline constexpr const char *kReplayEvents = R"sql(
SELECT r.event, r.id, r.key, r.enqueued_at,
       CASE WHEN r.sub IS NOT NULL
            THEN EXISTS (SELECT 1 FROM evproc.retry k
                          WHERE k.subscription_id = r.sub AND k.partition = r.partition
                            AND k.key = r.key AND k.is_head) END,
       r.partition
  FROM (SELECT ROW(e.id, $10, e.key, e.type, e.payload, e.headers, e.enqueued_at, 1, true)::evproc.event
                 AS event,
               e.id, e.key, e.enqueued_at, e.partition, q.sub
          FROM (SELECT (SELECT k.subscription_id FROM evproc.retry k
                         WHERE k.subscription_id = $8 LIMIT 1) AS sub) q,
               evproc.log e
         WHERE e.id > $1 AND e.id <= least($1 + $2, $3)
           AND e.topic_id = $4 AND e.enqueued_at >= $5 AND e.enqueued_at < $6
           AND ($7::text IS NULL OR e.key = $7)
           AND (q.sub IS NULL
                OR NOT EXISTS (SELECT 1 FROM evproc.retry k
                                WHERE k.subscription_id = q.sub AND k.event_id = e.id))
         ORDER BY e.id LIMIT $9) r)sql";

inline constexpr const char *kAdvanceReplay = R"sql(
UPDATE evproc.replay
   SET cursor_id = $2, chunk = $3, delivered = delivered + $4, failed = failed + $5,
       state = CASE WHEN $6 THEN 'done' ELSE state END,
       finished_at = CASE WHEN $6 THEN now() END, last_batch_at = now()
 WHERE id = $1)sql";

// After a replay parked events: the units of their partitions look at their retries.
inline constexpr const char *kRetryDue = R"sql(
UPDATE evproc.progress p
   SET retry_due_at = (SELECT min(r.next_attempt_at) FROM evproc.retry r
                        WHERE r.subscription_id = $1 AND r.partition = p.partition AND r.is_head)
 WHERE p.subscription_id = $1 AND p.partition = ANY ($2))sql";

// When idle: the earliest moment a retry falls due or a breaker closes. The units with a
// retry time are read through their partial index (run without sequential scans,
// delivery_plans.cpp): every worker that finds nothing to do asks, and a scan of
// evproc.progress reads every version its rows have, which a transaction held open keeps.
inline constexpr const char *kNextDue = R"sql(
SELECT min(due) FROM (
  SELECT p.retry_due_at AS due FROM evproc.progress p
   WHERE p.retry_due_at IS NOT NULL AND p.retry_due_at < 'infinity'
     AND EXISTS (SELECT 1 FROM evproc.subscription s
                  WHERE s.id = p.subscription_id AND NOT s.paused AND s.handler IS NOT NULL)
  UNION ALL
  SELECT breaker_open_until FROM evproc.subscription
   WHERE NOT paused AND handler IS NOT NULL AND breaker_open_until > now()) d)sql";

// The unit's window: from tick A ($1) to its window tick ($2) or else the first later
// tick that names the unit's slot ($3) among its dirty ones (or the newest tick).
inline constexpr const char *kWindowBounds = R"sql(
SELECT b.id, b.snapshot, pg_catalog.pg_snapshot_xmax(b.snapshot), x.xip,
       pg_catalog.pg_snapshot_xmax(a.snapshot), pg_catalog.cardinality(x.xip)
  FROM evproc.tick a
 CROSS JOIN LATERAL (SELECT ARRAY(SELECT pg_catalog.pg_snapshot_xip(a.snapshot)) AS xip) x,
       evproc.tick b
 WHERE a.id = $1
   AND b.id = coalesce($2,
                       (SELECT min(t.id) FROM evproc.tick t
                         WHERE t.id > $1 AND (t.dirty IS NULL OR $3 = ANY (t.dirty))),
                       (SELECT max(id) FROM evproc.tick)))sql";

// Due parked keys of the unit with the events waiting behind them, in line order. Each
// due key's line is read on its own through retry_unit_idx (at most $3 rows each), a
// keyless one by its event id: the cost follows the keys taken, not how many are parked
// (issue 19).
inline constexpr const char *kDueRetries = R"sql(
WITH due AS (
  SELECT key, event_id FROM evproc.retry
   WHERE subscription_id = $1 AND partition = $2 AND is_head AND NOT blocked
     AND next_attempt_at <= now()
   ORDER BY next_attempt_at LIMIT $3)
SELECT r.event_id,
       ROW((r.event).id, (r.event).topic, (r.event).key, (r.event).type, (r.event).payload,
           (r.event).headers, (r.event).enqueued_at, r.attempt + 1, (r.event).replay)::evproc.event,
       r.key, r.attempt, r.first_failed_at, (r.event).enqueued_at,
       coalesce(r.sqlstate = 'EV001', false)
  FROM (SELECT l.* FROM due d
         CROSS JOIN LATERAL (SELECT * FROM evproc.retry k
                              WHERE k.subscription_id = $1 AND k.partition = $2 AND k.key = d.key
                                AND NOT k.blocked
                              ORDER BY k.seq LIMIT $3) l
         WHERE d.key IS NOT NULL
        UNION ALL
        SELECT k.* FROM due d
          JOIN evproc.retry k ON k.subscription_id = $1 AND k.event_id = d.event_id
         WHERE d.key IS NULL AND k.partition = $2 AND NOT k.blocked) r
 ORDER BY r.seq LIMIT $3)sql";

// The read of one window (from tick A to tick B), in two parts: kWindowPending (xid in
// xip(A), transactions still open at tick A) and kWindowRange (xid in [xmax(A), xmax(B)),
// found by a walk over the distinct xids of the range: one index descent per
// transaction), both on the window index, each visible in B.
// Inside a window events go in id order: an id is taken inside evproc_enqueue, after
// whatever lock the publishing transaction holds on the entity it publishes about, so
// for one key id order is the order in which publishers got through that lock, i.e.
// commit order (an xid is taken at a transaction's first write, possibly before it
// waits for that lock). The worker merges the two parts by id.
// A read costs in proportion to the batch and the window's transactions, not to the
// window's events (issue 17): inside one xid the window index is in id order, so the
// window in id order is a merge of one index range per transaction. Each part takes
// the first id after the cursor of each of its transactions (h, one descent each); the
// batch's $8 smallest ids are all at most the $8-th smallest of those first ids (they
// are $8 distinct ids of the window), so each transaction is read from its first id up
// to that bound, at most $8 rows, and the merge keeps the $8 smallest. A window of one
// huge transaction is read $8 rows at a time, from the cursor, through the index.
// Parameters: $1 topic_id, $2 partition, $3 xip(A), $4 xmax(A), $5 B, $6 xmax(B), $7 the
// id cursor, $8 the most rows (NULL: all), $9 the oldest enqueued_at wanted (a
// subscription that starts inside the history), $10 the topic's name (for the
// evproc.event the handler gets; both parts start with the columns of kReplayEvents),
// $11 the subscription when the unit has parked keys, else NULL.
// The fifth column says whether the event's key has a parked head for subscription $11
// (its window events wait behind it, in order): one probe of retry_unit_idx per row
// returned, in the same statement, and none at all when $11 is NULL, so a batch costs
// the same beside one parked key or a hundred thousand, and a unit with none pays
// nothing (issue 19; sql/window.sql pins the plan over 5,000 parked keys).
// Bounds are bound as values: written as a join against evproc.tick, the planner would
// scan from xid 0. sql/window.sql EXPLAINs both as evproc.statement_sql() returns them
// and counts the rows a read of a 20,000-event transaction touches.
// The log is partitioned by xid, and a generic plan prunes partitions only by bounds on
// xid compared with parameters: the range part by its bounds, the pending part by
// [$3[1], $4) (xip is sorted and below xmax(A)). Every look-up is per xid (xid = one
// value in the index condition), which also prunes to that xid's partition.
inline constexpr const char *kWindowPending = R"sql(
WITH h AS (
  SELECT x.xid, f.id
    FROM pg_catalog.unnest($3) AS x(xid)
   CROSS JOIN LATERAL (SELECT l.id FROM evproc.log l
                        WHERE l.topic_id = $1 AND l.partition = $2 AND l.xid = x.xid
                          AND l.xid >= $3[1] AND l.xid < $4 AND l.id > $7 AND l.enqueued_at >= $9
                        ORDER BY l.id LIMIT 1) f
   WHERE pg_catalog.pg_visible_in_snapshot(x.xid, $5)),
bound AS (
  SELECT coalesce((SELECT h.id FROM h WHERE $8 IS NOT NULL ORDER BY h.id OFFSET $8 - 1 LIMIT 1),
                  9223372036854775807) AS id)
SELECT ROW(w.id, $10, w.key, w.type, w.payload, w.headers, w.enqueued_at, 1, false)::evproc.event,
       w.id, w.key, w.enqueued_at,
       CASE WHEN $11::int4 IS NOT NULL
            THEN EXISTS (SELECT 1 FROM evproc.retry r
                          WHERE r.subscription_id = $11 AND r.partition = $2 AND r.key = w.key
                            AND r.is_head) END
  FROM (SELECT e.* FROM h CROSS JOIN bound b,
         LATERAL (SELECT * FROM evproc.log l
                   WHERE l.topic_id = $1 AND l.partition = $2 AND l.xid = h.xid
                     AND l.xid >= $3[1] AND l.xid < $4
                     AND l.id >= h.id AND l.id <= b.id AND l.enqueued_at >= $9
                   ORDER BY l.id LIMIT $8) e
         WHERE h.id <= b.id
         ORDER BY e.id LIMIT $8) w)sql";

inline constexpr const char *kWindowRange = R"sql(
WITH RECURSIVE x(xid) AS (
  (SELECT l.xid FROM evproc.log l
    WHERE l.topic_id = $1 AND l.partition = $2 AND l.xid >= $4 AND l.xid < $6
    ORDER BY l.xid LIMIT 1)
  UNION ALL
  SELECT n.xid FROM x
   CROSS JOIN LATERAL (SELECT l.xid FROM evproc.log l
                        WHERE l.topic_id = $1 AND l.partition = $2 AND l.xid > x.xid
                          AND l.xid >= $4 AND l.xid < $6
                        ORDER BY l.xid LIMIT 1) n),
h AS (
  SELECT x.xid, f.id
    FROM x
   CROSS JOIN LATERAL (SELECT l.id FROM evproc.log l
                        WHERE l.topic_id = $1 AND l.partition = $2 AND l.xid = x.xid
                          AND l.xid >= $4 AND l.xid < $6 AND l.id > $7 AND l.enqueued_at >= $9
                        ORDER BY l.id LIMIT 1) f
   WHERE pg_catalog.pg_visible_in_snapshot(x.xid, $5)),
bound AS (
  SELECT coalesce((SELECT h.id FROM h WHERE $8 IS NOT NULL ORDER BY h.id OFFSET $8 - 1 LIMIT 1),
                  9223372036854775807) AS id)
SELECT ROW(w.id, $10, w.key, w.type, w.payload, w.headers, w.enqueued_at, 1, false)::evproc.event,
       w.id, w.key, w.enqueued_at,
       CASE WHEN $11::int4 IS NOT NULL
            THEN EXISTS (SELECT 1 FROM evproc.retry r
                          WHERE r.subscription_id = $11 AND r.partition = $2 AND r.key = w.key
                            AND r.is_head) END
  FROM (SELECT e.* FROM h CROSS JOIN bound b,
         LATERAL (SELECT * FROM evproc.log l
                   WHERE l.topic_id = $1 AND l.partition = $2 AND l.xid = h.xid
                     AND l.xid >= $4 AND l.xid < $6
                     AND l.id >= h.id AND l.id <= b.id AND l.enqueued_at >= $9
                   ORDER BY l.id LIMIT $8) e
         WHERE h.id <= b.id
         ORDER BY e.id LIMIT $8) w)sql";

inline constexpr const char *kDeleteRetries = R"sql(
DELETE FROM evproc.retry WHERE subscription_id = $1 AND event_id = ANY ($2))sql";

// A failed event heads its key; an event behind a parked key waits (attempt 0).
inline constexpr const char *kParkEvent = R"sql(
INSERT INTO evproc.retry AS r (subscription_id, partition, key, event_id, event, is_head, blocked,
                               attempt, next_attempt_at, first_failed_at, last_failed_at,
                               sqlstate, message, detail, hint, context)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15)
ON CONFLICT (subscription_id, event_id) DO UPDATE
   SET is_head = true, blocked = excluded.blocked, attempt = excluded.attempt,
       next_attempt_at = excluded.next_attempt_at,
       first_failed_at = coalesce(r.first_failed_at, excluded.first_failed_at),
       last_failed_at = excluded.last_failed_at, sqlstate = excluded.sqlstate,
       message = excluded.message, detail = excluded.detail, hint = excluded.hint,
       context = excluded.context)sql";

inline constexpr const char *kDeadLetter = R"sql(
INSERT INTO evproc.dead_letter AS d (subscription_id, event_id, partition, key, type, payload,
       headers, enqueued_at, attempts, sqlstate, message, detail, hint, context,
       first_failed_at, last_failed_at, worker_pid)
SELECT $1, (x.e).id, $2, (x.e).key, (x.e).type, (x.e).payload, (x.e).headers, (x.e).enqueued_at,
       $4, $5, $6, $7, $8, $9, coalesce($10, $11), $11, $12
  FROM (SELECT $3 AS e) x
ON CONFLICT (subscription_id, event_id) DO UPDATE
   SET attempts = excluded.attempts, sqlstate = excluded.sqlstate, message = excluded.message,
       detail = excluded.detail, hint = excluded.hint, context = excluded.context,
       last_failed_at = excluded.last_failed_at, worker_pid = excluded.worker_pid,
       dead_at = now())sql";

// After heads were delivered or dead-lettered: the oldest waiting event of each of those
// keys becomes the head, due at once.
inline constexpr const char *kPromoteHeads = R"sql(
UPDATE evproc.retry r SET is_head = true, next_attempt_at = now()
 WHERE r.subscription_id = $1 AND NOT r.is_head
   AND r.event_id IN (SELECT DISTINCT ON (key) event_id FROM evproc.retry
                       WHERE subscription_id = $1 AND partition = $2 AND key = ANY ($3)
                       ORDER BY key, seq))sql";

// The unit's new position, by the ctid of its row's newest version (see kClaimHintedUnit:
// a lookup by key walks every version a transaction held open keeps). The batch holds
// the row locked since its claim, so that version is the one it locked; the batch checks
// that one row was updated.
inline constexpr const char *kAdvance = R"sql(
UPDATE evproc.progress
   SET tick_id = $3, window_tick = $4, cursor_id = $5, history_from = $6,
       retry_due_at = CASE WHEN $7 THEN (SELECT min(next_attempt_at) FROM evproc.retry
                                           WHERE subscription_id = $1 AND partition = $2 AND is_head)
                           ELSE retry_due_at END,
       batches = batches + 1, delivered = delivered + $8, last_batch_at = now()
 WHERE ctid = (SELECT q.ctid FROM evproc.progress q
                WHERE q.subscription_id = $1 AND q.partition >= $2 AND q.partition <= $2
                ORDER BY q.partition DESC LIMIT 1)
   AND subscription_id = $1 AND partition = $2)sql";

// kAdvance, where units are marked ready (kClaimReadyUnit): $9 whether the unit may still
// have work (NULL: as it was); never at the newest tick with no window in progress,
// whatever the slot's stamp says (a stamp of an extension dropped and created again
// may be ahead of every tick: the unit would be claimed for nothing forever).
inline constexpr const char *kAdvanceReady = R"sql(
UPDATE evproc.progress
   SET tick_id = $3, window_tick = $4, cursor_id = $5, history_from = $6,
       retry_due_at = CASE WHEN $7 THEN (SELECT min(next_attempt_at) FROM evproc.retry
                                           WHERE subscription_id = $1 AND partition = $2 AND is_head)
                           ELSE retry_due_at END,
       batches = batches + 1, delivered = delivered + $8, last_batch_at = now(),
       ready = coalesce($9 AND ($4 IS NOT NULL OR $3 < (SELECT max(id) FROM evproc.tick)), ready)
 WHERE ctid = (SELECT q.ctid FROM evproc.progress q
                WHERE q.subscription_id = $1 AND q.partition >= $2 AND q.partition <= $2
                ORDER BY q.partition DESC LIMIT 1)
   AND subscription_id = $1 AND partition = $2)sql";

// A batch that found nothing left committed after its slot got a newer stamp, which the
// launcher may have skipped while the batch held the unit: the unit is ready again.
// The row by the ctid of its newest version (see kClaimHintedUnit); one updated since is
// followed to its newest version, where the conditions are checked again.
inline constexpr const char *kSetReady = R"sql(
UPDATE evproc.progress SET ready = true
 WHERE ctid = (SELECT q.ctid FROM evproc.progress q
                WHERE q.subscription_id = $1 AND q.partition >= $2 AND q.partition <= $2
                ORDER BY q.partition DESC LIMIT 1)
   AND subscription_id = $1 AND partition = $2 AND NOT ready
   AND tick_id < (SELECT max(id) FROM evproc.tick))sql";

// Whether this extension version marks units ready (kClaimReadyUnit, kFlagReady).
inline constexpr const char *kHasReady = R"sql(
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                WHERE attrelid = 'evproc.progress'::pg_catalog.regclass
                  AND attname = 'ready' AND NOT attisdropped))sql";

// The function the subscription ($1) is bound to, and the extension it was bound in
// (evproc.subscription.handler_oid, from 0.3.0 on: prepared only where the columns
// exist). The worker compares them with the function the handler's name resolves to.
inline constexpr const char *kBoundHandler = R"sql(
SELECT handler_oid, handler_bound_in FROM evproc.subscription WHERE id = $1)sql";

// The subscription's handler is the function $2, in this extension (see
// BindHandlerIfNeeded, delivery_claim.hpp).
inline constexpr const char *kBindHandler = R"sql(
UPDATE evproc.subscription
   SET handler_oid = $2,
       handler_bound_in = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'evproc')
 WHERE id = $1)sql";

inline constexpr const char *kPause = R"sql(
UPDATE evproc.subscription SET paused = true, paused_reason = $2 WHERE id = $1)sql";

inline constexpr const char *kTripBreaker = R"sql(
UPDATE evproc.subscription
   SET breaker_open_until = now() + breaker_cooldown, paused_reason = $2 WHERE id = $1)sql";

// The search_path a session of the subscription's owner ($1) would get in this database
// ($2) from ALTER ROLE / ALTER DATABASE ... SET, in PostgreSQL's order: the role in the
// database, the role, the database, every role (ALTER ROLE ALL); no row when none sets
// it. Handlers run with it: the worker's own session path is the database's, which a
// database owner sets and the subscription's owner did not choose.
inline constexpr const char *kOwnerSearchPath = R"sql(
SELECT pg_catalog.substr(c.setting, 13)
  FROM pg_catalog.pg_db_role_setting d
 CROSS JOIN LATERAL pg_catalog.unnest(d.setconfig) AS c(setting)
 WHERE d.setdatabase IN (0, $2) AND d.setrole IN (0, $1)
   AND c.setting LIKE 'search\_path=%'
 ORDER BY d.setrole = 0, d.setdatabase = 0
 LIMIT 1)sql";

// Whether this extension version binds handlers by oid (kBoundHandler).
inline constexpr const char *kHasBindings = R"sql(
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                WHERE attrelid = 'evproc.subscription'::pg_catalog.regclass
                  AND attname = 'handler_bound_in' AND NOT attisdropped))sql";

inline constexpr const char *kEventType = R"sql(
SELECT 'evproc.event'::pg_catalog.regtype::oid)sql";

// The launcher's flagging after a tick (ready_flags.hpp, docs/design.md "Claiming a
// unit"): of the candidate units ($1 subscriptions, $2 partitions, $3 their slots: the
// units of the slots the tick stamped, every unit after a start, taken from the
// launcher's map of units, ready_flags.cpp), those of active push subscriptions that are
// not ready become ready. Each unit's row is found newest version first (a backward scan
// of progress_unit_idx, LIMIT 1; see kClaimHintedUnit), then locked and updated by its
// ctid: under a transaction held open a look-up by slot or by key walks every version the
// rows ever had, and the flagging did so at every tick. Rows someone holds (a batch,
// maintenance) are skipped, not waited for: the tick never waits behind them. Returns how
// many units became ready, the slots of the units left waiting (held, or updated by a
// batch that committed meanwhile), which the launcher tries again shortly (a unit held
// by a worker whose committed row reads ready is left to that worker, which looks at its
// slot's stamp after its commit), and the units it marked (two arrays in the same order),
// which the launcher hints to the workers after its commit (core/ready_hints.hpp). One
// generic plan, prepared once: planned afresh at every tick for the arrays, it was 40 % of
// the launcher's CPU (issue 18). It was a PL/pgSQL function until its call (SET clauses,
// an exception block's subtransaction, two statements) was found to be most of what a
// tick cost (issue 13). Each unit's subscription is looked up by its key (OFFSET 0: not
// a join the planner may turn into a loop over every subscription).
inline constexpr const char *kFlagReady = R"sql(
WITH c AS (
    SELECT c.sid, c.part, c.slot, n.ctid
      FROM ROWS FROM (pg_catalog.unnest($1::int4[]), pg_catalog.unnest($2::int4[]),
                      pg_catalog.unnest($3::int4[])) AS c(sid, part, slot)
     CROSS JOIN LATERAL (SELECT 1 FROM evproc.subscription a
                          WHERE a.id = c.sid AND NOT a.paused AND a.handler IS NOT NULL
                         OFFSET 0) s
     CROSS JOIN LATERAL (SELECT q.ctid, q.ready FROM evproc.progress q
                          WHERE q.subscription_id = c.sid
                            AND q.partition >= c.part AND q.partition <= c.part
                          ORDER BY q.partition DESC LIMIT 1) n
     WHERE NOT n.ready),
flagged AS (
    UPDATE evproc.progress p SET ready = true
     WHERE p.ctid = ANY (ARRAY(SELECT q.ctid FROM evproc.progress q
                                WHERE q.ctid = ANY (ARRAY(SELECT c.ctid FROM c)) AND NOT q.ready
                                  FOR UPDATE OF q SKIP LOCKED))
    RETURNING p.subscription_id, p.partition)
SELECT (SELECT count(*) FROM flagged)::int4,
       ARRAY(SELECT DISTINCT c.slot FROM c
              WHERE NOT EXISTS (SELECT 1 FROM flagged f
                                 WHERE f.subscription_id = c.sid AND f.partition = c.part)),
       ARRAY(SELECT f.subscription_id FROM flagged f ORDER BY f.subscription_id, f.partition),
       ARRAY(SELECT f.partition FROM flagged f ORDER BY f.subscription_id, f.partition))sql";

// The launcher's map of units (ready_flags.cpp): the push subscriptions and the number
// of partitions of their topics, read when subscriptions changed (evproc.registry_seq).
// Never from evproc.progress, whose rows are updated at every batch.
inline constexpr const char *kPushUnits = R"sql(
SELECT s.id, s.topic_id, t.partitions
  FROM evproc.subscription s JOIN evproc.topic t ON t.id = s.topic_id
 WHERE s.handler IS NOT NULL)sql";

// Every statement by the name evproc.statement_sql() knows it by.
struct NamedStatement {
  const char *name;
  const char *text;
};
inline constexpr NamedStatement kStatements[] = {
    {"claim", kClaimUnit},
    {"claim_unit", kClaimReadyUnit},
    {"claim_hinted", kClaimHintedUnit},
    {"claim_replay", kClaimReplay},
    {"replay_events", kReplayEvents},
    {"advance_replay", kAdvanceReplay},
    {"retry_due", kRetryDue},
    {"next_due", kNextDue},
    {"window_bounds", kWindowBounds},
    {"due_retries", kDueRetries},
    {"window_pending", kWindowPending},
    {"window_range", kWindowRange},
    {"delete_retries", kDeleteRetries},
    {"park", kParkEvent},
    {"dead_letter", kDeadLetter},
    {"promote_heads", kPromoteHeads},
    {"advance", kAdvance},
    {"advance_ready", kAdvanceReady},
    {"set_ready", kSetReady},
    {"bound_handler", kBoundHandler},
    {"bind_handler", kBindHandler},
    {"pause", kPause},
    {"trip_breaker", kTripBreaker},
    {"owner_search_path", kOwnerSearchPath},
    {"event_type", kEventType},
    {"flag_ready", kFlagReady},
    {"push_units", kPushUnits},
};

}  // namespace evproc::sql
