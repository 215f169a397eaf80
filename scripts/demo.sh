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

cat <<DONE

evproc is running: psql -h /tmp -p $port -U postgres evproc_demo
  (the example's tables are in schema shop; examples/README.md says what to look at)
Stop the server with: runuser -u postgres -- $bindir/pg_ctl -D $data stop
DONE
