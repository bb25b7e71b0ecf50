#!/usr/bin/env bash
# keygate in cluster mode, for the shared bench harness: pass this script as KEYGATE_BIN.
#
#   KEYGATE_BIN=scripts/bench-cluster-keygate.sh ROUNDS=5 ROTATE=1 DUR=5 ../shared/bench/run.sh
#   (scripts/bench.sh does this with CLUSTER=1, beside a single-node run of the same sitting)
#
# Called as `bench-cluster-keygate.sh serve -c CONFIG` (how the harness starts keygate), it
#  1. starts its own redis-server on a free loopback port (from 18090 up; no persistence,
#     its files in CONFIG's folder under redis/), pinned to REDIS_CPU (default 0: the
#     harness's client core, where wrk and the upstream run; the gateway's core 1 stays the
#     gateway's alone). It is daemonized, so it is NOT a child of keygate: the harness's
#     gateway CPU (the keygate PID, its threads and direct children) does not include
#     Redis. Its CPU is reported apart: at the end the Redis CPU time of the whole run and
#     `INFO commandstats` are written to redis/redis-cpu.txt and redis/commandstats.txt;
#  2. writes CONFIG + a `cluster:` section (redis_url to that Redis) as keygate-cluster.yaml
#     next to CONFIG, and execs keygate on it (same PID, so the harness measures keygate).
#  A detached watcher stops that Redis, by its PID, once the keygate PID is gone.
#
# env: KEYGATE_REAL (keygate binary; default target/release/keygate of this checkout)
#      REDIS_CPU (0; empty = not pinned)  REDIS_PORT (first port tried, 18090)
set -euo pipefail
[[ ${1:-} == serve && ${2:-} == -c && -n ${3:-} ]] || { echo "usage: $0 serve -c CONFIG" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KG=${KEYGATE_REAL:-$ROOT/target/release/keygate}
[[ -x $KG ]] || { echo "$0: $KG is not executable (cargo build --release)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "$0: redis-server missing (apt-get install -y redis-server; do not enable the service)" >&2; exit 1; }
CONF=$3
DIR=$(cd "$(dirname "$CONF")" && pwd)/redis
rm -rf "$DIR"; mkdir -p "$DIR"

port=${REDIS_PORT:-18090}
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
pin=(); [[ -n ${REDIS_CPU-0} ]] && pin=(taskset -c "${REDIS_CPU-0}")
"${pin[@]}" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
  --daemonize yes --pidfile "$DIR/redis.pid" --dir "$DIR" --logfile "$DIR/redis.log"
for _ in $(seq 1 50); do [[ -s $DIR/redis.pid ]] && redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
RPID=$(cat "$DIR/redis.pid")
echo "$port" >"$DIR/port"; echo "${REDIS_CPU-0}" >"$DIR/cpu"

# The watcher: a grandchild that is re-parented at once (not a child of keygate either).
KPID=$$
( (
  exec </dev/null >/dev/null 2>&1
  while kill -0 "$KPID" 2>/dev/null; do sleep 0.5; done
  redis-cli -p "$port" INFO commandstats >"$DIR/commandstats.txt" || true
  awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /,""); printf "redis cpu_s %.2f\n", ($12+$13)/hz}' "/proc/$RPID/stat" >"$DIR/redis-cpu.txt" || true
  kill -TERM "$RPID" 2>/dev/null || true
) & )

{ cat "$CONF"; printf '\ncluster:\n  redis_url: "redis://127.0.0.1:%s/0"\n  name: bench\n  node_name: bench-1\n' "$port"; } >"${CONF%.yaml}-cluster.yaml"
exec "$KG" serve -c "${CONF%.yaml}-cluster.yaml"
