#!/usr/bin/env bash
# Local development stack on loopback: PostgreSQL -> MLflow server on it (basic auth) -> Ray head
# (token auth), started in the order of the Kubernetes manifests: database, `mlflow db upgrade`, server,
# then the trainer user and its permissions (infra/mlflow_bootstrap.py, as k8s/mlflow-bootstrap.yaml).
#
#   infra/local_stack.sh run [--config PATH] [section.key=value ...]   # start, submit jobs.run, stop
#   infra/local_stack.sh start                                         # start and leave running
#   infra/local_stack.sh submit [--config PATH] [section.key=value ...] # submit to the running stack
#   infra/local_stack.sh grant [--experiment NAME] [--registered-model NAME]  # give the trainer MANAGE
#   infra/local_stack.sh env        # print the exports that point a shell at the running stack
#   infra/local_stack.sh status | stop | clean                         # clean: stop and delete STACK_DIR
#
# Everything binds to 127.0.0.1 on free ports and lives under STACK_DIR (default outputs/local_stack):
# pgdata/, logs/, mlartifacts/, job_outputs/ (the job's output_root), stack.env (ports, addresses).
# Only processes this script started are stopped, by the pids it recorded (never `ray stop`, which
# would stop every Ray cluster on the machine).
#
# Secrets: the PostgreSQL password is generated into STACK_DIR/pgpass (mode 600) and reaches libpq
# through PGPASSFILE, so no URI, command line or log holds it; the Ray auth token is generated into
# STACK_DIR/ray_auth_token and read through RAY_AUTH_TOKEN_PATH (RAY_AUTH_MODE=token). MLflow runs the
# basic-auth app: users `admin` and `trainer`, passwords generated into STACK_DIR/mlflow_admin_password
# and STACK_DIR/mlflow_trainer_password (mode 600); the Ray head (so every job) runs as `trainer`.
#
# Settings (environment): STACK_DIR, PYTHON (default .venv/bin/python), PG_BIN (default the newest
# /usr/lib/postgresql/*/bin), PG_PORT, MLFLOW_PORT, RAY_GCS_PORT, RAY_DASHBOARD_PORT,
# RAY_AGENT_PORT (default: free ports), RAY_NUM_CPUS (default 2), RAY_TEMP_DIR (default a short /tmp path),
# STACK_EXPERIMENT / STACK_MODEL (what `start` grants the trainer; default rnn-textcls, the job's defaults).
# Needs Debian's `postgresql` package, psycopg2 and Flask-WTF (mlflow[auth]) in the venv (installed here
# when missing).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="$(mkdir -p "${STACK_DIR:-$REPO/outputs/local_stack}" && cd "${STACK_DIR:-$REPO/outputs/local_stack}" && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
VENV_BIN="$(dirname "$PYTHON")"
LOGS="$STACK_DIR/logs"
RUN="$STACK_DIR/run"
ENV_FILE="$STACK_DIR/stack.env"
PG_USER=mlflow
PG_DB=mlflow
PG_AUTH_DB=mlflow_auth

log() { echo "[local_stack] $*" >&2; }
die() { log "error: $*"; exit 1; }

alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

pg_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$d" && -x "$d/initdb" ]] || die "PostgreSQL binaries not found (/usr/lib/postgresql/*/bin); apt-get install -y postgresql, or set PG_BIN"
  echo "$d"
}

# initdb and postgres refuse to run as root: run them as the `postgres` user (Debian's package creates it).
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

wait_until() {  # wait_until SECONDS NAME COMMAND...: until COMMAND succeeds, while NAME's pid lives
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    alive "$what" || { tail -n 30 "$LOGS/$what.log" >&2; die "$what exited during start; see $LOGS/$what.log"; }
    sleep 0.5
  done
  die "$what did not come up within ${secs}s; see $LOGS"
}

ensure_python_deps() {
  if ! "$PYTHON" -c 'import psycopg2' 2>/dev/null; then
    log "installing psycopg2-binary into $(dirname "$VENV_BIN") (MLflow's PostgreSQL driver)"
    "$PYTHON" -m pip install -q 'psycopg2-binary>=2.9'
  fi
  if ! "$PYTHON" -c 'import flask_wtf' 2>/dev/null; then
    log "installing Flask-WTF into $(dirname "$VENV_BIN") (mlflow[auth]: the basic-auth app)"
    "$PYTHON" -m pip install -q 'Flask-WTF<2'
  fi
}

secret_file() {  # secret_file NAME: a generated secret in STACK_DIR/NAME (mode 600), created once
  [[ -s "$STACK_DIR/$1" ]] || (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex(24), end="")' > "$STACK_DIR/$1")
  cat "$STACK_DIR/$1"
}

write_env() {
  cat > "$ENV_FILE" <<EOF
# written by infra/local_stack.sh start; source it to use the stack from a shell
export STACK_DIR=$STACK_DIR
export PG_PORT=$PG_PORT
export PGPASSFILE=$STACK_DIR/pgpass
export MLFLOW_PORT=$MLFLOW_PORT
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export MLFLOW_TRACKING_USERNAME=trainer
export MLFLOW_TRACKING_PASSWORD="\$(cat $STACK_DIR/mlflow_trainer_password)"
export RAY_GCS_ADDRESS=127.0.0.1:$RAY_GCS_PORT
export RAY_ADDRESS=http://127.0.0.1:$RAY_DASHBOARD_PORT
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$STACK_DIR/ray_auth_token
export RAY_TEMP_DIR=$RAY_TEMP_DIR
export STACK_OUTPUT_ROOT=$STACK_DIR/job_outputs
EOF
}

start_postgres() {
  local bin; bin="$(pg_bin)"
  local pgdata="$STACK_DIR/pgdata"
  if [[ "$(id -u)" == 0 ]] && ! runuser -u postgres -- test -x "$STACK_DIR"; then
    die "the postgres user cannot reach $STACK_DIR (initdb refuses root, so PostgreSQL runs as postgres); \
use a STACK_DIR whose parent folders are world-executable, e.g. under /tmp"
  fi
  if [[ ! -s "$STACK_DIR/pgpass" ]]; then
    (umask 077
     "$PYTHON" -c 'import secrets; print(secrets.token_hex(24))' > "$STACK_DIR/pgpass.raw"
     echo "127.0.0.1:*:*:$PG_USER:$(cat "$STACK_DIR/pgpass.raw")" > "$STACK_DIR/pgpass")
  fi
  if [[ ! -f "$pgdata/PG_VERSION" ]]; then
    mkdir -p "$pgdata"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$pgdata" "$STACK_DIR/pgpass.raw"
    chmod 700 "$pgdata"
    log "initdb $pgdata (superuser $PG_USER, scram-sha-256)"
    as_pg "$bin/initdb" -D "$pgdata" -U "$PG_USER" --pwfile="$STACK_DIR/pgpass.raw" \
      --auth=scram-sha-256 -E UTF8 >"$LOGS/initdb.log" 2>&1 || { cat "$LOGS/initdb.log" >&2; die "initdb failed"; }
  fi
  mkdir -p "$RUN/pgsock"
  [[ "$(id -u)" == 0 ]] && chown postgres: "$RUN/pgsock" "$LOGS"
  log "postgres on 127.0.0.1:$PG_PORT"
  as_pg "$bin/pg_ctl" -D "$pgdata" -l "$LOGS/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $RUN/pgsock" start >/dev/null \
    || { tail -n 20 "$LOGS/postgres.log" >&2; die "postgres did not start"; }
  echo "$pgdata" > "$RUN/pgdata"
  PGPASSFILE="$STACK_DIR/pgpass" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1 \
    || PGPASSFILE="$STACK_DIR/pgpass" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
  PGPASSFILE="$STACK_DIR/pgpass" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='$PG_AUTH_DB'" | grep -q 1 \
    || PGPASSFILE="$STACK_DIR/pgpass" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$PG_AUTH_DB"
}

start_mlflow() {
  # postgresql+psycopg2: SQLAlchemy 2.1 would pick psycopg (3) for a bare postgresql:// URI.
  local uri="postgresql+psycopg2://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB"
  # As the Kubernetes Deployment's db-upgrade init container: a newer MLflow migrates an older database.
  log "mlflow db upgrade $uri"
  PGPASSFILE="$STACK_DIR/pgpass" "$VENV_BIN/mlflow" db upgrade "$uri" >"$LOGS/db_upgrade.log" 2>&1 \
    || { tail -n 20 "$LOGS/db_upgrade.log" >&2; die "mlflow db upgrade failed"; }
  # Basic auth: the users/permissions database is the second PostgreSQL database, also via PGPASSFILE.
  # auth_cache_ttl_seconds: MLflow checks the password hash (scrypt, ~0.1 s of CPU) on every request
  # unless a good login is cached; a training job makes hundreds of requests. One worker here, so a
  # password changed over the API takes effect at once; one changed in the database, within 60 s.
  cat > "$STACK_DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://$PG_USER@127.0.0.1:$PG_PORT/$PG_AUTH_DB
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
EOF
  log "mlflow server on http://127.0.0.1:$MLFLOW_PORT (backend $uri, basic auth)"
  PGPASSFILE="$STACK_DIR/pgpass" MLFLOW_AUTH_CONFIG_PATH="$STACK_DIR/basic_auth.ini" \
    MLFLOW_AUTH_ADMIN_USERNAME=admin MLFLOW_AUTH_ADMIN_PASSWORD="$(secret_file mlflow_admin_password)" \
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(secret_file mlflow_flask_secret_key)" \
    setsid "$VENV_BIN/mlflow" server --backend-store-uri "$uri" \
    --artifacts-destination "$STACK_DIR/mlartifacts" --serve-artifacts --app-name basic-auth \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    >"$LOGS/mlflow.log" 2>&1 < /dev/null &
  echo $! > "$RUN/mlflow.pid"
  wait_until 180 mlflow curl -sf "http://127.0.0.1:$MLFLOW_PORT/health"
  cmd_grant --experiment "${STACK_EXPERIMENT:-rnn-textcls}" --registered-model "${STACK_MODEL:-rnn-textcls}"
}

cmd_grant() {  # the trainer user, and MANAGE on an experiment and a registered model (created if missing)
  MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT" MLFLOW_TRACKING_USERNAME=admin \
    MLFLOW_TRACKING_PASSWORD="$(secret_file mlflow_admin_password)" \
    TRAINER_USERNAME=trainer TRAINER_PASSWORD="$(secret_file mlflow_trainer_password)" \
    "$PYTHON" "$REPO/infra/mlflow_bootstrap.py" --wait-seconds 60 "$@" >>"$LOGS/bootstrap.log" 2>&1 \
    || { tail -n 20 "$LOGS/bootstrap.log" >&2; die "infra/mlflow_bootstrap.py failed"; }
  log "$(tail -n 1 "$LOGS/bootstrap.log")"
}

ray_ready() {  # the dashboard (Jobs API) and the head's dashboard agent, which runs submitted jobs
  local auth="Authorization: Bearer $(cat "$STACK_DIR/ray_auth_token")"
  curl -sf -H "$auth" "http://127.0.0.1:$RAY_DASHBOARD_PORT/api/version" \
    && curl -sf -H "$auth" "http://127.0.0.1:$RAY_AGENT_PORT/api/local_raylet_healthz"
}

start_ray() {
  if [[ ! -s "$STACK_DIR/ray_auth_token" ]]; then
    (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex(32), end="")' > "$STACK_DIR/ray_auth_token")
  fi
  log "ray head: GCS 127.0.0.1:$RAY_GCS_PORT, dashboard/Jobs API http://127.0.0.1:$RAY_DASHBOARD_PORT (token auth)"
  # --block keeps `ray start` in the foreground as the owner of the node: SIGTERM to it stops exactly
  # this cluster. The venv's bin goes first on PATH so that a job's `python` is this interpreter.
  # Jobs inherit this environment: they log to MLflow as `trainer`. No drain on SIGTERM (Ray's default
  # waits up to 30 s for Ray Serve to move replicas; the stack serves nothing): `stop` takes seconds.
  PATH="$VENV_BIN:$PATH" RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}" \
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STACK_DIR/ray_auth_token" \
    PGPASSFILE="$STACK_DIR/pgpass" MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT" \
    MLFLOW_TRACKING_USERNAME=trainer MLFLOW_TRACKING_PASSWORD="$(secret_file mlflow_trainer_password)" \
    setsid "$VENV_BIN/ray" start --head --block --disable-usage-stats \
    --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --port="$RAY_GCS_PORT" \
    --dashboard-port="$RAY_DASHBOARD_PORT" \
    --dashboard-agent-listen-port="$RAY_AGENT_PORT" --num-cpus="${RAY_NUM_CPUS:-2}" \
    --temp-dir="$RAY_TEMP_DIR" >"$LOGS/ray.log" 2>&1 < /dev/null &
  echo $! > "$RUN/ray.pid"
  wait_until 180 ray ray_ready
}

cmd_start() {
  if alive ray || alive mlflow; then die "a stack is already running in $STACK_DIR (infra/local_stack.sh stop)"; fi
  mkdir -p "$LOGS" "$RUN" "$STACK_DIR/mlartifacts" "$STACK_DIR/job_outputs"
  ensure_python_deps
  # Five distinct free ports below the kernel's ephemeral range (infra/free_ports.py says why), for
  # those not given; the services start seconds after this, and a Ray node may be running beside them.
  local ports
  read -r -a ports <<<"$("$PYTHON" "$REPO/infra/free_ports.py" 5)" || die "infra/free_ports.py failed"
  PG_PORT="${PG_PORT:-${ports[0]}}"; MLFLOW_PORT="${MLFLOW_PORT:-${ports[1]}}"
  RAY_GCS_PORT="${RAY_GCS_PORT:-${ports[2]}}"; RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-${ports[3]}}"
  RAY_AGENT_PORT="${RAY_AGENT_PORT:-${ports[4]}}"
  # Ray's unix sockets live under the temp dir, and their paths must stay under ~107 characters.
  RAY_TEMP_DIR="${RAY_TEMP_DIR:-/tmp/ray-stack-$(echo "$STACK_DIR" | md5sum | cut -c1-8)}"
  write_env
  trap 'log "start failed: stopping what did start"; cmd_stop' EXIT
  start_postgres
  start_mlflow
  start_ray
  trap - EXIT
  log "up; to use it from a shell: source $ENV_FILE"
}

stop_pid() {  # stop_pid NAME: SIGTERM the process group it leads, wait, then SIGKILL
  local name=$1 pid
  [[ -f "$RUN/$name.pid" ]] || return 0
  pid="$(cat "$RUN/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  # whatever is left in its process group (workers of the group leader)
  sleep 0.5
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$RUN/$name.pid"
}

cmd_stop() {
  [[ -d "$RUN" ]] || { log "nothing to stop in $STACK_DIR"; return 0; }
  stop_pid ray
  stop_pid mlflow
  if [[ -f "$RUN/pgdata" ]]; then
    local pgdata; pgdata="$(cat "$RUN/pgdata")"
    if [[ -f "$pgdata/postmaster.pid" ]]; then
      log "stopping postgres"
      as_pg "$(pg_bin)/pg_ctl" -D "$pgdata" -m fast -w -t 60 stop >/dev/null || true
    fi
    rm -f "$RUN/pgdata"
  fi
  log "stopped"
}

cmd_status() {
  local rc=0
  for n in ray mlflow; do
    if alive "$n"; then echo "$n: running (pid $(cat "$RUN/$n.pid"))"; else echo "$n: stopped"; rc=1; fi
  done
  if [[ -f "$RUN/pgdata" && -f "$(cat "$RUN/pgdata")/postmaster.pid" ]]; then echo "postgres: running"
  else echo "postgres: stopped"; rc=1; fi
  [[ -f "$ENV_FILE" ]] && grep '^export' "$ENV_FILE"
  return $rc
}

cmd_submit() {
  [[ -f "$ENV_FILE" ]] && alive ray || die "no running stack in $STACK_DIR; run: infra/local_stack.sh start"
  # shellcheck disable=SC1090
  source "$ENV_FILE"
  local config=(--config jobs/configs/embedded.yaml)
  if [[ "${1:-}" == "--config" ]]; then config=(--config "$2"); shift 2; fi
  # output_root first, so that an override given on the command line wins.
  (cd "$REPO" && "$PYTHON" -m jobs.submit --address "$RAY_ADDRESS" "${config[@]}" \
    "output_root=$STACK_OUTPUT_ROOT" "$@")
}

cmd_run() {
  cmd_start
  trap cmd_stop EXIT  # stop on success, failure and Ctrl-C alike
  cmd_submit "$@"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) [[ -f "$ENV_FILE" ]] && grep '^export' "$ENV_FILE" || die "no stack in $STACK_DIR" ;;
  submit) shift; cmd_submit "$@" ;;
  run) shift; cmd_run "$@" ;;
  grant)
    shift
    # shellcheck disable=SC1090
    [[ -f "$ENV_FILE" ]] && alive mlflow && source "$ENV_FILE" || die "no running stack in $STACK_DIR"
    cmd_grant "$@" ;;
  clean)
    cmd_stop
    # shellcheck disable=SC1090
    [[ -f "$ENV_FILE" ]] && source "$ENV_FILE"
    [[ -n "${RAY_TEMP_DIR:-}" ]] && rm -rf "$RAY_TEMP_DIR"
    rm -rf "$STACK_DIR" ;;
  *) sed -n '2,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
