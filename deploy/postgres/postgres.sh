#!/usr/bin/env bash
# Local PostgreSQL from Debian's packages for development, `make test` and CI.
#
#   deploy/postgres/postgres.sh start    reuse a server on 127.0.0.1:$PORT that
#                                        accepts our role, or install / create /
#                                        start a cluster, then make sure the
#                                        role and the databases exist
#   deploy/postgres/postgres.sh stop     stop the cluster that serves $PORT
#   deploy/postgres/postgres.sh status   exit 0 when the server accepts our role
#   deploy/postgres/postgres.sh restart  stop, then start
#
# Environment:
#   RETENTION_PG_PORT           port on 127.0.0.1 (default 5432)
#   RETENTION_PG_START_TIMEOUT  seconds to wait for readiness (default 60)
#   RETENTION_PG_DATABASES      space-separated database names (default: the
#                               four retention_* databases listed below)
#
# Role `retention` (password `retention`, LOGIN CREATEDB) owns the databases
# below; URLs: postgresql+psycopg://retention:retention@127.0.0.1:$PORT/<db>
# Installing packages and creating clusters needs root (or password-less sudo).
set -euo pipefail

HOST=127.0.0.1
PORT=${RETENTION_PG_PORT:-5432}
START_TIMEOUT=${RETENTION_PG_START_TIMEOUT:-60}
ROLE=retention
PASSWORD=retention
# Space-separated override: RETENTION_PG_DATABASES="db1 db2 ...".
read -r -a DATABASES <<<"${RETENTION_PG_DATABASES:-retention_customer_api retention_segmentation retention_followup retention_survey}"
MAX_CONNECTIONS=300
# Cluster created for a non-default port when no cluster uses that port yet.
OWN_CLUSTER_NAME=retention
SOCKET_DIR=/var/run/postgresql

say() { echo "postgres: $*"; }
die() { echo "postgres: ERROR: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 {start|stop|status|restart}" >&2
    exit 2
}

# --------------------------------------------------------------------------
# helpers

# True when our role can log in over TCP (what the services do).
role_ok() {
    command -v psql >/dev/null 2>&1 || return 1
    PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=3 psql -X -q -w -h "$HOST" -p "$PORT" \
        -U "$ROLE" -d postgres -Atc 'SELECT 1' >/dev/null 2>&1
}

server_up() {
    command -v pg_isready >/dev/null 2>&1 || return 1
    pg_isready -q -h "$HOST" -p "$PORT" -t 3 >/dev/null 2>&1
}

print_urls() {
    local db
    say "connection URLs:"
    for db in "${DATABASES[@]}"; do
        echo "  postgresql+psycopg://$ROLE:$PASSWORD@$HOST:$PORT/$db"
    done
}

# Re-runs this script as root through password-less sudo when possible.
need_root() {
    if [[ $EUID -eq 0 ]]; then
        return 0
    fi
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        say "re-running as root through sudo: $*"
        exec sudo -n env RETENTION_PG_PORT="$PORT" RETENTION_PG_START_TIMEOUT="$START_TIMEOUT" \
            RETENTION_PG_DATABASES="${DATABASES[*]}" \
            bash "${BASH_SOURCE[0]}" "$@"
    fi
    die "'$1' needs root. Run 'sudo $0 start' once, or install and start PostgreSQL yourself with a role '$ROLE' (password '$PASSWORD', CREATEDB) on $HOST:$PORT."
}

# Newest installed server major version (a bin/postgres, not just a client).
server_version() {
    local d v best=""
    for d in /usr/lib/postgresql/*/bin/postgres; do
        [[ -x "$d" ]] || continue
        v=${d#/usr/lib/postgresql/}
        v=${v%%/*}
        if [[ -z "$best" ]] || ((v > best)); then best=$v; fi
    done
    [[ -n "$best" ]] || return 1
    echo "$best"
}

install_server() {
    if server_version >/dev/null && command -v pg_createcluster >/dev/null 2>&1 \
        && command -v pg_ctlcluster >/dev/null 2>&1; then
        return 0
    fi
    need_root start
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL server is not installed and apt-get is not available"
    say "installing PostgreSQL from Debian's packages ..."
    local attempt apt_log
    apt_log=$(mktemp)
    # shellcheck disable=SC2064
    trap "rm -f '$apt_log'" EXIT
    for attempt in 1 2 3; do
        # The lists may be empty (fresh machine) or stale: refresh every time.
        if { apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0 postgresql; } >"$apt_log" 2>&1; then
            break
        fi
        tail -n 30 "$apt_log" >&2
        ((attempt < 3)) || die "apt-get could not install postgresql"
        say "apt-get failed (attempt $attempt); retrying in 5s"
        sleep 5
    done
    server_version >/dev/null || die "postgresql installed, but no /usr/lib/postgresql/*/bin/postgres found"
}

# Prints "<version> <name>" of the cluster configured on $PORT, if any.
cluster_on_port() {
    pg_lsclusters -h 2>/dev/null | awk -v p="$PORT" '$3 == p { print $1, $2; exit }'
}

cluster_online() {
    pg_lsclusters -h 2>/dev/null | awk -v v="$1" -v n="$2" \
        '$1 == v && $2 == n && $4 ~ /^online/ { found = 1 } END { exit !found }'
}

as_postgres() {
    runuser -u postgres -- "$@"
}

# psql as the postgres superuser through the cluster's unix socket.
admin_psql() {
    as_postgres psql -X -q -w -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -d postgres "$@"
}

# Makes sure a cluster serves $PORT with our settings and is running.
ensure_cluster() {
    local version name current
    read -r version name <<<"$(cluster_on_port)" || true
    if [[ -z "${version:-}" ]]; then
        version=$(server_version)
        name=main
        if pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main" { f = 1 } END { exit !f }'; then
            # main exists but on another port: leave it alone, make our own.
            name=$OWN_CLUSTER_NAME
        fi
        say "creating cluster $version/$name on port $PORT"
        pg_createcluster --port "$PORT" "$version" "$name" >/dev/null
    fi

    # Our settings as a drop-in (Debian's postgresql.conf ends with
    # include_dir = 'conf.d'). pg_conftool is not used: it writes an IP
    # address unquoted, which PostgreSQL rejects.
    local conf=/etc/postgresql/$version/$name/conf.d/retention.conf want
    want=$(printf '%s\n' \
        '# Written by deploy/postgres/postgres.sh (Retention local infrastructure).' \
        "listen_addresses = '$HOST'" \
        "max_connections = $MAX_CONNECTIONS")
    if [[ "$(cat "$conf" 2>/dev/null || true)" != "$want" ]]; then
        install -d -o postgres -g postgres "$(dirname "$conf")"
        echo "$want" >"$conf"
        chown postgres:postgres "$conf"
    fi

    install -d -m 2775 -o postgres -g postgres "$SOCKET_DIR"

    if ! cluster_online "$version" "$name"; then
        say "starting cluster $version/$name"
        pg_ctlcluster "$version" "$name" start \
            || { tail -n 30 "/var/log/postgresql/postgresql-$version-$name.log" >&2 2>/dev/null || true
                 die "pg_ctlcluster $version $name start failed"; }
    fi
    wait_ready

    # A running cluster picks up max_connections only on restart.
    current=$(admin_psql -Atc 'SHOW max_connections')
    if [[ "$current" != "$MAX_CONNECTIONS" ]]; then
        say "restarting $version/$name to apply max_connections = $MAX_CONNECTIONS (was $current)"
        pg_ctlcluster "$version" "$name" restart
        wait_ready
    fi
}

wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT))
    until server_up; do
        ((SECONDS < deadline)) || die "PostgreSQL is not ready on $HOST:$PORT after ${START_TIMEOUT}s"
        sleep 0.5
    done
}

# Role and databases, idempotently (run as the postgres superuser).
ensure_role_and_databases_as_admin() {
    local db_list
    db_list=$(printf "'%s'," "${DATABASES[@]}")
    db_list=${db_list%,}
    admin_psql <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') THEN
        CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
    ELSE
        ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
    END IF;
END
\$\$;
-- Test teardown drops databases WITH (FORCE); this lets the role end sessions
-- that are not its own (but never a superuser's).
GRANT pg_signal_backend TO $ROLE;
SELECT format('CREATE DATABASE %I OWNER $ROLE', d)
  FROM unnest(ARRAY[$db_list]) AS d
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec
SELECT format('ALTER DATABASE %I OWNER TO $ROLE', datname)
  FROM pg_database
 WHERE datname IN ($db_list) AND pg_get_userbyid(datdba) <> '$ROLE'
\gexec
SQL
}

# Missing databases, created by the role itself (it has CREATEDB) when we
# reuse a server we do not administer.
ensure_databases_as_role() {
    local db exists
    for db in "${DATABASES[@]}"; do
        exists=$(PGPASSWORD=$PASSWORD psql -X -q -w -h "$HOST" -p "$PORT" -U "$ROLE" -d postgres \
            -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")
        if [[ "$exists" != 1 ]]; then
            say "creating database $db"
            PGPASSWORD=$PASSWORD psql -X -q -w -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" \
                -U "$ROLE" -d postgres -c "CREATE DATABASE \"$db\" OWNER $ROLE"
        fi
    done
}

# --------------------------------------------------------------------------
# commands

cmd_start() {
    if role_ok; then
        say "a server on $HOST:$PORT already accepts role '$ROLE'; reusing it"
        local current
        current=$(PGPASSWORD=$PASSWORD psql -X -q -w -h "$HOST" -p "$PORT" -U "$ROLE" \
            -d postgres -Atc 'SHOW max_connections')
        if ((current < MAX_CONNECTIONS)); then
            if [[ $EUID -eq 0 && -n "$(cluster_on_port 2>/dev/null || true)" ]]; then
                ensure_cluster
            else
                say "WARNING: max_connections is $current there (tests want $MAX_CONNECTIONS)"
            fi
        fi
        ensure_databases_as_role
        print_urls
        return 0
    fi
    need_root start
    install_server
    ensure_cluster
    ensure_role_and_databases_as_admin
    role_ok || die "role '$ROLE' still cannot log in on $HOST:$PORT (check pg_hba.conf of the cluster)"
    say "ready on $HOST:$PORT"
    print_urls
}

cmd_stop() {
    local version name
    if ! command -v pg_lsclusters >/dev/null 2>&1; then
        say "PostgreSQL is not installed; nothing to stop"
        return 0
    fi
    read -r version name <<<"$(cluster_on_port)" || true
    if [[ -z "${version:-}" ]]; then
        say "no local cluster uses port $PORT; nothing to stop"
        return 0
    fi
    if ! cluster_online "$version" "$name"; then
        say "cluster $version/$name is not running"
        return 0
    fi
    need_root stop
    say "stopping cluster $version/$name"
    pg_ctlcluster "$version" "$name" stop
}

cmd_status() {
    if role_ok; then
        say "running on $HOST:$PORT (role '$ROLE' can log in)"
        return 0
    fi
    if server_up; then
        say "a server answers on $HOST:$PORT but role '$ROLE' cannot log in (run: $0 start)"
    else
        say "not running on $HOST:$PORT"
    fi
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    *) usage ;;
esac
