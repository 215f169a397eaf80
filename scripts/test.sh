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

echo "== pg_regress, isolation specs and TAP tests"
# -i: pg_regress, the isolation tester and prove share one PGXS recipe; without -i a
# failing regression test would skip the rest. Pass and fail are counted from the
# per-test lines.
runuser -u postgres -- make -i installcheck PG_CONFIG="$PG_CONFIG" >"$log_dir/installcheck.log" 2>&1
# Lines a TAP test prints as "# summary: ..." (what t/011 did under faults) are shown too.
grep -E '^(ok|not ok|test) |tests passed|tests failed|^t/|^Result|^# summary: ' "$log_dir/installcheck.log"
before=$((passed + failed))
count_pg_regress "$log_dir/installcheck.log"
expected=$(( $(ls sql/*.sql | wc -l) + $(ls test/isolation/specs/*.spec | wc -l) ))
ran=$((passed + failed - before))
if ((ran < expected)); then
  echo "!! only $ran of $expected pg_regress/isolation tests ran"
  tail -30 "$log_dir/installcheck.log"
  failed=$((failed + expected - ran))
fi
# TAP: a test file passes when prove reports it "ok"; any other end is a failure.
tap_files=$(ls t/*.pl 2>/dev/null | wc -l)
tap_ok=$(grep -cE '^t/[^ ]+\.pl \.+ ok' "$log_dir/installcheck.log" || true)
passed=$((passed + tap_ok))
if ((tap_ok < tap_files)); then
  failed=$((failed + tap_files - tap_ok))
  sed -n '/^t\//,$p' "$log_dir/installcheck.log" | tail -60
  for tap_log in tmp_check/log/regress_log_*; do
    [[ -f "$tap_log" ]] && { echo "== $tap_log (tail)"; tail -40 "$tap_log"; }
  done
fi
for diffs in regression.diffs output_iso/regression.diffs; do
  [[ -s "$diffs" ]] && { echo "== $diffs"; cat "$diffs"; }
done

echo
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
