#!/usr/bin/env bash
# Single-node keygate against cluster-mode keygate, interleaved in ONE run (the shared
# harness runs one keygate per call, so its two runs of a sitting are minutes apart and
# a change in the box's load between them does not cancel out; here it does).
#
#   scripts/bench-cluster-paired.sh       (scripts/bench.sh CLUSTER=1 runs it last)
#
# Same job and pinning as the harness: an nginx upstream answering {"ok":true} on cpu0;
# 1000 keys (bk_ + 40 hex), the bench key {candidates: read}, per_key 1000000/s burst
# 1000000 (every request is one EVALSHA in cluster mode), an access log; both keygates on
# cpu1 (one worker each: tokio follows the affinity mask), only one under load at a time;
# the cluster one through scripts/bench-cluster-keygate.sh (its redis-server on cpu0, not
# counted in keygate's CPU). wrk -t1 on cpu0. Per round, in alternating order: a
# saturating run (-c$CONNS) for CPU per request, req/s and p99, then one connection (-c1,
# not saturated) for the latency the Redis round trip adds. CPU per request =
# utime+stime of the keygate process (all threads) over wrk's requests; Redis's own
# CPU over the same requests is shown apart (redis_us/req, cluster rows).
# Loopback ports 18191-18199 (Redis from 18090 up). Stopped by PID on exit.
#
# env: ROUNDS (5) DUR (5) CONNS (64) KEYGATE (target/release/keygate)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}; DUR=${DUR:-5}; CONNS=${CONNS:-64}; KG=${KEYGATE:-$ROOT/target/release/keygate}
HZ=$(getconf CLK_TCK)
T=$(mktemp -d "${TMPDIR:-/tmp}/keygate-bench-paired.XXXXXX")
UP=18191
PIDS=()
cleanup() {
  local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  done
  for _ in 1 2 3 4 5 6 7 8 9 10; do [[ -s $T/cluster/redis/redis-cpu.txt ]] && break; sleep 0.3; done
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for p in 18191 18192 18193 18194 18195 18196 18197; do
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && { echo "port $p already in use" >&2; exit 1; }
done
ticks() { awk '{sub(/^.*\) /,""); print $12+$13}' /proc/"$1"/stat; }

head -c 20000 /dev/urandom | od -An -tx1 -v | tr -d ' \n' | fold -w 40 |
  awk '{ i=NR-1; print "bk_" $0, (i ? "key-" i : "bench"), (i%3==0 ? "read" : i%3==1 ? "write" : "none") }' >"$T/keys.txt"
KEY=$(awk 'NR==1{print $1}' "$T/keys.txt")
{ echo "api_enabled: true"; echo "keys:"
  awk '{printf "  - id: k%04d\n    name: %s\n    secret: \"%s\"\n    permissions: { candidates: %s }\n", NR-1, $2, $1, $3}' "$T/keys.txt"
} >"$T/keys.yaml"
mkdir -p "$T/up" "$T/single" "$T/cluster"
cat >"$T/up.conf" <<EOF
worker_processes 1; daemon off; error_log stderr warn; pid $T/up/nginx.pid; events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s; default_type application/json;
  client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;
  server { listen 127.0.0.1:$UP backlog=4096; location / { return 200 '{"ok":true}'; } } }
EOF
conf() {  # conf DIR LISTEN METRICS ADMIN
  cat <<EOF
listen: "127.0.0.1:$2"
upstream: "http://127.0.0.1:$UP"
metrics:
  listen: "127.0.0.1:$3"
admin:
  listen: "127.0.0.1:$4"
keys_file: $T/keys.yaml
state_dir: $1
routes:
  categories:
    candidates: ["/api/v1/candidates", "/api/v1/candidates/**"]
rate_limit:
  per_key: { per_second: 1000000, burst: 1000000 }
access_log:
  path: $1/access.log
EOF
}
conf "$T/single" 18192 18193 18194 >"$T/single/keygate.yaml"
conf "$T/cluster" 18195 18196 18197 >"$T/cluster/keygate.yaml"

taskset -c 0 nginx -p "$T/up" -e stderr -c "$T/up.conf" 2>"$T/up.err" & PIDS+=($!)
taskset -c 1 "$KG" serve -c "$T/single/keygate.yaml" 2>"$T/single.err" & PIDS+=($!); PID_S=$!
KEYGATE_REAL=$KG taskset -c 1 scripts/bench-cluster-keygate.sh serve -c "$T/cluster/keygate.yaml" 2>"$T/cluster.err" & PIDS+=($!); PID_C=$!
for m in 18193 18196; do
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$m/readyz" && break; sleep 0.1; done
done
for _ in $(seq 1 100); do  # the cluster one serves the snapshot it synced from Redis
  v=$(curl -s http://127.0.0.1:18196/metrics | awk '$1=="keygate_cluster_snapshot_version"{print $2}')
  [[ -n $v && $v != 0 ]] && break; sleep 0.1; done
for p in 18192 18195; do
  got=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $KEY" "http://127.0.0.1:$p/api/v1/candidates")
  [[ $got == 200 ]] || { echo "keygate on :$p answered $got" >&2; cat "$T"/*.err >&2; exit 1; }
done
ms() { awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'; }
RPID=$(cat "$T/cluster/redis/redis.pid")
one() {  # one MODE PID PORT CONNS -> "rps p50 p99 cpu_us redis_cpu_us"
  local c0 c1 r0 r1 out
  c0=$(ticks "$2"); r0=$(ticks "$RPID")
  out=$(taskset -c 0 wrk -t1 -c"$4" -d"${DUR}s" --latency -H "X-API-Key: $KEY" "http://127.0.0.1:$3/api/v1/candidates")
  c1=$(ticks "$2"); r1=$(ticks "$RPID"); [[ $1 == single ]] && r1=$r0
  [[ $out != *Non-2xx* ]] || { echo "$1: non-2xx answers: $out" >&2; exit 1; }
  awk -v rps="$(awk '/^Requests\/sec/{print $2}' <<<"$out")" -v p50="$(ms "$(awk '$1=="50%"{print $2}' <<<"$out")")" \
      -v p99="$(ms "$(awk '$1=="99%"{print $2}' <<<"$out")")" -v n="$(awk '/requests in/{print $1}' <<<"$out")" \
      -v d=$((c1 - c0)) -v rd=$((r1 - r0)) -v hz="$HZ" 'BEGIN{printf "%.0f %s %s %.1f %.1f\n", rps, p50, p99, d/hz*1e6/n, rd/hz*1e6/n}'
}
for m in 18192 18195; do taskset -c 0 wrk -t1 -c"$CONNS" -d1s -H "X-API-Key: $KEY" "http://127.0.0.1:$m/api/v1/candidates" >/dev/null; done
echo "== paired: single-node and cluster keygate, $ROUNDS interleaved rounds of ${DUR}s, -c$CONNS then -c1; load avg $(cut -d' ' -f1-3 /proc/loadavg)"
RES=$T/rows.tsv; : >"$RES"
for r in $(seq 1 "$ROUNDS"); do
  order="single cluster"; ((r % 2)) || order="cluster single"
  for c in "$CONNS" 1; do
    for mode in $order; do
      if [[ $mode == single ]]; then row=$(one single $PID_S 18192 "$c"); else row=$(one cluster $PID_C 18195 "$c"); fi
      printf '%s\t%s\t%s\t%s\n' "$r" "$c" "$mode" "${row// /$'\t'}" >>"$RES"
      printf '  round %d -c%-3s %-8s %7s req/s  p50 %7s ms  p99 %7s ms  %6s us/req  redis %5s us/req\n' "$r" "$c" $mode $row
    done
  done
done
med() { sort -g | awk '{a[NR]=$1} END{ if (!NR) {print "-"; exit} printf "%.3f\n", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }'; }
col() { awk -F'\t' -v c="$1" -v m="$2" -v k="$3" '$2==c && $3==m {print $k}' "$RES" | med; }
pr() {  # per-round cluster/single ratio (or difference) of column K at -cC, median
  awk -F'\t' -v c="$1" -v k="$2" -v op="$3" '$2==c && $3=="single"{s[$1]=$k} $2==c && $3=="cluster"{v[$1]=$k}
    END{ for (r in v) if (s[r] > 0) printf "%.3f\n", (op=="-") ? v[r]-s[r] : v[r]/s[r] }' "$RES" | med; }
echo
echo "== paired summary (median of rounds; cluster/single = median of per-round ratios, p99 added = median of per-round differences)"
F='%-5s %-8s %9s %8s %8s %10s %12s\n'
printf "$F" conns keygate rps p50_ms p99_ms cpu_us/req redis_us/req
for c in "$CONNS" 1; do for m in single cluster; do
  printf "$F" "-c$c" $m "$(col "$c" $m 4)" "$(col "$c" $m 5)" "$(col "$c" $m 6)" "$(col "$c" $m 7)" "$(col "$c" $m 8)"; done; done
echo "cluster/single at -c$CONNS: CPU/req $(pr "$CONNS" 7 /), req/s $(pr "$CONNS" 4 /), p99 added $(pr "$CONNS" 6 -) ms"
echo "cluster/single at -c1:  CPU/req $(pr 1 7 /), req/s $(pr 1 4 /), p99 added $(pr 1 6 -) ms, p50 added $(pr 1 5 -) ms"
echo "load avg now $(cut -d' ' -f1-3 /proc/loadavg)"
