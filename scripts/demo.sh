#!/usr/bin/env bash
# Sets up evproc on a Debian 12 machine as root and runs its main job on a local server:
# installs dependencies, builds and installs the extension, starts a PostgreSQL 15
# cluster with evproc preloaded and its launcher serving database evproc_demo (data in
# /var/lib/postgresql/evproc-demo, port 5499, left running), then runs examples/demo.sql:
# an app that publishes events inside its own transactions, with dedup and validation,
# and two subscriptions whose handlers the background workers feed.
set -euo pipefail

cd "$(dirname "$0")/.."
export PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
bindir=/usr/lib/postgresql/15/bin
data=${EVPROC_DEMO_DATA:-/var/lib/postgresql/evproc-demo}
port=${EVPROC_DEMO_PORT:-5499}

bash scripts/install-deps.sh
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
if ! as_postgres "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  as_postgres "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w start >/dev/null
else
  # A rebuilt evproc.so is only loaded by a fresh postmaster.
  as_postgres "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w restart >/dev/null
fi

psql_demo() { as_postgres "$bindir/psql" -h /tmp -p "$port" -X -v ON_ERROR_STOP=1 "$@"; }
psql_demo -d postgres -qtc "SELECT 1 FROM pg_database WHERE datname = 'evproc_demo'" | grep -q 1 ||
  psql_demo -d postgres -qc "CREATE DATABASE evproc_demo"
psql_demo -d evproc_demo -f examples/demo.sql

cat <<DONE

evproc is running: psql -h /tmp -p $port -U postgres evproc_demo
Stop the server with: runuser -u postgres -- $bindir/pg_ctl -D $data stop
DONE
