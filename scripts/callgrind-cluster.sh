#!/usr/bin/env bash
# Instructions per request of keygate, single node and cluster mode, under callgrind
# (user space only; they do not move with the load of a shared machine, so a change to
# the cluster request path can be measured while others compile):
#
#   scripts/callgrind-cluster.sh            # both modes
#   MODES=cluster scripts/callgrind-cluster.sh
#
# The same job as the shared bench harness: 1000 keys (bk_ + 40 hex), the bench key with
# {candidates: read}, per_key 1000000/s burst 1000000 (so, in cluster mode, one EVALSHA a
# request), an access log; an nginx upstream answering {"ok":true}; in cluster mode a
# redis-server of its own. keygate runs under `valgrind --tool=callgrind`; after a
# warm-up the counters are zeroed, then N (20000) keyed `GET /api/v1/candidates` are sent
# with `h2load --h1 -c16`, and the counters are dumped. Printed: Ir per request, and
# the 25 functions with the most inclusive Ir (callgrind_annotate), kept in $T.
# Loopback ports 18281-18289. Everything started is stopped by PID on exit.
#
# env: N (20000) MODES ("single cluster") KEYGATE (target/release/keygate) KEEP (0: rm $T)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}; MODES=${MODES:-single cluster}; KG=${KEYGATE:-$PWD/target/release/keygate}
for c in valgrind callgrind_control callgrind_annotate nginx h2load redis-server curl; do
  command -v $c >/dev/null || { echo "missing $c (apt-get install valgrind nginx nghttp2-client redis-server curl)" >&2; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/keygate-callgrind.XXXXXX")
UP=18281 KGP=18282 MET=18283 ADM=18284 RP=18285
PIDS=()
cleanup() {
  local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ ${KEEP:-0} == 1 ]] || rm -rf "$T"
}
trap cleanup EXIT
wait_http() { local i; for i in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

head -c 20000 /dev/urandom | od -An -tx1 -v | tr -d ' \n' | fold -w 40 |
  awk '{ i=NR-1; print "bk_" $0, (i ? "key-" i : "bench"), (i%3==0 ? "read" : i%3==1 ? "write" : "none") }' >"$T/keys.txt"
KEY=$(awk 'NR==1{print $1}' "$T/keys.txt")
{ echo "api_enabled: true"; echo "keys:"
  awk '{printf "  - id: k%04d\n    name: %s\n    secret: \"%s\"\n    permissions: { candidates: %s }\n", NR-1, $2, $1, $3}' "$T/keys.txt"
} >"$T/keys.yaml"
mkdir -p "$T/up" "$T/redis"
cat >"$T/up.conf" <<EOF
worker_processes 1; daemon off; error_log stderr warn; pid $T/up/nginx.pid; events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; default_type application/json;
  client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;
  server { listen 127.0.0.1:$UP; location / { return 200 '{"ok":true}'; } } }
EOF
nginx -p "$T/up" -e stderr -c "$T/up.conf" 2>"$T/up.err" & PIDS+=($!)
redis-server --bind 127.0.0.1 --port $RP --save '' --appendonly no --dir "$T/redis" >"$T/redis.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -p $RP ping >/dev/null 2>&1 && break; sleep 0.1; done

for mode in $MODES; do
  rm -rf "$T/state-$mode"; mkdir -p "$T/state-$mode"
  redis-cli -p $RP FLUSHALL >/dev/null
  cat >"$T/$mode.yaml" <<EOF
listen: "127.0.0.1:$KGP"
upstream: "http://127.0.0.1:$UP"
metrics:
  listen: "127.0.0.1:$MET"
admin:
  listen: "127.0.0.1:$ADM"
keys_file: $T/keys.yaml
state_dir: $T/state-$mode
routes:
  categories:
    candidates: ["/api/v1/candidates", "/api/v1/candidates/**"]
rate_limit:
  per_key: { per_second: 1000000, burst: 1000000 }
access_log:
  path: $T/access-$mode.log
EOF
  [[ $mode == cluster ]] && printf 'cluster:\n  redis_url: "redis://127.0.0.1:%s/0"\n  name: bench\n  node_name: bench-1\n' $RP >>"$T/$mode.yaml"
  valgrind --tool=callgrind --callgrind-out-file="$T/callgrind.$mode.%p" "$KG" serve -c "$T/$mode.yaml" 2>"$T/kg-$mode.err" &
  VPID=$!; PIDS+=($VPID)
  wait_http "http://127.0.0.1:$MET/readyz"
  if [[ $mode == cluster ]]; then  # synced from Redis: the snapshot came from the store
    for _ in $(seq 1 600); do
      v=$(curl -s "http://127.0.0.1:$MET/metrics" | awk '$1=="keygate_cluster_snapshot_version"{print $2}')
      [[ -n $v && $v != 0 ]] && break; sleep 0.1; done
  fi
  h2load --h1 -c16 -n2000 -H "X-API-Key: $KEY" "http://127.0.0.1:$KGP/api/v1/candidates" >/dev/null
  evalsha0=$(redis-cli -p $RP INFO commandstats | awk -F'[=,:]' '/^cmdstat_evalsha/{print $3}')
  callgrind_control -z $VPID >/dev/null
  out=$(h2load --h1 -c16 -n"$N" -H "X-API-Key: $KEY" "http://127.0.0.1:$KGP/api/v1/candidates")
  ok=$(awk '/^status codes:/{print $3}' <<<"$out")
  evalsha1=$(redis-cli -p $RP INFO commandstats | awk -F'[=,:]' '/^cmdstat_evalsha/{print $3}')
  callgrind_control -d $VPID >/dev/null
  sleep 1
  kill -TERM $VPID; wait $VPID 2>/dev/null || true
  # callgrind_control -d wrote <file>.1: the timed part only
  f=$(ls -t "$T"/callgrind.$mode.*.1 2>/dev/null | head -1 || true); [[ -n $f ]] || f=$(ls -t "$T"/callgrind.$mode.* | head -1)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(/,/,""); print $1; exit}')
  echo "== $mode: $ok/$N 2xx, EVALSHA during the timed part: $(( ${evalsha1:-0} - ${evalsha0:-0} )), Ir $ir = $(awk -v i="$ir" -v n="$N" 'BEGIN{printf "%.0f", i/n}') Ir/request ($f)"
  callgrind_annotate --inclusive=yes "$f" 2>/dev/null | awk '/^Ir/{p=1} p && n++ < 30' >"$T/top-$mode.txt"
done
echo "callgrind files and the top functions (top-MODE.txt) in $T$([[ ${KEEP:-0} == 1 ]] || echo ' (removed; KEEP=1 keeps them)')"
