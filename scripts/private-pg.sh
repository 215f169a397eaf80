#!/usr/bin/env bash
# Copies Debian's PostgreSQL 15 (binaries, share, server headers) into DIR and prints the
# copy's pg_config. PostgreSQL is relocatable: the copy finds its own share and lib
# directories, so `make install` and the tests of one checkout (PG_CONFIG=that path) do
# not replace the evproc library under another checkout's running servers.
# Usage: PG_CONFIG=$(scripts/private-pg.sh /opt/pg-mine) bash scripts/test.sh
set -euo pipefail
dir=${1:?usage: private-pg.sh DIR}
if [[ ! -x "$dir/usr/lib/postgresql/15/bin/pg_config" ]]; then
  mkdir -p "$dir/usr/lib/postgresql" "$dir/usr/share/postgresql" "$dir/usr/include"
  cp -a /usr/lib/postgresql/15 "$dir/usr/lib/postgresql/"
  cp -a /usr/share/postgresql/15 "$dir/usr/share/postgresql/"
  cp -a /usr/include/postgresql "$dir/usr/include/"
fi
echo "$dir/usr/lib/postgresql/15/bin/pg_config"
