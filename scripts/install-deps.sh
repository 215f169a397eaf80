#!/usr/bin/env bash
# Installs what evproc needs to build and test on Debian 12 (run as root). Idempotent:
# skips apt entirely when every package is already present.
set -euo pipefail

packages=(
  postgresql-15 postgresql-server-dev-15 postgresql-client-15
  nlohmann-json3-dev g++ make cmake googletest libgtest-dev libipc-run-perl
  libcurl4-openssl-dev libssl-dev  # webhook sinks: libcurl (multi), HMAC-SHA256 (libcrypto)
  clang-format clang-tidy
  libnats-dev librdkafka-dev nats-server  # stream sinks (docs/streams.md); tests run nats-server
  clang libclang-rt-14-dev  # make fuzz: clang++ -fsanitize=fuzzer,address,undefined
  # The example consumers and their tests (t/030, t/031): psycopg 3, a PgBouncer to
  # run them through in transaction mode.
  python3-psycopg pgbouncer
)
# And node with npm for the Node example (npm ci in t/EvprocConsumers.pm). A node
# installed otherwise (e.g. NodeSource's, which bundles npm) is used as it is.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done

if ((${#missing[@]} > 0)); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
