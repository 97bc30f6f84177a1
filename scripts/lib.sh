# Shared preparation for scripts/up, scripts/test and scripts/bench: find or
# install PostgreSQL and RabbitMQ, start them, and export DATABASE_URL and
# AMQP_URL. Sourced, not run.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The same defaults as the binary's (platform/src/config.rs): the local
# superuser with the development password, which a `trust` cluster ignores.
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/corebank}"
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

# Set when this run installed the PostgreSQL server: only then may it give
# the `postgres` superuser the development password.
INSTALLED_POSTGRES=""

ensure_postgres() {
    local host port
    host="$(url_host "$DATABASE_URL")"; port="$(url_port "$DATABASE_URL" 5432)"
    if ! port_open "$host" "$port"; then
        is_local "$host" || die "PostgreSQL at $host:$port is not reachable (DATABASE_URL)"
        if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
            apt_install postgresql postgresql-client
            INSTALLED_POSTGRES=1
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
    local admin="${DATABASE_URL%/*}/postgres" password_set=""
    for _ in $(seq 30); do
        psql "$admin" -Atqc 'select 1' >/dev/null 2>&1 && return 0
        # A cluster Debian just installed refuses TCP logins without a
        # password (scram-sha-256): give its superuser the development
        # password the default URL carries. A cluster this run did not
        # install is left as it is.
        if [ -n "$INSTALLED_POSTGRES" ] && [ -z "$password_set" ] && is_local "$host" \
            && [ "$DATABASE_URL" = "postgres://postgres:postgres@$host:$port/corebank" ] \
            && as_root su postgres -c "psql -qc \"alter user postgres password 'postgres'\"" >/dev/null 2>&1; then
            say "gave the new cluster's postgres superuser the development password ('postgres')"
            password_set=1
            continue
        fi
        sleep 1
    done
    die "cannot log in to PostgreSQL as ${DATABASE_URL%%@*}@$host:$port: set DATABASE_URL to an owner login (postgres://USER:PASSWORD@HOST:PORT/corebank), or give the local superuser the development password: sudo -u postgres psql -c \"alter user postgres password 'postgres'\""
}

# Open files RabbitMQ should be allowed: each quorum queue holds about three
# in its file-handle accounting, and the broker stops taking connections when
# that accounting is full (at 1024, after about 300 queues; a full system
# declares 56). Debian's service unit gives 65536.
RABBITMQ_NOFILE="${RABBITMQ_NOFILE:-65536}"

ensure_rabbitmq() {
    local host port
    host="$(url_host "$AMQP_URL")"; port="$(url_port "$AMQP_URL" 5672)"
    if port_open "$host" "$port"; then
        is_local "$host" && tune_local_rabbitmq "$host" "$port"
        return 0
    fi
    is_local "$host" || die "RabbitMQ at $host:$port is not reachable (AMQP_URL)"
    command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
    start_rabbitmq "$host" "$port"
}

start_rabbitmq() {
    local host="$1" port="$2" files
    files="$(rabbitmq_nofile_target)"
    say "starting RabbitMQ (open files: $files)"
    # Debian's wrapper starts the broker through su, whose PAM session puts
    # the open-files limit back to 1024; setpriv keeps the one given here.
    if command -v setpriv >/dev/null 2>&1 && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
        && id rabbitmq >/dev/null 2>&1; then
        as_root sh -c "ulimit -n $files 2>/dev/null; cd /var/lib/rabbitmq && exec setpriv \
            --reuid=rabbitmq --regid=rabbitmq --init-groups env HOME=/var/lib/rabbitmq \
            /usr/lib/rabbitmq/bin/rabbitmq-server -detached" >/dev/null 2>&1
    else
        as_root sh -c "ulimit -n $files 2>/dev/null; exec rabbitmq-server -detached" >/dev/null 2>&1
    fi \
        || as_root service rabbitmq-server start \
        || die "cannot start RabbitMQ: start it yourself (sudo service rabbitmq-server start)"
    wait_port "$host" "$port" RabbitMQ 90
    for _ in $(seq 60); do amqp_answers "$host" "$port" && return 0; sleep 1; done
    die "RabbitMQ on $host:$port accepts connections but does not answer AMQP"
}

# The most open files this shell may give a process it starts.
rabbitmq_nofile_target() {
    local hard
    hard="$(ulimit -Hn)"
    if [ "$hard" = unlimited ] || [ "$hard" -ge "$RABBITMQ_NOFILE" ]; then echo "$RABBITMQ_NOFILE"; else echo "$hard"; fi
}

# Whether the broker answers the AMQP protocol header within five seconds
# (a wedged broker accepts the TCP connection and then says nothing).
amqp_answers() {
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"; printf "AMQP\0\0\11\1" >&3; head -c 1 <&3 | grep -q .' _ "$1" "$2" 2>/dev/null
}

# A local broker that was started with too few open files (a container's
# default 1024), or that accepts connections and never answers them, is
# restarted with enough. Its queues and messages are kept (they are on disk).
tune_local_rabbitmq() {
    local host="$1" port="$2" pid limit want reason=""
    pid="$(pgrep -u rabbitmq -f beam.smp 2>/dev/null | head -1)"
    [ -n "$pid" ] && [ -r "/proc/$pid/limits" ] || return 0
    limit="$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")"
    want="$(rabbitmq_nofile_target)"
    if [ "$limit" != unlimited ] && [ "$limit" -lt 16384 ] && [ "$limit" -lt "$want" ]; then
        reason="it may open only $limit files"
    elif ! amqp_answers "$host" "$port"; then
        reason="it accepts connections but does not answer AMQP"
    fi
    [ -n "$reason" ] || return 0
    [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1 \
        || die "RabbitMQ needs a restart ($reason): run as root, or restart it yourself with ulimit -n $want"
    say "restarting the local RabbitMQ: $reason"
    as_root timeout 60 rabbitmqctl stop >/dev/null 2>&1 || as_root kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && { as_root kill -9 "$pid" 2>/dev/null || true; sleep 1; }
    start_rabbitmq "$host" "$port"
}

# cargo-nextest runs the suite in parallel and ends it with one summary
# line; installed once into cargo's bin directory when missing.
ensure_nextest() {
    cargo nextest --version >/dev/null 2>&1 && return 0
    say "installing cargo-nextest (once; a few minutes)"
    cargo install cargo-nextest --locked --quiet >/dev/null 2>&1 \
        || { say "could not install cargo-nextest: falling back to cargo test"; return 1; }
}

# Puts the `corebank` binary on PATH: a link in cargo's bin directory (on
# PATH wherever rustup installed Rust) to the build in target/.
link_binary() {
    local profile="$1" bin_dir="${CARGO_HOME:-$HOME/.cargo}/bin"
    mkdir -p "$bin_dir"
    ln -sf "$ROOT/target/$profile/corebank" "$bin_dir/corebank"
    case ":$PATH:" in
        *":$bin_dir:"*) ;;
        *) say "add $bin_dir to PATH to type 'corebank' in any shell" ;;
    esac
}

# A private PostgreSQL configured as Debian ships it: scram-sha-256 on TCP
# and a password on `postgres`, on a free port with its own socket folder.
# Sets PRIVATE_PG_URL and PRIVATE_PG_PORT; stop_private_postgres removes it
# (also on exit). Never touches the shared server.
start_private_postgres() {
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    [ -x "$bin/initdb" ] || die "initdb not found under /usr/lib/postgresql/*/bin"
    PRIVATE_PG_DIR="$(mktemp -d -t corebank-pg.XXXXXX)"
    # Below Linux's ephemeral range (32768-60999): a port in it can be the
    # local end of some client's connection, which port_open cannot see and
    # which makes the server's bind fail with "Address already in use".
    PRIVATE_PG_PORT=25432
    while port_open 127.0.0.1 "$PRIVATE_PG_PORT"; do PRIVATE_PG_PORT=$((PRIVATE_PG_PORT + 1)); done
    local password="corebank-guard-$RANDOM$RANDOM"
    printf '%s\n' "$password" >"$PRIVATE_PG_DIR/pwfile"
    local run=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "the password guard needs the 'postgres' OS user (initdb refuses root)"
        chown -R postgres "$PRIVATE_PG_DIR"
        run=(runuser -u postgres --)
    fi
    # The postgres user may not enter the caller's folder (root's home).
    local here="$PWD"
    cd /
    "${run[@]}" "$bin/initdb" -D "$PRIVATE_PG_DIR/data" -U postgres --pwfile="$PRIVATE_PG_DIR/pwfile" \
        --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 >"$PRIVATE_PG_DIR/initdb.log" 2>&1 \
        || { cat "$PRIVATE_PG_DIR/initdb.log" >&2; die "initdb of the private PostgreSQL failed"; }
    "${run[@]}" "$bin/pg_ctl" -D "$PRIVATE_PG_DIR/data" -l "$PRIVATE_PG_DIR/server.log" -w -t 60 \
        -o "-p $PRIVATE_PG_PORT -k $PRIVATE_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" \
        start >/dev/null || { tail -n 20 "$PRIVATE_PG_DIR/server.log" >&2; die "the private PostgreSQL did not start"; }
    cd "$here"
    PRIVATE_PG_BIN="$bin"
    PRIVATE_PG_RUN=("${run[@]}")
    PRIVATE_PG_URL="postgres://postgres:$password@127.0.0.1:$PRIVATE_PG_PORT/postgres"
    trap stop_private_postgres EXIT
}

stop_private_postgres() {
    [ -n "${PRIVATE_PG_DIR:-}" ] || return 0
    (cd / && "${PRIVATE_PG_RUN[@]}" "$PRIVATE_PG_BIN/pg_ctl" -D "$PRIVATE_PG_DIR/data" -m immediate -w stop) >/dev/null 2>&1 || true
    rm -rf "$PRIVATE_PG_DIR"
    PRIVATE_PG_DIR=""
}

# Runs `$1 up` in the background (its output in $2) in the broker namespace
# corebank-bench (repeated runs reuse its queues instead of piling up new
# ones), waits until 127.0.0.1:$3 listens, and stops it when the script exits.
start_corebank() {
    local bin="$1" log="$2" port="$3"
    say "starting corebank (log: $log)"
    COREBANK_NAMESPACE="${COREBANK_NAMESPACE:-corebank-bench}" "$bin" up >"$log" 2>&1 &
    COREBANK_PID=$!
    trap stop_corebank EXIT
    for _ in $(seq 120); do
        port_open 127.0.0.1 "$port" && return 0
        kill -0 "$COREBANK_PID" 2>/dev/null || { tail -n 30 "$log" >&2; die "corebank exited during startup (log: $log)"; }
        sleep 1
    done
    tail -n 30 "$log" >&2
    die "corebank did not listen on :$port within 120 s (log: $log)"
}

stop_corebank() {
    kill -TERM "$COREBANK_PID" 2>/dev/null || return 0
    for _ in $(seq 20); do
        kill -0 "$COREBANK_PID" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -KILL "$COREBANK_PID" 2>/dev/null || true
}

prepare() {
    ensure_rust
    ensure_postgres
    ensure_rabbitmq
    say "PostgreSQL and RabbitMQ are up"
}
