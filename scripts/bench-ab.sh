#!/usr/bin/env bash
# Two keygate binaries interleaved round by round (the before/after of one change, in
# one run, so that the box's drift cancels out), with an nginx-gw of the harness's
# job beside them:
#
#   scripts/bench-ab.sh OLD_BIN NEW_BIN                 # CPU per request, A then B each round
#   BN=1 scripts/bench-ab.sh BIN BIN                     # B is nginx-gw instead (keygate vs nginx)
#   PERF=1 PT=a|n scripts/bench-ab.sh BIN BIN            # + perf record of A (or nginx-gw), report to $OUT
#   STAT="a n" scripts/bench-ab.sh BIN BIN               # + syscalls and wake-ups per request (perf stat)
#
# The shared harness's job: an nginx upstream answering {"ok":true} on cpu0, 1000 keys
# (bk_ + 40 hex), the bench key {candidates: read}, per_key 1000000/s, an access log;
# both keygates and nginx-gw on cpu1 (one worker each), only one under load at a time;
# wrk -t1 -c$CONNS on cpu0. CPU per request = utime+stime of the process (all threads,
# and nginx's worker) over wrk's requests. Loopback ports 18391-18398. Everything started
# is stopped by PID on exit. Debian packages: nginx wrk curl util-linux (linux-perf for
# PERF/STAT).
#
# env: ROUNDS (4) DUR (4) CONNS (64) OUT (/tmp/keygate-ab)
set -euo pipefail
[[ $# == 2 ]] || { echo "usage: scripts/bench-ab.sh A_BIN B_BIN" >&2; exit 2; }
A=$1; B=$2; OUT=${OUT:-/tmp/keygate-ab}; mkdir -p "$OUT"; ROUNDS=${ROUNDS:-4}; DUR=${DUR:-4}; CONNS=${CONNS:-64}
HZ=$(getconf CLK_TCK)
T=$(mktemp -d /tmp/kg-ab.XXXXXX); UP=18391
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
ticks() { local p s=0; for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do s=$((s + $(awk '{sub(/^.*\) /,""); print $12+$13}' /proc/$p/stat))); done; echo $s; }
head -c 20000 /dev/urandom | od -An -tx1 -v | tr -d ' \n' | fold -w 40 |
  awk '{ i=NR-1; print "bk_" $0, (i ? "key-" i : "bench"), (i%3==0 ? "read" : i%3==1 ? "write" : "none") }' >"$T/keys.txt"
KEY=$(awk 'NR==1{print $1}' "$T/keys.txt")
{ echo "api_enabled: true"; echo "keys:"
  awk '{printf "  - id: k%04d\n    name: %s\n    secret: \"%s\"\n    permissions: { candidates: %s }\n", NR-1, $2, $1, $3}' "$T/keys.txt"
} >"$T/keys.yaml"
mkdir -p "$T/up" "$T/a" "$T/b"
cat >"$T/up.conf" <<EOF
worker_processes 1; daemon off; error_log stderr warn; pid $T/up/nginx.pid; events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s; default_type application/json;
  client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;
  server { listen 127.0.0.1:$UP backlog=4096; location / { return 200 '{"ok":true}'; } } }
EOF
conf() { cat <<EOF
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
conf "$T/a" 18392 18393 18394 >"$T/a/keygate.yaml"
conf "$T/b" 18395 18396 18397 >"$T/b/keygate.yaml"
mkdir -p "$T/gw"
{ echo 'map $http_x_api_key $key_name { default "";';   awk '{print "  " $1, $2 ";"}' "$T/keys.txt"; echo '}'
  echo 'map $http_x_api_key $key_perm { default "";';   awk '{print "  " $1, $3 ";"}' "$T/keys.txt"; echo '}'
} >"$T/nginx-keys.conf"
cat >"$T/gw.conf" <<EOF
worker_processes 1; daemon off; error_log stderr warn; events { worker_connections 4096; } pid $T/gw/nginx.pid;
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s; default_type application/json;
  client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;
  map_hash_bucket_size 128; map_hash_max_size 8192;
  include $T/nginx-keys.conf;
  limit_req_zone \$key_name zone=perkey:10m rate=1000000r/s;
  limit_req_status 429;
  log_format gwjson escape=json '{"time":"\$time_iso8601","method":"\$request_method","uri":"\$uri","status":\$status,'
                                '"key_name":"\$key_name","remote_addr":"\$remote_addr","request_time":\$request_time}';
  upstream app { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:18398 backlog=4096;
    access_log $T/gw-access.log gwjson buffer=64k flush=1s;
    if (\$key_name = "") { return 401 '{"error":{"status":401,"code":"invalid_api_key"}}'; }
    location ~ ^/api/v1/candidates(/|\$) {
      if (\$key_perm !~ "^(read|write)\$") { return 403 '{"error":{"status":403,"code":"insufficient_permission"}}'; }
      limit_req zone=perkey burst=1000000 nodelay;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-API-Key "";
      proxy_set_header X-Key-Name \$key_name;
      proxy_pass http://app;
    }
    location / { return 403 '{"error":{"status":403,"code":"path_not_allowed"}}'; }
  }
}
EOF
taskset -c 0 nginx -p "$T/up" -e stderr -c "$T/up.conf" 2>"$T/up.err" & PIDS+=($!)
taskset -c 1 nginx -p "$T/gw" -e stderr -c "$T/gw.conf" 2>"$T/gw.err" & PIDS+=($!); PN=$!
taskset -c 1 "$A" serve -c "$T/a/keygate.yaml" 2>"$T/a.err" & PIDS+=($!); PA=$!
taskset -c 1 "$B" serve -c "$T/b/keygate.yaml" 2>"$T/b.err" & PIDS+=($!); PB=$!
for m in 18393 18396; do for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$m/readyz" && break; sleep 0.1; done; done
for p in 18392 18395; do
  got=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $KEY" "http://127.0.0.1:$p/api/v1/candidates")
  [[ $got == 200 ]] || { echo "keygate on :$p answered $got" >&2; cat "$T"/*.err >&2; exit 1; }
done
one() { local c0 c1 out; c0=$(ticks "$1")
  out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -H "X-API-Key: $KEY" "http://127.0.0.1:$2/api/v1/candidates")
  c1=$(ticks "$1"); [[ $out != *Non-2xx* ]] || { echo "non-2xx: $out" >&2; exit 1; }
  local n rps; n=$(awk '/requests in/{print $1}' <<<"$out"); rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
  awk -v rps="$rps" -v n="$n" -v d=$((c1-c0)) -v hz="$HZ" 'BEGIN{printf "%.0f %.2f\n", rps, d/hz*1e6/n}'; }
for p in 18392 18395; do taskset -c 0 wrk -t1 -c"$CONNS" -d1s -H "X-API-Key: $KEY" "http://127.0.0.1:$p/api/v1/candidates" >/dev/null; done
for r in $(seq 1 "$ROUNDS"); do
  ra=$(one $PA 18392); if [[ ${BN:-0} == 1 ]]; then rb=$(one $PN 18398); else rb=$(one $PB 18395); fi
  echo "round $r  A: $ra   B: $rb"
done | tee "$T/out"
awk '{ar+=$4; a+=$5; br+=$7; b+=$8} END{printf "mean A %.0f rps %.2f us/req | B %.0f rps %.2f us/req | B/A cpu %.3f rps %.3f\n", ar/NR, a/NR, br/NR, b/NR, (b/NR)/(a/NR), (br/NR)/(ar/NR)}' "$T/out"
if [[ -n ${STAT:-} ]]; then  # STAT="a b n" : perf stat per request, per target
  sleep 1
  EV=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_futex,syscalls:sys_enter_sendto,syscalls:sys_enter_readv,sched:sched_wakeup,sched:sched_switch,irq_vectors:call_function_single_entry,irq_vectors:reschedule_entry
  for st in $STAT; do
  case $st in a) SP=$PA; SPORT=18392;; b) SP=$PB; SPORT=18395;; n) SP=$PN; SPORT=18398;; esac
  SPIDS=$SP; [[ $st == n ]] && SPIDS="$SP,$(cat /proc/$SP/task/*/children | tr ' ' ',' | sed 's/,$//')"
  SPIDS=$(for p in ${SPIDS//,/ }; do ls /proc/$p/task; done | paste -sd,)
  taskset -c 0 wrk -t1 -c"$CONNS" -d6s -H "X-API-Key: $KEY" "http://127.0.0.1:$SPORT/api/v1/candidates" > $T/wrk.out &
  W=$!; sleep 1; c0=0; for p in ${SPIDS//,/ }; do :; done
  perf stat -e $EV -x, -t $SPIDS -o $OUT/stat-$st.txt -- sleep 4 >/dev/null 2>&1; wait $W
  rps=$(awk '/^Requests\/sec/{print $2}' $T/wrk.out)
  echo "== target $st: $rps req/s; events per request (4 s window):"
  awk -F, -v rps="$rps" 'NF>3 && $1 ~ /^[0-9]/ {printf "  %-45s %8.3f\n", $3, $1/(rps*4)}' $OUT/stat-$st.txt
  done
fi
if [[ ${PERF:-0} == 1 ]]; then
  PT=${PT:-a}; case $PT in a) PP=$PA; PPORT=18392;; n) PP=$PN; PPORT=18398;; esac
  PPIDS=$PP; [[ $PT == n ]] && PPIDS="$PP,$(cat /proc/$PP/task/*/children | tr ' ' ',' | sed 's/,$//')"
  taskset -c 0 wrk -t1 -c"$CONNS" -d6s -H "X-API-Key: $KEY" "http://127.0.0.1:$PPORT/api/v1/candidates" > $T/pw.out &
  W=$!; sleep 1; perf record -F 2000 -g -p $PPIDS -o $OUT/perf-$PT.data -- sleep 4 2>/dev/null; wait $W; grep Requests/sec $T/pw.out
  perf report -i $OUT/perf-$PT.data --no-children --sort symbol --stdio 2>/dev/null | grep -v '^$' | grep '%' | head -${TOP:-60} > $OUT/perf.txt
  perf report -i $OUT/perf-$PT.data --no-children --sort dso --stdio 2>/dev/null | grep '%' | head -10 >> $OUT/perf.txt
fi
