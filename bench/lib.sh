# bench/lib.sh -- shared by bench/drain, bench/latency and bench/rss (sourced, not run).
#
# Same approach as bench/enqueue: when run as root, the script re-executes a staged copy
# of itself as the postgres user (initdb refuses root) and copies its results back into
# bench/results/; each run starts its own throw-away PostgreSQL 15 cluster in a temp dir
# (unix socket only, its own port) with evproc preloaded, and removes it on exit.
#
# The sourcing script sets BENCH (its name) and PORT, then calls, in order:
#   bench_reexec_as_postgres VAR...   (root only: never returns)
#   bench_start_cluster <<EOF ...extra postgresql.conf lines... EOF
#   bench_setup_evproc                (database, extension, role bench_app, noop handler)

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
STAMP=${EVPROC_BENCH_STAMP:-$(date -u +%Y%m%dT%H%M%SZ)}
SELF=$(readlink -f "$0")
BENCH_DIR=$(dirname "$SELF")
RESULTS_DIR=${EVPROC_BENCH_RESULTS:-$BENCH_DIR/results}
BENCH_DB=evbench

for b in initdb pg_ctl psql pgbench postgres; do
    [[ -x $PGBIN/$b ]] || { echo "bench/$BENCH: $PGBIN/$b not found (install postgresql-15 or set PGBIN)" >&2; exit 1; }
done
[[ $PORT =~ ^[0-9]+$ ]] || { echo "bench/$BENCH: the port must be a number" >&2; exit 2; }

# positive_int NAME VALUE: exits unless VALUE is a positive integer.
positive_int() {
    [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "bench/$BENCH: $1 must be a positive integer, got '$2'" >&2; exit 2; }
}

# bench_reexec_as_postgres VAR...: as root, run a staged copy of the script (and of this
# file) as postgres with the named environment variables, copy its results into
# bench/results/ and exit with its status. Does nothing for other users.
bench_reexec_as_postgres() {
    [[ $(id -u) -eq 0 ]] || return 0
    id postgres >/dev/null 2>&1 || { echo "bench/$BENCH: running as root but no 'postgres' user exists" >&2; exit 1; }
    local stage rc=0 v
    local -a envs=(PATH="$PATH" PGBIN="$PGBIN" EVPROC_BENCH_STAMP="$STAMP")
    for v in "$@"; do
        [[ -n ${!v+x} ]] && envs+=("$v=${!v}")
    done
    stage=$(mktemp -d /tmp/evproc-bench-stage.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$stage'" EXIT
    chown postgres: "$stage"
    install -o postgres -m 0755 "$SELF" "$stage/$BENCH"
    install -o postgres -m 0644 "$BENCH_DIR/lib.sh" "$stage/lib.sh"
    install -d -o postgres "$stage/out"
    envs+=(EVPROC_BENCH_RESULTS="$stage/out")
    runuser -u postgres -- env "${envs[@]}" "$stage/$BENCH" "${BENCH_ARGS[@]}" || rc=$?
    mkdir -p "$RESULTS_DIR"
    if compgen -G "$stage/out/*" >/dev/null; then
        cp "$stage/out/"* "$RESULTS_DIR/"
        chown "$(stat -c %u:%g "$RESULTS_DIR")" "$RESULTS_DIR"/"$BENCH"-* 2>/dev/null || true
        echo "results: $(cd "$stage/out" && for f in *; do printf '%s ' "$RESULTS_DIR/$f"; done)"
    fi
    exit "$rc"
}

# bench_start_cluster: initdb + start a private cluster; extra postgresql.conf lines on
# stdin. Sets TMP, PGDATA_DIR and the libpq environment; the EXIT trap stops and removes it.
bench_start_cluster() {
    mkdir -p "$RESULTS_DIR"
    TMP=$(mktemp -d /tmp/evproc-bench.XXXXXX)
    PGDATA_DIR=$TMP/data
    STARTED=0
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$TMP/initdb.log" 2>&1 \
        || { cat "$TMP/initdb.log" >&2; exit 1; }
    {
        echo "# --- bench/$BENCH ---"
        echo "port = $PORT"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$TMP'"
        echo "shared_preload_libraries = 'evproc'"
        echo "evproc.database = '$BENCH_DB'"
        echo "evproc.workers = 2"
        echo "max_worker_processes = 16"
        echo "fsync = on"
        echo "synchronous_commit = on"
        echo "max_wal_size = 4GB"
        echo "checkpoint_timeout = 30min"
        echo "logging_collector = off"
        echo "max_connections = 30"
        cat
    } >>"$PGDATA_DIR/postgresql.conf"
    "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$TMP/server.log" -w -t 60 start >/dev/null \
        || { echo "bench/$BENCH: server failed to start" >&2; exit 1; }
    STARTED=1
    export PGHOST=$TMP PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
    unset PGOPTIONS PGSERVICE PGPASSFILE || true
}

bench_cleanup() {
    local rc=$?
    if declare -F bench_on_exit >/dev/null; then bench_on_exit || true; fi
    if [[ ${STARTED:-0} == 1 ]]; then
        "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ $rc -ne 0 && -f ${TMP:-}/server.log ]]; then
        echo "---- last lines of server log ----" >&2
        tail -n 30 "$TMP/server.log" >&2 || true
    fi
    [[ -n ${TMP:-} ]] && rm -rf "$TMP"
    exit "$rc"
}

sql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# bench_setup_evproc: the database evproc serves, the extension, the non-superuser role
# handlers run as (bench_app) and the no-op batch handler noop(evproc.event[]).
bench_setup_evproc() {
    sql -c "CREATE DATABASE $BENCH_DB"
    export PGDATABASE=$BENCH_DB
    if ! sql -c "CREATE EXTENSION evproc CASCADE" 2>"$TMP/ext.err"; then
        echo "bench/$BENCH: CREATE EXTENSION evproc failed:" >&2
        cat "$TMP/ext.err" >&2
        echo "Install it first: make install PG_CONFIG=$PGBIN/pg_config (from the repo root)." >&2
        exit 1
    fi
    sql <<'EOF'
CREATE ROLE bench_app;
GRANT USAGE ON SCHEMA evproc TO bench_app;
CREATE FUNCTION noop(events evproc.event[]) RETURNS void LANGUAGE sql AS $$ SELECT $$;
GRANT EXECUTE ON FUNCTION noop(evproc.event[]) TO bench_app;
EOF
    # The launcher connects to the database once it exists; wait for its workers.
    bench_wait_workers 2
}

# bench_wait_workers N: waits (up to 30 s) until N evproc workers are connected.
bench_wait_workers() {
    local n i
    for ((i = 0; i < 300; i++)); do
        n=$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'evproc worker'")
        [[ $n -ge $1 ]] && return 0
        sleep 0.1
    done
    echo "bench/$BENCH: only $n of $1 evproc workers started" >&2
    exit 1
}

# bench_load_evproc TOPIC EVENTS: enqueues EVENTS events with evproc_enqueue_batch, 1000
# per call (one transaction each). Event g (1-based) has key 'k' || g % 10000 and the
# payload {"order_id": g, "amount": 12.5, "status": "new"}.
bench_load_evproc() {
    local topic=$1 events=$2 c lo hi
    for ((c = 0; c * 1000 < events; c++)); do
        lo=$((c * 1000 + 1)); hi=$(((c + 1) * 1000)); ((hi > events)) && hi=$events
        echo "SELECT count(*) FROM unnest(evproc_enqueue_batch('$topic', (SELECT jsonb_agg(jsonb_build_object('key', 'k' || g % 10000, 'payload', jsonb_build_object('order_id', g, 'amount', 12.5, 'status', 'new')) ORDER BY g) FROM generate_series($lo, $hi) g)));"
    done | sql >/dev/null
}

machine_line() {
    local cpu
    cpu=$(sed -nE 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
    echo "machine:  nproc=$(nproc)  cpu=${cpu:-unknown}  kernel=$(uname -r)"
}
