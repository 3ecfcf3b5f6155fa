# Local nats-server processes with JetStream for scripts (sourced, not run): one server or
# a cluster of N with routes between all of them, each from a config file in a temporary
# directory, on free loopback ports, waited for (bounded) on its /healthz endpoint.
#
#   . scripts/lib/nats-cluster.sh
#   nats_start 3                # sets NATS_URLS (HOST:PORT,...) and starts n0..n2
#   nats_kill 0; nats_start_one 0; nats_wait 0
#   nats_stop                   # also from the caller's EXIT trap
#
# NATS_DIR holds n<i>.conf, n<i>.log and n<i>-store; nats_stop kills every server and
# removes it.

NATS_DIR=
NATS_URLS=
NATS_PIDS=()
NATS_CLIENT_PORTS=()
NATS_HTTP_PORTS=()

# A loopback port nothing listens on (bash's /dev/tcp: a refused connection means free).
nats_free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# nats_start N: writes the configs of N servers and starts them all, waiting for each.
nats_start() {
  local size=$1 i j routes=()
  NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
  [ -x "$NATS_BIN" ] || { echo "nats-server not found (scripts/install-deps)" >&2; return 1; }
  NATS_DIR=$(mktemp -d /tmp/annals-nats.XXXXXX)
  for ((i = 0; i < size; i++)); do
    NATS_CLIENT_PORTS[i]=$(nats_free_port)
    NATS_HTTP_PORTS[i]=$(nats_free_port)
    routes[i]=$(nats_free_port)
  done
  NATS_URLS=
  for ((i = 0; i < size; i++)); do
    {
      echo "server_name: n$i"
      echo "listen: 127.0.0.1:${NATS_CLIENT_PORTS[i]}"
      echo "http: 127.0.0.1:${NATS_HTTP_PORTS[i]}"
      echo "max_payload: 2097152"
      echo "jetstream { store_dir: \"$NATS_DIR/n$i-store\" }"
      if [ "$size" -gt 1 ]; then
        echo "cluster { name: annals, listen: 127.0.0.1:${routes[i]}, routes: ["
        for ((j = 0; j < size; j++)); do echo "  nats-route://127.0.0.1:${routes[j]}"; done
        echo "] }"
      fi
    } >"$NATS_DIR/n$i.conf"
    NATS_URLS+="${NATS_URLS:+,}127.0.0.1:${NATS_CLIENT_PORTS[i]}"
  done
  for ((i = 0; i < size; i++)); do nats_start_one "$i"; done
  for ((i = 0; i < size; i++)); do nats_wait "$i" || return 1; done
}

# nats_start_one I: starts server I from its config (again, after nats_kill I).
nats_start_one() {
  "$NATS_BIN" -c "$NATS_DIR/n$1.conf" >>"$NATS_DIR/n$1.log" 2>&1 &
  NATS_PIDS[$1]=$!
  disown "${NATS_PIDS[$1]}"
}

# nats_wait I: up to 20 s for server I's /healthz (JetStream ready); prints its log if not.
nats_wait() {
  local _
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:${NATS_HTTP_PORTS[$1]}/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$NATS_DIR/n$1.log" >&2
  echo "nats-server n$1 did not become healthy within 20 s" >&2
  return 1
}

# nats_kill I: SIGKILL, as a crash of that server's machine would.
nats_kill() {
  [ -n "${NATS_PIDS[$1]:-}" ] && kill -9 "${NATS_PIDS[$1]}" 2>/dev/null
  NATS_PIDS[$1]=
}

nats_stop() {
  local p
  for p in "${NATS_PIDS[@]}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  NATS_PIDS=()
  [ -n "$NATS_DIR" ] && rm -rf "$NATS_DIR"
  NATS_DIR=
}
