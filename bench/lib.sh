# bench/lib.sh -- shared by the bench/ scripts (sourced, not run).
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

# PostgreSQL comes from PG_CONFIG (default Debian's), so a private copy with evproc
# installed into it (scripts/private-pg.sh) can be benchmarked; PGBIN overrides it.
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
if [[ -z ${PGBIN:-} ]]; then
    PGBIN=$("$PG_CONFIG" --bindir 2>/dev/null) || { echo "bench: $PG_CONFIG does not run (set PG_CONFIG or PGBIN)" >&2; exit 1; }
fi
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

# ---------------------------------------------------------------------------------------
# Helpers of bench/compare, open_txn, bigtxn, idle_subs and parked.

now_s() { echo "$EPOCHREALTIME"; }
# rate N SECONDS -> N/SECONDS rounded; ratio A B -> A/B with 2 decimals
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", (s > 0) ? n / s : 0 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
elapsed_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

# bench_payload_sql N_EXPR: the SQL expression of a ~200-byte JSON payload (jsonb) for
# event number N_EXPR; bench_key_sql N_EXPR: its key, one of 10,000.
bench_payload_sql() {
    echo "jsonb_build_object('order_id', ($1)::bigint, 'customer', 'customer-' || (($1)::bigint % 977), 'amount', 12.5, 'currency', 'EUR', 'status', 'new', 'lines', 3, 'note', 'benchmark payload padded to about two hundred bytes of json text ......', 'ts', '2026-12-02T12:00:00Z')"
}
bench_key_sql() { echo "'k' || (($1)::bigint % 10000)"; }

# bench_setup_helpers: SQL objects the new benchmarks share, in $BENCH_DB:
#   bench_seen (unlogged): one row per delivered event (system, key, event number, the
#     delivery sequence), for per-key order checks; record_seen(evproc.event[]) fills it.
#   bench_lat (unlogged): event id, handler start, publisher xid; record_lat(evproc.event[]).
#   bench_wait_delivered(sub, target, timeout_s, stall_s, resume, INOUT seconds): optionally
#     resumes SUB, commits, and polls every 10 ms until its delivered count reaches target.
bench_setup_helpers() {
    sql >/dev/null <<'EOF'
CREATE UNLOGGED TABLE bench_seen (sys text, key text, ord bigint, dseq bigserial);
GRANT INSERT ON bench_seen TO bench_app;
GRANT USAGE ON SEQUENCE bench_seen_dseq_seq TO bench_app;
CREATE FUNCTION record_seen(events evproc.event[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO bench_seen (sys, key, ord)
    SELECT 'evproc', e.key, (e.payload->>'order_id')::bigint FROM unnest(events) WITH ORDINALITY AS e(id, topic, key, type, payload, headers, enqueued_at, attempt, redelivered, o)
     ORDER BY o
$$;
GRANT EXECUTE ON FUNCTION record_seen(evproc.event[]) TO bench_app;
CREATE UNLOGGED TABLE bench_lat (sys text, id bigint, handler_at timestamptz, xid xid, xid8 xid8);
GRANT INSERT ON bench_lat TO bench_app;
CREATE FUNCTION record_lat(events evproc.event[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE started timestamptz := clock_timestamp();
BEGIN
    INSERT INTO bench_lat (sys, id, handler_at) SELECT 'evproc', e.id, started FROM unnest(events) e;
END $$;
GRANT EXECUTE ON FUNCTION record_lat(evproc.event[]) TO bench_app;
CREATE PROCEDURE bench_wait_delivered(sub text, target bigint, timeout_s float8, stall_s float8,
                                      resume boolean, INOUT seconds float8 DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    moved timestamptz;
    d bigint;
    last bigint := -1;
BEGIN
    IF resume THEN
        PERFORM evproc_resume(sub);
        COMMIT;
    END IF;
    t0 := clock_timestamp();
    moved := t0;
    LOOP
        SELECT coalesce(sum(p.delivered), 0) INTO d
          FROM evproc.progress p JOIN evproc.subscription s ON s.id = p.subscription_id WHERE s.name = sub;
        EXIT WHEN d >= target;
        IF d IS DISTINCT FROM last THEN
            last := d;
            moved := clock_timestamp();
        ELSIF clock_timestamp() - moved > make_interval(secs => stall_s) THEN
            RAISE EXCEPTION 'drain of % stalled: % of % delivered, no progress for % s', sub, d, target, stall_s;
        END IF;
        IF clock_timestamp() - t0 > make_interval(secs => timeout_s) THEN
            RAISE EXCEPTION 'drain of % timed out: % of % delivered after % s', sub, d, target, timeout_s;
        END IF;
        PERFORM pg_sleep(0.01);
        COMMIT;
    END LOOP;
    seconds := round(extract(epoch FROM clock_timestamp() - t0)::numeric, 3);
END $$;
EOF
}

# bench_wait SUB TARGET [RESUME=false] [TIMEOUT=600] [STALL=60] -> seconds until SUB has
# delivered TARGET events (from the resume's commit when RESUME is true).
bench_wait() {
    sql -c "CALL bench_wait_delivered('$1', $2, ${4:-600}, ${5:-60}, ${3:-false})"
}

# bench_inversions SYS -> events of SYS delivered after a later event of the same key.
bench_inversions() {
    sql -c "SELECT count(*) FILTER (WHERE ord < prev) FROM (SELECT ord, lag(ord) OVER (PARTITION BY key ORDER BY dseq) AS prev FROM bench_seen WHERE sys = '$1') x"
}

# bench_lat_pct SYS [FROM_TS] -> "p50 p99 n" in ms, from the publishing transaction's commit
# record (track_commit_timestamp) to the handler's start, for the rows of bench_lat.
bench_lat_pct() {
    sql -F ' ' -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                          round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2), count(*)
                     FROM (SELECT extract(epoch FROM handler_at - pg_xact_commit_timestamp(xid)) * 1000 AS ms
                             FROM bench_lat WHERE sys = '$1' AND xid IS NOT NULL) x"
}

# bench_evproc_pids -> the pids of evproc's processes: the launcher, the workers, the
# maintenance worker and the sink workers
bench_evproc_pids() {
    sql -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type LIKE 'evproc %'"
}

# bench_cpu_pct SECONDS PID... -> CPU used by the PIDs over SECONDS, in % of one core
# (utime + stime from /proc/<pid>/stat).
bench_cpu_pct() {
    local secs=$1 hz t0 t1 p
    shift
    hz=$(getconf CLK_TCK)
    ticks() { local sum=0 f; for p in "$@"; do f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue; sum=$((sum + ${f% *} + ${f#* })); done; echo "$sum"; }
    t0=$(ticks "$@"); sleep "$secs"; t1=$(ticks "$@")
    awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.2f", 100 * d / hz / s }'
}

# bench_pub_sql FILE TOPIC: a pgbench script of one evproc_enqueue per transaction.
bench_pub_sql() {
    cat >"$1" <<EOF
\\set n random(1, 1000000000)
SELECT evproc_enqueue('$2', $(bench_key_sql :n), $(bench_payload_sql :n), 'OrderCreated.v1');
EOF
}

# bench_pgbench OUT ARGS...: runs pgbench, fails loudly; bench_tps OUT -> tps
bench_pgbench() {
    local out=$1
    shift
    if ! "$PGBIN/pgbench" -n "$@" >"$out" 2>&1; then
        echo "bench/$BENCH: pgbench $* failed:" >&2
        tail -n 20 "$out" >&2
        exit 1
    fi
}
bench_tps() { sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\).*/\1/p' "$1"; }
bench_txns() { sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$1"; }

# Results: bench_result SECTION CASE SYSTEM VALUE UNIT appends one figure; bench_write_results
# writes them all as bench/results/<BENCH>-<STAMP>.json (an array of objects) next to the
# report; the markdown report is the script's own (bench_md).
bench_result() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$TMP/results.tsv"; }
bench_write_results() {
    local json=$RESULTS_DIR/$BENCH-$STAMP.json
    jq -R -s --arg bench "$BENCH" --arg stamp "$STAMP" --arg machine "$(machine_line)" \
        --arg pg "$(sql -c 'SHOW server_version')" --arg settings "${BENCH_SETTINGS:-}" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" '
        { bench: $bench, stamp: $stamp, machine: $machine, postgres: $pg, settings: $settings,
          loadavg_at_end: $load,
          results: [split("\n")[] | select(length > 0) | split("\t")
                    | { section: .[0], case: .[1], system: .[2],
                        value: (.[3] | (tonumber? // .)), unit: .[4] }] }' "$TMP/results.tsv" >"$json"
    echo "$json"
}

# bench_mem_sampler_start FILE PID...: samples every ~100 ms, in the background, the
# largest RssAnon and VmRSS (kB) over the PIDs, rewriting FILE as "anon_kb rss_kb";
# bench_mem_sampler_stop ends it. (bench/rss has the full per-worker picture.)
bench_mem_sampler_start() {
    local file=$1
    shift
    (
        max_anon=0 max_rss=0
        while :; do
            for p in "$@"; do
                read -r a r < <(awk '$1 == "RssAnon:" { a = $2 } $1 == "VmRSS:" { r = $2 } END { print a + 0, r + 0 }' "/proc/$p/status" 2>/dev/null || echo "0 0")
                ((a > max_anon)) && max_anon=$a
                ((r > max_rss)) && max_rss=$r
            done
            echo "$max_anon $max_rss" >"$file.tmp" && mv "$file.tmp" "$file"
            sleep 0.1
        done
    ) &
    BENCH_SAMPLER=$!
}
bench_mem_sampler_stop() {
    if [[ -n ${BENCH_SAMPLER:-} ]]; then
        kill "$BENCH_SAMPLER" 2>/dev/null || true
        wait "$BENCH_SAMPLER" 2>/dev/null || true
    fi
    BENCH_SAMPLER=
    return 0
}

# bench_load_chunks TOPIC FIRST LAST PER_TXN [KEYEXPR]: enqueues events FIRST..LAST (the
# shared ~200-byte payload; key KEYEXPR of g, default one of 10,000) with
# evproc_enqueue_batch, 1000 per call, PER_TXN events per transaction (0: all in one).
bench_load_chunks() {
    local topic=$1 first=$2 last=$3 per=$4 keyexpr=${5:-$(bench_key_sql g)} lo hi n=0
    {
        if ((per == 0)); then echo "BEGIN;"; fi
        for ((lo = first; lo <= last; lo += 1000)); do
            hi=$((lo + 999))
            if ((hi > last)); then hi=$last; fi
            if ((per > 0 && n % per == 0)); then echo "BEGIN;"; fi
            echo "SELECT cardinality(evproc_enqueue_batch('$topic', (SELECT jsonb_agg(jsonb_build_object('key', $keyexpr, 'payload', $(bench_payload_sql g)) ORDER BY g) FROM generate_series($lo, $hi) g)));"
            n=$((n + hi - lo + 1))
            if ((per > 0 && n % per == 0)); then echo "COMMIT;"; fi
        done
        if ((per == 0 || n % per != 0)); then echo "COMMIT;"; fi
    } | sql >/dev/null
}
