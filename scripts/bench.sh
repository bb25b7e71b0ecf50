#!/usr/bin/env bash
# keygate's benchmark: keygate beside nginx doing the same job, one pinned core each.
#
#   scripts/bench.sh                 # h1 rows (the shared harness), then h2c and HTTPS rows
#   H1=0 scripts/bench.sh            # only this script's own h2c and HTTPS rows
#   AA=1 scripts/bench.sh            # also the harness's A/A calibration (noise floor)
#   CLUSTER=1 H2=0 scripts/bench.sh  # h1 rows of single-node AND cluster-mode keygate, one sitting
#
# 1. HTTP/1.1 rows: the shared bench harness. It lives OUTSIDE this repository (a
#    sibling checkout of the team's bench folder); BENCH_HARNESS names its run.sh
#    (default ../shared/bench/run.sh, relative to the repository root). It is run as
#    ROUNDS=5 ROTATE=1 DUR=5 KEYGATE_BIN=target/release/keygate.
#    CLUSTER=1: then run again with KEYGATE_BIN=scripts/bench-cluster-keygate.sh (keygate
#    with a `cluster:` section and its own redis-server on loopback, pinned to the client
#    core 0, its CPU NOT counted in keygate's; see that script), and print cluster against
#    single node: CPU per request, p99, req/s, and Redis's own CPU per request apart;
#    then scripts/bench-cluster-paired.sh: both keygates interleaved round by round in
#    one run (the two harness runs are minutes apart), saturated (-c64) and -c1.
# 2. h2c (h2load -c64 -m10, prior knowledge), HTTPS h1 (wrk over TLS) and HTTPS h2
#    (h2load, ALPN) rows, run here: an upstream nginx, nginx-gw (the harness's job: a
#    map of 1000 keys, 401/403 JSON, limit_req, keepalive upstream, X-API-Key
#    stripped, the key name added, buffered JSON access log) with TLS and http2 on, and
#    keygate with the same keys and category, all from a temporary folder, with a
#    self-signed certificate made by openssl. Loopback ports 18181-18189. Everything
#    started is stopped by PID on exit.
#
# Nothing is installed. Debian packages needed:
#   nginx haproxy wrk nghttp2-client curl openssl util-linux
# (apt-get install -y nginx haproxy wrk nghttp2-client curl openssl; do not enable
# the system services.)
#
# env: ROUNDS (5) DUR (5) CONNS (64) STREAMS (10, h2 -m) H1 (1) AA (0) PIN (1) CLUSTER (0)
#      H2 (1: the h2c and HTTPS rows)
#      BENCH_HARNESS (../shared/bench/run.sh) KEYGATE_WORKERS (passed through)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}; DUR=${DUR:-5}; CONNS=${CONNS:-64}; STREAMS=${STREAMS:-10}
H1=${H1:-1}; AA=${AA:-0}; PIN=${PIN:-1}; CLUSTER=${CLUSTER:-0}; H2=${H2:-1}
BENCH_HARNESS=${BENCH_HARNESS:-../shared/bench/run.sh}
CLIENT_CPU=0; GW_CPU=1; HZ=$(getconf CLK_TCK)

die() { echo "bench.sh: $*" >&2; exit 1; }
missing=()
if [[ $CLUSTER == 1 ]] && ! command -v redis-server >/dev/null; then missing+=(redis-server); fi
for c in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client curl:curl openssl:openssl taskset:util-linux; do
  command -v "${c%%:*}" >/dev/null || missing+=("${c#*:}")
done
((${#missing[@]} == 0)) || die "missing Debian packages: ${missing[*]} (apt-get install -y ${missing[*]})"

echo "== cargo build --release --locked"
cargo build --release --locked --quiet
KG=$ROOT/target/release/keygate

if [[ $H1 == 1 ]]; then
  [[ -x $BENCH_HARNESS ]] || die "BENCH_HARNESS=$BENCH_HARNESS is not executable (the shared harness is not in this repository)"
  SCRATCH=$(dirname "$(mktemp -u)")
  echo "== h1: the shared harness, keygate run"
  BENCH_RUN=$SCRATCH/keygate-bench ROUNDS=$ROUNDS ROTATE=1 DUR=$DUR KEYGATE_BIN=$KG "$BENCH_HARNESS"
  if [[ $CLUSTER == 1 ]]; then
    echo "== h1: the shared harness, keygate in cluster mode (scripts/bench-cluster-keygate.sh)"
    BENCH_RUN=$SCRATCH/keygate-bench-cluster ROUNDS=$ROUNDS ROTATE=1 DUR=$DUR \
      KEYGATE_REAL=$KG KEYGATE_BIN=$ROOT/scripts/bench-cluster-keygate.sh "$BENCH_HARNESS"
    scripts/bench-cluster-compare.sh "$SCRATCH/keygate-bench" "$SCRATCH/keygate-bench-cluster"
    echo "== h1: single-node and cluster keygate interleaved in one run (scripts/bench-cluster-paired.sh)"
    ROUNDS=$ROUNDS DUR=$DUR CONNS=$CONNS KEYGATE=$KG scripts/bench-cluster-paired.sh
  fi
  if [[ $AA == 1 ]]; then
    echo "== h1: the shared harness, A/A calibration"
    ROUNDS=$ROUNDS ROTATE=1 DUR=$DUR KEYGATE_BIN=$(cd "$(dirname "$BENCH_HARNESS")" && pwd)/aa-keygate.sh "$BENCH_HARNESS"
  fi
fi

[[ $H2 == 1 ]] || exit 0
# ------------------------------------------------------------------ h2c and HTTPS
T=$(mktemp -d "${TMPDIR:-/tmp}/keygate-bench-h2.XXXXXX")
UP=18181; NGX_H2C=18182; NGX_TLS=18183; KG_H2C=18184; KG_TLS=18187
STARTED=()
cleanup() {
  local p
  for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${STARTED[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  done
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
pin() { local cpu=$1; shift; if [[ $PIN == 1 ]]; then taskset -c "$cpu" "$@"; else "$@"; fi; }
start() {  # start CPU LOGNAME CMD... ; sets LAST to the server's own PID
  local cpu=$1 name=$2; shift 2
  if [[ $PIN == 1 ]]; then taskset -c "$cpu" "$@" >"$T/$name.out" 2>"$T/$name.err" &
  else "$@" >"$T/$name.out" 2>"$T/$name.err" & fi
  LAST=$!; STARTED+=("$LAST")
}
for p in $UP $NGX_H2C $NGX_TLS $KG_H2C 18185 18186 $KG_TLS 18188 18189; do
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && die "port $p already in use"
done
wait_port() {  # wait_port PORT PID NAME
  local i; for i in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { cat "$T/$3.err" >&2; die "$3 exited"; }; sleep 0.1; done
  die "$3 not listening on :$1"
}
ticks() {  # utime+stime of a process, all its threads, and its direct children
  local p sum=0
  for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    [[ -r /proc/$p/stat ]] && sum=$((sum + $(awk '{sub(/^.*\) /,""); print $12+$13}' /proc/"$p"/stat)))
  done; echo $sum
}

# Keys like the harness: bk_ + 40 hex, key 0 is the bench key, levels cycle.
head -c 20000 /dev/urandom | od -An -tx1 -v | tr -d ' \n' | fold -w 40 |
  awk '{ i=NR-1; print "bk_" $0, (i ? "key-" i : "bench"), (i%3==0 ? "read" : i%3==1 ? "write" : "none") }' >"$T/keys.txt"
KEY=$(awk 'NR==1{print $1}' "$T/keys.txt")
{ echo 'map $http_x_api_key $key_name { default "";'; awk '{print "  " $1, $2 ";"}' "$T/keys.txt"; echo '}'
  echo 'map $http_x_api_key $key_perm { default "";'; awk '{print "  " $1, $3 ";"}' "$T/keys.txt"; echo '}'
} >"$T/nginx-keys.conf"
{ echo "api_enabled: true"; echo "keys:"
  awk '{printf "  - id: k%04d\n    name: %s\n    secret: \"%s\"\n    permissions: { candidates: %s }\n", NR-1, $2, $1, $3}' "$T/keys.txt"
} >"$T/keygate-keys.yaml"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
mkdir -p "$T"/{up,gw,kg1,kg2}

COMMON="worker_processes 1; daemon off; error_log stderr warn; events { worker_connections 4096; }"
HTTP_COMMON="access_log off; keepalive_requests 1000000; keepalive_timeout 60s; default_type application/json;
  client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;"
cat >"$T/up.conf" <<EOF
$COMMON pid $T/up/nginx.pid;
http { $HTTP_COMMON
  server { listen 127.0.0.1:$UP backlog=4096; location / { return 200 '{"ok":true}'; } }
}
EOF
cat >"$T/gw.conf" <<EOF
$COMMON pid $T/gw/nginx.pid;
http { $HTTP_COMMON
  map_hash_bucket_size 128; map_hash_max_size 8192;
  include $T/nginx-keys.conf;
  limit_req_zone \$key_name zone=perkey:10m rate=1000000r/s;
  limit_req_status 429;
  log_format gwjson escape=json '{"time":"\$time_iso8601","method":"\$request_method","uri":"\$uri","status":\$status,'
                                '"key_name":"\$key_name","remote_addr":"\$remote_addr","request_time":\$request_time}';
  upstream app { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
  ssl_certificate $T/cert.pem; ssl_certificate_key $T/key.pem;
  server { listen 127.0.0.1:$NGX_H2C http2 backlog=4096; listen 127.0.0.1:$NGX_TLS ssl http2 backlog=4096;
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
kg_conf() {  # kg_conf DIR LISTEN METRICS ADMIN [tls]
  cat <<EOF
listen: "127.0.0.1:$2"
upstream: "http://127.0.0.1:$UP"
metrics:
  listen: "127.0.0.1:$3"
admin:
  listen: "127.0.0.1:$4"
keys_file: $T/keygate-keys.yaml
state_dir: $1
routes:
  categories:
    candidates: ["/api/v1/candidates", "/api/v1/candidates/**"]
rate_limit:
  per_key: { per_second: 1000000, burst: 1000000 }
access_log:
  path: $1/access.log
EOF
  [[ ${5:-} == tls ]] && printf 'tls:\n  cert_file: %s\n  key_file: %s\n' "$T/cert.pem" "$T/key.pem"
  return 0
}
kg_conf "$T/kg1" $KG_H2C 18185 18186 >"$T/kg1.yaml"
kg_conf "$T/kg2" $KG_TLS 18188 18189 tls >"$T/kg2.yaml"

start $CLIENT_CPU up nginx -p "$T/up" -e stderr -c "$T/up.conf"; PID_UP=$LAST; wait_port $UP $PID_UP up
start $GW_CPU gw nginx -p "$T/gw" -e stderr -c "$T/gw.conf"; PID_NGX=$LAST; wait_port $NGX_TLS $PID_NGX gw
start $GW_CPU kg1 "$KG" serve -c "$T/kg1.yaml"; PID_KG1=$LAST; wait_port $KG_H2C $PID_KG1 kg1
start $GW_CPU kg2 "$KG" serve -c "$T/kg2.yaml"; PID_KG2=$LAST; wait_port $KG_TLS $PID_KG2 kg2
for m in 18185 18188; do
  for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$m/readyz" && break; sleep 0.2; done
done

# Correctness first: the same answers from both, on every protocol.
check() {  # check URL CURL-PROTO-ARGS...
  local url=$1 got; shift
  got=$(curl -sk -o /dev/null -w '%{http_code}/%{http_version}' "$@" -H "X-API-Key: $KEY" "$url/api/v1/candidates")
  [[ ${got%/*} == 200 ]] || die "$url ($*): bench key got $got"
  got=$(curl -sk -o /dev/null -w '%{http_code}' "$@" "$url/api/v1/candidates"); [[ $got == 401 ]] || die "$url: no key got $got"
  got=$(curl -sk -o /dev/null -w '%{http_code}' "$@" -H "X-API-Key: $KEY" "$url/api/v1/jobs"); [[ $got == 403 ]] || die "$url: other path got $got"
}
echo "== correctness (200 / 401 / 403 on h2c, TLS h1, TLS h2)"
for base in "http://127.0.0.1:$NGX_H2C" "http://127.0.0.1:$KG_H2C"; do check "$base" --http2-prior-knowledge; done
for base in "https://127.0.0.1:$NGX_TLS" "https://127.0.0.1:$KG_TLS"; do check "$base" --http1.1; check "$base" --http2; done
echo "  ok"

# run_one ROW TARGET PID URL -> "rps lat_ms cpu_us_per_req" (lat: p99 for wrk, mean for h2load: the 6th field of its "time for request:" line, after min and max)
run_one() {
  local row=$1 pid=$3 url=$4/api/v1/candidates c0 c1 out reqs rps lat
  c0=$(ticks "$pid")
  case $row in
    h2c|tls-h2) out=$(pin $CLIENT_CPU h2load -t1 -c"$CONNS" -m"$STREAMS" -D"$DUR" -H "X-API-Key: $KEY" "$url" 2>&1)
      reqs=$(awk '/^requests:/{print $8}' <<<"$out")
      [[ $out == *"Application protocol: h2"* ]] || die "$row $2: not h2: $out"
      rps=$(awk '/^finished in/{gsub(/,/,""); print $4}' <<<"$out")
      lat=$(awk '/^time for request:/{v=$6; n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n}' <<<"$out") ;;
    tls-h1) out=$(pin $CLIENT_CPU wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -H "X-API-Key: $KEY" "$url")
      reqs=$(awk '/requests in/{print $1}' <<<"$out"); rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
      lat=$(awk '$1=="99%"{v=$2; n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n}' <<<"$out") ;;
  esac
  c1=$(ticks "$pid")
  echo "$out" >"$T/$row-$2-$RANDOM.txt"
  awk -v rps="$rps" -v lat="$lat" -v d=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.0f %s %.1f\n", rps, lat, d/hz*1e6/n}'
}
med() { sort -g | awk '{a[NR]=$1} END{ if (!NR) {print "-"; exit} printf "%.3f\n", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }'; }

echo "== h2c and HTTPS: $ROUNDS interleaved rounds of ${DUR}s, $CONNS connections (h2: -m$STREAMS), gateway on cpu$GW_CPU"
RES=$T/rows.tsv; : >"$RES"
for r in $(seq 1 "$ROUNDS"); do
  for row in h2c tls-h1 tls-h2; do
    case $row in h2c) n="http://127.0.0.1:$NGX_H2C" k="http://127.0.0.1:$KG_H2C" kp=$PID_KG1 ;;
      *) n="https://127.0.0.1:$NGX_TLS" k="https://127.0.0.1:$KG_TLS" kp=$PID_KG2 ;; esac
    # alternate which target goes first, to cancel a position effect
    if ((r % 2)); then a=$(run_one $row nginx-gw $PID_NGX "$n"); b=$(run_one $row keygate "$kp" "$k")
    else b=$(run_one $row keygate "$kp" "$k"); a=$(run_one $row nginx-gw $PID_NGX "$n"); fi
    printf '%s\t%s\tnginx-gw\t%s\n%s\t%s\tkeygate\t%s\n' "$r" $row "${a// /$'\t'}" "$r" $row "${b// /$'\t'}" >>"$RES"
    printf '  round %d %-6s nginx-gw %8s req/s %7s ms %6s us/req | keygate %8s req/s %7s ms %6s us/req\n' "$r" $row $a $b
  done
done
echo
echo "== summary (median of rounds; ratio = median of per-round keygate/nginx-gw; lat = p99 for wrk, mean for h2load)"
F='%-7s %-9s %9s %8s %9s %8s %11s %8s\n'
printf "$F" row target rps ratio lat_ms ratio cpu_us/req ratio
for row in h2c tls-h1 tls-h2; do
  for t in nginx-gw keygate; do
    c() { awk -F'\t' -v row=$row -v t=$t -v c="$1" '$2==row && $3==t {print $c}' "$RES" | med; }
    q() { awk -F'\t' -v row=$row -v c="$1" '$2==row && $3=="nginx-gw"{b[$1]=$c} $2==row && $3=="keygate"{v[$1]=$c}
           END{for (r in v) if (b[r] > 0) printf "%.3f\n", v[r]/b[r]}' "$RES" | med; }
    if [[ $t == keygate ]]; then printf "$F" $row $t "$(c 4)" "$(q 4)" "$(c 5)" "$(q 5)" "$(c 6)" "$(q 6)"
    else printf "$F" $row $t "$(c 4)" 1.000 "$(c 5)" 1.000 "$(c 6)" 1.000; fi
  done
done
echo "load avg now $(cut -d' ' -f1-3 /proc/loadavg)"
