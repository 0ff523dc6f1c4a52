# Sourced by scripts/run and scripts/test: a virtualenv with the project, Redis and MariaDB.
# Sets CRONRING_REDIS_URL and CRONRING_DATABASE_URL (server-level; callers pick database names).
# Order: the URLs when set; a server already answering on the default local port;
# private instances from installed binaries (data under .run/); apt-get install when root; else stop.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"
PY="${PYTHON:-python3}"
STARTED=()  # pid files of the private servers this run started

say() { printf '\033[1m[cronring]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# step "what" cmd...: say what is done, run it quietly into a log; on failure show its last lines.
step() {
  local what="$1"; shift
  local log="$RUN_DIR/last-step.log"
  say "$what"
  if ! "$@" >"$log" 2>&1; then
    say "failed: $*"
    tail -n 25 "$log" | sed 's/^/    /' >&2
    return 1
  fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }  # the subshell closes the socket as it exits

ensure_venv() {
  local extras="${1:-}"
  command -v "$PY" >/dev/null || die "python3 (>= 3.11) is required"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python >= 3.11 is required"
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    say "creating .venv"
    "$PY" -m venv "$ROOT/.venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  fi
  local stamp="$ROOT/.venv/.cronring-installed$extras"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/constraints.txt" -nt "$stamp" ]; then
    "$ROOT/.venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    local n
    n=$(grep -c '^[A-Za-z]' "$ROOT/constraints.txt" 2>/dev/null || echo "?")
    step "installing cronring${extras} into .venv (the tested versions: constraints.txt, $n packages)" \
      "$ROOT/.venv/bin/pip" install -e "$ROOT$extras" -c "$ROOT/constraints.txt" || die "pip install failed"
    touch "$stamp"
  fi
  export PATH="$ROOT/.venv/bin:$PATH"
}

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if [ ! -f "$RUN_DIR/.apt-updated" ]; then
      step "updating Debian's package lists" apt-get update -qq && touch "$RUN_DIR/.apt-updated"
    fi
    step "installing $* from Debian's packages" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" || return 1
    return 0
  fi
  return 1
}

ensure_redis() {
  if [ -n "${CRONRING_REDIS_URL:-}" ]; then return; fi
  if port_open 127.0.0.1 6379; then
    export CRONRING_REDIS_URL="redis://127.0.0.1:6379/0"; return
  fi
  local port=6390
  if ! port_open 127.0.0.1 $port; then
    command -v redis-server >/dev/null || apt_install redis-server || die "Redis is not running and redis-server is not installed: install redis-server (Debian: apt-get install redis-server) or set CRONRING_REDIS_URL"
    say "starting a private redis-server on 127.0.0.1:$port (data in .run/redis)"
    mkdir -p "$RUN_DIR/redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port $port --save "" --appendonly no \
      --dir "$RUN_DIR/redis" --pidfile "$RUN_DIR/redis/redis.pid" --logfile "$RUN_DIR/redis/redis.log" >/dev/null
    for _ in $(seq 50); do port_open 127.0.0.1 $port && break; sleep 0.1; done
    port_open 127.0.0.1 $port || die "private redis-server did not start (see .run/redis/redis.log)"
    STARTED+=("$RUN_DIR/redis/redis.pid")  # scripts/run stops what it started
  fi
  export CRONRING_REDIS_URL="redis://127.0.0.1:$port/0"
}

ensure_mariadb() {
  if [ -n "${CRONRING_DATABASE_URL:-}" ]; then return; fi
  if port_open 127.0.0.1 3306; then
    export CRONRING_DATABASE_URL="mysql://root@127.0.0.1:3306/cronring"; return
  fi
  local port=3316 dir="$RUN_DIR/mariadb"
  if ! port_open 127.0.0.1 $port; then
    command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server || die "MariaDB is not running and mariadb-server is not installed: install mariadb-server (Debian: apt-get install mariadb-server) or set CRONRING_DATABASE_URL"
    local mariadbd; mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
    mkdir -p "$dir"
    if [ ! -d "$dir/data/mysql" ]; then
      say "initialising a private MariaDB in .run/mariadb"
      mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal --skip-test-db \
        --user="$(id -un)" >"$dir/install.log" 2>&1 || die "mariadb-install-db failed (see .run/mariadb/install.log)"
    fi
    say "starting a private MariaDB on 127.0.0.1:$port"
    nohup "$mariadbd" --no-defaults --datadir="$dir/data" --port=$port --bind-address=127.0.0.1 \
      --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --user="$(id -un)" \
      --skip-log-bin --innodb-buffer-pool-size=256M >"$dir/mysqld.log" 2>&1 &
    for _ in $(seq 100); do port_open 127.0.0.1 $port && break; sleep 0.2; done
    port_open 127.0.0.1 $port || die "private MariaDB did not start (see .run/mariadb/mysqld.log)"
    STARTED+=("$dir/mysqld.pid")
  fi
  export CRONRING_DATABASE_URL="mysql://root@127.0.0.1:$port/cronring"
}
