#!/usr/bin/env bash
# Runs evproc's whole test suite on a Debian 12 machine as root: installs dependencies,
# builds with -Werror, checks formatting, runs the C++ unit tests (ctest), clang-tidy and
# the schema validator's fuzzer (30 s), installs the extension, then runs pg_regress, the
# isolation specs and the TAP tests (real servers with running workers, killed and
# restarted, and hostile input from a seeded generator) against private temporary
# servers started with shared_preload_libraries = 'evproc' (as the postgres user: initdb
# refuses root). Ends with one line "N passed, N failed".
set -uo pipefail

cd "$(dirname "$0")/.."
# PG_CONFIG may name a private (relocated) PostgreSQL tree, so that several checkouts
# can install and test side by side; CI uses Debian's.
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export WERROR=1  # warnings are errors here and in CI (a user's plain `make` warns only)
log_dir=$(mktemp -d)
passed=0
failed=0

step() {  # step NAME COMMAND...: runs a build step; a failure counts as one failed test
  echo "== $1"
  shift
  if "$@" >"$log_dir/step.log" 2>&1; then
    return 0
  fi
  cat "$log_dir/step.log"
  echo "!! step failed"
  failed=$((failed + 1))
  return 1
}

count_pg_regress() {  # adds pg_regress per-test results from a log file
  local ok bad
  ok=$(grep -cE '^(ok|test) .*\.\.\. +ok' "$1" || true)
  bad=$(grep -cE '\.\.\. +FAILED' "$1" || true)
  passed=$((passed + ok))
  failed=$((failed + bad))
}

bash scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

step "build (-Werror)" make -s clean all || { echo "$passed passed, $failed failed"; exit 1; }
step "format check" make -s format-check && passed=$((passed + 1))

echo "== unit tests (ctest)"
if make -s unit >"$log_dir/unit.log" 2>&1; then :; fi
grep -E "tests passed|Failed|\*\*\*" "$log_dir/unit.log" || cat "$log_dir/unit.log"
unit_line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$log_dir/unit.log" || true)
if [[ -n "$unit_line" ]]; then
  unit_failed=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$unit_line")
  unit_total=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/' <<<"$unit_line")
  passed=$((passed + unit_total - unit_failed))
  failed=$((failed + unit_failed))
else
  echo "!! unit tests did not run"
  failed=$((failed + 1))
fi

step "lint (clang-tidy)" make -s lint && passed=$((passed + 1))

# libFuzzer over the schema validator for a bounded time: a crash, leak, timeout or
# sanitizer report fails it (one test).
echo "== schema fuzzer (30 s)"
if make -s fuzz FUZZ_SECONDS=30 >"$log_dir/fuzz.log" 2>&1; then
  grep -E '^Done [0-9]+ runs' "$log_dir/fuzz.log"
  passed=$((passed + 1))
else
  tail -60 "$log_dir/fuzz.log"
  echo "!! schema fuzzer failed"
  failed=$((failed + 1))
fi

step "install" make -s install || { echo "$passed passed, $failed failed"; exit 1; }

# The temporary servers run as postgres and write results into the tree.
chmod -R a+rwX . "$log_dir"
rm -rf results output_iso tmp_check tmp_check_regress tmp_check_iso

# Each suite runs under its own time limit, so a hang (a delivery regression leaves a
# TAP test waiting, a spec blocked on a lock) fails that suite in minutes with its logs
# shown, instead of running into CI's job limit: pg_regress and the isolation specs as
# one suite each, every TAP file on its own. Seconds, from the environment:
regress_timeout=${EVPROC_REGRESS_TIMEOUT:-600}      # all of sql/*.sql
isolation_timeout=${EVPROC_ISOLATION_TIMEOUT:-600}  # all of test/isolation/specs
tap_timeout=${EVPROC_TAP_TIMEOUT:-300}              # each t/*.pl
# Lines shown as tests finish; the whole output of each suite is in $log_dir.
progress='^(ok|not ok|test) |tests passed|tests failed|^t/|^Result|^# summary: '

# suite SECONDS LOG MAKE-ARGUMENTS...: runs `make installcheck` as postgres under a time
# limit (timeout runs inside runuser, so it signals make's whole process group), shows
# its progress lines as they come and keeps its output in LOG. Returns make's status;
# 124 (or 137 if it had to be killed) when the limit was reached.
suite() {
  local seconds=$1 log=$2
  shift 2
  runuser -u postgres -- timeout --kill-after=30 "$seconds" \
    make installcheck PG_CONFIG="$PG_CONFIG" "$@" 2>&1 | tee "$log" | grep --line-buffered -E "$progress"
  return "${PIPESTATUS[0]}"
}

timed_out() { [[ $1 -eq 124 || $1 -eq 137 ]]; }

# A suite killed by its limit leaves its temporary servers running (pg_ctl starts them
# in their own session): stop the ones whose data directory is below DIR.
stop_servers_below() {
  local pid_file
  while IFS= read -r pid_file; do
    runuser -u postgres -- "$($PG_CONFIG --bindir)/pg_ctl" -D "$(dirname "$pid_file")" \
      -m immediate stop >/dev/null 2>&1 || true
  done < <(find "$1" -name postmaster.pid 2>/dev/null)
}

# timed_out_report NAME SECONDS LOG DIR SERVER-LOG...: what a suite that ran out of time
# leaves to read (its output and its servers' logs); then stops its servers (below DIR).
timed_out_report() {
  echo "!! $1 timed out after $2 s (output tail, then its servers' log tails)"
  tail -n 40 "$3"
  local dir=$4 server_log
  shift 4
  for server_log in "$@"; do
    [[ -f "$server_log" ]] && { echo "== $server_log (tail)"; tail -n 30 "$server_log"; }
  done
  stop_servers_below "$dir"
}

echo "== pg_regress (limit ${regress_timeout} s)"
suite "$regress_timeout" "$log_dir/regress.log" ISOLATION= TAP_TESTS=
status=$?
timed_out $status &&
  timed_out_report "pg_regress" "$regress_timeout" "$log_dir/regress.log" tmp_check_regress \
    log/postmaster.log
echo "== isolation specs (limit ${isolation_timeout} s)"
suite "$isolation_timeout" "$log_dir/isolation.log" REGRESS= TAP_TESTS=
status=$?
timed_out $status &&
  timed_out_report "isolation specs" "$isolation_timeout" "$log_dir/isolation.log" tmp_check_iso \
    output_iso/log/postmaster.log
# Pass and fail are counted from the per-test lines; a test that never ran (its suite
# timed out or stopped early) counts as failed.
before=$((passed + failed))
count_pg_regress "$log_dir/regress.log"
count_pg_regress "$log_dir/isolation.log"
expected=$(( $(ls sql/*.sql | wc -l) + $(ls test/isolation/specs/*.spec | wc -l) ))
ran=$((passed + failed - before))
if ((ran < expected)); then
  echo "!! only $ran of $expected pg_regress/isolation tests ran"
  tail -n 30 "$log_dir/regress.log" "$log_dir/isolation.log"
  failed=$((failed + expected - ran))
fi
for diffs in regression.diffs output_iso/regression.diffs; do
  [[ -s "$diffs" ]] && { echo "== $diffs"; cat "$diffs"; }
done

# TAP: one file at a time, each under its own limit. A file passes when prove reports
# it "ok"; any other end (a failure, a timeout) is a failure, shown with its logs at once
# (the next file's run clears tmp_check).
echo "== TAP tests (limit ${tap_timeout} s each)"
for tap_file in t/*.pl; do
  tap_log="$log_dir/tap-$(basename "$tap_file" .pl).log"
  suite "$tap_timeout" "$tap_log" REGRESS= ISOLATION= PROVE_TESTS="$tap_file"
  status=$?
  if ((status == 0)) && grep -qE "^t/[^ ]+\.pl \.+ ok" "$tap_log"; then
    passed=$((passed + 1))
    continue
  fi
  failed=$((failed + 1))
  if timed_out $status; then
    timed_out_report "$tap_file" "$tap_timeout" "$tap_log" tmp_check tmp_check/log/*.log
  else
    sed -n '/^t\//,$p' "$tap_log" | tail -60
  fi
  for regress_log in tmp_check/log/regress_log_*; do
    [[ -f "$regress_log" ]] && { echo "== $regress_log (tail)"; tail -40 "$regress_log"; }
  done
done

echo
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
