# Shared preparation for scripts/up, scripts/test and scripts/bench: find or
# install PostgreSQL and RabbitMQ, start them, and export DATABASE_URL and
# AMQP_URL. Sourced, not run.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/corebank}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

# host and port of a URL like scheme://user:pass@host:port/db
url_host() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; echo "${rest%%:*}"; }
url_port() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; case "$rest" in *:*) echo "${rest##*:}";; *) echo "$2";; esac; }
is_local() { case "$1" in 127.*|localhost|::1) return 0;; *) return 1;; esac; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
    local host="$1" port="$2" what="$3" tries="${4:-60}"
    for _ in $(seq "$tries"); do
        port_open "$host" "$port" && return 0
        sleep 1
    done
    die "$what did not come up on $host:$port"
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "install $* with your package manager, then run this again"
    say "installing $* (OS packages)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
        || die "cannot run apt-get as root: install $* yourself (sudo apt-get install $*), then run this again"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
        || die "apt-get install $* failed: install it yourself, then run this again"
}

ensure_rust() {
    command -v cargo >/dev/null 2>&1 && return 0
    [ -x "$HOME/.cargo/bin/cargo" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return 0; }
    die "cargo not found: install Rust 1.95 with rustup (https://rustup.rs), then run this again"
}

ensure_postgres() {
    local host port
    host="$(url_host "$DATABASE_URL")"; port="$(url_port "$DATABASE_URL" 5432)"
    if ! port_open "$host" "$port"; then
        is_local "$host" || die "PostgreSQL at $host:$port is not reachable (DATABASE_URL)"
        if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
            apt_install postgresql postgresql-client
        fi
        say "starting PostgreSQL"
        if command -v pg_ctlcluster >/dev/null 2>&1; then
            local version
            version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
            [ -n "$version" ] || die "PostgreSQL is installed but has no cluster: run 'pg_createcluster --start 15 main'"
            as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start \
                || as_root service postgresql start \
                || die "cannot start PostgreSQL: start it yourself (sudo service postgresql start)"
        else
            as_root service postgresql start || die "cannot start PostgreSQL: start it yourself"
        fi
        wait_port "$host" "$port" PostgreSQL
    fi
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client
    local admin="${DATABASE_URL%/*}/postgres"
    for _ in $(seq 30); do
        psql "$admin" -Atqc 'select 1' >/dev/null 2>&1 && return 0
        # A fresh Debian cluster refuses passwordless TCP logins: give the
        # local superuser the development password once, then use it.
        if is_local "$host" && [ "$DATABASE_URL" = "postgres://postgres@$host:$port/corebank" ] \
            && as_root su postgres -c "psql -qc \"alter user postgres password 'postgres'\"" >/dev/null 2>&1; then
            export DATABASE_URL="postgres://postgres:postgres@$host:$port/corebank"
            admin="${DATABASE_URL%/*}/postgres"
        fi
        sleep 1
    done
    die "cannot log in to PostgreSQL with DATABASE_URL (${DATABASE_URL%%@*}@...): set DATABASE_URL to an owner login"
}

ensure_rabbitmq() {
    local host port
    host="$(url_host "$AMQP_URL")"; port="$(url_port "$AMQP_URL" 5672)"
    port_open "$host" "$port" && return 0
    is_local "$host" || die "RabbitMQ at $host:$port is not reachable (AMQP_URL)"
    command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
    say "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 \
        || as_root service rabbitmq-server start \
        || die "cannot start RabbitMQ: start it yourself (sudo service rabbitmq-server start)"
    wait_port "$host" "$port" RabbitMQ 90
}

prepare() {
    ensure_rust
    ensure_postgres
    ensure_rabbitmq
    say "PostgreSQL and RabbitMQ are up"
}
