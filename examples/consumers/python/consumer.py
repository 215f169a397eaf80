#!/usr/bin/env python3
"""A consumer of an evproc pull subscription (docs/consumers.md).

Reads a batch under a lease (long poll), handles it and acknowledges it in one
transaction with the effects it writes to the same database, so each effect happens
exactly once. A failing event is nacked: it is retried with backoff (or ends in the
dead letters), and the later events of its key wait behind it. SIGTERM finishes the
batch in hand and exits.

    python3 consumer.py CONNINFO SUBSCRIPTION [EFFECT_TABLE]

Environment: EVPROC_BATCH (most events per read, 100), EVPROC_WAIT (seconds a read
waits for events, 5), EVPROC_LEASE (seconds; default: the subscription's
lease_duration), EVPROC_HANDLE_MS (milliseconds of pretend work per event, 0). With EFFECT_TABLE (columns event_id bigint, key text, payload jsonb,
attempt int) each event is inserted there in the acknowledging transaction; without,
it is printed as a JSON line. An event whose payload has "fail": true is nacked.

psycopg 3 (Debian's python3-psycopg). prepare_threshold=None: no server-side prepared
statements, which transaction-mode PgBouncer (1.18) cannot follow across connections.
"""
import json
import os
import signal
import sys
import time

import psycopg
from psycopg.rows import dict_row
from psycopg import sql
from psycopg.types.json import Jsonb

stopping = False


def stop(_signum, _frame):
    global stopping
    stopping = True


def handle(conn, event, effect_table, work_ms):
    """What the application does with one event. Raising fails (nacks) it."""
    if work_ms > 0:
        time.sleep(work_ms / 1000)
    if isinstance(event["payload"], dict) and event["payload"].get("fail") is True:
        raise RuntimeError(f"asked to fail (event {event['id']})")
    if effect_table:
        conn.execute(
            sql.SQL("INSERT INTO {} (event_id, key, payload, attempt) VALUES (%s, %s, %s, %s)").format(
                sql.Identifier(*effect_table.split("."))),
            (event["id"], event["key"], Jsonb(event["payload"]), event["attempt"]))
    else:
        print(json.dumps(event, default=str), flush=True)


def main():
    if len(sys.argv) < 3:
        print("usage: consumer.py CONNINFO SUBSCRIPTION [EFFECT_TABLE]", file=sys.stderr)
        return 2
    conninfo, subscription = sys.argv[1], sys.argv[2]
    effect_table = sys.argv[3] if len(sys.argv) > 3 else None
    batch = int(os.environ.get("EVPROC_BATCH", "100"))
    wait = float(os.environ.get("EVPROC_WAIT", "5"))
    lease = os.environ.get("EVPROC_LEASE")
    work_ms = float(os.environ.get("EVPROC_HANDLE_MS", "0"))
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
        conn.row_factory = dict_row
        while not stopping:
            # The read is its own transaction (autocommit): it commits the lease at once,
            # and while it waits it holds no unit.
            rows = conn.execute(
                "SELECT lease, id, key, type, payload, headers, enqueued_at, attempt, replay"
                "  FROM evproc_read(%s, %s, %s::interval, %s::interval)",
                (subscription, batch, f"{lease} seconds" if lease else None, f"{wait} seconds"),
            ).fetchall()
            if not rows:
                continue
            lease_id = rows[0]["lease"]
            try:
                with conn.transaction():
                    failed_keys = set()
                    for event in rows:
                        # Later events of a failed key wait behind it (the ack leaves them
                        # in line).
                        if event["key"] is not None and event["key"] in failed_keys:
                            continue
                        try:
                            with conn.transaction():  # a savepoint: a failure undoes only this event
                                handle(conn, event, effect_table, work_ms)
                        except Exception as error:  # the application's failure, whatever it is
                            conn.execute("SELECT evproc_nack(%s, %s, %s, %s)",
                                         (subscription, lease_id, event["id"], str(error)))
                            if event["key"] is not None:
                                failed_keys.add(event["key"])
                    conn.execute("SELECT evproc_ack(%s, %s)", (subscription, lease_id))
            except psycopg.Error as error:
                if error.sqlstate == "EV001":
                    # The lease expired (or was taken over): nothing of this batch is
                    # committed, and its events come again.
                    print(f"lease lost, its events will be redelivered: {error}", file=sys.stderr)
                    continue
                raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
