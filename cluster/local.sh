#!/usr/bin/env bash
# Start / stop a one-machine Ray head on 127.0.0.1 with the dashboard and the job server, on free ports.
#
#   cluster/local.sh start [--num-cpus N] [--num-gpus N]   # prints RAY_ADDRESS=http://127.0.0.1:<port>
#   cluster/local.sh status                                # is it running, and where
#   cluster/local.sh stop                                  # stops exactly the head this script started
#
# Then:  RAY_AUTH_MODE=token ray job submit --address "$RAY_ADDRESS" --working-dir . -- python -m jobs.fit_rigid smoke
#
# State (pid, ports, logs, Ray's temp dir) lives in $LIB3D_RAY_DIR (default /tmp/lib3d-ray-$USER); several
# heads can coexist with different LIB3D_RAY_DIRs. Every port is picked free at start, and every server of
# the head listens on 127.0.0.1 only: Ray replaces a loopback --node-ip-address by the machine's address
# unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's single-machine mode), which the head gets and $STATE/env
# carries, so a driver that loads that file (RAY_GCS_ADDRESS) resolves 127.0.0.1 the same way. Token
# authentication is on as well. `stop` signals only the head process it recorded (and its own process group),
# never `ray stop`, which would kill every Ray on the machine.
# Environment: PYTHON (default: python3 on PATH) and RAY (default: the `ray` next to $PYTHON).
set -euo pipefail

STATE="${LIB3D_RAY_DIR:-/tmp/lib3d-ray-${USER:-$(id -un)}}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
RAY="${RAY:-$(dirname "$PYTHON")/ray}"
[ -x "$RAY" ] || RAY="$(command -v ray || true)"

free_ports() {  # free_ports N -> N distinct free TCP ports on 127.0.0.1
  "$PYTHON" - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

running() { [ -f "$STATE/head.pid" ] && kill -0 "$(cat "$STATE/head.pid")" 2>/dev/null; }

cmd_start() {
  local num_cpus="" num_gpus=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --num-cpus) num_cpus="$2"; shift 2 ;;
      --num-gpus) num_gpus="$2"; shift 2 ;;
      *) echo "local.sh start: unknown option $1" >&2; exit 2 ;;
    esac
  done
  if running; then echo "already running (pid $(cat "$STATE/head.pid"))"; cat "$STATE/env"; return 0; fi
  [ -n "$RAY" ] || { echo "local.sh: cannot find the ray CLI (set RAY=/path/to/ray)" >&2; exit 1; }
  mkdir -p "$STATE"
  read -r GCS DASH CLIENT AGENT AGENT_GRPC RTENV METRICS NODE_MGR OBJ_MGR <<<"$(free_ports 9)"
  # Token authentication (Ray >= 2.5x): reuse the caller's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
  # ~/.ray/auth_token); without one, generate a token for this head only, in $STATE/auth_token.
  local token_line=""
  if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ] && [ ! -s "$HOME/.ray/auth_token" ]; then
    "$PYTHON" -c "import secrets; print(secrets.token_hex(32))" >"$STATE/auth_token"
    chmod 600 "$STATE/auth_token"
    export RAY_AUTH_TOKEN_PATH="$STATE/auth_token"
  fi
  [ -n "${RAY_AUTH_TOKEN_PATH:-}" ] && token_line="RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"
  local extra=()
  [ -n "$num_cpus" ] && extra+=(--num-cpus="$num_cpus")
  [ -n "$num_gpus" ] && extra+=(--num-gpus="$num_gpus")
  # --block keeps `ray start` in the foreground as the parent of the head's processes: SIGTERM to it
  # drains and stops them all. setsid gives it its own process group for a last-resort kill.
  RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 setsid nohup "$RAY" start --head --block \
    --node-ip-address=127.0.0.1 --port="$GCS" \
    --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASH" \
    --ray-client-server-port="$CLIENT" --dashboard-agent-listen-port="$AGENT" \
    --dashboard-agent-grpc-port="$AGENT_GRPC" --runtime-env-agent-port="$RTENV" \
    --metrics-export-port="$METRICS" --node-manager-port="$NODE_MGR" --object-manager-port="$OBJ_MGR" \
    --temp-dir="$STATE/tmp" --disable-usage-stats "${extra[@]}" >"$STATE/head.log" 2>&1 </dev/null &
  echo $! >"$STATE/head.pid"
  cat >"$STATE/env" <<ENV
RAY_ADDRESS=http://127.0.0.1:$DASH
RAY_GCS_ADDRESS=127.0.0.1:$GCS
RAY_AUTH_MODE=token
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
$token_line
ENV
  # Ready when the dashboard (job server) and the head node's dashboard agent, which runs submitted jobs,
  # both answer HTTP at all (an error status still means up). The job server waits only 10 s for the
  # agent, which on a loaded 2-core machine can come up later than that: `ray job submit` then fails with
  # "No available agent".
  for _ in $(seq 1 180); do
    if ! running; then echo "local.sh: the head exited during start; see $STATE/head.log" >&2; tail -20 "$STATE/head.log" >&2; exit 1; fi
    if "$PYTHON" - "$DASH" "$AGENT" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
for port, path in ((sys.argv[1], "/api/version"), (sys.argv[2], "/")):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2)
    except urllib.error.HTTPError:
        pass
PY
    then
      echo "Ray head started (pid $(cat "$STATE/head.pid")); dashboard and job server: http://127.0.0.1:$DASH"
      cat "$STATE/env"
      return 0
    fi
    sleep 1
  done
  echo "local.sh: the dashboard did not come up within 180 s; see $STATE/head.log" >&2
  cmd_stop
  exit 1
}

cmd_stop() {
  if ! [ -f "$STATE/head.pid" ]; then echo "not running (no $STATE/head.pid)"; return 0; fi
  local pid; pid="$(cat "$STATE/head.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
  # Anything left in the head's own process group (setsid made pid its leader) is killed.
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$STATE/head.pid"
  echo "Ray head $pid stopped"
}

cmd_status() {
  if running; then echo "running (pid $(cat "$STATE/head.pid"))"; cat "$STATE/env"; else echo "not running"; return 1; fi
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 {start [--num-cpus N] [--num-gpus N]|stop|status}" >&2; exit 2 ;;
esac
