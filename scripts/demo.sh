#!/usr/bin/env bash
# Sets up evproc on a Debian 12 machine as root and runs its main job on a local server:
# installs dependencies, builds and installs the extension, starts a PostgreSQL 15
# cluster with evproc preloaded and its launcher serving database evproc_demo (data in
# /var/lib/postgresql/evproc-demo, port 5499, left running), then runs the order-service
# example (examples/order_service/, see examples/README.md): orders placed in
# transactions that publish OrderCreated, a projection and a flaky subscription fed by
# the background workers, dead letters, a replay after the fix, the monitoring views,
# and balance checks that fail this script if anything is off.
#
# Environment overrides (defaults in brackets), for running it against another install:
#   PG_CONFIG          [/usr/lib/postgresql/15/bin/pg_config] the install to build for
#   PG_BINDIR          [$PG_CONFIG --bindir] where initdb, pg_ctl and psql are
#   EVPROC_DEMO_DATA   [/var/lib/postgresql/evproc-demo] the cluster's data directory
#   EVPROC_DEMO_PORT   [5499] its port (unix socket in /tmp only)
set -euo pipefail

cd "$(dirname "$0")/.."
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
data=${EVPROC_DEMO_DATA:-/var/lib/postgresql/evproc-demo}
port=${EVPROC_DEMO_PORT:-5499}

bash scripts/install-deps.sh
bindir=${PG_BINDIR:-$("$PG_CONFIG" --bindir)}
make -s all
make -s install

as_postgres() { runuser -u postgres -- "$@"; }

if [[ ! -f "$data/PG_VERSION" ]]; then
  install -d -o postgres -g postgres "$data"
  as_postgres "$bindir/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  cat >>"$data/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '/tmp'
listen_addresses = ''
shared_preload_libraries = 'evproc'
CONF
fi
# Data directories made by older versions of this script lack the delivery settings.
grep -q '^evproc.database' "$data/postgresql.conf" || cat >>"$data/postgresql.conf" <<CONF
evproc.database = 'evproc_demo'
evproc.workers = 2
max_worker_processes = 16
CONF
# psql is a client: it runs as root (and so reads the example from any checkout, even
# one under /root) and connects as postgres (trust over the local socket).
psql_demo() { "$bindir/psql" -h /tmp -p "$port" -U postgres -X -v ON_ERROR_STOP=1 "$@"; }
pg_ctl_demo() { as_postgres "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w "$@" >/dev/null; }

if ! as_postgres "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  pg_ctl_demo start
fi
psql_demo -d postgres -qtc "SELECT 1 FROM pg_database WHERE datname = 'evproc_demo'" | grep -q 1 ||
  psql_demo -d postgres -qc "CREATE DATABASE evproc_demo"
# The demo database gets a fresh copy of the extension: its SQL may have changed with
# this build while its version stayed the same (development). It is dropped before the
# restart and created after it: evproc's shared-memory statistics are keyed by topic and
# subscription ids, which a re-created extension hands out again from 1, and only a
# fresh postmaster is sure to hold no figures of the dropped copy's ids. The restart
# also loads the rebuilt evproc.so.
psql_demo -d evproc_demo -qc "SET client_min_messages = warning" -c "DROP EXTENSION IF EXISTS evproc CASCADE"
pg_ctl_demo restart
psql_demo -d evproc_demo -qc "CREATE EXTENSION evproc"
psql_demo -d evproc_demo -f examples/order_service/main.sql

# A consumer outside the database beside the SQL handlers (docs/consumers.md): a pull
# subscription of the same topic, from the start of the demo's history, drained by the
# Python example consumer (examples/consumers/python/consumer.py), which records a
# shipment per order in the transaction that acknowledges its lease. Then: every order
# event shipped exactly once, and per customer in commit order.
echo
echo "== a consumer outside the database (examples/consumers/python) drains the orders"
psql_demo -d evproc_demo -q <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS shop.shipments;
CREATE TABLE shop.shipments (event_id bigint PRIMARY KEY, key text, payload jsonb,
                             attempt int, seq bigserial);
GRANT INSERT ON shop.shipments TO order_app;
GRANT USAGE ON SEQUENCE shop.shipments_seq_seq TO order_app;
SELECT evproc_subscribe('order_shipping', 'orders', NULL, run_as => 'order_app',
                        start_from => now() - interval '1 hour') AS shipping_id \gset
SQL
# Debian's python3, which has python3-psycopg (another python3 may come first in PATH).
EVPROC_WAIT=1 /usr/bin/python3 examples/consumers/python/consumer.py \
  "host=/tmp port=$port user=postgres dbname=evproc_demo" order_shipping shop.shipments &
consumer=$!
for _ in $(seq 1 60); do
  [[ $(psql_demo -d evproc_demo -qAtc "SELECT count(*) >= (SELECT count(*) FROM evproc.log l
        JOIN evproc.topic t ON t.id = l.topic_id WHERE t.name = 'orders') FROM shop.shipments") == t ]] && break
  sleep 0.5
done
kill -TERM "$consumer"
wait "$consumer" || true
psql_demo -d evproc_demo -qAt <<'SQL'
\set ON_ERROR_STOP 1
SELECT format('orders published %s, shipped by the consumer %s', published, shipped)
  FROM (SELECT (SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
                 WHERE t.name = 'orders') AS published,
               (SELECT count(*) FROM shop.shipments) AS shipped) c;
-- Balance: each published order event shipped once, and per key in commit (id) order.
DO $$
BEGIN
    IF (SELECT count(*) FROM shop.shipments)
       <> (SELECT count(*) FROM evproc.log l JOIN evproc.topic t ON t.id = l.topic_id
            WHERE t.name = 'orders') THEN
        RAISE EXCEPTION 'the consumer did not ship every order event exactly once';
    END IF;
    IF EXISTS (SELECT 1 FROM (SELECT event_id, lag(event_id) OVER (PARTITION BY key ORDER BY seq) AS prev
                                FROM shop.shipments) s WHERE s.prev > s.event_id) THEN
        RAISE EXCEPTION 'the consumer shipped a customer''s orders out of order';
    END IF;
END $$;
SELECT 'consumer checks passed';
SQL

cat <<DONE

evproc is running: psql -h /tmp -p $port -U postgres evproc_demo
  (the example's tables are in schema shop; examples/README.md says what to look at)
Stop the server with: runuser -u postgres -- $bindir/pg_ctl -D $data stop
DONE
