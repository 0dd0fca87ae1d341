# Sourced by .ci scripts: a fresh `integration-hub serve --dev` on a free loopback port.
#
#   dev_server_start BIN DATA_DIR LOG   starts it, waits (up to 60 s) until grpc.health.v1 says
#                                       SERVING (asked with buf curl), sets DEV_SERVER_PORT,
#                                       DEV_SERVER_ADDRESS and DEV_SERVER_PID
#   dev_server_stop                     SIGTERM, then waits for it to exit (SIGKILL after 30 s)
#
# Needs buf (node_modules/.bin/buf: `npm ci`) and python3 (to find a free port).

DEV_SERVER_PID=""

dev_server_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

dev_server_start() {
  local bin="$1" data_dir="$2" log="$3"
  DEV_SERVER_PORT="$(dev_server_free_port)"
  DEV_SERVER_ADDRESS="127.0.0.1:$DEV_SERVER_PORT"
  # No INTEGRATION_HUB_* setting of the caller's leaks in; NO_COLOR for a readable log.
  env $(env | grep -o '^INTEGRATION_HUB_[A-Z0-9_]*' | sed 's/^/-u /') NO_COLOR=1 \
    "$bin" serve --dev --data-dir "$data_dir" --listen "$DEV_SERVER_ADDRESS" >"$log" 2>&1 &
  DEV_SERVER_PID=$!
  local deadline=$((SECONDS + 60))
  until node_modules/.bin/buf curl --protocol grpc --http2-prior-knowledge \
      "http://$DEV_SERVER_ADDRESS/grpc.health.v1.Health/Check" 2>/dev/null | grep -q '"SERVING"'; do
    if ! kill -0 "$DEV_SERVER_PID" 2>/dev/null; then
      tail -n 40 "$log" >&2
      echo "the dev server exited during start-up (log above: $log)" >&2
      return 1
    fi
    if ((SECONDS > deadline)); then
      tail -n 40 "$log" >&2
      echo "the dev server was not SERVING within 60 s (log above: $log)" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "dev server pid $DEV_SERVER_PID SERVING on $DEV_SERVER_ADDRESS (log: $log)"
}

dev_server_stop() {
  [[ -n "$DEV_SERVER_PID" ]] || return 0
  kill -TERM "$DEV_SERVER_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$DEV_SERVER_PID" 2>/dev/null; do
    if ((SECONDS > deadline)); then
      kill -KILL "$DEV_SERVER_PID" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  wait "$DEV_SERVER_PID" 2>/dev/null || true
  DEV_SERVER_PID=""
}
