# shellcheck shell=bash
# Shared set-up for scripts/demo and scripts/test, sourced by both: installs the Debian packages
# that are missing and finds or starts PostgreSQL/PostGIS, Redis and Chromium. Every function is
# idempotent and cheap when there is nothing to do, so the scripts are quick the second time.
# The scripts source it after changing to the repository root.

# Prints a step header, so a long log shows where it is.
step() { printf '\n==> %s\n' "$*" >&2; }

# Prints a progress note.
say() { printf '    %s\n' "$*" >&2; }

# Stops the script with a message that says what to look at.
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "this step needs root or sudo: $*"
  fi
}

# Runs a command as a service's own user (postgres, redis), from / so that it can read its
# working directory.
as_user() {
  local user=$1
  shift
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u "$user" -- "$@")
  elif command -v sudo >/dev/null; then
    (cd / && sudo -u "$user" -- "$@")
  else
    die "this step needs root or sudo (to run as $user): $*"
  fi
}

# Polls a quiet check until it succeeds, for at most SECONDS: a service takes a moment to accept
# connections, and a fixed sleep is either too short or needlessly long.
# Usage: wait_for WHAT SECONDS COMMAND...
wait_for() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what did not answer within ${seconds}s"
    sleep 0.2
  done
}

# True unless another process (an install in another terminal, unattended upgrades) holds
# apt's or dpkg's lock.
apt_idle() { ! lslocks -n -o PATH 2>/dev/null | grep -qE '^/var/(lib/(dpkg|apt)|cache/apt)/'; }

# apt-get as root, non-interactive, waiting for a lock that another install holds instead of
# failing on it; retried a few times because apt-get update does not wait for its lock.
apt_get() {
  local try
  for try in 1 2 3; do
    if ! apt_idle; then
      say "another apt/dpkg run holds the lock; waiting for it"
      wait_for "the apt/dpkg lock" 600 apt_idle
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 "$@" && return 0
    say "apt-get $1 failed (try $try of 3)"
  done
  die "apt-get $* failed three times; see its messages above"
}

# Installs the Debian packages that are not installed yet. apt-get update runs only when
# something is missing (a fresh machine has no package lists), and then once per run.
need_pkgs() {
  local pkg missing=()
  for pkg in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  step "installing ${missing[*]}"
  if [ -z "${WAYMARK_APT_UPDATED:-}" ]; then
    apt_get update
    WAYMARK_APT_UPDATED=1
  fi
  apt_get install -y --no-install-recommends "${missing[@]}"
}

# Crates with C parts need a C compiler and pkg-config.
ensure_build_tools() { need_pkgs build-essential pkg-config; }

# True when the URL reaches PostgreSQL as a superuser (tests create databases and extensions).
pg_superuser() {
  [ "$(PGCONNECT_TIMEOUT=5 psql -X -w -At -d "$1" \
    -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user' 2>/dev/null)" = t ]
}

# PostgreSQL's server programs and the matching PostGIS; sets PG_VERSION and WAYMARK_PG_BIN.
# The fault tests run a cluster of their own with them, even when DATABASE_URL names a server.
install_postgres() {
  need_pkgs postgresql
  PG_VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
  [ -n "$PG_VERSION" ] || die "postgresql is installed but /usr/lib/postgresql names no version"
  need_pkgs "postgresql-$PG_VERSION-postgis-3"
  export WAYMARK_PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
}

# The server and #[sqlx::test] need PostgreSQL with PostGIS. With DATABASE_URL given, waits for
# it to answer. Otherwise installs PostgreSQL and the matching PostGIS, starts the cluster, makes
# the superuser role waymark (password waymark) and its database, and exports DATABASE_URL.
ensure_postgres() {
  install_postgres
  local ver=$PG_VERSION port status url
  if [ -n "${DATABASE_URL:-}" ]; then
    wait_for "PostgreSQL at DATABASE_URL" 60 pg_isready -q -d "$DATABASE_URL"
    return 0
  fi
  if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" { f = 1 } END { exit !f }'; then
    step "creating the PostgreSQL $ver cluster main"
    as_root pg_createcluster "$ver" main
  fi
  read -r port status < <(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" { print $3, $4 }') ||
    die "pg_lsclusters lists no cluster $ver main"
  if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
    if [ "$status" != online ]; then
      step "starting PostgreSQL $ver"
      as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start
    fi
    wait_for "PostgreSQL $ver on 127.0.0.1:$port (log: /var/log/postgresql/)" 60 \
      pg_isready -q -h 127.0.0.1 -p "$port"
  fi
  url="postgres://waymark:waymark@127.0.0.1:$port/waymark"
  if ! pg_superuser "$url"; then
    step "creating the PostgreSQL role and database waymark"
    as_user postgres psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres <<'SQL'
SELECT 'CREATE ROLE waymark' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'waymark') \gexec
ALTER ROLE waymark LOGIN SUPERUSER PASSWORD 'waymark';
SELECT 'CREATE DATABASE waymark OWNER waymark'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'waymark') \gexec
SQL
    pg_superuser "$url" || die "cannot sign in to PostgreSQL as waymark on 127.0.0.1:$port (check pg_hba.conf)"
  fi
  export DATABASE_URL=$url
}

# True when Redis answers PING; the arguments say where (-u URL, or -h HOST -p PORT).
redis_ping() { [ "$(timeout 5 redis-cli "$@" ping 2>/dev/null)" = PONG ]; }

# The major version a Redis program reports (`redis-server --version`, `redis-cli --version`).
redis_major() { "$1" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 | cut -d. -f1; }

# Fan-out across instances and its tests need Redis 7 or later (sharded pub/sub, for a cluster).
# redis-server and redis-cli are installed either way, since the cluster tests start servers of
# their own (WAYMARK_REDIS_SERVER and WAYMARK_REDIS_CLI can name other builds; both are exported).
# With REDIS_URL given, waits for it to answer; otherwise starts a local Redis that keeps nothing
# on disk, and exports REDIS_URL.
ensure_redis() {
  if [ -z "${WAYMARK_REDIS_SERVER:-}" ] || [ -z "${WAYMARK_REDIS_CLI:-}" ]; then
    need_pkgs redis-server redis-tools
  fi
  WAYMARK_REDIS_SERVER=${WAYMARK_REDIS_SERVER:-$(command -v redis-server)} || die "redis-server is not on PATH"
  WAYMARK_REDIS_CLI=${WAYMARK_REDIS_CLI:-$(command -v redis-cli)} || die "redis-cli is not on PATH"
  export WAYMARK_REDIS_SERVER WAYMARK_REDIS_CLI
  local program
  for program in "$WAYMARK_REDIS_SERVER" "$WAYMARK_REDIS_CLI"; do
    [ "$(redis_major "$program")" -ge 7 ] 2>/dev/null ||
      die "$program is older than Redis 7 ($("$program" --version)); set WAYMARK_REDIS_SERVER and WAYMARK_REDIS_CLI to Redis 7 builds"
  done
  if [ -n "${REDIS_URL:-}" ]; then
    wait_for "Redis at REDIS_URL" 30 redis_ping -u "${REDIS_URL%%,*}"
    return 0
  fi
  if ! redis_ping -h 127.0.0.1 -p 6379; then
    step "starting Redis"
    as_user redis redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
      --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/redis-server.log
    wait_for "Redis on 127.0.0.1:6379 (log: /var/log/redis/redis-server.log)" 30 \
      redis_ping -h 127.0.0.1 -p 6379
  fi
  export REDIS_URL=redis://127.0.0.1:6379
}

# The page tests drive a real headless Chromium through ChromeDriver. Both paths can be given
# instead (WAYMARK_CHROMIUM, WAYMARK_CHROMEDRIVER); the fonts give pages readable text.
ensure_browser() {
  if [ -z "${WAYMARK_CHROMIUM:-}" ] || [ -z "${WAYMARK_CHROMEDRIVER:-}" ]; then
    need_pkgs chromium chromium-driver fonts-liberation
  fi
  WAYMARK_CHROMIUM=${WAYMARK_CHROMIUM:-$(command -v chromium)} || die "chromium is not on PATH"
  WAYMARK_CHROMEDRIVER=${WAYMARK_CHROMEDRIVER:-$(command -v chromedriver)} || die "chromedriver is not on PATH"
  export WAYMARK_CHROMIUM WAYMARK_CHROMEDRIVER
}

# The deployment test runs the documented nginx configuration in front of the server; it can be
# given instead (WAYMARK_NGINX). Debian's package does not start a server here: the test runs
# its own on loopback ports.
ensure_nginx() {
  if [ -z "${WAYMARK_NGINX:-}" ]; then
    need_pkgs nginx-light
  fi
  WAYMARK_NGINX=${WAYMARK_NGINX:-$(PATH="$PATH:/usr/sbin" command -v nginx)} || die "nginx is not installed"
  export WAYMARK_NGINX
}

# The export tests validate GPX against its schema with xmllint; it can be given instead
# (WAYMARK_XMLLINT).
ensure_xmllint() {
  if [ -z "${WAYMARK_XMLLINT:-}" ]; then
    command -v xmllint >/dev/null || need_pkgs libxml2-utils
  fi
  WAYMARK_XMLLINT=${WAYMARK_XMLLINT:-$(command -v xmllint)} || die "xmllint is not installed"
  export WAYMARK_XMLLINT
}

# sqlx's query! macros check SQL at compile time: against the committed .sqlx/ data when there is
# some, so that building needs no migrated database (unless SQLX_OFFLINE says otherwise).
use_sqlx_offline_data() {
  if [ -d .sqlx ]; then
    export SQLX_OFFLINE=${SQLX_OFFLINE:-true}
  fi
}

# Writes into DIR (an absolute path) what the committed .sqlx/ must hold: the query! macros'
# data for every query, described by DATABASE_URL's database once it is migrated. The macros
# write it as they expand, so the library, the one crate that uses them, is made to recompile.
write_sqlx_offline_data() {
  local dir=$1
  # The binary that migrates is itself built from query data: the committed data, or, when the
  # queries changed since, the database as migrated so far.
  SQLX_OFFLINE=true cargo run -q --bin waymark -- migrate 2>/dev/null ||
    SQLX_OFFLINE=false cargo run -q --bin waymark -- migrate ||
    die "cannot build waymark to migrate the database (a query that needs a new migration builds once that migration is applied)"
  mkdir -p "$dir"
  rm -f "$dir"/query-*.json
  touch src/lib.rs
  SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$dir" cargo check -q -p waymark --lib
}

# Fails, saying how to refresh it, when the committed .sqlx/ is not what the queries and the
# migrations make.
check_sqlx_offline_data() {
  local fresh
  fresh=$(mktemp -d)
  write_sqlx_offline_data "$fresh"
  if ! diff -r -q .sqlx "$fresh"; then
    rm -rf "$fresh"
    die ".sqlx/ does not match the queries and migrations: run scripts/sqlx-prepare and commit .sqlx/"
  fi
  rm -rf "$fresh"
}
